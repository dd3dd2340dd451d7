"""The one interface every teacher backend implements.

The rest of the system (annotation cache, planner, proxy training) only ever talks
to a `Teacher`, so an embedded llama.cpp model, an OpenAI-compatible endpoint or a
vLLM engine are interchangeable. Nothing here may mention a specific backend.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Protocol, Union, runtime_checkable

ProgressFn = Callable[[int], None]
"""Called with the number of documents finished so far, after each document."""


@dataclass(frozen=True)
class Failed:
    """Stands in for one document's answer when the teacher could not give one.

    A remote teacher can time out, be rate limited or answer garbage; that must
    cost one document (reported with its reason), never the whole batch. Failed
    answers are never cached, so a rerun asks again.
    """

    reason: str
    detail: str = ""


LabelResult = Union[float, Failed]
SpanResult = Union[list, Failed]


@dataclass
class TeacherStats:
    """What the teacher cost: the numbers a run report needs to price annotation."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, n: int = 1) -> None:
        if n:
            self.rejected[reason] = self.rejected.get(reason, 0) + n

    def error(self, reason: str, n: int = 1) -> None:
        if n:
            self.errors[reason] = self.errors.get(reason, 0) + n

    def merge(self, other: "TeacherStats") -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds
        self.rejected = dict(Counter(self.rejected) + Counter(other.rejected))
        self.errors = dict(Counter(self.errors) + Counter(other.errors))

    def snapshot(self) -> "TeacherStats":
        return replace(self, rejected=dict(self.rejected), errors=dict(self.errors))

    def since(self, before: "TeacherStats") -> "TeacherStats":
        """What was spent after `before` (a snapshot of these stats) was taken."""
        return TeacherStats(
            calls=self.calls - before.calls,
            prompt_tokens=self.prompt_tokens - before.prompt_tokens,
            completion_tokens=self.completion_tokens - before.completion_tokens,
            seconds=self.seconds - before.seconds,
            rejected=dict(Counter(self.rejected) - Counter(before.rejected)),
            errors=dict(Counter(self.errors) - Counter(before.errors)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Teacher(Protocol):
    """An LLM that annotates documents for the two primitives.

    `name` identifies model *and* prompting for people; `cache_id`, where a teacher has
    one, adds what tells two such teachers apart (the endpoint, the weights' SHA-256)
    and keys the annotation cache instead, so two teachers that could answer
    differently never share answers.
    `max_doc_chars` is how much of each document the teacher sees; callers clip with
    `falconer_ray.teacher.prompts.clip_document` to learn exactly what was shown.
    `call_chunk` is how many documents one call should carry, so that progress and the
    cache move while a slow in-process model works; None sends them all at once (a
    backend that batches and parallelizes by itself).
    """

    name: str
    max_doc_chars: int
    call_chunk: int | None
    stats: TeacherStats

    def label(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[LabelResult]:
        """P(yes): probability that each text satisfies `instruction` (or `Failed`)."""
        ...

    def extract(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[SpanResult]:
        """Raw answer strings per text (or `Failed`); NOT validated against the text yet."""
        ...

    def complete(
        self,
        prompt: str,
        max_tokens: int,
        stop: list[str] | None = None,
        grammar: str | None = None,
    ) -> str:
        """Plain (optionally GBNF-constrained) completion, for the planner."""
        ...
