"""Running a plan over documents: one definition for the proxy and every teacher.

Anything that answers the two primitives (`Answerer`: P(yes) per text for a label
step, spans per text for a span step) runs a plan the same way: every label step on
every text, the plan's `keep` condition, then each span step on the kept texts only.
Mining, serving, the cascade, the int8 check and the quote all call `apply_plan`, so a
document gets the same answer wherever it is asked, and `Answer.differs` is the one
meaning of "a different answer".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from falconer_ray.config import RunConfig
from falconer_ray.plan.schema import Plan
from falconer_ray.spans import Span

TEACHER_YES = 0.5  # a teacher's P(yes) at or above it is a yes
SPAN_TYPE = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()), ("score", pa.float64())]))


class Answerer(Protocol):
    """What runs a plan's steps: the proxy (`ProxyAnswers`) or a teacher (`annotate.TeacherAnswers`)."""

    threshold: float  # a label score at or above it is a yes

    def labels(self, texts: list[str], instruction: str) -> list[float | None]:
        """P(yes) per text; None where no answer could be had."""

    def spans(self, texts: list[str], instruction: str) -> tuple[list[list[Span] | None], list[float], dict[int, str]]:
        """Spans per text (None where it failed), a confidence per text, and why each failure happened."""

    def windows(self) -> list[int]:
        """Model windows each text of the last call took (empty when not known)."""


@dataclass(frozen=True)
class Answer:
    """One document's answer to a plan: every label score, whether `keep` holds, and
    (only when kept) the spans of every span step."""

    kept: bool
    labels: dict[str, float]
    spans: dict[str, list[Span]]
    # Lowest confidence over the answer's parts: each label's chosen side and, when
    # kept, each span step's tokens. The cascade sends documents below its threshold
    # to the teacher.
    confidence: float = 1.0
    windows: int = 1  # model windows the document took: > 1 for a long document
    said_yes: dict[str, bool] = field(default_factory=dict)  # each label at its answerer's threshold
    answered: bool = True  # False: a label step got no answer, so the plan could not decide
    error: str | None = None  # why a kept document has no spans (the answerer failed on it)

    def differs(self, other: Answer, plan: Plan) -> bool:
        """Whether the two answers would read differently: kept or not, a label on the
        other side of its threshold, or other spans (by offsets) on a kept document."""
        if self.kept != other.kept:
            return True
        if any(self.said_yes.get(s.id) != other.said_yes.get(s.id) for s in plan.label_steps):
            return True
        offsets = lambda a, sid: {(s.start, s.end) for s in a.spans.get(sid, [])}  # noqa: E731
        return any(offsets(self, s.id) != offsets(other, s.id) for s in plan.span_steps)

    def to_dict(self) -> dict:
        return {"kept": self.kept, "labels": self.labels,
                "spans": {k: [s.to_dict() for s in v] for k, v in self.spans.items()}}


def apply_plan(answerer: Answerer, plan: Plan, texts: list[str]) -> list[Answer]:
    """Labels for every text, the `keep` condition, then spans for the kept texts only.
    Texts go through each step together, so callers pass whole batches."""
    if not texts:
        return []
    labels: list[dict[str, float]] = [{} for _ in texts]
    confidence = [1.0] * len(texts)
    said_yes: list[dict[str, bool]] = [{} for _ in texts]
    unanswered: set[int] = set()
    windows: list[int] = []
    for step in plan.label_steps:
        scores = answerer.labels(texts, step.instruction)
        for j, score in enumerate(scores):
            if score is None:
                unanswered.add(j)
                continue
            score = float(score)  # decide on the stored float64 score, not a float32 one
            labels[j][step.id] = score
            said_yes[j][step.id] = score >= answerer.threshold
            confidence[j] = min(confidence[j], max(score, 1.0 - score))
        windows = windows or answerer.windows()
    kept = [j not in unanswered and plan.keeps(yes) for j, yes in enumerate(said_yes)]
    kept_at = [j for j, k in enumerate(kept) if k]
    spans: list[dict[str, list[Span]]] = [{} for _ in texts]
    errors: dict[int, str] = {}
    for step in plan.span_steps:
        found, sure, failed = answerer.spans([texts[j] for j in kept_at], step.instruction) if kept_at else ([], [], {})
        for i, (j, doc_spans, c) in enumerate(zip(kept_at, found, sure)):
            if doc_spans is None:
                errors.setdefault(j, failed.get(i, "no answer"))
                continue
            spans[j][step.id] = doc_spans
            confidence[j] = min(confidence[j], float(c))
        if not windows and len(kept_at) == len(texts):
            windows = answerer.windows()
    windows = windows or [1] * len(texts)
    return [Answer(kept[j], labels[j], spans[j], confidence[j], windows[j], said_yes[j], j not in unanswered,
                   errors.get(j)) for j in range(len(texts))]


