"""Generated corpora mixing every row defect the readers know, in every format: the
readers never crash, and every row of every file is accounted for, as a document
or as an error row that names its reason.

One hypothesis example is one corpus: a few files of a random format (JSONL, CSV,
TSV, line text, Parquet, each optionally gzipped), each a random mix of good rows
and defects. The expected outcome of each row is known when it is generated, so
the test checks the count, the order and the reason of every row, not only that
nothing raised.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falconer_ray.corpus.read import iter_corpus

CAP = 400  # max_doc_chars for these corpora: small, so over-cap rows are cheap to make
EXAMPLES = int(1000 * float(os.environ.get("FALCONER_FUZZ_SCALE", "1")))

words = st.text(alphabet=st.sampled_from("abcdefghij klmnop,.;:!?'\"éü東😀\t"), min_size=1, max_size=60)
good_text = words.filter(lambda t: t.strip() and "\n" not in t and "\r" not in t)

# Each defect: (kind, the error reason it must produce, or None for a good document)
JSONL_DEFECTS = ["good", "bad_json", "big_number", "deep", "surrogate", "over_cap", "empty", "no_field",
                 "not_object", "not_string", "bad_utf8", "blank_line"]
CSV_DEFECTS = ["good", "bad_utf8", "over_cap", "huge_line", "empty", "embedded_newline", "quoted_comma"]
TEXT_DEFECTS = ["good", "bad_utf8", "over_cap_line"]


def jsonl_line(kind: str, text: str) -> tuple[bytes, str | None]:
    """A line and the reason it must fail with (None: a document with `text`)."""
    return {
        "good": (json.dumps({"text": text}).encode(), None),
        "bad_json": (b'{"text": "unterminated', "malformed_json"),
        "big_number": (b'{"text": "x", "n": ' + b"7" * 5000 + b"}", "malformed_json"),
        "deep": (b"[" * 1500 + b"]" * 1500, "malformed_json"),
        "surrogate": (b'{"text": "a \\udc80 b"}', "invalid_utf8"),
        "over_cap": (json.dumps({"text": "w" * (CAP + 1)}).encode(), "too_large"),
        "empty": (json.dumps({"text": "   "}).encode(), "empty_text"),
        "no_field": (json.dumps({"body": text}).encode(), "missing_text_field"),
        "not_object": (b"[1, 2]", "malformed_json"),
        "not_string": (json.dumps({"text": 42}).encode(), "text_not_string"),
        "bad_utf8": (b'{"text": "caf\xe9"}', "invalid_utf8"),
    }[kind]


def csv_row(kind: str, text: str, sep: str) -> tuple[list[str] | bytes, str | None]:
    return {
        "good": ([text], None),
        "bad_utf8": (None, "invalid_utf8"),  # written as raw bytes below
        "over_cap": (["v" * (CAP + 1)], "too_large"),
        "huge_line": (["h" * (20 * CAP)], "too_large"),  # past the line limit: read past, never held
        "empty": ([" "], "empty_text"),
        "embedded_newline": ([text + "\nsecond line"], None),
        "quoted_comma": ([text + sep + " more"], None),
    }[kind]


def write_csv(rows: list[tuple[str, str]], sep: str) -> tuple[bytes, list[tuple[str | None, str | None]]]:
    out, expected = io.StringIO(), []
    w = csv.writer(out, delimiter=sep, lineterminator="\n")
    w.writerow(["id", "text"])
    body = out.getvalue().encode()
    for i, (kind, text) in enumerate(rows):
        value, reason = csv_row(kind, text, sep)
        if kind == "bad_utf8":
            line = f"r{i}{sep}\"caf".encode() + b"\xe9" + b' ok"\n'
        else:
            buf = io.StringIO()
            csv.writer(buf, delimiter=sep, lineterminator="\n").writerow([f"r{i}", *value])
            line = buf.getvalue().encode()
        body += line
        expected.append((None if reason else value[0], reason))
    return body, expected


def write_file(folder: Path, name: str, fmt: str, rows: list[tuple[str, str]], gz: bool):
    """Write one corpus file; the expected (text, reason) per row, in order."""
    expected: list[tuple[str | None, str | None]] = []
    if fmt == "parquet":
        texts = [t if k == "good" else ("" if k == "empty" else "w" * (CAP + 1)) for k, t in rows]
        pq.write_table(pa.table({"text": texts}), folder / f"{name}.parquet")
        return [(t, None) if k == "good" else (None, "empty_text" if k == "empty" else "too_large")
                for (k, _), t in zip(rows, texts)]
    if fmt == "jsonl":
        lines = []
        for kind, text in rows:
            if kind == "blank_line":
                lines.append(b"   ")
                continue  # blank lines are no rows at all
            line, reason = jsonl_line(kind, text)
            lines.append(line)
            expected.append((None if reason else text, reason))
        data = b"\n".join(lines) + b"\n"
    elif fmt in ("csv", "tsv"):
        data, expected = write_csv(rows, "," if fmt == "csv" else "\t")
    else:  # line text
        lines = []
        for kind, text in rows:
            if kind == "bad_utf8":
                lines.append(b"caf\xe9"), expected.append((None, "invalid_utf8"))
            elif kind == "over_cap_line":
                lines.append(b"x" * (6 * CAP + 5000)), expected.append((None, "too_large"))
            else:
                lines.append(text.encode()), expected.append((text, None))
        data = b"\n".join(lines) + b"\n"
    path = folder / f"{name}.{'txt' if fmt == 'text' else fmt}{'.gz' if gz else ''}"
    path.write_bytes(gzip.compress(data) if gz else data)
    return expected


def file_spec(fmt: str):
    kinds = {"jsonl": JSONL_DEFECTS, "csv": CSV_DEFECTS, "tsv": CSV_DEFECTS, "text": TEXT_DEFECTS,
             "parquet": ["good", "empty", "over_cap"]}[fmt]
    return st.tuples(st.just(fmt), st.lists(st.tuples(st.sampled_from(kinds), good_text), min_size=1, max_size=12),
                     st.booleans() if fmt != "parquet" else st.just(False))


corpora = st.lists(st.sampled_from(["jsonl", "csv", "tsv", "text", "parquet"]).flatmap(file_spec),
                   min_size=1, max_size=3)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(corpora)
def test_generated_corpora_lose_no_row(files):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        expected = {}
        for k, (fmt, rows, gz) in enumerate(files):
            expected[k] = write_file(folder, f"f{k}", fmt, rows, gz)
        tables = list(iter_corpus(folder, text_unit="line", max_doc_chars=CAP))
        got = pa.concat_tables(tables).to_pylist() if tables else []
        want = [w for k in sorted(expected) for w in expected[k]]  # files are read in name order
        assert len(got) == len(want), (files, got)
        for row, (text, reason) in zip(got, want):
            if reason is None:
                assert row["error"] == "" and row["text"] == text, (row, text)
            else:
                assert row["error"].startswith(reason) and row["text"] == "", (row, reason)
