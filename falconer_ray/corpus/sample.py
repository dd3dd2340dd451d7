"""Choosing which documents the teacher annotates, without collecting the corpus.

Each valid document gets a pseudo-random key from (seed, doc_id); the n smallest
keys form the sample. The choice depends on ids only, not on read order or on how
Ray splits the work, so a rerun or resume annotates exactly the same documents.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa


def doc_key(doc_id: str, seed: int, salt: str = "sample") -> float:
    h = hashlib.blake2b(f"{salt}:{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def sample_documents(ds, n: int, seed: int) -> list[dict]:
    """The n valid documents of a Ray Dataset of (doc_id, text, error) with smallest keys."""
    from ray.data.expressions import col

    # Expressions, not Python lambdas: Arrow filters whole blocks instead of row by row.
    valid = ds.filter(expr=col("error") == "")
    total = valid.count()
    if total == 0:
        return []
    # Oversample so that the n smallest keys are (almost surely) inside the candidate set.
    fraction = min(1.0, (n + 6 * np.sqrt(n) + 20) / total)

    def keyed(batch: pa.Table) -> pa.Table:
        keys = [doc_key(d, seed) for d in batch.column("doc_id").to_pylist()]
        return batch.append_column("key", pa.array(keys, pa.float64()))

    candidates = valid.map_batches(keyed, batch_format="pyarrow").filter(expr=col("key") < fraction)
    rows = sorted(candidates.take_all(), key=lambda r: (r["key"], r["doc_id"], r["text"]))
    picked: dict[str, str] = {}
    for r in rows:  # a repeated id is sampled once (ties broken by text, so reruns agree)
        picked.setdefault(r["doc_id"], r["text"])
        if len(picked) == n:
            break
    return [{"doc_id": d, "text": t} for d, t in picked.items()]


def is_heldout(doc_id: str, seed: int, fraction: float) -> bool:
    return doc_key(doc_id, seed, salt="heldout") < fraction
