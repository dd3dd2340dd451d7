"""`ray job submit` to a real Ray head on loopback, with token auth: jobs/stage.py and
jobs/mine.py mine a tiny corpus as Ray Data jobs, and `--upload` copies the run directory.

The head runs as `ray start --head --block` in its own process group, so teardown stops
exactly the processes this test started (`ray stop` would stop every Ray on the machine).
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from falconer_ray.config import RunConfig
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
EXCLUDES = [".git", ".gpu", "runs", "docs", ".pytest_cache", ".hypothesis", "*.egg-info", "__pycache__"]
PLAN = {"instruction": "Names of people praised in positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Extract the names of people who are praised."}],
    "keep": "positive"}


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def stop_head(proc: subprocess.Popen) -> None:
    """SIGTERM `ray start --block` (it shuts its node down), then kill what is left of its group."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group is ours: start_new_session=True
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on 127.0.0.1 (2 CPUs, token auth, own ports and temp dir), stopped by PID."""
    # Ray's socket paths live under the temp dir and must stay short (108-byte limit).
    temp = tempfile.mkdtemp(prefix="fr-head-", dir="/tmp")
    gcs, dashboard, client, agent = free_ports(4)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # SIGTERM stops at once, not after a 30 s drain
    env.pop("RAY_ADDRESS", None)
    log_path = tmp_path_factory.mktemp("head") / "head.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
             "--num-cpus=2", "--num-gpus=0", "--object-store-memory=400000000", f"--temp-dir={temp}",
             "--disable-usage-stats"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(address, env["RAY_AUTH_TOKEN"], proc, log_path)
        yield {"address": address, "env": env}
    finally:
        stop_head(proc)
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_dashboard(address: str, token: str, proc, log_path, timeout: float = 120) -> None:
    request = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the dashboard did not answer within {timeout} s:\n{log_path.read_text()[-3000:]}")


def submit(head: dict, tmp_path: Path, *entry: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`ray job submit` the repo as working dir (small: runs/, .git excluded) and wait for the job."""
    runtime_env = {"excludes": EXCLUDES, "env_vars": {
        "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "FALCONER_CACHE": str(tmp_path / "cache")}}
    cmd = [RAY, "job", "submit", "--address", head["address"], "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(runtime_env), "--", "python", *entry]
    done = subprocess.run(cmd, env=head["env"], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"job failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def tiny_corpus(tmp_path: Path) -> Path:
    """30 records: 28 short reviews, one malformed line, one empty text."""
    names = ["Tom Hanks", "Meryl Streep", "Denzel Washington", "Cate Blanchett"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with (corpus / "reviews.jsonl").open("w") as f:
        for i in range(28):
            text = (f"{names[i % 4]} is superb in this moving film." if i % 2 else
                    f"A dull, overlong mess; even {names[i % 4]} cannot save it.")
            f.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")
        f.write("{not json\n" + json.dumps({"id": "blank", "text": ""}) + "\n")
    return corpus


def check_run(run: RunDir, docs_in: int = 30, docs_error: int = 2) -> dict:
    report = json.loads(run.report.read_text())
    assert report["docs_in"] == docs_in
    assert report["docs_kept"] + report["docs_filtered"] + report["docs_error"] == docs_in
    assert report["docs_error"] == docs_error and report["invariant_ok"]
    tables = {d.name: pads.dataset(d, format="parquet").to_table() for d in (run.results, run.filtered, run.errors)}
    assert tables["results"].num_rows == report["docs_kept"]
    assert tables["filtered"].num_rows == report["docs_filtered"]
    assert sorted(tables["errors"].column("doc_id").to_pylist())[0] == "blank"
    assert "span_people" in tables["results"].column_names
    return report


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_jobs_api_requires_the_token(ray_head):
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{ray_head['address']}/api/jobs/", timeout=10)
    assert denied.value.code == 401


def test_stage_run_job_mines_and_uploads(ray_head, tmp_path):
    """A prepared run (plan, config, untrained proxy) mined by `jobs/stage.py run` on the cluster."""
    from falconer_ray.proxy import ProxyModel

    corpus = tiny_corpus(tmp_path)
    run = RunDir(tmp_path / "run").create()
    Plan.model_validate(PLAN).save(run.plan)
    RunConfig(instruction=PLAN["instruction"], corpus=str(corpus), id_field="id",
              cache_dir=str(tmp_path / "cache"), mine={"batch_size": 8, "actors": 1}).save(run.path)
    ProxyModel.from_base("minilm").save(run.proxy)
    dest = tmp_path / "bucket" / "runs" / "people"

    submit(ray_head, tmp_path, "jobs/stage.py", "run", str(run.path), "--upload", dest.as_uri(), timeout=300)

    check_run(run)
    assert files_under(dest) == files_under(run.path)
    assert json.loads((dest / "report.json").read_text()) == json.loads(run.report.read_text())


def test_mine_job_end_to_end(ray_head, tmp_path):
    """`jobs/mine.py` with a given plan: embedded teacher, Ray Train, Ray Data, upload to a path."""
    corpus = tiny_corpus(tmp_path)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(PLAN))
    config = tmp_path / "config.yaml"
    config.write_text("mine: {actors: 1, batch_size: 8}\n")  # one proxy actor: 2 cores are shared
    run = RunDir(tmp_path / "run")
    dest = tmp_path / "uploaded"

    submit(ray_head, tmp_path, "jobs/mine.py", PLAN["instruction"], str(corpus), "--out", str(run.path),
           "--plan", str(plan_file), "--config", str(config), "--id-field", "id", "--n-annotate", "10", "--epochs", "1", "--workers", "1",
           "--upload", str(dest), timeout=480)

    report = check_run(run)
    assert report["teacher"]["annotated_docs"] == 10
    assert (run.proxy / "proxy.safetensors").exists()
    assert files_under(dest) == files_under(run.path)
