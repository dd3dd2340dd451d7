"""Reading a sharded corpus into a stream of (doc_id, text, error) rows.

We read files ourselves inside Ray Data tasks rather than with `ray.data.read_json`
because a corpus must never fail as a whole for one bad line: every malformed record
becomes an error row with a reason, and every document gets a stable id
(`<file>:<row>` unless the corpus has an id field), so reruns and resumes line up.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from rich.markup import escape

from falconer_ray.config.run import MAX_DOC_CHARS
from falconer_ray.corpus import CorpusError
from falconer_ray.corpus.remote import RemoteFile, is_remote, list_remote, relative
from falconer_ray.corpus.rows import ROWS_PER_CHUNK, document, records
from falconer_ray.progress import note

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".csv": "csv", ".tsv": "tsv", ".txt": "text"}
ROW_SCHEMA = pa.schema([("doc_id", pa.string()), ("text", pa.string()), ("error", pa.string())])


def file_format(path: Path | RemoteFile) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return FORMATS.get(suffixes[-1]) if suffixes else None


def list_files(corpus: str | Path) -> list[Path] | list[RemoteFile]:
    """The corpus shards, sorted so that ids and sampling are reproducible."""
    if is_remote(corpus):
        files = list_remote(str(corpus), lambda name: file_format(Path(name)) and not name.startswith("."))
        if not files:
            raise CorpusError(f"{corpus} holds no corpus files ({', '.join(sorted(FORMATS))}, optionally .gz)")
        return files
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
    _note_links_outside(root, files)
    return files


_NOTED: set[str] = set()  # corpora whose outside links were already named in this process


def _note_links_outside(root: Path, files: list[Path]) -> None:
    """Say so when corpus files are links to outside the corpus folder: they are read
    (a corpus may be assembled from links) but the user should know what is in it."""
    base = root.resolve()
    outside = [p for p in files if p.exists() and not p.resolve().is_relative_to(base)]
    if outside and str(base) not in _NOTED:
        _NOTED.add(str(base))
        first = outside[0]
        note(escape(f"{len(outside)} corpus file(s) in {root} link to outside it, e.g. {first.relative_to(root)} -> "
                    f"{first.resolve()}; they are read as part of the corpus"))


FIELD_CHECK_FILES = 16  # corpus files whose first rows `check_fields` reads
FIELD_CHECK_ROWS = 50  # records read per file


def check_fields(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                 text_unit: str = "file", max_doc_chars: int = MAX_DOC_CHARS) -> None:
    """Fail at once, before any teacher call, when no record among the first rows of the
    corpus has the text field (or the id field): a mistyped flag, not bad rows. A corpus
    where some rows have the field and others lack it passes; those rows become
    `missing_text_field` error rows when it is read."""
    seen: dict[str, None] = {}  # field names in order of first appearance
    has_text = has_id = False
    parsed = 0
    for path in list_files(corpus)[:FIELD_CHECK_FILES]:
        fmt = file_format(path)
        try:
            for k, (rec, _) in enumerate(records(path, fmt, text_unit, max_doc_chars)):
                if k >= FIELD_CHECK_ROWS:
                    break
                if rec is None:
                    continue
                parsed += 1
                seen.update(dict.fromkeys(rec))
                has_text = has_text or rec.get(text_field) is not None
                has_id = has_id or not id_field or rec.get(id_field) not in (None, "")
        except (OSError, EOFError, zlib.error, csv.Error, pa.ArrowException):
            continue  # an unreadable file is an error row when mined, not a verdict on the fields
        if has_text and has_id:
            return
    if not parsed:
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
    path: Path | RemoteFile
    rel: str
    max_rows: int | None = None

    def unit(self, block: int) -> str:
        return f"f{self.index:07d}-b{block:07d}"


def corpus_shards(corpus: str | Path, limit: int | None = None, text_field: str = "text",
                  id_field: str | None = None, text_unit: str = "file",
                  max_doc_chars: int = MAX_DOC_CHARS) -> list[Shard]:
    """The corpus files in order; with `limit`, only the first files up to N rows.

    `limit` means the first N rows in file order, the same on every run: the files are
    counted one by one in the driver until N rows are reached (cheap next to mining N).
    """
    def rel(p) -> str:
        if isinstance(p, RemoteFile):
            return relative(p, str(corpus))
        return p.name if Path(corpus).is_file() else str(p.relative_to(corpus))

    shards = [Shard(i, p, rel(p)) for i, p in enumerate(list_files(corpus))]
    if not limit:
        return shards
    out, left = [], limit
    for s in shards:
        n = sum(t.num_rows for t in read_file(s, text_field, id_field, text_unit, max_rows=left,
                                                   max_doc_chars=max_doc_chars))
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
              skip: frozenset[str] = frozenset(), max_doc_chars: int = MAX_DOC_CHARS) -> Iterator[pa.Table]:
    """Rows of one corpus file, in chunks so a huge shard never sits whole in memory.

    With `unit_rows`, rows also carry their unit of work (`_unit`: block of `unit_rows`
    rows of this file) and row number; the last chunk of each unit says how many rows
    the unit has (`_unit_rows`) and whether it ends the file (`_last`), so a consumer
    can tell when a unit is complete. Units in `skip` (already done) are read past
    but not emitted. A row that cannot be turned into a document, for any reason, is
    an error row: one row never fails its file.
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
        for rec, err in records(shard.path, fmt, text_unit, max_doc_chars):
            if cap is not None and n >= cap:
                break
            doc_id, text = f"{shard.rel}:{n}", ""
            if rec is not None:
                try:
                    doc_id, text, err = document(rec, doc_id, text_field, id_field, max_doc_chars)
                except Exception as e:  # noqa: BLE001 - whatever a record holds, it costs one row
                    err = f"bad_record: {type(e).__name__}: {e}"[:500]
            yield from add(n, doc_id, text, err)
            n += 1
    except (OSError, EOFError, zlib.error, csv.Error, pa.ArrowException) as e:  # the rest of the file is unreadable
        yield from add(n, f"{shard.rel}:unreadable", "", f"unreadable_file: {e}")
        n += 1
    if ids:  # an empty file, or one whose last unit is skipped, ends with nothing to say
        yield flush(in_block, True)


