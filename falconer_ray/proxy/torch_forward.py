"""The torch proxy as a `Proxy` forward pass: numpy batches in, numpy answers out.

On a GPU, calls queue their work and return at once, and `fetch` waits for one
batch's answers only, so a caller can tokenize and decode on the CPU while the GPU
runs the batches queued before. Two PyTorch defaults would undo that, and are
avoided: a blocking host-to-device copy synchronizes the stream (every call would
wait for all the work queued before it), and so does a blocking `.cpu()` (reading
one batch would wait for the batches queued after it).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Queued(NamedTuple):
    """A GPU batch's answers, on their way to pinned host memory, and the event that marks their arrival."""

    label: torch.Tensor
    tag_probs: torch.Tensor
    done: torch.cuda.Event


class TorchForward:
    """On a GPU the weights are cast to bf16 once (not autocast per call): half the
    memory traffic, and the tensor cores' native type. `dtype` overrides that."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.device.type == "cuda"
        if dtype is None:
            dtype = torch.bfloat16 if self.cuda else torch.float32
        self.model = model.to(self.device, dtype=dtype).eval()
        self.queued = self.cuda  # calls return before the work is done

    def place(self, ids, mask, types):
        """A batch on the device, so a loop of calls times only the forward pass. To a
        GPU it goes from pinned memory without waiting for the work already queued."""
        def put(a):
            if a is None or (isinstance(a, torch.Tensor) and a.device.type == self.device.type):
                return a
            if not self.cuda:
                return torch.as_tensor(a)
            host = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
            return host.pin_memory().to(self.device, non_blocking=True)

        return tuple(put(a) for a in (ids, mask, types))

    def __call__(self, ids, mask, types=None):
        ids, mask, types = self.place(ids, mask, types)
        with torch.inference_mode():
            label, tag = self.model(ids, mask, types)
            if not self.cuda:
                return label, tag
            # Copy the answers back as soon as they exist; the event then marks this
            # batch's end in the stream. Tag probabilities come back even for label
            # calls: 1.5 KB a window, against a forward pass of a whole window.
            label = label.float().to("cpu", non_blocking=True)
            probs = torch.softmax(tag.float(), dim=-1).to("cpu", non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return Queued(label, probs, done)

    def fetch(self, out, tags: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if isinstance(out, Queued):
            out.done.synchronize()
            return out.label.numpy(), out.tag_probs.numpy() if tags else None
        label, tag = out
        with torch.inference_mode():
            probs = torch.softmax(tag.float(), dim=-1).numpy() if tags else None
            return label.float().numpy(), probs

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
