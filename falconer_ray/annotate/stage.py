"""The annotation stage: the teacher labels a sample of the corpus for every step.

Every sampled document is annotated for every plan step (label steps give P(yes),
span steps give validated spans), so the proxy learns each step from the same
documents. The documents are split into train and held-out by id; held-out ones
measure proxy-vs-teacher agreement later.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from falconer_ray.annotate import AnnotationCache, cached_extract, cached_label
from falconer_ray.config import RunConfig
from falconer_ray.plan import Plan
from falconer_ray.progress import progress
from falconer_ray.rundir import RunDir, write_json
from falconer_ray.sample import is_heldout


def annotate_documents(docs: list[dict], plan: Plan, teacher, cfg: RunConfig, run: RunDir) -> dict:
    """Annotate `docs` ({doc_id, text}) for every step; write annotations.jsonl and stats."""
    cache = AnnotationCache(Path(cfg.cache_dir) / "annotations.sqlite")
    texts = [d["text"] for d in docs]
    labels, spans, shown = {}, {}, None
    calls, rejected = Counter(), Counter()
    failed: dict[int, dict] = {}  # doc index -> the first step the teacher failed on
    started = time.monotonic()
    seconds_before = teacher.stats.seconds
    retries = cfg.teacher.retries
    for step in plan.label_steps:
        with progress(f"teacher get_label '{step.id}'", len(texts)) as advance:
            out = cached_label(teacher, cache, texts, step.instruction, on_progress=_absolute(advance), retries=retries)
        labels[step.id], shown = out.probs, out.shown
        calls["label"] += out.calls
        _note_failures(failed, out.failed, step.id)
    for step in plan.span_steps:
        with progress(f"teacher get_span '{step.id}'", len(texts)) as advance:
            out = cached_extract(teacher, cache, texts, step.instruction, on_progress=_absolute(advance), retries=retries)
        spans[step.id], shown = out.spans, out.shown
        calls["span"] += out.calls
        rejected.update(out.rejected)
        _note_failures(failed, out.failed, step.id)
    cache.close()
    if docs and len(failed) == len(docs):
        reasons = Counter(f["reason"] for f in failed.values())
        raise ValueError(f"the teacher failed on every one of {len(docs)} documents ({dict(reasons)}); "
                         f"first: {next(iter(failed.values()))['detail']}")

    run.annotations_dir.mkdir(parents=True, exist_ok=True)
    tmp = run.annotations.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for i, d in enumerate(docs):
            if i in failed:
                continue
            row = {
                "doc_id": d["doc_id"],
                "text": shown[i],
                "split": "heldout" if is_heldout(d["doc_id"], cfg.seed, cfg.train.heldout) else "train",
                "labels": {k: v[i] for k, v in labels.items()},
                "spans": {k: [s.to_dict() for s in v[i]] for k, v in spans.items()},
            }
            f.write(json.dumps(row) + "\n")
    tmp.replace(run.annotations)
    _write_failures(run, [{"doc_id": docs[i]["doc_id"], **f} for i, f in sorted(failed.items())])

    teacher_seconds = teacher.stats.seconds - seconds_before
    paid_docs = max(calls.values(), default=0)
    stats = {
        "teacher": {"model": teacher.name, "calls": sum(calls.values()), "calls_by_op": dict(calls),
                    "seconds": round(teacher_seconds, 3),
                    "docs_per_s": round(paid_docs / teacher_seconds, 3) if calls and teacher_seconds > 0 else None,
                    "stats": teacher.stats.to_dict()},
        "docs": len(docs) - len(failed),
        "heldout": sum(is_heldout(d["doc_id"], cfg.seed, cfg.train.heldout) for d in docs),
        "cached": {"label": len(texts) * len(plan.label_steps) - calls["label"],
                   "span": len(texts) * len(plan.span_steps) - calls["span"]},
        "rejected_spans": dict(rejected),
        "failed_docs": dict(Counter(f["reason"] for f in failed.values())),
        "clipped_docs": sum(len(s) < len(t) for s, t in zip(shown or [], texts)),
        "wall_s": round(time.monotonic() - started, 3),
    }
    write_json(run.annotation_stats, stats)
    return stats


def _note_failures(failed: dict[int, dict], step_failures: dict[int, tuple[str, str]], step_id: str) -> None:
    for i, (reason, detail) in step_failures.items():
        failed.setdefault(i, {"step": step_id, "reason": reason, "detail": detail})


def _write_failures(run: RunDir, rows: list[dict]) -> None:
    """annotations/errors.jsonl: the sampled documents the teacher could not annotate."""
    path = run.annotations_dir / "errors.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def _absolute(advance):
    """Adapt `advance(n)` to callbacks that report a running total."""
    seen = 0

    def on_progress(total_done: int) -> None:
        nonlocal seen
        if total_done > seen:
            advance(total_done - seen)
            seen = total_done

    return on_progress


def load_annotations(run: RunDir) -> list[dict]:
    path = run.require(run.annotations, "annotate")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]
