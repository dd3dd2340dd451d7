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
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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
    # A broken link is listed (it becomes an `unreadable_file` error row, not a silent
    # gap); a directory named like a file is walked into, not read.
    files = sorted(p for p in root.rglob("*") if file_format(p) and not p.name.startswith(".")
                   and (p.is_file() or (p.is_symlink() and not p.exists())))
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


FIELD_CHECK_FILES = 16  # corpus files whose first rows `check_fields` reads
FIELD_CHECK_ROWS = 50  # records read per file


def check_fields(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                 text_unit: str = "file") -> None:
    """Fail at once, before any teacher call, when no record among the first rows of the
    corpus has the text field (or the id field): a mistyped flag, not bad rows. A corpus
    where some rows have the field and others lack it passes; those rows become
    `missing_text_field` error rows when it is read."""
    seen: dict[str, None] = {}  # field names in order of first appearance
    has_text = has_id = False
    records = 0
    for path in list_files(corpus)[:FIELD_CHECK_FILES]:
        fmt = file_format(path)
        try:
            for k, (rec, _) in enumerate(_records(path, fmt, text_unit)):
                if k >= FIELD_CHECK_ROWS:
                    break
                if rec is None:
                    continue
                records += 1
                seen.update(dict.fromkeys(rec))
                has_text = has_text or rec.get(text_field) is not None
                has_id = has_id or not id_field or rec.get(id_field) not in (None, "")
        except (OSError, EOFError, zlib.error, csv.Error, pa.ArrowException):
            continue  # an unreadable file is an error row when mined, not a verdict on the fields
        if has_text and has_id:
            return
    if not records:
        return  # nothing parsed: the reader's error rows say why
    fields = ", ".join(repr(f) for f in list(seen)[:20]) + (" ..." if len(seen) > 20 else "")
    where = f"the first rows of {corpus}"
    if not has_text:
        hint = ("a .txt file is read as one field, 'text': drop --text-field" if set(seen) == {"text"}
                else "pass --text-field NAME (or set text_field in --config) to read one of them")
        raise CorpusError(f"no record in {where} has the text field '{text_field}'; the records have {fields}: {hint}")
    raise CorpusError(f"no record in {where} has the id field '{id_field}'; the records have {fields}: pass "
                      "--id-field NAME to use one of them, or leave it out for file:row ids")


UNIT_COLUMNS = [("_unit", pa.string()), ("_row", pa.int64()), ("_unit_rows", pa.int64()), ("_last", pa.bool_())]
UNIT_SCHEMA = pa.schema(list(ROW_SCHEMA) + [pa.field(n, t) for n, t in UNIT_COLUMNS])
UNIT_ROWS = 4096


@dataclass(frozen=True)
class Shard:
    """One corpus file: its place in the sorted file list (units are named after it),
    its name in doc ids, and how many of its rows belong to the corpus (None: all)."""

    index: int
    path: Path
    rel: str
    max_rows: int | None = None

    def unit(self, block: int) -> str:
        return f"f{self.index:07d}-b{block:07d}"


def corpus_shards(corpus: str | Path, limit: int | None = None, text_field: str = "text",
                  id_field: str | None = None, text_unit: str = "file") -> list[Shard]:
    """The corpus files in order; with `limit`, only the first files up to N rows.

    `limit` means the first N rows in file order, the same on every run: the files are
    counted one by one in the driver until N rows are reached (cheap next to mining N).
    """
    root = Path(corpus)
    shards = [Shard(i, p, p.name if root.is_file() else str(p.relative_to(root)))
              for i, p in enumerate(list_files(root))]
    if not limit:
        return shards
    out, left = [], limit
    for s in shards:
        n = sum(t.num_rows for t in read_file(s, text_field, id_field, text_unit, max_rows=left))
        out.append(Shard(s.index, s.path, s.rel, max_rows=left))
        left -= n
        if left <= 0:
            break
    return out


def _table(ids, texts, errors, meta, schema) -> pa.Table:
    columns = [ids, texts, errors]
    if schema is UNIT_SCHEMA:
        columns += [list(c) for c in zip(*meta)] if meta else [[], [], [], []]
    return pa.table(columns, schema=schema)


