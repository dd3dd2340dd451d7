"""Resuming a mining run whose driver was killed: `falconer run DIR` runs as a child
process with its own private Ray, is SIGKILLed (its whole process group, then every
process of its Ray by PID) once some units are committed, and `falconer run DIR
--resume` finishes the job: same outputs as an undisturbed run, fewer units mined."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.config import RunConfig, merge
from falconer_ray.rundir import RunDir
from falconer_ray.mine.units import MANIFEST, ResumeError, UnitStore, fingerprint
from ray_processes import kill_ray
from test_faults import PLAN, mined_run, outputs, same_rows, split_point

DOCS = 1200
UNIT_ROWS = 50


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cache_dir):
    """A corpus of short reviews in 12 shards (24 units), one untrained proxy, thresholds
    that keep part of the documents and let spans through."""
    import torch

    from falconer_ray.bench.corpus import bench_texts, write_corpus
    from falconer_ray.bench.throughput import fresh_proxy
    from falconer_ray.proxy import Proxy

    root = tmp_path_factory.mktemp("resume")
    texts = bench_texts(DOCS, "rotten_tomatoes")
    corpus = write_corpus(texts, root / "corpus", shards=12)
    torch.manual_seed(0)
    cfg = RunConfig(corpus=str(corpus), id_field="id", cache_dir=cache_dir)
    proxy_dir = fresh_proxy(cfg, root / "proxy")
    proxy = Proxy.load(proxy_dir)
    labels = proxy.label_scores(texts[:200], PLAN["steps"][0]["instruction"])
    spans = [s.score for found in proxy.extract(texts[:60], PLAN["steps"][1]["instruction"], threshold=0.0)
             for s in found]
    cfg = merge(cfg, {"mine.unit_rows": UNIT_ROWS, "mine.batch_size": 50,
                      "mine.label_threshold": split_point(labels), "mine.span_threshold": split_point(spans)})
    return root, proxy_dir, cfg


def start_and_kill(run: RunDir, log_path: Path, address: str | None = None) -> bool:
    """Run `falconer run` in its own process group, on a private Ray (or on `address`);
    SIGKILL the group once three units are committed, then every process of the private
    Ray by PID. False when the child ended first (its log says why)."""
    ray_dir = tempfile.mkdtemp(prefix="fr-", dir="/tmp")  # short: Ray's socket paths must fit
    env = {**os.environ, "RAY_TMPDIR": ray_dir, "RAY_ADDRESS": address or "local",
           "FALCONER_OBJECT_STORE_BYTES": "300000000"}
    with log_path.open("w") as log:
        child = subprocess.Popen([sys.executable, "-m", "falconer_ray", "run", str(run.path)], env=env,
                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while committed(run) < 3 and child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            if child.poll() is not None:
                return False
            assert committed(run) >= 3, "no unit was committed in time"
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
            return True
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=30)
            kill_ray(ray_dir)
            shutil.rmtree(ray_dir, ignore_errors=True)


def committed(run: RunDir) -> int:
    path = run.rows / MANIFEST
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_killed_driver_resumes_and_redoes_only_unfinished_units(ray_local, setup):
    from falconer_ray.pipeline import finish, stage_mine

    root, proxy_dir, cfg = setup
    calm = mined_run(root, "calm", proxy_dir, cfg)
    stage_mine(calm, cfg)
    finish(calm)

    run = mined_run(root, "killed", proxy_dir, cfg)
    if not start_and_kill(run, root / "killed.log"):
        # A fresh Ray waits 30 s at most for its raylet; on an overloaded machine that can
        # fail. The driver is then run on this session's Ray: killing it kills the job.
        assert "node timed out during startup" in (root / "killed.log").read_text(), (root / "killed.log").read_text()[-3000:]
        import ray

        assert start_and_kill(run, root / "killed-joined.log", ray.get_runtime_context().gcs_address), \
            (root / "killed-joined.log").read_text()[-3000:]
    units_at_kill = committed(run)
    assert not run.report.exists() and not run.results.exists()

    # A changed corpus file is refused, with the reason; restored, it is accepted again.
    shard = Path(cfg.corpus) / "part-000.jsonl"
    before, st = shard.read_bytes(), shard.stat()
    shard.write_bytes(before + b'{"id": "new", "text": "a new review"}\n')
    refused = CliRunner().invoke(app, ["run", str(run.path), "--resume"])
    assert refused.exit_code == 2 and "cannot resume: the corpus changed" in refused.output, refused.output
    shard.write_bytes(before)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))

    resumed = CliRunner().invoke(app, ["run", str(run.path), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(run.report.read_text())
    units = report["units"]
    total = DOCS // UNIT_ROWS
    print(f"\ncommitted at kill: {units_at_kill}, resume: {units}")
    assert units["total"] == total and units["reused"] >= units_at_kill >= 3
    assert units["mined"] == total - units["reused"] < total
    assert report["docs_in"] == DOCS and report["invariant_ok"] and report["accounted"]

    calm_rows, rows = outputs(calm), outputs(run)  # outputs() fails on a doc_id written twice
    assert len(rows) == DOCS
    same_rows(calm_rows, rows)
    assert sum(r["folder"] == "results" for r in rows.values()) == report["docs_kept"] > 0

    again = CliRunner().invoke(app, ["run", str(run.path), "--resume"])  # a finished run: nothing to mine
    assert again.exit_code == 0, again.output
    assert json.loads(run.report.read_text())["units"]["mined"] == 0


def test_resume_is_refused_when_the_question_changed(tmp_path):
    from falconer_ray.corpus.read import corpus_shards
    from falconer_ray.plan.schema import Plan

    corpus, proxy_dir = tmp_path / "corpus", tmp_path / "proxy"
    corpus.mkdir(), proxy_dir.mkdir()
    (corpus / "a.jsonl").write_text('{"text": "one"}\n')
    (proxy_dir / "proxy.safetensors").write_bytes(b"weights")
    cfg, plan = RunConfig(corpus=str(corpus)), Plan.model_validate(PLAN)
    fp = fingerprint(corpus_shards(corpus), plan, cfg, proxy_dir)
    store = UnitStore(tmp_path / "_rows")
    assert store.open(fp, resume=False) == {}
    assert store.open(fp, resume=True) == {}
    stricter = merge(cfg, {"mine.label_threshold": 0.99})
    with pytest.raises(ResumeError, match="the settings changed"):
        store.open(fingerprint(corpus_shards(corpus), plan, stricter, proxy_dir), resume=True)
    with pytest.raises(ResumeError, match="the plan changed"):
        store.open(fingerprint(corpus_shards(corpus), Plan.model_validate({**PLAN, "keep": None}), cfg, proxy_dir),
                   resume=True)
    (proxy_dir / "proxy.safetensors").write_bytes(b"retrained")
    with pytest.raises(ResumeError, match="the proxy changed"):
        store.open(fingerprint(corpus_shards(corpus), plan, cfg, proxy_dir), resume=True)
    (corpus / "b.jsonl").write_text('{"text": "two"}\n')
    with pytest.raises(ResumeError, match="the corpus, proxy changed"):
        store.open(fingerprint(corpus_shards(corpus), plan, cfg, proxy_dir), resume=True)
    store.open(fp := fingerprint(corpus_shards(corpus), plan, cfg, proxy_dir), resume=False)
    faster = merge(cfg, {"mine.actors": 1, "mine.batch_size": 7})  # how, not what: resumable
    assert store.open(fingerprint(corpus_shards(corpus), plan, faster, proxy_dir), resume=True) == {}



def test_resume_notices_a_symlink_target_and_the_cascade(tmp_path):
    from falconer_ray.corpus.read import corpus_shards
    from falconer_ray.plan.schema import Plan

    corpus, proxy_dir, elsewhere = tmp_path / "corpus", tmp_path / "proxy", tmp_path / "elsewhere.jsonl"
    corpus.mkdir(), proxy_dir.mkdir()
    elsewhere.write_text('{"text": "one"}\n')
    (corpus / "a.jsonl").symlink_to(elsewhere)
    (proxy_dir / "proxy.safetensors").write_bytes(b"weights")
    cfg, plan = RunConfig(corpus=str(corpus)), Plan.model_validate(PLAN)

    def fp(c=cfg, threshold=None, teacher=None):
        return fingerprint(corpus_shards(corpus), plan, c, proxy_dir, threshold, teacher)

    store = UnitStore(tmp_path / "_rows")
    store.open(fp(), resume=False)
    with elsewhere.open("a") as f:  # the link is unchanged; what it points at grew
        f.write('{"text": "two"}\n')
    with pytest.raises(ResumeError, match="the corpus changed"):
        store.open(fp(), resume=True)
    store.open(fp(threshold=0.8, teacher="qwen"), resume=False)
    for changed in (dict(threshold=0.7, teacher="qwen"), dict(threshold=0.8, teacher="gemma")):
        with pytest.raises(ResumeError, match="the cascade changed"):
            store.open(fp(**changed), resume=True)
    with pytest.raises(ResumeError, match="the settings changed"):
        store.open(fp(merge(cfg, {"mine.target_agreement": 0.9}), 0.8, "qwen"), resume=True)


def test_a_manifest_line_torn_by_a_kill_hides_no_later_unit(tmp_path):
    import pyarrow as pa

    store = UnitStore(tmp_path / "_rows")
    store.open({"corpus": "c"}, resume=False)
    part = pa.table({"doc_id": ["a"], "status": ["kept"], "_row": [0], "_unit_rows": [1], "_last": [True]})
    store.commit("f0000000-b0000000", [part], True)
    with (store.folder / MANIFEST).open("a") as f:
        f.write('{"unit": "f0000001-b00')  # the kill came mid-line
    again = UnitStore(store.folder)
    assert set(again.open({"corpus": "c"}, resume=True)) == {"f0000000-b0000000"}
    again.commit("f0000002-b0000000", [part], True)
    third = UnitStore(store.folder)
    assert set(third.open({"corpus": "c"}, resume=True)) == {"f0000000-b0000000", "f0000002-b0000000"}

@pytest.mark.slow
def test_a_driver_that_dies_between_commits_resumes_from_its_units(ray_local, tmp_path, monkeypatch, cache_dir):
    """The same on a tiny corpus, in process: the driver dies after its fifth commit."""
    from falconer_ray.bench.throughput import fresh_proxy
    from falconer_ray.pipeline import finish, stage_mine

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(4):
        (corpus / f"p{k}.jsonl").write_text("".join(
            json.dumps({"id": f"k{k}-{i}", "text": f"Tom Hanks is great in film {i} of shard {k}."}) + "\n"
            for i in range(40)))
    cfg = RunConfig(corpus=str(corpus), id_field="id", cache_dir=cache_dir,
                    mine={"unit_rows": 10, "batch_size": 10, "label_threshold": 0.0})
    proxy_dir = fresh_proxy(cfg, tmp_path / "proxy")
    calm = mined_run(tmp_path, "calm", proxy_dir, cfg)
    stage_mine(calm, cfg)
    finish(calm)

    run = mined_run(tmp_path, "cut", proxy_dir, cfg)
    commit = UnitStore.commit

    def dying_commit(self, *args, **kwargs):
        if len(self.entries) >= 5:
            raise KeyboardInterrupt("the driver dies")
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(UnitStore, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        stage_mine(run, cfg)
    monkeypatch.setattr(UnitStore, "commit", commit)
    stats = stage_mine(run, cfg, resume=True)
    assert stats["units"] == {**stats["units"], "total": 16, "reused": 5, "mined": 11}
    assert finish(run)["invariant_ok"]
    calm_rows, rows = outputs(calm), outputs(run)
    assert rows.keys() == calm_rows.keys() and len(rows) == 160
    for doc_id, a in calm_rows.items():
        b = rows[doc_id]
        assert a["folder"] == b["folder"] == "results", doc_id
        assert a["label_positive"] == pytest.approx(b["label_positive"], abs=1e-6)
        assert [(s["start"], s["end"]) for s in a["span_people"]] == [(s["start"], s["end"]) for s in b["span_people"]]
