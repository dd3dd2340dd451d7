"""Serve an embedded GGUF teacher over the OpenAI API, on this machine.

`python -m falconer_ray.teacher.gguf_server --model gemma3-270m --port 8080`
gives the `openai` teacher backend a real endpoint without a GPU or network:
for trying the remote path locally, and for tests. It is llama-cpp-python's
own server, loaded with the same CPU-safe model parameters as the embedded
teacher (no AMX/extra weight buffers) and listening on loopback by default.
"""

from __future__ import annotations

import argparse
import os

from falconer_ray.teacher.embedded import default_threads, no_extra_buffers, resolve_gguf


def build_app(model: str, alias: str | None, n_ctx: int, threads: int, logits_all: bool,
              api_key: str | None = None):
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    path = resolve_gguf(model)
    settings = ModelSettings(model=str(path), model_alias=alias or model, n_ctx=n_ctx, n_threads=threads,
                             n_threads_batch=threads, logits_all=logits_all, verbose=False)
    return create_app(server_settings=ServerSettings(api_key=api_key), model_settings=[settings])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma3-270m", help="gemma3-270m, smollm2-135m or a .gguf path")
    p.add_argument("--alias", default=None, help="model name clients send (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=default_threads())
    p.add_argument("--no-logprobs", action="store_true",
                   help="skip per-token logits (faster prompts; labels are then parsed from text)")
    p.add_argument("--api-key-env", metavar="NAME", default=None,
                   help="require `Authorization: Bearer KEY`, KEY read from this environment variable")
    args = p.parse_args(argv)
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        p.error(f"{args.api_key_env} is not set in the environment")

    import uvicorn

    with no_extra_buffers():  # stays patched for the server's life: it may reload the model
        app = build_app(args.model, args.alias, args.n_ctx, args.threads, not args.no_logprobs, key)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
