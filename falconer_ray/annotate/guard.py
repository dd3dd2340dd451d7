"""Calling a teacher so that one bad answer costs one document, never the run.

A teacher is a model behind some backend: a call can raise, time out, or come back
malformed (the wrong number of answers, a probability that is not one, an answer
that is not a list of strings). Documents go to the teacher in small chunks; a
chunk that fails is retried (bounded), then split into single documents so the
failure is pinned on the document that causes it. That document gets a reason and
is left out of the annotations; every other one is annotated as usual. Answers
that parse are returned chunk by chunk, so callers can cache them as they come
and an interrupted annotation pays again only for the chunk in flight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from falconer_ray.teacher.base import Failed, ProgressFn

CHUNK = 16


class Malformed(ValueError):
    """The teacher's output does not have the promised shape."""


def reason_of(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, Malformed):
        return "malformed_output"
    return "teacher_error"


def check_labels(out: Any, n: int) -> list[float | Failed]:
    """n probabilities in [0, 1] (or `Failed` for a document the backend gave up on)."""
    if not isinstance(out, Sequence) or isinstance(out, (str, bytes)) or len(out) != n:
        raise Malformed(f"expected {n} probabilities, got {type(out).__name__} of length {_len(out)}")
    probs = []
    for p in out:
        if isinstance(p, Failed):
            probs.append(p)
            continue
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 <= p <= 1:
            raise Malformed(f"not a probability: {p!r:.40}")
        probs.append(float(p))
    return probs


def check_spans(out: Any, n: int) -> list[list[str] | Failed]:
    """n lists of strings (not yet checked against the documents: validate_spans does),
    or `Failed` for a document the backend gave up on."""
    if not isinstance(out, Sequence) or isinstance(out, (str, bytes)) or len(out) != n:
        raise Malformed(f"expected {n} answer lists, got {type(out).__name__} of length {_len(out)}")
    for items in out:
        if isinstance(items, Failed):
            continue
        if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
            raise Malformed(f"an answer is not a list of strings: {items!r:.60}")
    return [items if isinstance(items, Failed) else list(items) for items in out]


def _len(x: Any) -> str:
    try:
        return str(len(x))
    except TypeError:
        return "none"


def guarded_calls(
    call: Callable[..., Any],
    check: Callable[[Any, int], list],
    texts: list[str],
    instruction: str,
    retries: int = 1,
    on_progress: ProgressFn | None = None,
    chunk: int = CHUNK,
) -> Iterator[tuple[list[int], list, dict[int, tuple[str, str]]]]:
    """Yield (indices, answers, failures) per chunk of `texts`.

    `answers[j]` answers `texts[indices[j]]`; `failures` maps an index to
    (reason, detail) for documents the teacher could not answer after `retries`
    more tries, alone. Reasons: timeout, malformed_output, teacher_error.
    """
    done = 0

    def attempt(idx: list[int]) -> tuple[list | None, BaseException | None]:
        error: BaseException | None = None
        for _ in range(1 + max(0, retries)):
            try:
                base = done
                tick = (lambda k: on_progress(base + k)) if on_progress and len(idx) > 1 else None
                return check(call([texts[i] for i in idx], instruction, on_progress=tick), len(idx)), None
            except Exception as e:  # a backend's failure of any kind is data about one chunk
                error = e
        return None, error

    for start in range(0, len(texts), chunk):
        idx = list(range(start, min(start + chunk, len(texts))))
        answers, error = attempt(idx)
        failures: dict[int, tuple[str, str]] = {}
        if answers is None:
            kept, answers = [], []
            for i in (idx if len(idx) > 1 else []):
                one, err = attempt([i])
                if one is None:
                    failures[i] = (reason_of(err), f"{type(err).__name__}: {err}"[:300])
                else:
                    kept.append(i), answers.append(one[0])
            if len(idx) == 1:
                failures[idx[0]] = (reason_of(error), f"{type(error).__name__}: {error}"[:300])
            idx = kept
        done += len(idx) + len(failures)
        if on_progress:
            on_progress(done)
        yield idx, answers, failures
