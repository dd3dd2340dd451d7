"""Parsing one corpus file into records: one bad row costs that row only.

Every defect a row can have (bytes that are not UTF-8, JSON Python refuses, a CSV
quote never closed, a field or line past the size cap, a gzip bomb) becomes an
error reason beside the rows that did parse; `read.read_file` turns them into rows.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

from falconer_ray.corpus.remote import RemoteFile

ROWS_PER_CHUNK = 512


GZIP_MAX_RATIO = 500  # decompressed/compressed bytes beyond which a .gz is refused ...
GZIP_RATIO_FLOOR = 16 << 20  # ... once it has expanded past this many bytes
JSON_BYTES_PER_CHAR = 6  # the most a JSON string spends on one character (\uXXXX)


class _GzipGuard(io.RawIOBase):
    """A gzip stream that refuses to expand past GZIP_MAX_RATIO times its compressed
    size: a small file that decompresses to gigabytes is an attack, not a corpus."""

    def __init__(self, path: Path | RemoteFile):
        super().__init__()
        self.raw = _open_raw(path)
        self.gz = gzip.GzipFile(fileobj=self.raw, mode="rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.gz.readinto(buffer)
        out = self.gz.tell()
        if out > GZIP_RATIO_FLOOR and out > GZIP_MAX_RATIO * max(1, self.raw.tell()):
            raise OSError(f"gzip stream expands more than {GZIP_MAX_RATIO}x (a decompression bomb?)")
        return n

    def close(self) -> None:
        if not self.closed:
            self.gz.close()
            self.raw.close()
        super().close()


def _open_raw(path: Path | RemoteFile):
    """A file's stored bytes, local or in an object store."""
    return io.BufferedReader(path.open_stream(), 1 << 20) if isinstance(path, RemoteFile) else open(path, "rb")


def open_binary(path: Path | RemoteFile):
    """A corpus file as bytes; a .gz one is decompressed as it is read, within GZIP_MAX_RATIO."""
    return io.BufferedReader(_GzipGuard(path), 1 << 16) if path.suffix.lower() == ".gz" else _open_raw(path)


