"""Fine-tuning the proxy with Ray Train (`fit`), and self-supervised pretraining of a
metamodel from raw text (`pretrain`)."""
