"""How close does label scoring come to llama.cpp's own prompt-processing rate?

A label answer is one forward pass over the prompt; the shared part (system text,
instruction, demonstrations) stays in llama.cpp's KV cache, so each call evaluates
only the document and the few tokens after it. This measures, with the same model
and threads, in one process:

  * llama.cpp's prompt processing alone: a fresh context evaluating P tokens
    (pp512, as llama-bench reports it, and pp at the label calls' median new tokens);
  * label scoring: the tokens each call really evaluated (the document, after the
    cached prefix) per second of the whole call (tokenizing, templating, logits).

    python -m falconer_ray.bench.teacher_rate --model qwen2.5-1.5b --n 60 --json rate.json

The ratio of the two is the label path's efficiency; its goal is >= 0.7.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from falconer_ray.bench.teacher_choice import LABEL_INSTRUCTION, rotten_tomatoes
from falconer_ray.teacher.embedded import EmbeddedTeacher


def count_evaluated(teacher: EmbeddedTeacher) -> list[int]:
    """Record how many tokens each llama.cpp `eval` call processes (it still runs)."""
    sizes: list[int] = []
    llm = teacher.llm
    inner = llm.eval

    def counted(tokens):
        sizes.append(len(tokens))
        return inner(tokens)

    llm.eval = counted
    return sizes


def prompt_processing_rate(teacher: EmbeddedTeacher, n_tokens: int, repeats: int, seed: int = 0) -> float:
    """Tokens/s of llama.cpp evaluating `n_tokens` on an empty context, best of `repeats`."""
    llm = teacher.llm
    rng = random.Random(seed)
    vocab = llm.n_vocab()
    best = 0.0
    for _ in range(repeats):
        tokens = [rng.randrange(1000, min(vocab, 30000)) for _ in range(n_tokens)]
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(tokens)
        best = max(best, n_tokens / (time.perf_counter() - t0))
    llm.reset()
    return best


def main_args(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="embedded teacher model (default: the default teacher)")
    ap.add_argument("--n", type=int, default=60, help="Rotten Tomatoes reviews to label")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    teacher = EmbeddedTeacher(**({"model": args.model} if args.model else {}), n_threads=args.threads)
    texts, _ = rotten_tomatoes(args.n)
    teacher.label(texts[:2], LABEL_INSTRUCTION)  # the shared prefix enters the KV cache, untimed
    sizes = count_evaluated(teacher)
    before = teacher.stats.snapshot()
    t0 = time.perf_counter()
    teacher.label(texts, LABEL_INSTRUCTION)
    label_s = time.perf_counter() - t0
    prompt_tokens = teacher.stats.since(before).prompt_tokens
    evaluated = sum(sizes)
    median_new = int(statistics.median(sizes))
    pp512 = prompt_processing_rate(teacher, 512, args.repeats)
    pp_median = prompt_processing_rate(teacher, max(median_new, 1), args.repeats * 5)
    label_rate = evaluated / label_s
    out = {
        "teacher": teacher.name, "threads": getattr(teacher.llm, "n_threads", None),
        "docs": len(texts), "labels_per_s": round(len(texts) / label_s, 3),
        "prompt_tokens": prompt_tokens, "tokens_evaluated": evaluated, "median_tokens_per_call": median_new,
        "label_tokens_per_s": round(label_rate, 1),
        "llama_pp512_tokens_per_s": round(pp512, 1),
        f"llama_pp{median_new}_tokens_per_s": round(pp_median, 1),
        "ratio_to_pp512": round(label_rate / pp512, 3),
        "ratio_to_pp_same_size": round(label_rate / pp_median, 3),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main_args()