def read_file(shard: Shard, text_field: str, id_field: str | None, text_unit: str,
              max_rows: int | None = None, unit_rows: int | None = None,
              skip: frozenset[str] = frozenset()) -> Iterator[pa.Table]:
    """Rows of one corpus file, in chunks so a huge shard never sits whole in memory.

    With `unit_rows`, rows also carry their unit of work (`_unit`: block of `unit_rows`
    rows of this file) and row number; the last chunk of each unit says how many rows
    the unit has (`_unit_rows`) and whether it ends the file (`_last`), so a consumer
    can tell when a unit is complete. Units in `skip` (already done) are read past
    but not emitted.
    """
    fmt = file_format(shard.path)
    cap = shard.max_rows if max_rows is None else max_rows
    schema = UNIT_SCHEMA if unit_rows else ROW_SCHEMA
    ids, texts, errors, meta = [], [], [], []
    block, in_block = 0, 0  # the current unit and how many of its rows were read

    def flush(total: int | None, last: bool) -> pa.Table:
        nonlocal ids, texts, errors, meta
        if total is not None and meta:
            meta[-1] = (*meta[-1][:2], total, last)
        table = _table(ids, texts, errors, meta, schema)
        ids, texts, errors, meta = [], [], [], []
        return table

    def add(n: int, doc_id: str, text: str, err: str):
        """Append row n; yield a chunk first when it is full or ends a unit."""
        nonlocal block, in_block
        if unit_rows and n // unit_rows != block:
            if ids:
                yield flush(in_block, False)
            block, in_block = n // unit_rows, 0
        elif len(ids) >= ROWS_PER_CHUNK:
            yield flush(None, False)
        in_block += 1
        if unit_rows and shard.unit(block) in skip:
            return
        ids.append(doc_id), texts.append(text), errors.append(err)
        meta.append((shard.unit(block), n, None, False))

    n = 0
    try:
        for rec, err in _records(shard.path, fmt, text_unit):
            if cap is not None and n >= cap:
                break
            doc_id, text = f"{shard.rel}:{n}", ""
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
            yield from add(n, doc_id, text, err)
            n += 1
    except (OSError, EOFError, zlib.error, csv.Error, pa.ArrowException) as e:  # the rest of the file is unreadable
        yield from add(n, f"{shard.rel}:unreadable", "", f"unreadable_file: {e}")
        n += 1
    if ids:  # an empty file, or one whose last unit is skipped, ends with nothing to say
        yield flush(in_block, True)


def read_corpus(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                text_unit: str = "file", limit: int | None = None, *, shards: list[Shard] | None = None,
                unit_rows: int | None = None, skip: frozenset[str] = frozenset(), readers: int | None = None):
    """A Ray Dataset of (doc_id, text, error), one read task per file.

    `shards` (from `corpus_shards`) and `unit_rows`/`skip` are for mining in units
    (see `read_file`); `limit` is the first N rows in file order. `readers` caps the
    read tasks running at once: each runs in a worker process of its own, and on a
    small machine starting one per file took the CPU the proxy actors needed to start.
    """
    import ray.data

    shards = shards if shards is not None else corpus_shards(corpus, limit, text_field, id_field, text_unit)
    by_index = {s.index: s for s in shards}

    def read_batch(batch: dict) -> Iterator[pa.Table]:
        for i in batch["index"]:
            yield from read_file(by_index[int(i)], text_field, id_field, text_unit, unit_rows=unit_rows, skip=skip)

    ds = ray.data.from_items([{"index": s.index} for s in shards], override_num_blocks=max(1, len(shards)))
    # Reading is light next to the model: it claims no CPU slot, so proxy actors that
    # fill every CPU never starve the reads that feed them.
    pool = ray.data.TaskPoolStrategy(size=readers) if readers else None
    return ds.map_batches(read_batch, batch_size=1, batch_format="numpy", num_cpus=0, compute=pool)


def iter_corpus(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                text_unit: str = "file", limit: int | None = None) -> Iterator[pa.Table]:
    """The same rows without Ray, for small corpora and tests."""
    for s in corpus_shards(corpus, limit, text_field, id_field, text_unit):
        yield from read_file(s, text_field, id_field, text_unit)
