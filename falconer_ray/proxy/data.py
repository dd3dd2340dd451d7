"""Training examples from teacher annotations, batching, and one training epoch.

Examples are plain dicts of Python lists so they can flow through Ray Data or a
torch DataLoader alike. Label and span examples share one schema (kind 0 / 1), so
a single model and loop train both heads, even from mixed batches.
"""

from __future__ import annotations

import torch

from falconer_ray.proxy.encoding import IGNORE, Window, bio_tags, encode_windows
from falconer_ray.proxy.fast_tokenizer import as_fast
from falconer_ray.proxy.model import compute_loss

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _example(window: Window, kind: int, label: float, tags: list[int], pad_id: int) -> dict:
    input_ids, attention_mask, token_type_ids = window.lists()
    ex = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "kind": kind,
        "label": float(label),
        "tags": tags,
        "doc_index": window.doc_index,
        "pad_id": pad_id,
    }
    if token_type_ids is not None:
        ex["token_type_ids"] = token_type_ids
    return ex


def label_examples(tokenizer, instruction: str, texts: list[str], labels: list[float],
                   max_length: int = 256, stride: int = 64) -> list[dict]:
    """One example per window; every window carries its document's target: a yes/no
    (True/False, 1/0) or a probability of yes, for training on a teacher's soft labels."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    targets = [float(x) for x in labels]
    bad = [x for x in targets if not 0.0 <= x <= 1.0]
    if bad:
        raise ValueError(f"label targets must lie in [0, 1]; got {bad[0]}")
    pad = as_fast(tokenizer).pad_id
    return [
        _example(w, 0, targets[w.doc_index], [IGNORE] * len(w), pad)
        for w in encode_windows(tokenizer, instruction, texts, max_length, stride)
    ]


def span_examples(tokenizer, instruction: str, texts: list[str], spans: list[list[tuple[int, int]]],
                  max_length: int = 256, stride: int = 64) -> list[dict]:
    """One example per window with BIO targets from the document's gold char spans."""
    if len(texts) != len(spans):
        raise ValueError(f"{len(texts)} texts but {len(spans)} span lists")
    pad = as_fast(tokenizer).pad_id
    return [
        _example(w, 1, 0.0, bio_tags(w, [tuple(s) for s in spans[w.doc_index]]), pad)
        for w in encode_windows(tokenizer, instruction, texts, max_length, stride)
    ]


def collate(examples: list[dict], pad_id: int | None = None) -> dict[str, torch.Tensor]:
    """Pad a list of examples to the batch's longest window.

    `pad_id` defaults to the one stored in the examples (then 0). token_type_ids
    are included only when every example has them.
    """
    if pad_id is None:
        pad_id = examples[0].get("pad_id", 0)
    T = max(len(ex["input_ids"]) for ex in examples)

    def pad(key, value):
        return torch.tensor([list(ex[key]) + [value] * (T - len(ex[key])) for ex in examples])

    batch = {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": pad("attention_mask", 0),
        "tags": pad("tags", IGNORE),
        "kind": torch.tensor([int(ex["kind"]) for ex in examples]),
        "label": torch.tensor([float(ex["label"]) for ex in examples]),
    }
    if all("token_type_ids" in ex for ex in examples):
        batch["token_type_ids"] = pad("token_type_ids", 0)
    return batch


def run_epoch(model, loader, optimizer, scheduler=None, pos_weight: float | None = None,
              max_grad_norm: float | None = 1.0, on_batch=None) -> float:
    """Train one pass over `loader`; returns the mean batch loss. `on_batch()` is
    called after every optimizer step (progress).

    `model` may be a ProxyModel or its DDP wrapper (Ray Train's prepare_model):
    the forward goes through the wrapper so gradient sync hooks fire, and the loss
    is computed from its outputs with compute_loss.
    """
    model.train()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        outputs = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch.get("token_type_ids"),
        )
        loss = compute_loss(outputs, batch, pos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach())
        n += 1
        if on_batch is not None:
            on_batch()
    return total / max(n, 1)
