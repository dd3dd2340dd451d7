"""The proxy: a small instruction-conditioned encoder fine-tuned on teacher labels.

It runs the two mining primitives over the whole corpus: document labels
(get_label) and exact character spans (get_span).
"""

from falconer_ray.proxy.data import collate, label_examples, run_epoch, span_examples
from falconer_ray.proxy.encoding import (
    MIN_TEXT_TOKENS,
    Window,
    bio_tags,
    decode_spans,
    encode_windows,
    merge_spans,
)
from falconer_ray.proxy.model import EMBEDDED_BASE, ProxyModel, compute_loss, resolve_base
from falconer_ray.proxy.predict import Proxy

__all__ = [
    "EMBEDDED_BASE",
    "MIN_TEXT_TOKENS",
    "Proxy",
    "ProxyModel",
    "Window",
    "bio_tags",
    "collate",
    "compute_loss",
    "decode_spans",
    "encode_windows",
    "label_examples",
    "merge_spans",
    "resolve_base",
    "run_epoch",
    "span_examples",
]
