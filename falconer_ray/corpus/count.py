"""How many documents a corpus holds, without parsing it, and its first valid ones.

Mining sizes its calls and progress from the count; the quote scales its pilot to it.
"""

from __future__ import annotations

import zlib

import pyarrow as pa

from falconer_ray.config import RunConfig
from falconer_ray.corpus.read import file_format, iter_corpus, list_files
from falconer_ray.corpus.rows import open_binary, open_parquet

COUNT_CHUNK = 1 << 20


def count_documents(cfg: RunConfig, budget: int) -> dict:
    """Documents in the corpus without parsing it: Parquet row counts from metadata,
    newlines for line formats, one per .txt file; beyond `budget` bytes read, the rest
    is extrapolated from documents per byte so far."""
    files = list_files(cfg.corpus)
    docs = read = counted_bytes = skipped_bytes = unreadable = 0
    for path in files:
        try:
            fmt, size = file_format(path), path.stat().st_size
            if fmt == "parquet":
                docs += open_parquet(path).metadata.num_rows
            elif fmt == "text" and cfg.text_unit == "file":
                docs += 1
            elif read >= budget:
                skipped_bytes += size
            else:
                lines, last = 0, b"\n"
                with open_binary(path) as f:
                    while chunk := f.read(COUNT_CHUNK):
                        lines += chunk.count(b"\n")
                        last = chunk[-1:]
                lines += last != b"\n"  # a last line without a newline
                docs += lines - (fmt in ("csv", "tsv"))  # header row
                read += size
                counted_bytes += size
        except (OSError, EOFError, zlib.error, pa.ArrowException):
            unreadable += 1  # mining turns it into one error row; a count must not fail on it
            docs += 1
    estimated = 0
    if skipped_bytes:
        estimated = round(skipped_bytes * docs / max(1, counted_bytes))
        docs += estimated
    if cfg.limit:
        docs = min(docs, cfg.limit)
    return {"docs": docs, "files": len(files), "estimated_docs": estimated, "unreadable_files": unreadable,
            "bytes": sum(p.stat().st_size for p in files if p.exists())}


def pilot_texts(cfg: RunConfig, n: int) -> list[str]:
    """The first n valid documents, read without Ray."""
    texts: list[str] = []
    for table in iter_corpus(cfg.corpus, **cfg.read_options()):
        texts += [t for t, e in zip(table.column("text").to_pylist(), table.column("error").to_pylist()) if not e]
        if len(texts) >= n:
            break
    if len(texts) < 2:
        raise ValueError(f"{cfg.corpus} has fewer than 2 valid documents: nothing to quote")
    return texts[:n]
