"""Teachers that answer through Ray Data LLM processors: any OpenAI-compatible endpoint
(`openai`) and vLLM engines (`vllm`). They share `base` (the batch teacher), `requests`
(what each document asks, backend-free), `answers` (reading labels and spans out of an
OpenAI-shaped response) and, for HTTP, `http` (retries, timeouts, no leaked keys)."""
