"""Does correcting the embedded teacher's yes/no bias make its labels better?

The embedded teacher scores P(yes) from one forward pass, and its 0.5 cut is biased
(it calls a quarter of balanced reviews positive). Domain-context calibration
(Fei et al. 2023, "Mitigating Label Biases for In-context Learning") estimates that
bias from texts of random words drawn from the task's own documents and subtracts
its mean log-odds. This script measures it against gold on `falconer eval`'s test
slice (same seeded split), for several numbers of random texts and seeds, beside
the raw cut and the best cut chosen with gold (an upper bound, not usable in a run).

    python -m falconer_ray.bench.teacher_calibration rotten-tomatoes --n-test 400 --json cal_rt.json
    python -m falconer_ray.bench.teacher_calibration wnut16 --question "Does the text mention a person by name?"

For wnut16 the gold label is "the tweet holds a person span". Teacher answers go
through the annotation cache ($FALCONER_CACHE), so reruns cost no teacher calls.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from falconer_ray.annotate import AnnotationCache, cached_label
from falconer_ray.eval.evaluate import load_task, split
from falconer_ray.teacher.embedded import EmbeddedTeacher
from falconer_ray.teacher.gguf_models import cache_dir


def log_odds(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def random_word_texts(pool: list[str], n: int, seed: int) -> list[str]:
    """n texts of random words from `pool`, each as long as a pool text on average."""
    words = [w for text in pool for w in text.split()]
    length = max(1, int(np.mean([len(t.split()) for t in pool])))
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(length)) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=["imdb", "rotten-tomatoes", "wnut16"])
    ap.add_argument("--n-test", type=int, default=400)
    ap.add_argument("--question", default=None, help="label question (default: the dataset's own)")
    ap.add_argument("--texts", default="32,64", help="numbers of random-word texts to try")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    task = load_task(args.dataset)
    docs = [{"text": d["text"], "gold": bool(d["gold"])} for d in task.docs]
    question = args.question or task.instruction
    train_idx, test_idx = split(len(docs), 512, args.n_test, 0)
    gold = np.array([docs[i]["gold"] for i in test_idx])
    teacher = EmbeddedTeacher()
    with AnnotationCache(cache_dir() / "annotations.sqlite") as cache:
        raw = log_odds(cached_label(teacher, cache, [docs[i]["text"] for i in test_idx], question).probs)
        pool = [docs[i]["text"] for i in train_idx[:300]]
        rows = []
        for n in [int(x) for x in args.texts.split(",")]:
            for seed in range(args.seeds):
                bias = float(np.mean(log_odds(cached_label(teacher, cache, random_word_texts(pool, n, seed), question).probs)))
                yes = raw - bias >= 0
                rows.append({"texts": n, "seed": seed, "bias": round(bias, 4),
                             "accuracy": float(np.mean(yes == gold)), "share_yes": float(np.mean(yes))})
    out = {"dataset": args.dataset, "question": question, "n_test": len(test_idx), "teacher": teacher.name,
           "gold_share_yes": float(gold.mean()), "auc": float(roc_auc_score(gold, raw)),
           "raw": {"accuracy": float(np.mean((raw >= 0) == gold)), "share_yes": float(np.mean(raw >= 0))},
           "best_cut_with_gold": max(float(np.mean((raw >= c) == gold)) for c in np.linspace(-8, 8, 321)),
           "calibrated": rows}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