def open_parquet(path: Path | RemoteFile):
    """A Parquet file, local or in an object store, read by row group."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path.open_random() if isinstance(path, RemoteFile) else path)


def _bounded_lines(f, max_bytes: int) -> Iterator[tuple[bytes | None, str]]:
    """(line, error) per line of a binary stream, never holding more than `max_bytes`
    of one line: a longer line is read past in pieces and becomes one error."""
    while True:
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        if len(raw) <= max_bytes or raw.endswith(b"\n"):
            yield raw, ""
            continue
        size = len(raw)
        while not raw.endswith(b"\n"):
            raw = f.readline(1 << 20)
            if not raw:
                break
            size += len(raw)
        yield None, f"too_large: a line of {size:,} bytes (documents are capped at max_doc_chars)"


def _safe_lines(path: Path | RemoteFile, max_bytes: int) -> Iterator[tuple[str, str]]:
    """(line, error) per line, decoded one by one so a bad byte costs one line only."""
    with open_binary(path) as f:
        for raw, err in _bounded_lines(f, max_bytes):
            if err:
                yield "", err
                continue
            try:
                yield raw.decode("utf-8"), ""
            except UnicodeDecodeError as e:
                yield "", f"invalid_utf8: {e.reason} at byte {e.start} of the line"


def _csv_records(path: Path | RemoteFile, delimiter: str, max_chars: int) -> Iterator[tuple[dict | None, str]]:
    """Rows of a CSV/TSV file; a bad row costs that row only.

    Bytes are decoded with surrogateescape, so an invalid byte stays in its field and
    quoting stays in step (dropping the line would merge the rows that follow); the row
    then fails the UTF-8 check in `read_file`. A field over `max_chars` (or a quote
    never closed, which reads on until it is) is one error row, and reading goes on
    from the next line.
    """
    csv.field_size_limit(max_chars)
    limit = 2 * max_chars + 4096  # one line: a field and the rest of its row
    with open_binary(path) as f:
        read = 0  # lines handed to the parser, for the error rows
        skipped: list[str] = []  # lines too long to hold, read past: their error rows

        def lines():
            nonlocal read
            text = io.TextIOWrapper(f, encoding="utf-8", errors="surrogateescape", newline="")
            while line := text.readline(limit + 1):
                read += 1
                if len(line) > limit and not line.endswith("\n"):
                    size = len(line)
                    while True:
                        more = text.readline(1 << 20)
                        size += len(more)
                        if not more or more.endswith("\n"):
                            break
                    skipped.append(f"too_large: a line of {size:,} characters (line {read})")
                    line = "\n"  # a blank line: no row, the reader stays in step
                yield line

        reader = csv.DictReader(lines(), delimiter=delimiter)
        try:
            _ = reader.fieldnames  # reads the header
        except csv.Error as e:
            yield None, f"unreadable_csv: {e} (header)"
            return
        while True:
            first = read + 1
            try:
                row = next(reader)
            except StopIteration:
                yield from ((None, err) for err in skipped)
                return
            except csv.Error as e:
                yield from ((None, err) for err in skipped)
                skipped.clear()
                where = f"line {first}" if read <= first else f"lines {first}-{read}"
                if "field larger than field limit" in str(e):  # or a quote never closed
                    yield None, f"too_large: a field over max_doc_chars {max_chars:,} ({where})"
                else:
                    yield None, f"unreadable_csv: {e} ({where})"
                continue
            yield from ((None, err) for err in skipped)
            skipped.clear()
            yield row, ""


def records(path: Path | RemoteFile, fmt: str, text_unit: str, max_chars: int) -> Iterator[tuple[dict | None, str]]:
    """Yield (record, error) per row of one file; record is None when the row is bad."""
    if fmt == "parquet":
        for batch in open_parquet(path).iter_batches(batch_size=ROWS_PER_CHUNK):
            yield from ((r, "") for r in batch.to_pylist())
        return
    max_bytes = JSON_BYTES_PER_CHAR * max_chars + 4096  # room for a record's other fields
    if fmt == "text" and text_unit == "file":
        with open_binary(path) as f:
            data = f.read(4 * max_chars + 1)  # UTF-8 spends at most 4 bytes on a character
        if len(data) > 4 * max_chars:
            yield None, f"too_large: more than {4 * max_chars:,} bytes (documents are capped at max_doc_chars)"
            return
        try:
            yield {"text": data.decode("utf-8")}, ""
        except UnicodeDecodeError as e:
            yield None, f"invalid_utf8: {e.reason} at byte {e.start}"
        return
    if fmt in ("csv", "tsv"):
        yield from _csv_records(path, "," if fmt == "csv" else "\t", max_chars)
        return
    for line_no, (line, err) in enumerate(_safe_lines(path, max_bytes), 1):
        if err:
            yield None, f"{err} (line {line_no})"
        elif fmt == "text":
            yield {"text": line.rstrip("\r\n")}, ""
        elif line.strip():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield None, f"malformed_json: {e.msg} (line {line_no}, column {e.colno})"
                continue
            except (ValueError, RecursionError) as e:  # a 5,000-digit number, nesting too deep
                reason = "nested too deeply" if isinstance(e, RecursionError) else str(e).split(";")[0]
                yield None, f"malformed_json: {reason} (line {line_no})"
                continue
            yield (rec, "") if isinstance(rec, dict) else (None, f"malformed_json: line {line_no} is not an object")


def document(rec: dict, doc_id: str, text_field: str, id_field: str | None,
              max_chars: int) -> tuple[str, str, str]:
    """(doc_id, text, error) of one parsed record."""
    if id_field and rec.get(id_field) not in (None, ""):
        given = str(rec[id_field])
        if _not_utf8(given):  # keeps the file:row id, which can be written
            return doc_id, "", f"invalid_utf8: in the id field '{id_field}'"
        doc_id = given
    value = rec.get(text_field)
    if value is None:
        return doc_id, "", f"missing_text_field: no '{text_field}' in record (fields: {', '.join(map(str, list(rec)[:8]))})"
    if not isinstance(value, str):
        return doc_id, "", f"text_not_string: '{text_field}' is {type(value).__name__}"
    if not value.strip():
        return doc_id, "", "empty_text"
    if len(value) > max_chars:
        return doc_id, "", f"too_large: {len(value):,} characters > max_doc_chars {max_chars:,}"
    if _not_utf8(value):
        return doc_id, "", f"invalid_utf8: in the text field '{text_field}'"
    return doc_id, value, ""


def _not_utf8(s: str) -> bool:
    """True when `s` holds lone surrogates: bytes that were not UTF-8 (CSV's
    surrogateescape) or a JSON "\\udc80" escape; neither can be written out."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
