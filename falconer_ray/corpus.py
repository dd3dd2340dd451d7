"""Reading a sharded corpus into a stream of (doc_id, text, error) rows.

We read files ourselves inside Ray Data tasks rather than with `ray.data.read_json`
because a corpus must never fail as a whole for one bad line: every malformed record
becomes an error row with a reason, and every document gets a stable id
(`<file>:<row>` unless the corpus has an id field), so reruns and resumes line up.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".csv": "csv", ".tsv": "tsv", ".txt": "text"}
ROW_SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("error", pa.string())])
ROWS_PER_CHUNK = 512


class CorpusError(ValueError):
    """The corpus path or options cannot be read; the message says what to fix."""


def file_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def list_files(corpus: str | Path) -> list[Path]:
    """The corpus shards, sorted so that ids and sampling are reproducible."""
    root = Path(corpus)
    if root.is_file():
        if file_format(root) is None:
            raise CorpusError(f"{root}: unknown file type; use one of {', '.join(sorted(FORMATS))} (optionally .gz)")
        return [root]
    if not root.is_dir():
        raise CorpusError(f"corpus not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and file_format(p) and not p.name.startswith("."))
    if not files:
        raise CorpusError(f"{root} holds no corpus files ({', '.join(sorted(FORMATS))}, optionally .gz)")
    return files


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _safe_lines(path: Path) -> Iterator[tuple[str, str]]:
    """(line, error) per line, decoded one by one so a bad byte costs one line only."""
    with _open_binary(path) as f:
        for raw in f:
            try:
                yield raw.decode("utf-8"), ""
            except UnicodeDecodeError as e:
                yield "", f"invalid_utf8: {e.reason} at byte {e.start} of the line"


def _records(path: Path, fmt: str, text_unit: str) -> Iterator[tuple[dict | None, str]]:
    """Yield (record, error) per row of one file; record is None when the row is bad."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=ROWS_PER_CHUNK):
            yield from ((r, "") for r in batch.to_pylist())
        return
    if fmt == "text" and text_unit == "file":
        with _open_binary(path) as f:
            data = f.read()
        try:
            yield {"text": data.decode("utf-8")}, ""
        except UnicodeDecodeError as e:
            yield None, f"invalid_utf8: {e.reason} at byte {e.start}"
        return
    lines = _safe_lines(path)
    if fmt in ("csv", "tsv"):
        bad: list[str] = []

        def good_lines():
            for line, err in lines:
                if err:
                    bad.append(err)  # reported after the reader; a CSV record can span lines
                else:
                    yield line

        reader = csv.DictReader(good_lines(), delimiter="," if fmt == "csv" else "\t")
        try:
            for row in reader:
                yield row, ""
        except csv.Error as e:
            yield None, f"unreadable_csv: {e} (line {reader.line_num})"
        yield from ((None, err) for err in bad)
        return
    for line, err in lines:
        if err:
            yield None, err
        elif fmt == "text":
            yield {"text": line.rstrip("\r\n")}, ""
        elif line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield None, f"malformed_json: {e.msg} (column {e.colno})"
                continue
            yield (rec, "") if isinstance(rec, dict) else (None, "malformed_json: line is not an object")


def read_file(path: Path, root: Path, text_field: str, id_field: str | None, text_unit: str) -> Iterator[pa.Table]:
    """Rows of one corpus file, in chunks so a huge shard never sits whole in memory."""
    fmt = file_format(path)
    rel = path.name if root.is_file() else str(path.relative_to(root))
    ids, texts, errors = [], [], []
    try:
        for n, (rec, err) in enumerate(_records(path, fmt, text_unit)):
            doc_id, text = f"{rel}:{n}", ""
            if rec is not None:
                if id_field and rec.get(id_field) not in (None, ""):
                    doc_id = str(rec[id_field])
                value = rec.get(text_field)
                if value is None:
                    err = f"missing_text_field: no '{text_field}' in record (fields: {', '.join(list(rec)[:8])})"
                elif not isinstance(value, str):
                    err = f"text_not_string: '{text_field}' is {type(value).__name__}"
                elif not value.strip():
                    err = "empty_text"
                else:
                    text = value
            ids.append(doc_id), texts.append(text), errors.append(err)
            if len(ids) >= ROWS_PER_CHUNK:
                yield pa.table([ids, texts, errors], schema=ROW_SCHEMA)
                ids, texts, errors = [], [], []
    except (OSError, EOFError, pa.ArrowException) as e:
        ids.append(f"{rel}:unreadable"), texts.append(""), errors.append(f"unreadable_file: {e}")
    if ids:
        yield pa.table([ids, texts, errors], schema=ROW_SCHEMA)


def read_corpus(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                text_unit: str = "file", limit: int | None = None):
    """A Ray Dataset of (doc_id, text, error), one read task per file."""
    import ray.data

    root = Path(corpus)
    files = list_files(root)

    def read_batch(batch: dict) -> Iterator[pa.Table]:
        for p in batch["path"]:
            yield from read_file(Path(p), root, text_field, id_field, text_unit)

    ds = ray.data.from_items([{"path": str(p)} for p in files], override_num_blocks=max(1, len(files)))
    # Reading is light next to the model: it claims no CPU slot, so proxy actors that
    # fill every CPU never starve the reads that feed them.
    ds = ds.map_batches(read_batch, batch_size=1, batch_format="numpy", num_cpus=0)
    return ds.limit(limit) if limit else ds


def iter_corpus(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                text_unit: str = "file") -> Iterator[pa.Table]:
    """The same rows without Ray, for small corpora and tests."""
    root = Path(corpus)
    for p in list_files(root):
        yield from read_file(p, root, text_field, id_field, text_unit)
