"""`--upload URI` of the jobs/ entry points: argument handling, pyarrow.fs copies, and the
job scripts themselves on a stage that needs neither Ray nor a model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from falconer_ray.cli.upload import UploadError, pop_upload, resolve, output_of, upload

REPO = Path(__file__).resolve().parents[1]
PLAN = {"instruction": "positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this review positive?"}], "keep": "positive"}


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_pop_upload():
    assert pop_upload(["run", "R", "--upload", "s3://b/p", "--corpus", "c"]) == (["run", "R", "--corpus", "c"], "s3://b/p")
    assert pop_upload(["--upload=gs://b/p", "mine"]) == (["mine"], "gs://b/p")
    assert pop_upload(["run", "R"]) == (["run", "R"], None)
    for bad in (["run", "--upload"], ["run", "--upload", "--corpus", "c"]):
        with pytest.raises(UploadError, match="needs a URI"):
            pop_upload(bad)


def test_output_of_reads_the_cli():
    assert output_of(["run", "--corpus", "c", "runs/x"]) == Path("runs/x")
    assert output_of(["train", "runs/y", "--epochs", "2"]) == Path("runs/y")
    assert output_of(["mine", "instr", "corpus", "-o", "out", "--gpu"]) == Path("out")
    assert output_of(["mine", "instr", "corpus"]) == Path("runs/latest")  # the CLI's default
    assert output_of(["bench", "memory", "--docs", "100", "--json", "b/m.json"]) == Path("b/m.json")
    with pytest.raises(UploadError, match="--out"):
        output_of(["plan", "instr"])
    with pytest.raises(UploadError, match="--json"):
        output_of(["bench", "memory"])
    with pytest.raises(UploadError, match="unknown command"):
        output_of(["nope", "x"])


@pytest.mark.parametrize("uri", ["", "  ", "bogus://bucket/x", "s3://"])
def test_bad_uris_are_refused(uri):
    with pytest.raises(UploadError):
        resolve(uri)


def test_upload_copies_the_tree(tmp_path):
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "report.json").write_text('{"docs_in": 1}')
    (run / "results" / "part-0.parquet").write_bytes(b"PAR1")
    for dest, uri in [(tmp_path / "a" / "b", (tmp_path / "a" / "b").as_uri()), (tmp_path / "c", str(tmp_path / "c"))]:
        assert upload(run, uri) == str(dest)
        assert files_under(dest) == files_under(run)
    assert upload(run / "report.json", str(tmp_path / "e")) == str(tmp_path / "e" / "report.json")
    assert (tmp_path / "e" / "report.json").read_text() == '{"docs_in": 1}'
    with pytest.raises(UploadError, match="does not exist"):
        upload(tmp_path / "missing", str(tmp_path / "d"))


def job(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_stage_job_uploads_after_success(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    run, dest = tmp_path / "run", tmp_path / "bucket" / "prefix"
    done = job("jobs/stage.py", "plan", "positive reviews", "--plan", str(plan), "--out", str(run),
               "--upload", dest.as_uri())
    assert done.returncode == 0, done.stderr
    assert (dest / "plan.json").exists() and files_under(dest) == files_under(run)


def test_jobs_fail_clearly(tmp_path):
    dest = tmp_path / "dest"
    bad_uri = job("jobs/mine.py", "instr", str(tmp_path), "--out", str(tmp_path / "run"), "--upload", "bogus://x")
    assert bad_uri.returncode != 0 and "error: cannot use --upload bogus://x" in bad_uri.stderr
    no_uri = job("jobs/stage.py", "run", str(tmp_path / "run"), "--upload")
    assert no_uri.returncode != 0 and "--upload needs a URI" in no_uri.stderr
    failed = job("jobs/stage.py", "run", str(tmp_path / "missing"), "--upload", str(dest))
    assert failed.returncode == 2 and "no run directory at" in failed.stderr
    assert not dest.exists()  # nothing is uploaded after a failure
    usage = job("jobs/stage.py", "mine")
    assert usage.returncode != 0 and "usage: python jobs/stage.py" in usage.stderr


def test_bench_job_forwards_to_falconer_bench(tmp_path):
    helped = job("jobs/bench.py", "--help")
    assert helped.returncode == 0 and "throughput" in helped.stdout
    no_json = job("jobs/bench.py", "memory", "--upload", str(tmp_path / "dest"))
    assert no_json.returncode != 0 and "bench: --json FILE" in no_json.stderr
