"""Instruction + document windowing and BIO tags for the proxy encoder.

The proxy reads ``[instruction] [SEP] [document]`` pairs. Documents longer than the
model's window are split into overlapping windows (never truncated), so every
character of the corpus is seen; predictions from the windows of one document are
stitched back together by character offsets. Offsets are always into the original
document string, so spans come back as exact substrings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from falconer_ray.proxy.fast_tokenizer import as_fast
from falconer_ray.spans import Span

MIN_TEXT_TOKENS = 32
O, B, I = 0, 1, 2
IGNORE = -100


@dataclass
class Window:
    """One tokenized (instruction, slice of document) pair.

    ``offsets[i]`` is the (start, end) character range in the document for text
    tokens and None for instruction, special and padding tokens; ``offsets`` is
    None altogether when the window was encoded without them.
    """

    doc_index: int
    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] | None
    offsets: list[tuple[int, int] | None] | None

    def __len__(self) -> int:
        return len(self.input_ids)

    def text_range(self) -> tuple[int, int] | None:
        """Character range of the document this window covers (None if no text)."""
        spans = [o for o in self.offsets if o is not None]
        return (spans[0][0], spans[-1][1]) if spans else None


def text_budget(tokenizer, instruction: str, max_length: int) -> int:
    """Number of document tokens that fit in one window next to `instruction`."""
    tok = as_fast(tokenizer)
    return max_length - tok.specials(pair=True) - tok.count(instruction)


def encode_windows(
    tokenizer, instruction: str, texts: list[str], max_length: int = 256, stride: int = 64,
    with_offsets: bool = True,
) -> list[Window]:
    """Tokenize every (instruction, text) pair into overlapping windows.

    Consecutive windows of a document share `stride` text tokens, so a span cut by
    one window's edge appears whole in its neighbour. Needs a fast tokenizer
    (offset mapping): a transformers one, or a `FastTokenizer`. Raises ValueError
    when the instruction leaves fewer than MIN_TEXT_TOKENS text tokens per window,
    rather than silently dropping text. `with_offsets=False` skips character
    offsets (window.offsets is None): label scoring needs none, and building them
    is most of the tokenization cost.
    """
    tok = as_fast(tokenizer)
    budget = text_budget(tok, instruction, max_length)
    if budget < MIN_TEXT_TOKENS:
        raise ValueError(
            f"instruction is too long: it leaves {budget} document tokens per window "
            f"(max_length={max_length}); need at least {MIN_TEXT_TOKENS}. "
            "Shorten the instruction or raise max_length."
        )
    if not 0 <= stride < budget:
        raise ValueError(f"stride={stride} must be in [0, {budget}) for this instruction and max_length")
    if not texts:
        return []
    windows = []
    for doc_index, encodings in enumerate(tok.pairs(instruction, list(texts), max_length, stride)):
        for e in encodings:
            offsets = None
            if with_offsets:
                offsets = [(s, t) if sid == 1 and t > s else None for sid, (s, t) in zip(e.sequence_ids, e.offsets)]
            windows.append(Window(doc_index=doc_index, input_ids=e.ids, attention_mask=e.attention_mask,
                                  token_type_ids=e.type_ids if tok.types else None, offsets=offsets))
    return windows


def bio_tags(window: Window, spans: list[tuple[int, int]]) -> list[int]:
    """Per-token BIO targets for gold character spans (-100 on non-text tokens).

    A token belongs to a span when their character ranges overlap; the first such
    token in this window is B, even when the span began in a previous window.
    """
    tags = []
    prev = None
    for off in window.offsets:
        if off is None:  # keeps `prev`: empty tokens (a bare BPE "Ġ") can sit inside a span
            tags.append(IGNORE)
            continue
        hit = next((k for k, (s, e) in enumerate(spans) if off[0] < e and off[1] > s), None)
        if hit is None:
            tags.append(O)
        else:
            tags.append(I if hit == prev else B)
        prev = hit
    return tags


def decode_spans(window: Window, tag_probs: np.ndarray, text: str) -> list[Span]:
    """Greedy BIO decoding of one window's tag probabilities into document spans.

    An I following O starts a span (tolerant of a missed B). Non-text tokens are
    skipped without closing a span. Score is the mean over the span's tokens of
    max(P(B), P(I)). Vectorized: only the (few) non-O text tokens are visited.
    """
    offsets = window.offsets
    has_text = np.fromiter((o is not None for o in offsets), dtype=bool, count=len(offsets))
    tags = np.argmax(tag_probs[: len(offsets)], axis=1)
    hits = np.flatnonzero(has_text & (tags != O))
    if hits.size == 0:
        return []
    rank = np.cumsum(has_text)  # position among text tokens: a gap means an O in between
    best = np.maximum(tag_probs[:, B], tag_probs[:, I])
    groups: list[list[int]] = []
    prev = None
    for i in hits.tolist():
        if prev is None or tags[i] == B or rank[i] != rank[prev] + 1:
            groups.append([i])
        else:
            groups[-1].append(i)
        prev = i
    sizes = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    scores = np.add.reduceat(best[np.concatenate(groups)], np.cumsum(sizes) - sizes) / sizes
    spans = []
    for g, score in zip(groups, scores.tolist()):
        s, e = offsets[g[0]][0], offsets[g[-1]][1]
        spans.append(Span(s, e, text[s:e], score))
    return spans


def merge_spans(spans: list[Span]) -> list[Span]:
    """Stitch spans from the overlapping windows of one document.

    Identical spans collapse to the highest-scoring copy. Overlapping spans collapse
    to their union (keeping the highest score): a span cut by one window's edge
    overlaps its whole copy from the next window, and a span longer than the window
    overlap is only ever seen in pieces. Spans that merely touch stay separate.
    """
    out: list[Span] = []
    for sp in sorted(spans, key=lambda s: (s.start, -s.end)):
        if out and sp.start < out[-1].end:
            last = out[-1]
            if sp.end > last.end:
                text = last.text + sp.text[last.end - sp.start :]
                out[-1] = Span(last.start, sp.end, text, max(last.score, sp.score))
            elif sp.score > last.score:
                out[-1] = Span(last.start, last.end, last.text, sp.score)
        else:
            out.append(sp)
    return out
