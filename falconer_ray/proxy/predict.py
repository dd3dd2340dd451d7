"""Inference over raw text: the two primitives the mining actors call.

Tokenization happens here so callers pass plain strings. Windows are sorted by
length before batching so each batch pads only to its own longest window, which
matters on corpora mixing short and long documents.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch

from falconer_ray.proxy.encoding import Window, decode_spans, encode_windows, merge_spans
from falconer_ray.proxy.model import ProxyModel
from falconer_ray.spans import Span


class Proxy:
    """A trained ProxyModel ready for get_label / get_span style calls."""

    def __init__(self, model: ProxyModel, tokenizer=None, device: str | torch.device | None = None,
                 batch_size: int = 32, max_length: int | None = None, stride: int | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if self.tokenizer is None:
            raise ValueError("Proxy needs a tokenizer (pass one or use a model that carries it)")
        self.batch_size = batch_size
        self.max_length = max_length or model.max_length
        self.stride = stride if stride is not None else model.stride

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device | None = None,
             batch_size: int = 32) -> "Proxy":
        model = ProxyModel.load(directory, map_location="cpu")
        return cls(model, device=device, batch_size=batch_size)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run(self, texts: list[str], instruction: str) -> tuple[list[Window], np.ndarray, list[np.ndarray]]:
        """Windows, per-window label logits, and per-window tag probabilities [T, 3]."""
        windows = encode_windows(self.tokenizer, instruction, list(texts), self.max_length, self.stride)
        label_logits = np.zeros(len(windows), dtype=np.float32)
        tag_probs: list[np.ndarray] = [None] * len(windows)  # type: ignore[list-item]
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]), reverse=True)
        pad_id = self.tokenizer.pad_token_id or 0
        with torch.inference_mode(), self._autocast():
            for b in range(0, len(order), self.batch_size):
                idx = order[b : b + self.batch_size]
                batch = [windows[i] for i in idx]
                T = max(len(w) for w in batch)

                def pad(rows, value):
                    return torch.tensor([r + [value] * (T - len(r)) for r in rows], device=self.device)

                types = None
                if all(w.token_type_ids is not None for w in batch):
                    types = pad([w.token_type_ids for w in batch], 0)
                lab, tag = self.model(
                    pad([w.input_ids for w in batch], pad_id),
                    pad([w.attention_mask for w in batch], 0),
                    types,
                )
                lab = lab.float().cpu().numpy()
                probs = torch.softmax(tag.float(), dim=-1).cpu().numpy()
                for j, i in enumerate(idx):
                    label_logits[i] = lab[j]
                    tag_probs[i] = probs[j, : len(windows[i])]
        return windows, label_logits, tag_probs

    def label_scores(self, texts: list[str], instruction: str, pooling: str = "mean") -> np.ndarray:
        """P(yes) per document, pooled over its windows ("mean" or "max")."""
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', not {pooling!r}")
        windows, logits, _ = self._run(texts, instruction)
        probs = 1.0 / (1.0 + np.exp(-logits))
        per_doc: list[list[float]] = [[] for _ in texts]
        for w, p in zip(windows, probs):
            per_doc[w.doc_index].append(float(p))
        pool = np.mean if pooling == "mean" else np.max
        return np.array([pool(ps) for ps in per_doc], dtype=np.float32)

    def extract(self, texts: list[str], instruction: str, threshold: float = 0.5) -> list[list[Span]]:
        """Exact substrings per document with character offsets, merged across windows.

        Window-level spans whose score (mean max(P(B), P(I)) over their tokens) is
        below `threshold` are dropped before merging, so a weak fragment from one
        window cannot stretch a confident span from its neighbour.
        """
        windows, _, tag_probs = self._run(texts, instruction)
        per_doc: list[list[Span]] = [[] for _ in texts]
        for w, probs in zip(windows, tag_probs):
            spans = decode_spans(w, probs, texts[w.doc_index])
            per_doc[w.doc_index].extend(s for s in spans if s.score >= threshold)
        return [merge_spans(spans) for spans in per_doc]
