"""Cached, validated teacher annotation: the only way the pipeline should call a teacher.

Both helpers clip each document to what the teacher sees, look the answers up in
the cache, send only the misses to the teacher (one batch), store them, and
return the results together with `shown` (the exact texts the teacher judged:
train the proxy on these) and `calls` (teacher documents actually paid for).
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from falconer_ray.annotate.cache import AnnotationCache, cache_key
from falconer_ray.annotate.guard import check_labels, check_spans, guarded_calls
from falconer_ray.teacher.validate import parse_span_answer, validate_spans
from falconer_ray.spans import Span
from falconer_ray.teacher.base import Failed, ProgressFn, Teacher
from falconer_ray.teacher.prompts import clip_document, label_view

__all__ = [
    "AnnotationCache",
    "Labels",
    "Extractions",
    "cached_label",
    "cached_extract",
    "cache_key",
    "parse_span_answer",
    "validate_spans",
]


class Labels(NamedTuple):
    probs: list[float | None]  # P(yes) per input text; None where the teacher failed
    calls: int  # documents sent to the teacher (cache misses)
    shown: list[str]  # the clipped text the teacher saw, per input
    errors: dict[int, Failed] = {}  # input index -> why the teacher gave no answer


class Extractions(NamedTuple):
    spans: list[list[Span] | None]  # validated spans, offsets into `shown[i]`; None where it failed
    calls: int
    rejected: dict[str, int]  # validation rejections over this batch, by reason
    shown: list[str]
    errors: dict[int, Failed] = {}


def _lookup(teacher: Teacher, cache: AnnotationCache | None, op: str, texts, instruction):
    view = label_view if op == "label" else clip_document
    shown = [view(t, teacher.max_doc_chars) for t in texts]
    keys = [cache_key(getattr(teacher, "cache_id", teacher.name), op, instruction, s) for s in shown]
    hits = cache.get_many(keys) if cache is not None else {}
    # Deduplicate misses: identical documents cost one call.
    misses = list(dict.fromkeys(k for k in keys if k not in hits))
    first = {}
    for k, s in zip(keys, shown):
        first.setdefault(k, s)
    return shown, keys, hits, misses, [first[k] for k in misses]


def _offset(on_progress: ProgressFn | None, done: int) -> ProgressFn | None:
    """Progress counts cached documents as already done."""
    if on_progress is None:
        return None
    if done:
        on_progress(done)
    return lambda n: on_progress(done + n)


def _ask(teacher, teacher_call, check, cache, op, keys, hits, misses, todo, instruction, on_progress, done, retries):
    """Send the misses through `guarded_calls`, caching answers chunk by chunk; returns
    failures by cache key. A `Failed` answer (a remote backend's per-document timeout,
    rate limit or bad response) is a failure too, and is never cached."""
    failed: dict[str, Failed] = {}
    chunk = teacher.call_chunk or max(1, len(todo))
    for idx, answers, failures in guarded_calls(teacher_call, check, todo, instruction, retries,
                                                _offset(on_progress, done), chunk=chunk):
        fresh = {misses[i]: a for i, a in zip(idx, answers) if not isinstance(a, Failed)}
        failed.update({misses[i]: a for i, a in zip(idx, answers) if isinstance(a, Failed)})
        if cache is not None and fresh:
            cache.put_many(fresh, op=op)
        hits.update(fresh)
        failed.update({misses[i]: Failed(*why) for i, why in failures.items()})
    return failed


def cached_label(
    teacher: Teacher,
    cache: AnnotationCache | None,
    texts: list[str],
    instruction: str,
    on_progress: ProgressFn | None = None,
    retries: int = 1,
) -> Labels:
    """P(yes) per text, calling the teacher only for uncached documents; a document
    the teacher fails on gets None and a reason in `failed`."""
    shown, keys, hits, misses, todo = _lookup(teacher, cache, "label", texts, instruction)
    failed = _ask(teacher, teacher.label, check_labels, cache, "label", keys, hits, misses, todo, instruction,
                  on_progress, len(texts) - len(todo), retries) if todo else {}
    probs = [None if k in failed else float(hits[k]) for k in keys]
    return Labels(probs, len(todo), shown, {i: failed[k] for i, k in enumerate(keys) if k in failed})


def cached_extract(
    teacher: Teacher,
    cache: AnnotationCache | None,
    texts: list[str],
    instruction: str,
    on_progress: ProgressFn | None = None,
    retries: int = 1,
) -> Extractions:
    """Validated spans per text; raw answers are cached, validation re-runs on read."""
    shown, keys, hits, misses, todo = _lookup(teacher, cache, "span", texts, instruction)
    failed = _ask(teacher, teacher.extract, check_spans, cache, "span", keys, hits, misses, todo, instruction,
                  on_progress, len(texts) - len(todo), retries) if todo else {}
    spans: list[list[Span] | None] = []
    rejected: Counter[str] = Counter()
    for k, s in zip(keys, shown):
        if k in failed:
            spans.append(None)
            continue
        ok, bad = validate_spans(s, list(hits[k]))
        spans.append(ok)
        rejected.update(bad)
    return Extractions(spans, len(todo), dict(rejected), shown,
                       {i: failed[k] for i, k in enumerate(keys) if k in failed})
