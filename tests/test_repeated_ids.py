"""Repeated ids are found the same way whether the ids are counted at once or spilled
to buckets first (what a corpus too large to count in memory goes through)."""

import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from falconer_ray.corpus.repeated_ids import bucket_of, repeated_ids


def test_spilled_buckets_find_exactly_the_repeated_ids(tmp_path):
    rng = random.Random(0)
    pool = [f"doc-{i}" for i in range(300)] + ["", "é-ünïcode", "x" * 300]
    rows = tmp_path / "rows"
    rows.mkdir()
    every = []
    for f in range(6):
        ids = [rng.choice(pool) if rng.random() < 0.1 else f"f{f}-{i}" for i in range(700)]
        every += ids
        pq.write_table(pa.table({"doc_id": ids, "_row": list(range(700))}), rows / f"u{f}.parquet")
    truth = sorted(k for k, n in Counter(every).items() if n > 1)
    assert len(truth) > 50
    dataset = pads.dataset(str(rows), format="parquet")
    at_once = sorted(repeated_ids(dataset, tmp_path).to_pylist())
    spilled = sorted(repeated_ids(dataset, tmp_path, ids_per_bucket=300).to_pylist())  # 14 buckets
    assert at_once == spilled == truth
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows"]  # the spill is gone


def test_equal_ids_share_a_bucket_and_buckets_spread():
    ids = pa.array([f"id-{i % 500}" for i in range(5000)])
    where = bucket_of(ids, 16)
    assert ((where >= 0) & (where < 16)).all()
    assert (where[:500] == where[500:1000]).all()  # the same id, the same bucket
    assert np.bincount(where, minlength=16).min() > 5000 / 16 / 2  # no bucket starved
    sliced = ids.slice(123, 700)  # an array that starts inside its buffers
    assert (bucket_of(sliced, 16) == where[123:823]).all()


def test_a_failed_spill_closes_what_it_opened_and_leaves_nothing(tmp_path, monkeypatch):
    """Opening the fourth bucket file fails (say, too many open files): the three
    opened before it are closed and the spill folder is gone."""
    import pytest

    import falconer_ray.corpus.repeated_ids as spill

    rows = tmp_path / "rows"
    rows.mkdir()
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(100)]}), rows / "u.parquet")
    opened = []

    class FailingFourth(pq.ParquetWriter):
        def __init__(self, *args, **kwargs):
            if len(opened) == 3:
                raise OSError("too many open files")
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(spill.pq, "ParquetWriter", FailingFourth)
    with pytest.raises(OSError, match="too many open files"):
        repeated_ids(pads.dataset(str(rows), format="parquet"), tmp_path, ids_per_bucket=10)
    assert len(opened) == 3 and not any(w.is_open for w in opened)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows"]
