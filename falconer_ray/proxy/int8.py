"""An optional CPU runtime for the proxy: its graph in ONNX, weights quantized to int8.

Dynamic int8 quantization (weights per output channel, activations per batch) makes
the encoder's matrix products two to three times cheaper on CPUs with integer vector
instructions, at the price of slightly different scores. The quantized graph is built
once per proxy and cached beside its weights (`proxy.int8.onnx`, with `proxy.int8.json`
naming the weights it was built from); whether its answers
are close enough to use is decided elsewhere, on documents the teacher annotated
(`falconer_ray.mine.runtime_choice`). Needs the `onnx` extra (onnxruntime, onnx).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from falconer_ray.proxy.fast_tokenizer import as_fast
from falconer_ray.proxy.folder import WEIGHTS_NAME
from falconer_ray.rundir import read_json, write_json

INT8_NAME = "proxy.int8.onnx"
SOURCE_NAME = "proxy.int8.json"  # the weights the cached graph was built from
OPSET = 17


def available() -> str | None:
    """None when the runtime can be used here, else why not."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_dynamic  # noqa: F401
    except ImportError as e:
        return f"onnx-int8 needs onnxruntime and onnx (pip install onnxruntime onnx, or the package's onnx extra): {e}"
    return None


def int8_path(proxy_dir: str | os.PathLike) -> Path:
    return Path(proxy_dir) / INT8_NAME


def weights_source(weights: Path) -> dict:
    """What identifies the weights a graph is built from: size, mtime and content hash."""
    st = weights.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(weights)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def is_current(proxy_dir: str | os.PathLike) -> bool:
    """A cached graph built from these very weights. Compared by content, not by
    timestamps: clocks differ between cluster nodes, a retrain within the same second
    keeps the mtime's order, and a copy of the folder (rsync, object storage) changes
    mtimes but not the weights. The weights are hashed only when their mtime moved (an
    actor reads none). A graph shipped without its weights is used as is."""
    proxy_dir = Path(proxy_dir)
    weights = proxy_dir / WEIGHTS_NAME
    if not int8_path(proxy_dir).exists():
        return False
    if not weights.exists():
        return True
    try:
        built_from = read_json(proxy_dir / SOURCE_NAME)
    except (OSError, ValueError):  # unreadable or damaged: build again
        return False
    st = weights.stat()
    if not isinstance(built_from, dict) or built_from.get("size") != st.st_size:
        return False
    return built_from.get("mtime_ns") == st.st_mtime_ns or built_from.get("sha256") == _sha256(weights)


def export_int8(proxy_dir: str | os.PathLike) -> Path:
    """The proxy's quantized graph, built unless a current one is cached. Only
    building it needs torch, onnx and the quantizer."""
    proxy_dir = Path(proxy_dir)
    out = int8_path(proxy_dir)
    if is_current(proxy_dir):
        return out
    if (why := available()) is not None:
        raise RuntimeError(why)
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from falconer_ray.proxy.model import ProxyModel  # torch: only to export the graph

    source = weights_source(proxy_dir / WEIGHTS_NAME)  # before reading them: a retrain meanwhile shows as stale
    model = ProxyModel.load(proxy_dir, map_location="cpu").eval()
    names = input_names(model.tokenizer)
    example = model.tokenizer(["an example"], ["to trace the graph"], return_tensors="pt")
    args = tuple(example[n] for n in names)
    dynamic = {n: {0: "batch", 1: "tokens"} for n in names}
    dynamic.update(label_logits={0: "batch"}, tag_logits={0: "batch", 1: "tokens"})
    with tempfile.TemporaryDirectory(dir=proxy_dir) as tmp, _quiet():
        fp32 = Path(tmp) / "proxy.fp32.onnx"
        with torch.inference_mode():
            torch.onnx.export(model, args, str(fp32), input_names=names, output_names=["label_logits", "tag_logits"],
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        staged = Path(tmp) / INT8_NAME
        quantize_dynamic(str(fp32), str(staged), per_channel=True, weight_type=QuantType.QInt8)
        staged.replace(out)  # atomic: actors starting meanwhile never read half a file
    write_json(proxy_dir / SOURCE_NAME, source)  # last: a crash before it leaves the graph stale, not wrong
    return out


@contextmanager
def _quiet():
    """The tracer's warnings and the quantizer's advice are about its internals, not the user's run."""
    level = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


def input_names(tokenizer) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if as_fast(tokenizer).types else names


class Int8Forward:
    """The quantized graph in ONNX Runtime, as a `Proxy` forward pass: numpy batches
    in, label logits and tag probabilities out. `threads`: intra-op threads (None:
    ONNX Runtime's default, one per physical core)."""

    device = "cpu"
    queued = False  # runs return when done: nothing overlaps them

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError(f"onnx-int8 needs onnxruntime (pip install onnxruntime, or the package's onnx extra): {e}") from e

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(0, threads or 0)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    @property
    def types(self) -> bool:
        """Whether the graph reads token_type_ids (it was traced from a BERT-style model)."""
        return "token_type_ids" in self.names

    def place(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None):
        return ids, mask, types

    def __call__(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None = None):
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.types:
            feeds["token_type_ids"] = types if types is not None else np.zeros_like(ids)
        return self.session.run(None, feeds)

    def fetch(self, out, tags: bool) -> tuple[np.ndarray, np.ndarray | None]:
        label, tag = out
        return label.astype(np.float32, copy=False), softmax(tag) if tags else None

    def sync(self) -> None:
        """Runs are synchronous."""


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
