"""The annotation stage: the teacher labels a sample of the corpus for every step.

Every sampled document gets every label step (P(yes)). Span steps go to the documents
the teacher's own labels keep, as mining extracts only from the documents the plan
keeps: that is where the proxy's span head works, and a span call costs the most. When
fewer than `min_span_docs` are kept, others are added in sample order so the span head
still has examples. The documents are split into train and held-out by id; held-out
ones measure proxy-vs-teacher agreement later.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from falconer_ray.annotate import AnnotationCache, cached_extract, cached_label
from falconer_ray.config import RunConfig
from falconer_ray.corpus.sample import is_heldout
from falconer_ray.cost.baseline import seconds_per_document, teacher_per_op
from falconer_ray.plan.execute import TEACHER_YES
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import progress
from falconer_ray.rundir import RunDir, write_json
from falconer_ray.teacher.base import TeacherStats
from falconer_ray.teacher.prompts import clip_document


def annotate_documents(docs: list[dict], plan: Plan, teacher, cfg: RunConfig, run: RunDir) -> dict:
    """Annotate `docs` ({doc_id, text}) for every step; write annotations.jsonl and stats.

    A document the teacher failed on for any step (timeouts, rate limits, an
    unusable answer) goes to annotations/errors.jsonl with the reasons instead:
    the proxy never learns from a half-annotated document.
    """
    cache = AnnotationCache(Path(cfg.cache_dir) / "annotations.sqlite")
    texts = [d["text"] for d in docs]
    shown = [clip_document(t, teacher.max_doc_chars) for t in texts]  # what the teacher sees, and the proxy learns
    labels: dict[str, list] = {}
    spans: dict[str, dict[int, list]] = {}
    span_docs: list[int] = []
    calls, rejected = Counter(), Counter()
    spent_by_op = {"label": TeacherStats(), "span": TeacherStats()}
    failed: dict[int, dict] = {}  # doc index -> the first step the teacher failed on
    started = time.monotonic()
    before = teacher.stats.snapshot()
    retries = cfg.teacher.retries
    for op, steps, ask in (("label", plan.label_steps, cached_label), ("span", plan.span_steps, cached_extract)):
        if op == "span":
            span_docs = span_documents(plan, labels, failed, len(docs), cfg.min_span_docs)
        at = span_docs if op == "span" else list(range(len(docs)))
        for step in steps:
            step_before = teacher.stats.snapshot()
            with progress(f"teacher {step.op} '{step.id}'", len(at)) as advance:
                out = ask(teacher, cache, [texts[i] for i in at], step.instruction, on_progress=_absolute(advance),
                          retries=retries)
            spent_by_op[op].merge(teacher.stats.since(step_before))
            calls[op] += out.calls
            if op == "label":
                labels[step.id] = out.probs
            else:
                spans[step.id] = dict(zip(at, out.spans))
                rejected.update(out.rejected)
            _note_errors(failed, step, {at[j]: f for j, f in out.errors.items()})
    cache.close()

    run.annotations_dir.mkdir(parents=True, exist_ok=True)
    _write_errors(run, docs, failed)
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
                # only the span steps asked of this document (see span_documents)
                "spans": {k: [s.to_dict() for s in v[i]] for k, v in spans.items() if i in v},
            }
            f.write(json.dumps(row) + "\n")
    tmp.replace(run.annotations)

    spent = teacher.stats.since(before)
    teacher_seconds = spent.seconds
    # per call of each kind, from the calls paid for: cache hits cost nothing and say nothing
    per_op = teacher_per_op(dict(calls), {k: v.seconds for k, v in spent_by_op.items()},
                            {k: v.prompt_tokens for k, v in spent_by_op.items()},
                            {k: v.completion_tokens for k, v in spent_by_op.items()})
    per_doc_s = seconds_per_document(per_op, len(plan.label_steps), len(plan.span_steps))
    ok = [d for i, d in enumerate(docs) if i not in failed]
    kept = [plan.keeps({k: v[i] >= TEACHER_YES for k, v in labels.items()}) for i in range(len(docs)) if i not in failed]
    stats = {
        "teacher": {"model": teacher.name, "calls": sum(calls.values()), "calls_by_op": dict(calls),
                    "seconds": round(teacher_seconds, 3),
                    # documents annotated for every step per teacher second
                    "docs_per_s": round(1 / per_doc_s, 4) if per_doc_s > 0 and len(per_op) == len(
                        {s.op for s in plan.steps}) else None,
                    "per_op": per_op,
                    "stats": spent.to_dict()},
        "keep_fraction": round(sum(kept) / len(kept), 4) if kept else None,
        "docs": len(ok),
        "docs_failed": len(failed),
        "errors_by_reason": dict(Counter(f["reason"] for f in failed.values())),
        "heldout": sum(is_heldout(d["doc_id"], cfg.seed, cfg.train.heldout) for d in ok),
        "cached": {"label": len(texts) * len(plan.label_steps) - calls["label"],
                   "span": len(span_docs) * len(plan.span_steps) - calls["span"]},
        "span_docs": len(span_docs),
        "rejected_spans": dict(rejected),
        "rejected": dict(Counter(spent.rejected) + Counter(rejected)),
        "clipped_docs": sum(len(s) < len(t) for s, t in zip(shown or [], texts)),
        "wall_s": round(time.monotonic() - started, 3),
    }
    write_json(run.annotation_stats, stats)
    if docs and not ok:
        reasons = ", ".join(f"{k}: {v}" for k, v in stats["errors_by_reason"].items())
        first = next(iter(failed.values()))["detail"]
        raise ValueError(f"the teacher failed on every one of {len(docs)} documents ({reasons}); first: {first}; "
                         f"details in {run.annotation_errors}")
    return stats


def span_documents(plan: Plan, labels: dict[str, list], failed: dict[int, dict], n: int, least: int) -> list[int]:
    """The documents the span steps are asked about: those the teacher's labels keep
    (all of them when the plan filters nothing), then others in sample order up to
    `least`; never one the teacher already failed on."""
    answered = [i for i in range(n) if i not in failed]
    if not plan.label_steps or plan.keep is None:
        return answered
    kept = [i for i in answered if plan.keeps({k: v[i] >= TEACHER_YES for k, v in labels.items()})]
    if len(kept) >= least:
        return kept
    taken = set(kept)
    return sorted(kept + [i for i in answered if i not in taken][:least - len(kept)])


def _note_errors(failed: dict[int, dict], step, errors: dict) -> None:
    for i, f in errors.items():
        failed.setdefault(i, {"step": step.id, "op": step.op, "reason": f.reason, "detail": f.detail})


def _write_errors(run: RunDir, docs: list[dict], failed: dict[int, dict]) -> None:
    """annotations/errors.jsonl: one row per sampled document the teacher could not
    annotate, with the first step it failed on (empty when none)."""
    tmp = run.annotation_errors.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for i in sorted(failed):
            f.write(json.dumps({"doc_id": docs[i]["doc_id"], **failed[i]}) + "\n")
    tmp.replace(run.annotation_errors)


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