def read_corpus(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                text_unit: str = "file", limit: int | None = None, *, shards: list[Shard] | None = None,
                unit_rows: int | None = None, skip: frozenset[str] = frozenset(), readers: int | None = None,
                max_doc_chars: int = MAX_DOC_CHARS):
    """A Ray Dataset of (doc_id, text, error), one read task per file.

    `shards` (from `corpus_shards`) and `unit_rows`/`skip` are for mining in units
    (see `read_file`); `limit` is the first N rows in file order. `readers` caps the
    read tasks running at once: each runs in a worker process of its own, and on a
    small machine starting one per file took the CPU the proxy actors needed to start.
    """
    import ray.data

    shards = shards if shards is not None else corpus_shards(corpus, limit, text_field, id_field, text_unit,
                                                                max_doc_chars)
    by_index = {s.index: s for s in shards}

    def read_batch(batch: dict) -> Iterator[pa.Table]:
        for i in batch["index"]:
            yield from read_file(by_index[int(i)], text_field, id_field, text_unit, unit_rows=unit_rows, skip=skip,
                                 max_doc_chars=max_doc_chars)

    ds = ray.data.from_items([{"index": s.index} for s in shards], override_num_blocks=max(1, len(shards)))
    # Reading is light next to the model: it claims no CPU slot, so proxy actors that
    # fill every CPU never starve the reads that feed them.
    pool = ray.data.TaskPoolStrategy(size=readers) if readers else None
    return ds.map_batches(read_batch, batch_size=1, batch_format="numpy", num_cpus=0, compute=pool)


def iter_corpus(corpus: str | Path, text_field: str = "text", id_field: str | None = None,
                text_unit: str = "file", limit: int | None = None,
                max_doc_chars: int = MAX_DOC_CHARS) -> Iterator[pa.Table]:
    """The same rows without Ray, for small corpora and tests."""
    for s in corpus_shards(corpus, limit, text_field, id_field, text_unit, max_doc_chars):
        yield from read_file(s, text_field, id_field, text_unit, max_doc_chars=max_doc_chars)
