"""Two tasks in a row: does one metamodel learn a second task and keep the first?

The proxy is trained on task A, then fine-tuned on task B starting from that proxy
(its heads and encoder kept), and compared with a proxy trained on B alone. A is
scored again after B, so the cost of sharing one metamodel shows as points of A lost.
Both tasks use `falconer eval`'s datasets, splits, training and scores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from falconer_ray.annotate import AnnotationCache
from falconer_ray.config import RunConfig, merge
from falconer_ray.eval.evaluate import Answers, Task, compare, fit, load_task, proxy_answers, split
from falconer_ray.progress import console
from falconer_ray.ray_env import init_ray
from falconer_ray.rundir import RunDir
from falconer_ray.teacher import teacher_from_config


def _count(kind: str, answers: list) -> int:
    """Yes answers for labels, spans for spans: a score of 0 reads differently when the proxy said nothing."""
    return sum(bool(a) for a in answers) if kind == "label" else sum(len(a) for a in answers)


def _score(task: Task, test_idx: list[int], proxy_dir: Path, cfg: RunConfig) -> tuple[float, int]:
    predicted, _ = proxy_answers(task, proxy_dir, [task.docs[i]["text"] for i in test_idx], cfg)
    return compare(task.kind, predicted, [task.docs[i]["gold"] for i in test_idx]), _count(task.kind, predicted)


def run_sequence(first: str, second: str, cfg: RunConfig, *, entity: str = "person", train_source: str = "gold",
                 n_train: int = 64, n_test: int = 200) -> dict:
    """Fresh on A; A's proxy fine-tuned on B; fresh on B. Scores against gold on each task's test slice."""
    if train_source not in ("gold", "teacher"):
        raise ValueError(f"--train-source must be gold or teacher, not {train_source!r}")
    tasks = [load_task(first, entity), load_task(second, entity)]
    if tasks[0].name == tasks[1].name:
        raise ValueError(f"--first and --second are the same task ({tasks[0].name}); name two different ones")
    splits = [split(len(t.docs), n_train, n_test, cfg.seed) for t in tasks]

    init_ray()
    started = time.monotonic()
    teacher = cache = None
    if train_source == "teacher":
        teacher = teacher_from_config(cfg.teacher)
        cache = AnnotationCache(Path(cfg.cache_dir) / "annotations.sqlite")
    sources = [Answers(t, train_source, teacher, cache) for t in tasks]
    training = [(idx, *src(idx, f"the {src.task.name} train slice")) for src, (idx, _) in zip(sources, splits)]
    if cache is not None:
        cache.close()
    teacher = None  # its memory is the proxy's from here on
    for src in sources:
        src.teacher = None
    seconds = {"answers": round(time.monotonic() - started, 3)}

    (a, b), ((_, a_test), (_, b_test)) = tasks, splits
    with tempfile.TemporaryDirectory(prefix="falconer-sequence-") as tmp:
        runs = {name: RunDir(Path(tmp) / name).create() for name in ("first", "sequence", "second")}
        console.print(f"[bold]1/3[/] training a fresh proxy on {a.name}")
        trained = {"first": fit(a, *training[0], cfg, runs["first"])}
        scores = {"first_fresh": _score(a, a_test, runs["first"].proxy, cfg)}
        console.print(f"[bold]2/3[/] fine-tuning the {a.name} proxy on {b.name}")
        after_a = merge(cfg, {"proxy.base": str(runs["first"].proxy)})
        trained["sequence"] = fit(b, *training[1], after_a, runs["sequence"])
        scores["second_after_first"] = _score(b, b_test, runs["sequence"].proxy, cfg)
        scores["first_after_second"] = _score(a, a_test, runs["sequence"].proxy, cfg)
        console.print(f"[bold]3/3[/] training a fresh proxy on {b.name}")
        trained["second"] = fit(b, *training[1], cfg, runs["second"])
        scores["second_fresh"] = _score(b, b_test, runs["second"].proxy, cfg)
    seconds.update({f"train_{k}": v["wall_s"] for k, v in trained.items()})
    seconds["total"] = round(time.monotonic() - started, 3)

    def metric(task: Task) -> str:
        return "accuracy" if task.kind == "label" else "exact-match span F1"

    return {
        "first": {"dataset": a.name, "task": a.kind, "metric": metric(a), "instruction": a.instruction},
        "second": {"dataset": b.name, "task": b.kind, "metric": metric(b), "instruction": b.instruction},
        "train_source": train_source, "n_train": n_train, "n_test": n_test, "seed": cfg.seed,
        "epochs": cfg.train.epochs, "proxy_base": cfg.proxy.base,
        **{k: round(v[0], 4) for k, v in scores.items()},
        # Points (x100) of the first task's score lost by learning the second; negative: it gained.
        "first_degradation": round(100 * (scores["first_fresh"][0] - scores["first_after_second"][0]), 2),
        # Points the second task gains from starting at the first task's proxy.
        "second_transfer": round(100 * (scores["second_after_first"][0] - scores["second_fresh"][0]), 2),
        # Yes answers (labels) or spans (spans) the proxy gave on each test slice, and gold's.
        "answers_given": {k: v[1] for k, v in scores.items()},
        "gold_answers": {"first": _count(a.kind, [a.docs[i]["gold"] for i in a_test]),
                         "second": _count(b.kind, [b.docs[i]["gold"] for i in b_test])},
        "teacher_calls": sum(s.calls for s in sources), "teacher_docs": sum(s.docs for s in sources),
        "seconds": seconds,
        "final_loss": {k: v["final_loss"] for k, v in trained.items()},
    }
