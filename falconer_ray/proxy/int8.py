"""An optional CPU runtime for the proxy: its graph in ONNX, weights quantized to int8.

Dynamic int8 quantization (weights per output channel, activations per batch) makes
the encoder's matrix products two to three times cheaper on CPUs with integer vector
instructions, at the price of slightly different scores. The quantized graph is built
once per proxy and cached beside its weights (`proxy.int8.onnx`); whether its answers
are close enough to use is decided elsewhere, on documents the teacher annotated
(`falconer_ray.runtime_choice`). Needs the `onnx` extra (onnxruntime, onnx).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from falconer_ray.proxy.model import WEIGHTS_NAME, ProxyModel

INT8_NAME = "proxy.int8.onnx"
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


def export_int8(proxy_dir: str | os.PathLike) -> Path:
    """The proxy's quantized graph, built unless a current one is cached: a graph older
    than the weights (the proxy was retrained in place) is rebuilt."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proxy_dir = Path(proxy_dir)
    out = int8_path(proxy_dir)
    weights = proxy_dir / WEIGHTS_NAME
    if out.exists() and (not weights.exists() or out.stat().st_mtime >= weights.stat().st_mtime):
        return out
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
    return names + ["token_type_ids"] if "token_type_ids" in tokenizer.model_input_names else names


class Int8Forward:
    """Callable like ProxyModel's forward (ids, mask, types) -> (label_logits, tag_logits),
    running the quantized graph in ONNX Runtime with `threads` intra-op threads."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.names:
            feeds["token_type_ids"] = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
        label, tag = self.session.run(None, {k: v.cpu().numpy() for k, v in feeds.items()})
        return torch.from_numpy(label), torch.from_numpy(tag)
