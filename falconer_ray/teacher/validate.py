"""Turn a teacher's free-text span answer into trustworthy character spans.

A small teacher paraphrases, quotes, invents and repeats. The proxy must only
ever learn from text that is literally in the document, so every answer becomes
a piece of the document: an exact substring first; failing that, the same
characters up to case ("Ray Rice" for "ray rice"), then without trailing
punctuation ("Jr." for "Jr"), then with other whitespace ("Jr ." for "Jr.").
The span is always the document's own characters. Anything else is dropped
*and counted*, so a run report can say how noisy the teacher was.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from falconer_ray.spans import Span

QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
TRAILING = ".,;:!?"
NONE_ANSWERS = {"none", "none.", "n/a", "nothing", "no"}
MAX_ITEMS = 8
MAX_SPAN_CHARS = 200
MAX_ANSWER_CHARS = 2000


def parse_span_answer(
    text: str, max_items: int = MAX_ITEMS, max_chars: int = MAX_ANSWER_CHARS
) -> list[str]:
    """Split a `a | b | c` / `none` answer line into raw items.

    Tolerant (extra spaces, a trailing "none" filler, text after the first line
    is ignored) but safe: looks at most `max_chars` characters of the first
    line and returns at most `max_items` items. Items are not checked against
    any document here; `validate_spans` does that.
    """
    line = text[:max_chars].lstrip().split("\n", 1)[0].strip()
    if line.lower() in NONE_ANSWERS:
        return []
    items = [p.strip() for p in line.split("|")]
    return [p for p in items if p and p.lower() not in NONE_ANSWERS][:max_items]


def _clean(raw: str) -> str:
    s = raw.strip()
    while len(s) >= 2 and s[0] in QUOTES and s[-1] in QUOTES:
        s = s[1:-1].strip()
    return s


def _occurrences(doc: str, s: str) -> Iterator[tuple[int, int]]:
    """Where `s` is in `doc`, by the strictest reading that finds it at all: as written,
    up to case, without trailing punctuation (each way), then with any whitespace."""
    cut = s.rstrip(TRAILING).rstrip()
    readings = [(re.escape(s), 0), (re.escape(s), re.IGNORECASE)]
    if cut and cut != s:
        readings += [(re.escape(cut), 0), (re.escape(cut), re.IGNORECASE)]
    readings.append((r"\s*".join(re.escape(ch) for ch in (cut or s) if not ch.isspace()), re.IGNORECASE))
    for pattern, flags in readings:
        found = [(m.start(), m.end()) for m in re.finditer(pattern, doc, flags) if m.end() > m.start()]
        if found:
            yield from found
            return


def validate_spans(
    doc: str, raw: list[str], max_chars: int = MAX_SPAN_CHARS
) -> tuple[list[Span], dict[str, int]]:
    """The raw answers that are pieces of `doc` (see the module docstring), with offsets.

    Rejection reasons: "empty", "too_long" (> max_chars), "not_in_document",
    "duplicate" (in the document, but every occurrence already claimed by an
    earlier answer). Spans come back sorted by position.
    """
    spans: list[Span] = []
    rejected: Counter[str] = Counter()
    taken: set[tuple[int, int]] = set()
    for item in raw:
        s = _clean(item) if isinstance(item, str) else ""
        if not s:
            rejected["empty"] += 1
            continue
        if len(s) > max_chars:
            rejected["too_long"] += 1
            continue
        where = list(_occurrences(doc, s))
        free = next((w for w in where if w not in taken), None)
        if free is None:
            rejected["duplicate" if where else "not_in_document"] += 1
            continue
        taken.add(free)
        spans.append(Span(free[0], free[1], doc[free[0] : free[1]]))
    spans.sort(key=lambda sp: (sp.start, sp.end))
    return spans, dict(rejected)
