"""The torch proxy as a `Proxy` forward pass: numpy batches in, numpy answers out.

Calls return device tensors without waiting for them, and `fetch` reads them back,
so a caller can queue a chunk's batches on a GPU before reading the previous chunk.
"""

from __future__ import annotations

import numpy as np
import torch


class TorchForward:
    """On a GPU the weights are cast to bf16 once (not autocast per call): half the
    memory traffic, and the tensor cores' native type. `dtype` overrides that."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = model.to(self.device, dtype=dtype).eval()
        self.queued = self.device.type == "cuda"  # calls return before the work is done

    def place(self, ids, mask, types):
        """A batch on the device, so a loop of calls times only the forward pass."""
        return tuple(None if a is None else torch.as_tensor(a, device=self.device) for a in (ids, mask, types))

    def __call__(self, ids, mask, types=None):
        ids, mask, types = self.place(ids, mask, types)
        with torch.inference_mode():
            return self.model(ids, mask, types)

    def fetch(self, out, tags: bool) -> tuple[np.ndarray, np.ndarray | None]:
        label, tag = out
        with torch.inference_mode():
            probs = torch.softmax(tag.float(), dim=-1).cpu().numpy() if tags else None
            return label.float().cpu().numpy(), probs

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
