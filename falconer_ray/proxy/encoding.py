"""Instruction + document windowing and BIO tags for the proxy encoder.

The proxy reads ``[instruction] [SEP] [document]`` pairs. Documents longer than the
model's window are split into overlapping windows (never truncated), so every
character of the corpus is seen; predictions from the windows of one document are
stitched back together by character offsets. Offsets are always into the original
document string, so spans come back as exact substrings.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np

from falconer_ray.proxy.fast_tokenizer import as_fast
from falconer_ray.spans import Span

MIN_TEXT_TOKENS = 32
O, B, I = 0, 1, 2
IGNORE = -100


@dataclass(slots=True)
class Window:
    """One tokenized (instruction, slice of document) pair as numpy arrays (views into
    one array per field for the whole encode_windows call): a mining call holds every
    window of up to 2,048 documents at once, and as Python lists they took ten times
    the memory.

    ``offsets[i]`` is the [start, end) character range in the document of text token
    i, and (-1, -1) for instruction, special and empty tokens; ``offsets`` is None
    altogether when the window was encoded without them. Windows are never padded,
    so every token is attended to.
    """

    doc_index: int
    input_ids: np.ndarray  # int32 [T]
    token_type_ids: np.ndarray | None  # int8 [T]; None for models that read none (RoBERTa)
    offsets: np.ndarray | None  # int32 [T, 2]

    def __len__(self) -> int:
        return len(self.input_ids)

    def lists(self) -> tuple[list[int], list[int], list[int] | None]:
        """input_ids, attention_mask and token_type_ids (None if absent) as Python lists."""
        types = self.token_type_ids.tolist() if self.token_type_ids is not None else None
        return self.input_ids.tolist(), [1] * len(self), types

    def text_tokens(self) -> np.ndarray:
        """Positions of the tokens that carry document text."""
        return np.flatnonzero(self.offsets[:, 0] >= 0)

    def offset_list(self) -> list[tuple[int, int] | None]:
        """The offsets as (start, end) tuples, None off the text: for reading, not the hot path."""
        return [(int(s), int(e)) if s >= 0 else None for s, e in self.offsets.tolist()]

    def text_range(self) -> tuple[int, int] | None:
        """Character range of the document this window covers (None if no text)."""
        text = self.text_tokens()
        return (int(self.offsets[text[0], 0]), int(self.offsets[text[-1], 1])) if text.size else None


def _flat(lists, count: int, dtype) -> np.ndarray:
    """Python sequences of numbers, end to end, in one array."""
    return np.fromiter(chain.from_iterable(lists), dtype=dtype, count=count)


def _text_offsets(encodings: list, count: int) -> np.ndarray:
    """The encodings' offsets end to end as int32 [count, 2], (-1, -1) where a token is
    not document text: the instruction, special tokens, and empty tokens (a bare BPE
    "Ġ"). In each window the document (the pair's second sequence) is one run of tokens."""
    offsets = _flat((chain.from_iterable(e.offsets) for e in encodings), 2 * count, np.int32).reshape(-1, 2)
    text = np.zeros(count, dtype=bool)
    at = 0
    for e in encodings:
        sequence = e.sequence_ids
        if 1 in sequence:
            text[at + sequence.index(1): at + len(sequence) - sequence[::-1].index(1)] = True
        at += len(sequence)
    offsets[~(text & (offsets[:, 1] > offsets[:, 0]))] = -1
    return offsets


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
    offsets (window.offsets is None): label scoring needs none, and they add about
    a sixth to the tokenization's time.
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
    # One array per field for the whole call, each window a view into it: a few
    # numpy calls instead of a few per window (short reviews are a window each).
    docs, encodings = [], []
    for doc_index, cut in enumerate(tok.pairs(instruction, list(texts), max_length, stride)):
        docs += [doc_index] * len(cut)
        encodings += cut
    lengths = [len(e) for e in encodings]
    count = sum(lengths)
    ids = _flat((e.ids for e in encodings), count, np.int32)
    types = _flat((e.type_ids for e in encodings), count, np.int8) if tok.types else None
    offsets = _text_offsets(encodings, count) if with_offsets else None
    windows, at = [], 0
    for doc_index, n in zip(docs, lengths):
        cut = slice(at, at + n)
        windows.append(Window(doc_index, ids[cut], None if types is None else types[cut],
                              None if offsets is None else offsets[cut]))
        at += n
    return windows


def bio_tags(window: Window, spans: list[tuple[int, int]]) -> list[int]:
    """Per-token BIO targets for gold character spans (-100 on non-text tokens).

    A token belongs to the first span whose character range it overlaps; the first
    text token of a span in this window is B, even when the span began in a previous
    window. Non-text tokens in between (empty BPE tokens) do not break a span.
    """
    offsets = window.offsets
    text = window.text_tokens()
    hit = np.full(len(text), -1)
    for k in reversed(range(len(spans))):  # the first overlapping span wins
        s, e = spans[k]
        hit[(offsets[text, 0] < e) & (offsets[text, 1] > s)] = k
    before = np.concatenate(([-1], hit[:-1]))  # the previous text token's span
    tags = np.full(len(window), IGNORE, dtype=np.int64)
    tags[text] = np.where(hit < 0, O, np.where(hit == before, I, B))
    return tags.tolist()


def decode_spans(window: Window, tag_probs: np.ndarray, text: str) -> list[Span]:
    """Greedy BIO decoding of one window's tag probabilities into document spans.

    An I following O starts a span (tolerant of a missed B). Non-text tokens are
    skipped without closing a span. Score is the mean over the span's tokens of
    max(P(B), P(I)). Vectorized: only the (few) non-O text tokens are visited.
    """
    offsets = window.offsets
    has_text = offsets[:, 0] >= 0
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
        s, e = int(offsets[g[0], 0]), int(offsets[g[-1], 1])
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
