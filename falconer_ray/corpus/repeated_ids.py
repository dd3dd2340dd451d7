"""Which document ids occur more than once in a whole mined corpus, in bounded memory.

Counting every id at once costs the driver about 130 bytes per document (the id column
and its hash table: 13 GB at 100 million). Instead the ids are spread over buckets by a
hash of their bytes, each bucket spilled to its own Parquet file in one pass, and each
file counted alone: memory is one bucket's worth, whatever the corpus size. A corpus
small enough for one bucket is counted directly, with no spill.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

IDS_PER_BUCKET = 2_000_000  # about 260 MB of driver memory to count
MAX_BUCKETS = 256  # open files during the spill
_WEIGHTS = np.random.default_rng(0).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)


def bucket_of(ids: pa.Array, buckets: int) -> np.ndarray:
    """A fixed bucket per id, vectorized: a position-weighted sum of its UTF-8 bytes
    (mod 2**64). Only the spread depends on its quality; equal ids always share a bucket."""
    ids = pc.cast(ids, pa.large_string()).fill_null("")
    offsets = np.frombuffer(ids.buffers()[1], np.int64)[ids.offset: ids.offset + len(ids) + 1]
    data = np.frombuffer(ids.buffers()[2], np.uint8)[offsets[0]: offsets[-1]].astype(np.uint64)
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    position = np.arange(len(data)) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        total = np.concatenate([[np.uint64(0)], np.cumsum((data + np.uint64(1)) * _WEIGHTS[position % 64])])
        sums = total[starts + lengths] - total[starts]
    return (sums % np.uint64(buckets)).astype(np.int64)


def _repeated(ids: pa.Array | pa.ChunkedArray) -> pa.Array:
    # value_counts, not group_by: Acero's thread pool can fail when called from a worker
    # thread of the driver ("thread index out of range").
    counts = pc.value_counts(ids)
    return pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))


def repeated_ids(rows: pads.Dataset, work: Path, ids_per_bucket: int = IDS_PER_BUCKET) -> pa.Array:
    """The ids that occur more than once in `rows` (a dataset with a `doc_id` column);
    `work` holds the spilled buckets until this returns."""
    buckets = min(MAX_BUCKETS, math.ceil(rows.count_rows() / ids_per_bucket))
    if buckets <= 1:
        return _repeated(rows.to_table(columns=["doc_id"]).column("doc_id"))
    spill = Path(tempfile.mkdtemp(prefix=".ids-", dir=work))
    schema = pa.schema([("doc_id", pa.string())])
    try:
        with ExitStack() as open_files:  # closed even when opening a later one fails
            writers = [open_files.enter_context(pq.ParquetWriter(spill / f"{b:03d}.parquet", schema))
                       for b in range(buckets)]
            for batch in rows.scanner(columns=["doc_id"]).to_batches():
                where = bucket_of(batch.column("doc_id"), buckets)
                # One take in bucket order, then a zero-copy slice per bucket.
                order = np.argsort(where, kind="stable")
                ids = batch.column("doc_id").take(pa.array(order))
                edges = np.searchsorted(where[order], np.arange(buckets + 1))
                for b in np.flatnonzero(np.diff(edges)):
                    writers[b].write_table(pa.table({"doc_id": ids.slice(edges[b], edges[b + 1] - edges[b])}, schema=schema))
        found = [_repeated(pq.read_table(spill / f"{b:03d}.parquet").column("doc_id")) for b in range(buckets)]
        return pa.concat_arrays([a.cast(pa.string()) for a in found])
    finally:
        shutil.rmtree(spill, ignore_errors=True)
