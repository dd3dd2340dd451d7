"""Inference over raw text: the two primitives the mining actors call.

Tokenization happens here so callers pass plain strings. Windows are sorted by
length before batching so each batch pads only to its own longest window, which
matters on corpora mixing short and long documents.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from falconer_ray.proxy import int8
from falconer_ray.proxy.encoding import O, Window, decode_spans, encode_windows, merge_spans
from falconer_ray.proxy.fast_tokenizer import FastTokenizer, as_fast
from falconer_ray.proxy.folder import read_meta, read_tokenizer
from falconer_ray.spans import Span


class Scored(NamedTuple):
    """One chunk's windows and what the forward pass said of each: the label logit,
    the tag probabilities [T, 3] (None for a window that tags no text, or when tags
    were not asked for), and the lowest probability of the chosen tag over its text
    tokens (1.0 for a window without text; None when tags were not asked for)."""

    windows: list[Window]
    logits: np.ndarray
    tag_probs: list[np.ndarray | None]
    lowest: np.ndarray | None


class Stopped(Exception):
    """A call given up between two forward batches, because `Proxy.stop_when` said so."""


class Proxy:
    """A trained proxy ready for get_label / get_span style calls.

    `model` is a torch ProxyModel (run by `TorchForward`, on `device` in `dtype`) or
    another runtime's forward pass (`int8.Int8Forward`), which then needs `tokenizer`,
    `max_length` and `stride` given. Nothing here imports torch: an int8 proxy runs
    without it.
    """

    def __init__(self, model, tokenizer=None, device=None, batch_size: int = 32,
                 max_length: int | None = None, stride: int | None = None, dtype=None):
        if hasattr(model, "fetch"):
            self.forward = model
        else:
            from falconer_ray.proxy.torch_forward import TorchForward  # torch: not for an int8 proxy

            self.forward = TorchForward(model, device, dtype)
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("Proxy needs a tokenizer (pass one or use a model that carries it)")
        self.tokenizer: FastTokenizer = as_fast(tokenizer)
        self.batch_size = batch_size
        self.max_length = max_length or model.max_length
        self.stride = stride if stride is not None else model.stride
        self.last_windows: list[int] = []  # windows per document of the latest call (long documents: > 1)
        self.stop_when = None  # a callable asked before each forward batch; True gives up the call (`Stopped`)

    @property
    def device(self):
        return self.forward.device

    @classmethod
    def load(cls, directory: str | os.PathLike, device=None, batch_size: int = 32, dtype=None,
             runtime: str = "torch", threads: int | None = None) -> "Proxy":
        """`runtime`: "torch", or "onnx-int8" (CPU only) for the cached quantized graph
        (`falconer_ray.proxy.int8`), built on first use. Once the graph is cached the
        int8 path reads only it, tokenizer.json and proxy.json, and imports neither
        torch nor transformers, so a cold mining actor starts several times faster.
        `threads`: CPU threads for the forward pass (None: the runtime's default)."""
        if runtime == "torch":
            import torch

            from falconer_ray.proxy.model import ProxyModel  # torch: not for an int8 proxy

            if threads:
                torch.set_num_threads(threads)
            return cls(ProxyModel.load(directory, map_location="cpu"), device=device, batch_size=batch_size, dtype=dtype)
        if runtime != "onnx-int8":
            raise ValueError(f"proxy runtime must be 'torch' or 'onnx-int8', not {runtime!r}")

        forward = int8.Int8Forward(int8.export_int8(directory), threads)
        meta = read_meta(directory)
        return cls(forward, read_tokenizer(directory, types=forward.types), batch_size=batch_size,
                   max_length=meta["max_length"], stride=meta["stride"])

    def padded_batches(self, windows: list[Window]):
        """Windows sorted by length, cut into int64 batches that pad only to their own longest."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]), reverse=True)
        pad_id = self.tokenizer.pad_id
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            T = len(windows[idx[0]])
            ids = np.full((len(idx), T), pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), T), dtype=np.int64)
            types = np.zeros((len(idx), T), dtype=np.int64) if windows[idx[0]].token_type_ids is not None else None
            for j, i in enumerate(idx):
                w = windows[i]
                ids[j, : len(w)] = w.input_ids
                mask[j, : len(w)] = 1
                if types is not None:
                    types[j, : len(w)] = w.token_type_ids
            yield idx, ids, mask, types

    def _chunks(self, texts: list[str], instruction: str, tags: bool = True) -> Iterator[Scored]:
        """The windows of `texts`, scored, chunk by chunk.

        Texts go through longest first, and each chunk's windows are batched by token
        count, so batches pad little. On a GPU (`forward.queued`) a chunk is one
        batch of texts, queued before the previous chunk's answers are read and handed
        on, so the GPU runs one chunk while the CPU decodes the one before and
        tokenizes the one after. Chunks are small and equal because the device idles
        while the first one is tokenized, and whenever a chunk takes longer to
        tokenize than the one before it takes to run (`python -m
        falconer_ray.bench.gpu_proxy --host-only --device-us` measures the share).
        Elsewhere nothing overlaps, so the whole call is one chunk: sorting by
        characters only approximates tokens, and smaller chunks pad more. Each
        window's `doc_index` says which text it belongs to.
        """
        by_length = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        step = self.batch_size if self.forward.queued else max(1, len(texts))
        cuts = [*range(0, len(texts), step), len(texts)]  # [0] when there are no texts: no chunk
        per_doc = [0] * len(texts)
        pending = None
        for start, stop in zip(cuts, cuts[1:]):
            docs = by_length[start:stop]
            windows = encode_windows(self.tokenizer, instruction, [texts[i] for i in docs],
                                     self.max_length, self.stride, with_offsets=tags)
            for w in windows:
                w.doc_index = docs[w.doc_index]
                per_doc[w.doc_index] += 1
            launched = []
            for idx, ids, mask, types in self.padded_batches(windows):
                if self.stop_when is not None and self.stop_when():
                    raise Stopped("stopped between two forward batches")
                launched.append((idx, self.forward(ids, mask, types)))
            if pending is not None:
                yield self._collect(*pending, tags)
            pending = windows, launched
        if pending is not None:
            yield self._collect(*pending, tags)
        self.last_windows = per_doc

    def _collect(self, windows: list[Window], launched: list, tags: bool) -> Scored:
        """Read back one chunk's answers; with `tags`, reduce each window's tag
        probabilities a batch at a time, keeping them only for windows that tag some text."""
        scored = Scored(windows, np.zeros(len(windows), dtype=np.float32),
                        [None] * len(windows), np.ones(len(windows)) if tags else None)
        for idx, out in launched:
            label, probs = self.forward.fetch(out, tags)
            scored.logits[idx] = label
            if not tags:
                continue
            text = np.zeros(probs.shape[:2], dtype=bool)
            for j, i in enumerate(idx):
                offsets = windows[i].offsets
                text[j, : len(offsets)] = offsets[:, 0] >= 0
            scored.lowest[idx] = np.where(text, probs.max(axis=2), 1.0).min(axis=1)
            tagged = ((probs.argmax(axis=2) != O) & text).any(axis=1)
            for j in np.flatnonzero(tagged).tolist():
                scored.tag_probs[idx[j]] = probs[j, : len(windows[idx[j]])]
        return scored

    def label_scores(self, texts: list[str], instruction: str, pooling: str = "mean") -> np.ndarray:
        """P(yes) per document, pooled over its windows ("mean" or "max")."""
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', not {pooling!r}")
        per_doc: list[list[float]] = [[] for _ in texts]
        for scored in self._chunks(texts, instruction, tags=False):
            probs = 1.0 / (1.0 + np.exp(-scored.logits))
            for w, p in zip(scored.windows, probs.tolist()):
                per_doc[w.doc_index].append(p)
        pool = np.mean if pooling == "mean" else np.max
        return np.array([pool(ps) for ps in per_doc], dtype=np.float32)

    def extract(self, texts: list[str], instruction: str, threshold: float = 0.5) -> list[list[Span]]:
        """Exact substrings per document with character offsets, merged across windows.

        Window-level spans whose score (mean max(P(B), P(I)) over their tokens) is
        below `threshold` are dropped before merging, so a weak fragment from one
        window cannot stretch a confident span from its neighbour.
        """
        return self.extract_with_confidence(texts, instruction, threshold)[0]

    def extract_with_confidence(self, texts: list[str], instruction: str,
                                threshold: float = 0.5) -> tuple[list[list[Span]], np.ndarray]:
        """`extract` plus one confidence per document: the lowest, over its text
        tokens, of the probability of the tag the proxy chose. One doubtful token
        anywhere (a span it may have missed, cut or invented) makes the document's
        answer doubtful, which is what deciding to ask the teacher needs."""
        per_doc: list[list[Span]] = [[] for _ in texts]
        confidence = np.ones(len(texts), dtype=np.float64)
        for scored in self._chunks(texts, instruction, tags=True):
            for w, probs, low in zip(scored.windows, scored.tag_probs, scored.lowest.tolist()):
                if low < confidence[w.doc_index]:
                    confidence[w.doc_index] = low
                if probs is not None:
                    spans = decode_spans(w, probs, texts[w.doc_index])
                    per_doc[w.doc_index].extend(s for s in spans if s.score >= threshold)
        return [merge_spans(spans) for spans in per_doc], confidence
