"""A corpus in an object store: a real S3-compatible server (moto) on 127.0.0.1, read
through pyarrow.fs, gives the same rows, counts and mined outputs as the same files on a
local disk; a URI that cannot be read, or carries a secret, is refused with a reason."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from falconer_ray.bench.serve import free_port
from falconer_ray.cli.main import app
from falconer_ray.config import RunConfig, merge
from falconer_ray.corpus import CorpusError
from falconer_ray.corpus.count import count_documents
from falconer_ray.corpus.read import check_fields, iter_corpus, list_files

BUCKET = "corpora"


@pytest.fixture(scope="module")
def s3_endpoint():
    """A moto S3 server on a free loopback port, stopped by PID at the end."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # up to 20 s to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the local S3 server did not start")
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def write_local_corpus(root: Path) -> Path:
    """Every format, a gzipped file, a nested folder, bad rows, and names a corpus skips."""
    root.mkdir(parents=True)
    lines = [json.dumps({"id": f"j{i}", "text": f"Review {i}: Tom Hanks was wonderful in this film."}) for i in range(30)]
    (root / "a.jsonl").write_text("\n".join(lines[:20] + ["{not json", json.dumps({"id": "x"})]) + "\n")
    (root / "nested").mkdir()
    with gzip.open(root / "nested" / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(lines[20:]) + "\n")
    (root / "c.csv").write_text('id,text\nc1,"A dull, slow film."\nc2,"Meryl Streep shines, again."\nc3\n')
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(5)], "text": [f"Parquet review {i}" for i in range(5)]}),
                   root / "d.parquet", row_group_size=2)
    (root / "nested" / "e.txt").write_text("one line of text\nanother line\n")
    (root / ".hidden.jsonl").write_text(lines[0] + "\n")
    (root / "notes.md").write_text("not a corpus file\n")
    return root


def upload(endpoint: str, root: Path, prefix: str) -> str:
    """The folder's files under s3://BUCKET/prefix; returns the corpus URI."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=f"http://{endpoint}", region_name="us-east-1")
    if BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=BUCKET)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())
    return f"s3://{BUCKET}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


@pytest.fixture(scope="module")
def corpora(s3_endpoint, tmp_path_factory):
    local = write_local_corpus(tmp_path_factory.mktemp("remote") / "corpus")
    return local, upload(s3_endpoint, local, "reviews/2026")


def rows(corpus, **options) -> list[dict]:
    return [r for t in iter_corpus(corpus, id_field="id", **options) for r in t.to_pylist()]


def test_a_remote_corpus_reads_as_the_local_one(corpora):
    local, remote = corpora
    assert [Path(str(f)).name for f in list_files(remote)] == [p.name for p in list_files(local)]
    assert [str(f).split("/2026/", 1)[1] for f in list_files(remote)] == \
        ["a.jsonl", "c.csv", "d.parquet", "nested/b.jsonl.gz", "nested/e.txt"]
    want = rows(local, text_unit="line")
    assert rows(remote, text_unit="line") == want
    assert {r["error"].split(":")[0] for r in want if r["error"]} == {"malformed_json", "missing_text_field"}
    assert rows(remote, text_unit="line", limit=23) == want[:23]
    one_file = remote.replace("/2026?", "/2026/nested/b.jsonl.gz?")
    assert rows(one_file) == rows(local / "nested" / "b.jsonl.gz")
    check_fields(remote, id_field="id")
    cfg = RunConfig(corpus=str(local), text_unit="line")
    assert count_documents(merge(cfg, {"corpus": remote}), 1 << 30) == count_documents(cfg, 1 << 30)


def test_remote_uris_that_cannot_be_read_are_refused_with_a_reason(corpora, s3_endpoint):
    _, remote = corpora
    query = remote.split("?", 1)[1]
    cases = {
        f"s3://{BUCKET}/no/such/prefix?{query}": "corpus not found",
        f"s3://no-such-bucket/x?{query}": "not found",
        f"s3://{BUCKET}/reviews/2026/notes.md?{query}": "unknown file type",
        "ftp://example.com/corpus": "ftp:// is not a corpus location",
    }
    for uri, reason in cases.items():
        with pytest.raises(CorpusError, match=reason):
            list_files(uri)
    planted = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-PLANTED"
    for uri in (f"{remote}&secret_key={planted}", f"s3://AKIAEXAMPLE:{planted}@{BUCKET}/reviews?{query}"):
        with pytest.raises(CorpusError, match="carries credentials") as refused:
            list_files(uri)
        assert planted not in str(refused.value)
        out = CliRunner().invoke(app, ["plan", "find people", "--corpus", uri])
        assert out.exit_code == 2 and "carries credentials" in out.output and planted not in out.output


@pytest.mark.slow
def test_mining_a_remote_corpus_writes_what_the_local_one_does(ray_local, corpora, tmp_path, cache_dir):
    """The same proxy mines both: the same documents land in the same folders in the same
    order, with the same spans and error rows, and errors/ is byte-identical. Scores are
    compared to 1e-6: a document's score can move by one float ulp with the other documents
    of its forward batch, which Ray Data's streaming picks by timing, remote or not."""
    import torch

    from falconer_ray.bench.throughput import fresh_proxy
    from falconer_ray.pipeline import finish, stage_mine
    from test_faults import mined_run, outputs

    local, remote = corpora
    torch.manual_seed(0)
    cfg = RunConfig(corpus=str(local), id_field="id", text_unit="line", cache_dir=cache_dir,
                    mine={"unit_rows": 8, "label_threshold": 0.5, "span_threshold": 0.0})
    proxy_dir = fresh_proxy(cfg, tmp_path / "proxy")

    def mine(name: str, corpus: str):
        run_cfg = merge(cfg, {"corpus": corpus})
        run = mined_run(tmp_path, name, proxy_dir, run_cfg)
        stage_mine(run, run_cfg)
        finish(run)
        report = json.loads(run.report.read_text())
        assert report["invariant_ok"] and report["accounted"]
        errors = {str(f.relative_to(run.path)): hashlib.sha256(f.read_bytes()).hexdigest()
                  for f in sorted(Path(run.errors).rglob("*")) if f.is_file()}
        return report, outputs(run), errors

    (report, here, errors), (report_remote, there, errors_remote) = mine("local", str(local)), mine("remote", remote)
    assert report["docs_in"] == report_remote["docs_in"] == 42
    assert 0 < report["docs_kept"] == report_remote["docs_kept"] < 42
    assert errors_remote == errors and len(errors) >= 1
    assert list(there) == list(here)  # same documents, same order
    for doc_id, want in here.items():
        got = dict(there[doc_id])
        assert got.pop("label_positive", None) == pytest.approx(want.get("label_positive"), abs=1e-6), doc_id
        spans = [{**s, "score": pytest.approx(s["score"], abs=1e-6)} for s in want.get("span_people") or []]
        assert (got.pop("span_people", None) or []) == spans, doc_id
        assert got == {k: v for k, v in want.items() if k not in ("label_positive", "span_people")}, doc_id
