import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from falconer_ray.corpus.read import CorpusError, iter_corpus, list_files
from falconer_ray.corpus.sample import sample_documents


def rows(corpus, **kw):
    return pa.concat_tables(list(iter_corpus(corpus, **kw))).to_pylist()


def test_every_format_and_bad_rows_become_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"id": "x1", "text": "good one"}) + "\n{broken\n" + json.dumps({"body": "no text"}) + "\n"
        + json.dumps({"text": "  \n "}) + "\n" + json.dumps({"text": 42}) + "\n" + "[1, 2]\n")
    pq.write_table(pa.table({"text": ["from parquet"], "id": ["p1"]}), tmp_path / "b.parquet")
    (tmp_path / "c.csv").write_text('id,text\nc1,"a, quoted\nmultiline text"\n')
    (tmp_path / "d.txt").write_text("a whole file\nis one document")
    with gzip.open(tmp_path / "e.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "compressed"}) + "\n")
    (tmp_path / "f.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe bad"}\n')
    (tmp_path / "notes.md").write_text("ignored: not a corpus format")
    out = rows(tmp_path, id_field="id")
    by_id = {r["doc_id"]: r for r in out}
    assert by_id["x1"]["text"] == "good one"
    assert by_id["a.jsonl:1"]["error"].startswith("malformed_json")
    assert by_id["a.jsonl:2"]["error"].startswith("missing_text_field")
    assert by_id["a.jsonl:3"]["error"] == "empty_text"
    assert by_id["a.jsonl:4"]["error"].startswith("text_not_string")
    assert by_id["a.jsonl:5"]["error"].startswith("malformed_json")
    assert by_id["p1"]["text"] == "from parquet"
    assert by_id["c1"]["text"] == "a, quoted\nmultiline text"
    assert by_id["d.txt:0"]["text"] == "a whole file\nis one document"
    assert by_id["e.jsonl.gz:0"]["text"] == "compressed"
    assert by_id["f.jsonl:0"]["text"] == "ok"
    assert by_id["f.jsonl:1"]["error"].startswith("invalid_utf8")
    assert len(out) == 6 + 1 + 1 + 1 + 1 + 2


def test_text_lines_and_errors_for_paths(tmp_path):
    (tmp_path / "d.txt").write_text("one\ntwo\n")
    assert [r["text"] for r in rows(tmp_path, text_unit="line")] == ["one", "two"]
    with pytest.raises(CorpusError, match="not found"):
        list_files(tmp_path / "missing")
    (tmp_path / "x.bin").write_text("?")
    with pytest.raises(CorpusError, match="unknown file type"):
        list_files(tmp_path / "x.bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="no corpus files"):
        list_files(empty)


def test_large_file_streams_in_chunks(tmp_path):
    with (tmp_path / "big.jsonl").open("w") as f:
        for i in range(2000):
            f.write(json.dumps({"text": f"doc {i}"}) + "\n")
    chunks = list(iter_corpus(tmp_path))
    assert len(chunks) > 1 and sum(c.num_rows for c in chunks) == 2000


def test_sample_is_deterministic_and_skips_errors(ray_local, tmp_path):
    import ray.data

    table = pa.table({"doc_id": [f"d{i}" for i in range(500)], "text": [f"t{i}" for i in range(500)],
                      "error": ["" if i % 10 else "empty_text" for i in range(500)]})
    ds = ray.data.from_arrow(table)
    a = sample_documents(ds, 40, seed=1)
    b = sample_documents(ray.data.from_arrow(table).repartition(7), 40, seed=1)
    assert a == b and len(a) == 40
    assert all(int(d["doc_id"][1:]) % 10 for d in a)
    assert sample_documents(ds, 40, seed=2) != a
    assert len(sample_documents(ds, 10_000, seed=1)) == 450