class ProxyAnswers:
    """The proxy as an `Answerer`, with the run's pooling and thresholds."""

    def __init__(self, proxy, cfg: RunConfig):
        self.proxy, self.cfg = proxy, cfg
        self.threshold = cfg.mine.label_threshold

    def labels(self, texts: list[str], instruction: str) -> list[float]:
        return list(self.proxy.label_scores(texts, instruction, pooling=self.cfg.proxy.label_pooling))

    def spans(self, texts: list[str], instruction: str) -> tuple[list[list[Span]], list[float], dict[int, str]]:
        found, sure = self.proxy.extract_with_confidence(texts, instruction, threshold=self.cfg.mine.span_threshold)
        return found, sure, {}

    def windows(self) -> list[int]:
        return list(getattr(self.proxy, "last_windows", []))


def from_annotation(plan: Plan, row: dict) -> Answer:
    """The teacher's answer as an annotation row holds it (labels as P(yes), spans as dicts)."""
    said_yes = {s.id: row["labels"][s.id] >= TEACHER_YES for s in plan.label_steps}
    kept = plan.keeps(said_yes)
    spans = {s.id: [Span(x["start"], x["end"], x.get("text", ""), x.get("score", 1.0)) for x in row["spans"][s.id]]
             for s in plan.span_steps} if kept else {}
    return Answer(kept, {s.id: row["labels"][s.id] for s in plan.label_steps}, spans, said_yes=said_yes)


def output_schema(plan: Plan, keep_text: bool, cascade: bool = False, routed_text: bool = False) -> pa.Schema:
    """Result columns; with the cascade, `source` (proxy / teacher) and the proxy's
    `confidence`, and between the two stages the text of rows routed to the teacher."""
    fields = [("doc_id", pa.string()), ("status", pa.string()), ("error", pa.string())]
    fields += [(s.column, pa.float64()) for s in plan.label_steps]
    fields += [(s.column, SPAN_TYPE) for s in plan.span_steps]
    if keep_text:
        fields.append(("text", pa.string()))
    if cascade:
        fields += [("source", pa.string()), ("confidence", pa.float64())]
    if routed_text:
        fields.append(("_text", pa.string()))
    return pa.schema(fields)


def fill(out: dict[str, list], plan: Plan, i: int, answer: Answer) -> None:
    """Write one answer into row `i` of column lists: label scores always, status, and
    the spans of a kept document (or its error)."""
    for step in plan.label_steps:
        if step.id in answer.labels:
            out[step.column][i] = answer.labels[step.id]
    for step in plan.span_steps:
        out[step.column][i] = None
    if answer.error is not None:
        out["status"][i], out["error"][i] = "error", answer.error
    elif answer.kept:
        out["status"][i] = "kept"
        for step in plan.span_steps:
            if step.id in answer.spans:
                out[step.column][i] = [s.to_dict() for s in answer.spans[step.id]]
    else:
        out["status"][i] = "filtered"
