"""The one interface every teacher backend implements.

The rest of the system (annotation cache, planner, proxy training) only ever talks
to a `Teacher`, so an embedded llama.cpp model, an OpenAI-compatible endpoint or a
vLLM engine are interchangeable. Nothing here may mention a specific backend.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, runtime_checkable

ProgressFn = Callable[[int], None]
"""Called with the number of documents finished so far, after each document."""


@dataclass
class TeacherStats:
    """What the teacher cost: the numbers a run report needs to price annotation."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, n: int = 1) -> None:
        if n:
            self.rejected[reason] = self.rejected.get(reason, 0) + n

    def merge(self, other: "TeacherStats") -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.seconds += other.seconds
        self.rejected = dict(Counter(self.rejected) + Counter(other.rejected))

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Teacher(Protocol):
    """An LLM that annotates documents for the two primitives.

    `name` identifies model *and* prompting (it is part of every cache key, so two
    teachers that could answer differently must have different names).
    `max_doc_chars` is how much of each document the teacher sees; callers clip with
    `falconer_ray.teacher.prompts.clip_document` to learn exactly what was shown.
    """

    name: str
    max_doc_chars: int
    stats: TeacherStats

    def label(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[float]:
        """P(yes): probability that each text satisfies `instruction`."""
        ...

    def extract(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[list[str]]:
        """Raw answer strings per text; NOT validated against the text yet."""
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
