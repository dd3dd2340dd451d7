"""Character-offset spans: the one currency every stage trades extracted text in.

A span is only ever valid against the exact document string it came from: `text`
must equal `doc[start:end]`. Keeping offsets (not just strings) lets results point
back into the corpus and lets metrics compare positions, not just surface forms.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str
    score: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def locate(doc: str, fragment: str, taken: set[tuple[int, int]] | None = None) -> Span | None:
    """Find `fragment` as an exact substring of `doc`; None when it is not there.

    Repeated fragments map to successive occurrences not already `taken`, so an LLM
    answer listing the same name twice yields two distinct positions when the text
    has two, and one when it has one.
    """
    if not fragment or not fragment.strip():
        return None
    start = doc.find(fragment)
    while start != -1:
        key = (start, start + len(fragment))
        if taken is None or key not in taken:
            if taken is not None:
                taken.add(key)
            return Span(start, start + len(fragment), fragment)
        start = doc.find(fragment, start + 1)
    return None


def span_f1(predicted: list[list[tuple[int, int]]], gold: list[list[tuple[int, int]]]) -> float:
    """Exact-match micro F1 over (start, end) pairs, per document then pooled."""
    tp = fp = fn = 0
    for pred_doc, gold_doc in zip(predicted, gold, strict=True):
        p, g = set(map(tuple, pred_doc)), set(map(tuple, gold_doc))
        tp += len(p & g)
        fp += len(p - g)
        fn += len(g - p)
    if tp == 0 and fp == 0 and fn == 0:
        return 1.0
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0
