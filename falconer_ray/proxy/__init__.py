"""The proxy: a small instruction-conditioned encoder fine-tuned on teacher labels.

It runs the two mining primitives over the whole corpus: document labels
(get_label) and exact character spans (get_span).

Names are imported on first use, so `from falconer_ray.proxy import Proxy` does not
import torch: an int8 mining actor never needs it.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "collate": "data", "label_examples": "data", "run_epoch": "data", "span_examples": "data",
    "MIN_TEXT_TOKENS": "encoding", "Window": "encoding", "bio_tags": "encoding", "decode_spans": "encoding",
    "encode_windows": "encoding", "merge_spans": "encoding",
    "EMBEDDED_BASE": "model", "ProxyModel": "model", "compute_loss": "model", "resolve_base": "model",
    "Proxy": "predict", "Stopped": "predict",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
