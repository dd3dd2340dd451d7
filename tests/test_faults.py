"""Fault tolerance of mining on real Ray: a proxy actor's worker process is SIGKILLed
mid-run; Ray restarts it, retries its batch, and the run's output is complete and
identical to an undisturbed run (no document lost, none written twice)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pyarrow.dataset as pads
import pytest

from falconer_ray.config import RunConfig, merge
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir, write_json
from mining_helpers import PLAN, split_point

pytestmark = pytest.mark.slow

DOCS = 1600


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cache_dir):
    """A corpus, one untrained proxy shared by every run, and thresholds that keep part
    of the documents and let spans through."""
    import torch

    from falconer_ray.bench.corpus import bench_texts, write_corpus
    from falconer_ray.bench.throughput import fresh_proxy
    from falconer_ray.proxy import Proxy

    root = tmp_path_factory.mktemp("faults")
    texts = bench_texts(DOCS, "rotten_tomatoes")
    corpus = write_corpus(texts, root / "corpus", shards=16)  # many small blocks: many batches to retry
    torch.manual_seed(0)
    cfg = RunConfig(corpus=str(corpus), id_field="id", cache_dir=cache_dir)
    proxy_dir = fresh_proxy(cfg, root / "proxy")
    proxy = Proxy.load(proxy_dir)
    sample = texts[:200]
    labels = proxy.label_scores(sample, PLAN["steps"][0]["instruction"])
    spans = [s.score for found in proxy.extract(sample[:60], PLAN["steps"][1]["instruction"], threshold=0.0)
             for s in found]
    cfg = merge(cfg, {"mine.actors": 2, "mine.min_actors": 2, "mine.batch_size": 16,
                      "mine.label_threshold": split_point(labels), "mine.span_threshold": split_point(spans)})
    return root, proxy_dir, cfg


def mined_run(root, name, proxy_dir, cfg) -> RunDir:
    run = RunDir(root / name).create()
    run.proxy.symlink_to(proxy_dir, target_is_directory=True)
    Plan.model_validate(PLAN).save(run.plan)
    cfg.save(run.path)
    # the completion files of the stages before mining: a resume goes straight to mining
    write_json(run.annotation_stats, {"docs": 0})
    if not run.train_metrics.exists():
        write_json(run.train_metrics, {"agreement": None})
    return run


def outputs(run: RunDir) -> dict[str, dict]:
    """Every written row by doc_id, with the folder it landed in; duplicates fail here."""
    rows = {}
    for folder in ("results", "filtered", "errors"):
        for r in pads.dataset(getattr(run, folder)).to_table().to_pylist():
            assert r["doc_id"] not in rows, f"{r['doc_id']} written twice"
            rows[r["doc_id"]] = {**r, "folder": folder}
    return rows


def same_rows(a: dict, b: dict) -> None:
    """Two runs' `outputs` hold the same documents, each in the same folder with the same
    spans; label scores agree to 1e-6 (a score moves by a float ulp with the other
    documents of its forward batch)."""
    assert a.keys() == b.keys()
    for doc_id, x in a.items():
        y = b[doc_id]
        assert x["folder"] == y["folder"], doc_id
        assert x.get("label_positive") == pytest.approx(y.get("label_positive"), abs=1e-6), doc_id
        spans_x, spans_y = x.get("span_people") or [], y.get("span_people") or []
        assert [(s["start"], s["end"]) for s in spans_x] == [(s["start"], s["end"]) for s in spans_y], doc_id


def proxy_actors() -> list:
    from ray.util.state import list_actors

    return [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if "ProxyStage" in a.class_name and a.pid]


def kill_one_actor(run: RunDir, seen: dict, stop: threading.Event) -> None:
    """Once some mined rows are on disk, SIGKILL one proxy actor's worker process, then
    wait for Ray to bring that actor back in a new process."""
    from ray.util.state import list_actors

    try:
        deadline = time.monotonic() + 180
        while not (run.rows.exists() and any(run.rows.glob("*.parquet"))):
            if stop.is_set() or time.monotonic() > deadline:
                return
            time.sleep(0.2)
        actor = proxy_actors()[0]
        seen.update(actor_id=actor.actor_id, pid=actor.pid, files_before=len(list(run.rows.glob("*.parquet"))))
        os.kill(actor.pid, signal.SIGKILL)
        killed = time.monotonic()
        while time.monotonic() - killed < 120 and not stop.is_set():
            again = list_actors(filters=[("actor_id", "=", actor.actor_id)], detail=True)
            if again and again[0].state == "ALIVE" and again[0].pid not in (None, 0, actor.pid):
                seen.update(new_pid=again[0].pid, num_restarts=again[0].num_restarts,
                            back_after_s=round(time.monotonic() - killed, 1))
                return
            time.sleep(0.2)
    except Exception as e:  # surfaced by the test, not lost in the thread
        seen["error"] = repr(e)


def test_killed_actor_is_restarted_and_output_is_unchanged(ray_local, setup):
    from falconer_ray.pipeline import finish, stage_mine

    root, proxy_dir, cfg = setup
    calm = mined_run(root, "calm", proxy_dir, cfg)
    t0 = time.monotonic()
    stage_mine(calm, cfg)
    calm_s = time.monotonic() - t0

    hit = mined_run(root, "hit", proxy_dir, cfg)
    seen: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=kill_one_actor, args=(hit, seen, stop), daemon=True)
    killer.start()
    t0 = time.monotonic()
    try:
        stats = stage_mine(hit, cfg)
    finally:
        stop.set()
        killer.join(timeout=30)
    hit_s = time.monotonic() - t0
    print(f"\nundisturbed {calm_s:.1f}s, killed {hit_s:.1f}s, {seen}")

    assert "error" not in seen, seen
    assert "pid" in seen, "no proxy actor was killed: the run ended before output appeared"
    assert "new_pid" in seen and seen["num_restarts"] >= 1, f"the killed actor never came back: {seen}"
    report = finish(hit)
    assert stats["docs_in"] == report["docs_in"] == DOCS and stats["accounted"] and report["invariant_ok"]

    calm_rows, hit_rows = outputs(calm), outputs(hit)
    assert len(hit_rows) == DOCS and hit_rows.keys() == calm_rows.keys()
    kept = sum(r["folder"] == "results" for r in calm_rows.values())
    assert 0 < kept < DOCS and any(r["span_people"] for r in calm_rows.values() if r["folder"] == "results")
    for doc_id, a in calm_rows.items():
        b = hit_rows[doc_id]
        assert a["folder"] == b["folder"] and a.get("status") == b.get("status") and a.get("error") == b.get("error"), doc_id
        assert a.get("label_positive") == pytest.approx(b.get("label_positive"), abs=1e-6), doc_id
        spans_a, spans_b = a.get("span_people") or [], b.get("span_people") or []
        assert [(s["start"], s["end"], s["text"]) for s in spans_a] == [(s["start"], s["end"], s["text"]) for s in spans_b], doc_id
        assert [s["score"] for s in spans_a] == pytest.approx([s["score"] for s in spans_b], abs=1e-6), doc_id
