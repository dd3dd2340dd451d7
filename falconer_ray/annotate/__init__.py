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
from falconer_ray.annotate.validate import parse_span_answer, validate_spans
from falconer_ray.spans import Span
from falconer_ray.teacher.base import Failed, ProgressFn, Teacher
from falconer_ray.teacher.prompts import DEFAULT_MAX_DOC_CHARS, clip_document

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
    shown = [clip_document(t, getattr(teacher, "max_doc_chars", DEFAULT_MAX_DOC_CHARS)) for t in texts]
    keys = [cache_key(teacher.name, op, instruction, s) for s in shown]
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


def cached_label(
    teacher: Teacher,
    cache: AnnotationCache | None,
    texts: list[str],
    instruction: str,
    on_progress: ProgressFn | None = None,
) -> Labels:
    """P(yes) per text, calling the teacher only for uncached documents."""
    shown, keys, hits, misses, todo = _lookup(teacher, cache, "label", texts, instruction)
    if todo:
        probs = teacher.label(todo, instruction, on_progress=_offset(on_progress, len(texts) - len(todo)))
        fresh = dict(zip(misses, probs))
        _store(cache, fresh, "label")
        hits.update(fresh)
    errors = {i: hits[k] for i, k in enumerate(keys) if isinstance(hits[k], Failed)}
    probs = [None if i in errors else float(hits[k]) for i, k in enumerate(keys)]
    return Labels(probs, len(todo), shown, errors)


def cached_extract(
    teacher: Teacher,
    cache: AnnotationCache | None,
    texts: list[str],
    instruction: str,
    on_progress: ProgressFn | None = None,
) -> Extractions:
    """Validated spans per text; raw answers are cached, validation re-runs on read."""
    shown, keys, hits, misses, todo = _lookup(teacher, cache, "span", texts, instruction)
    if todo:
        fresh = dict(zip(misses, teacher.extract(
            todo, instruction, on_progress=_offset(on_progress, len(texts) - len(todo))
        )))
        _store(cache, fresh, "span")
        hits.update(fresh)
    spans: list[list[Span] | None] = []
    rejected: Counter[str] = Counter()
    errors: dict[int, Failed] = {}
    for i, (k, s) in enumerate(zip(keys, shown)):
        if isinstance(hits[k], Failed):
            errors[i] = hits[k]
            spans.append(None)
            continue
        ok, bad = validate_spans(s, list(hits[k]))
        spans.append(ok)
        rejected.update(bad)
    return Extractions(spans, len(todo), dict(rejected), shown, errors)


def _store(cache: AnnotationCache | None, fresh: dict, op: str) -> None:
    """Cache real answers only: a failed call is asked again on the next run."""
    if cache is not None:
        cache.put_many({k: v for k, v in fresh.items() if not isinstance(v, Failed)}, op=op)
