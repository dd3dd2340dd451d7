"""The teacher as an `Answerer` (see `falconer_ray.plan.execute`): cached, validated
answers, and a failure as a reason instead of an exception."""

from __future__ import annotations

from falconer_ray.annotate import AnnotationCache, cached_extract, cached_label
from falconer_ray.plan.execute import TEACHER_YES
from falconer_ray.spans import Span


class TeacherAnswers:
    threshold = TEACHER_YES

    def __init__(self, teacher, cache: AnnotationCache | None):
        self.teacher, self.cache = teacher, cache

    def labels(self, texts: list[str], instruction: str) -> list[float | None]:
        return cached_label(self.teacher, self.cache, texts, instruction).probs

    def spans(self, texts: list[str], instruction: str) -> tuple[list[list[Span] | None], list[float], dict[int, str]]:
        got = cached_extract(self.teacher, self.cache, texts, instruction)
        errors = {i: f"teacher_{f.reason}: {f.detail}"[:500] for i, f in got.errors.items()}
        return got.spans, [1.0] * len(texts), errors

    def windows(self) -> list[int]:
        return []
