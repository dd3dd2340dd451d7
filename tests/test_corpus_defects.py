"""One bad row costs one row: every defect the readers meet becomes an error row with
its file, line and reason, and every other row of the file is read as it was."""

import gzip
import json

import pyarrow as pa
import pytest

from falconer_ray.corpus.read import check_fields, iter_corpus
from falconer_ray.corpus.rows import GZIP_RATIO_FLOOR


def rows(corpus, **kw):
    return {r["doc_id"]: r for r in pa.concat_tables(list(iter_corpus(corpus, **kw))).to_pylist()}


def test_jsonl_values_python_cannot_parse_cost_one_row_each(tmp_path):
    lines = [json.dumps({"text": "first"}), '{"text": "big", "n": ' + "9" * 5000 + "}",
             "[" * 100_000 + "]" * 100_000, '{"text": "lone \\udc80 surrogate"}', json.dumps({"text": "last"})]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    out = rows(tmp_path)
    assert len(out) == 5
    assert out["a.jsonl:0"]["text"] == "first" and out["a.jsonl:4"]["text"] == "last"
    assert out["a.jsonl:1"]["error"].startswith("malformed_json") and "(line 2)" in out["a.jsonl:1"]["error"]
    assert out["a.jsonl:2"]["error"] == "malformed_json: nested too deeply (line 3)"
    assert out["a.jsonl:3"]["error"].startswith("invalid_utf8")
    check_fields(tmp_path)  # the field check reads past them too


def test_csv_invalid_bytes_keep_quoting_in_step(tmp_path):
    (tmp_path / "c.csv").write_bytes(b'id,text\n1,"fine"\n2,"bad \xff byte\nover two lines"\n3,"next, row"\n4,last\n')
    out = rows(tmp_path, id_field="id")
    assert out["1"]["text"] == "fine" and out["3"]["text"] == "next, row" and out["4"]["text"] == "last"
    assert out["2"]["error"].startswith("invalid_utf8")
    assert len(out) == 4


def test_csv_long_fields_and_broken_quotes(tmp_path):
    long = "w " * 100_000  # over Python's default CSV field limit of 131,072 characters
    (tmp_path / "c.csv").write_text(f'id,text\n1,a\n2,"{long}"\n3,b\n4,c\n5,d\n6,e\n7,f\n')
    out = rows(tmp_path, id_field="id")
    assert [out[str(i)]["text"] for i in (1, 3, 4, 5, 6, 7)] == list("abcdef")
    assert out["2"]["text"] == long
    out = rows(tmp_path, id_field="id", max_doc_chars=10_000)
    assert out["c.csv:1"]["error"] == "too_large: a line of 200,005 characters (line 3)"  # never held whole
    assert len(out) == 7
    (tmp_path / "c.csv").write_text('id,text\n1,a\n2,"' + "x\n" * 20_000 + '3,b\n4,c\n')  # a quote never closed
    out = rows(tmp_path, id_field="id", max_doc_chars=10_000)
    assert out["1"]["text"] == "a" and out["c.csv:1"]["error"].startswith("too_large: a field over")
    assert "(lines 3-" in out["c.csv:1"]["error"]


def test_a_csv_line_too_long_to_hold_is_read_past(tmp_path):
    (tmp_path / "c.csv").write_text("id,text\n1,a\n2," + "q" * 50_000 + "\n3,b\n")
    out = rows(tmp_path, id_field="id", max_doc_chars=2000)
    assert out["1"]["text"] == "a" and out["3"]["text"] == "b"
    assert out["c.csv:1"]["error"] == "too_large: a line of 50,003 characters (line 3)"
    assert len(out) == 3


def test_documents_over_the_cap_are_error_rows(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "y" * 5000}) + "\n" + json.dumps({"text": "ok"}) + "\n"
                                      + json.dumps({"text": "z" * 100_000}) + "\n" + json.dumps({"text": "end"}) + "\n")
    (tmp_path / "b.txt").write_text("t" * 20_000)
    out = rows(tmp_path, max_doc_chars=2000)
    assert out["a.jsonl:0"]["error"] == "too_large: 5,000 characters > max_doc_chars 2,000"
    assert out["a.jsonl:1"]["text"] == "ok" and out["a.jsonl:3"]["text"] == "end"
    assert out["a.jsonl:2"]["error"].startswith("too_large: a line of 100,013 bytes")  # never held whole
    assert out["b.txt:0"]["error"].startswith("too_large")
    assert len(out) == 5


def test_gzip_bomb_is_refused_in_a_stream(tmp_path):
    with gzip.open(tmp_path / "bomb.jsonl.gz", "wb") as f:
        f.write(json.dumps({"text": "before"}).encode() + b"\n")
        f.write(b"0" * (GZIP_RATIO_FLOOR + (1 << 20)))
    out = rows(tmp_path)
    assert out["bomb.jsonl.gz:0"]["text"] == "before"
    assert out["bomb.jsonl.gz:unreadable"]["error"].startswith("unreadable_file: gzip stream expands more than")


@pytest.mark.parametrize("ext", ["csv", "tsv"])
def test_every_csv_row_is_accounted_for(tmp_path, ext):
    sep = "," if ext == "csv" else "\t"
    body = b"".join(f'{i}{sep}"row {i}"\n'.encode() if i % 3 else f"{i}{sep}bad \xff{i}\n".encode("latin-1")
                    for i in range(30))
    (tmp_path / f"x.{ext}").write_bytes(f"id{sep}text\n".encode() + body)
    out = rows(tmp_path, id_field="id")
    assert len(out) == 30
    assert sum(r["error"].startswith("invalid_utf8") for r in out.values()) == 10


def test_links_to_outside_the_corpus_are_read_and_named(tmp_path, capsys):
    from falconer_ray import progress

    corpus, outside = tmp_path / "corpus", tmp_path / "[elsewhere].jsonl"
    corpus.mkdir()
    outside.write_text(json.dumps({"text": "from outside"}) + "\n")
    (corpus / "in.jsonl").write_text(json.dumps({"text": "inside"}) + "\n")
    (corpus / "link.jsonl").symlink_to(outside)
    progress.set_mode("json")
    try:
        out = rows(corpus)
    finally:
        progress.set_mode("auto")
    assert out["link.jsonl:0"]["text"] == "from outside" and out["in.jsonl:0"]["text"] == "inside"
    said = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert said == [f"1 corpus file(s) in {corpus} link to outside it, e.g. link.jsonl -> {outside}; "
                    "they are read as part of the corpus"]
