"""The Teacher section of report.html: how well the teacher itself did, so a weak run is
not blamed on the proxy alone.

The proxy can only be as good as the answers it learns from. This gathers, from the
run directory's annotations and their stats, what the teacher got wrong or could not
see: span answers thrown away (not an exact piece of the document, cut off, ...),
documents clipped to what the teacher reads, documents the proxy read in several
windows, and the spread of the teacher's P(yes) per label step.
"""

from __future__ import annotations

import json

import numpy as np

from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir
from falconer_ray.plan.execute import TEACHER_YES

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)

# What each validation reason means, in the reader's words (teacher.validate, teacher.answers).
REJECTION_REASONS = {
    "not_in_document": "not an exact piece of the document's text (reworded or invented)",
    "truncated": "cut off at the answer length limit (the last, unfinished item is dropped)",
    "duplicate": "repeats a piece already found, with no other occurrence left in the document",
    "empty": "empty",
    "too_long": "too long to be a span",
    "not_a_string": "not text (a number, list or object in the JSON answer)",
    "too_many_items": "more items than an answer may hold",
    "invalid_json": "not valid JSON",
    "truncated_json": "JSON cut off at the answer length limit",
}


def annotation_rows(run: RunDir):
    """The teacher's annotations, one dict per document (none when not annotated yet)."""
    if not run.annotations.exists():
        return
    with run.annotations.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def teacher_summary(run: RunDir, plan: Plan, report: dict, stats: dict, cfg) -> dict:
    """Rejected span answers by reason, clipped and windowed documents, and per label step
    the quantiles of the teacher's P(yes) and the share it said yes to.

    `stats` is annotations/stats.json; report.json's teacher block stands in where a run
    has no stats file."""
    block = report.get("teacher") or {}
    scores: dict[str, list[float]] = {s.id: [] for s in plan.label_steps}
    kept = dict.fromkeys((s.id for s in plan.span_steps), 0)
    docs = 0
    for row in annotation_rows(run):
        docs += 1
        for sid in scores:
            v = (row.get("labels") or {}).get(sid)
            if isinstance(v, (int, float)):
                scores[sid].append(float(v))
        for sid in kept:
            kept[sid] += len((row.get("spans") or {}).get(sid) or [])
    failed = stats.get("docs_failed", block.get("docs_failed")) or 0
    rejected = stats.get("rejected", block.get("rejected")) or {}
    rejected = {k: int(v) for k, v in rejected.items() if v}
    n_rejected, n_kept = sum(rejected.values()), sum(kept.values())
    proposed = n_kept + n_rejected
    return {
        "model": (stats.get("teacher") or {}).get("model") or block.get("model"),
        "docs": docs,
        "docs_failed": failed,
        "span_steps": list(kept),
        "span_asked": (docs + failed) * len(kept),
        "spans_kept": kept,
        "spans_proposed": proposed,
        "rejected": [{"reason": k, "n": v, "meaning": REJECTION_REASONS.get(k, k.replace("_", " "))}
                     for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])],
        "rejected_total": n_rejected,
        "rejected_share": n_rejected / proposed if proposed else None,
        "clipped_docs": stats.get("clipped_docs", block.get("clipped_docs")),
        "max_doc_chars": cfg.teacher.max_doc_chars,
        "docs_windowed": report.get("docs_windowed"),
        "docs_in": report.get("docs_in") or 0,
        "window_tokens": cfg.proxy.max_length,
        "stride": cfg.proxy.stride,
        "pooling": cfg.proxy.label_pooling,
        "labels": [label_spread(step.id, scores[step.id]) for step in plan.label_steps],
    }


def label_spread(step_id: str, scores: list[float]) -> dict:
    """Quantiles, interquartile range and yes share of one label step's teacher P(yes)."""
    if not scores:
        return {"step": step_id, "n": 0, "scores": []}
    q = np.quantile(np.asarray(scores), QUANTILES)
    yes = sum(s >= TEACHER_YES for s in scores)
    return {"step": step_id, "n": len(scores), "scores": scores,
            "quantiles": {f"{int(p * 100)}%": float(v) for p, v in zip(QUANTILES, q)},
            "iqr": float(q[3] - q[1]), "q25": float(q[1]), "q75": float(q[3]),
            "yes": yes, "yes_share": yes / len(scores)}
