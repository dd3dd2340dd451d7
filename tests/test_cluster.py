"""Mining on real multi-node Ray clusters on this machine, one process per run: proxy
actors spread over the worker nodes and never on the head, a worker node taken away
mid-run changes no output (`tests/cluster_mining.py`), and a cluster with no worker node
grows to the configured pool and back (`tests/autoscaling_mining.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from falconer_ray.config import merge
from test_faults import mined_run, outputs, same_rows
from test_resume import DOCS, setup  # noqa: F401 - the corpus, proxy and thresholds of the resume tests

HELPER = Path(__file__).with_name("cluster_mining.py")


def mine_on_cluster(run, workers: int, remove_node: bool = False, llm_node: bool = False, worker_cpus: int = 1) -> dict:
    cmd = [sys.executable, str(HELPER), str(run.path), "--workers", str(workers), "--worker-cpus", str(worker_cpus)] + \
        (["--remove-node"] if remove_node else []) + (["--llm-node"] if llm_node else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_actors_spread_over_workers_and_a_lost_node_changes_nothing(setup):  # noqa: F811
    root, proxy_dir, cfg = setup
    spread = mined_run(root, "cluster", proxy_dir, merge(cfg, {"mine.actors": 3}))
    where = mine_on_cluster(spread, workers=3)
    assert set(where["actor_nodes"]) == set(where["workers"])  # one actor on each worker node
    assert where["head"] not in where["actor_nodes"]  # the head (no CPU) runs only the driver
    report = json.loads(spread.report.read_text())
    assert report["docs_in"] == DOCS and report["invariant_ok"] and report["accounted"]

    hit = mined_run(root, "cluster-node-lost", proxy_dir, merge(cfg, {"mine.actors": 2}))
    lost = mine_on_cluster(hit, workers=3, remove_node=True)
    assert len(lost["removed"]) == 1 and lost["removed"][0] in lost["actor_nodes"]
    print(f"\nmining restarted from its committed units after: {lost['restarts']}")
    report = json.loads(hit.report.read_text())
    assert report["docs_in"] == DOCS and report["invariant_ok"] and report["accounted"]
    same_rows(outputs(hit), outputs(spread))


@pytest.mark.slow
def test_a_cold_autoscaling_cluster_grows_to_the_configured_pool(setup):  # noqa: F811
    """No worker node at the start: the waiting proxy actors make the autoscaler add
    nodes until the pool reaches `mine.actors`, the run finishes, and the idle nodes go."""
    root, proxy_dir, cfg = setup
    # Both bounds set: the pool asks for 2 actors though no node is up to hold one
    # (how far Ray Data grows a pool between its bounds is its own policy).
    run = mined_run(root, "autoscaled", proxy_dir, merge(cfg, {"mine.actors": 2, "mine.min_actors": 2}))
    cmd = [sys.executable, str(HELPER.with_name("autoscaling_mining.py")), str(run.path), "--max-workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    grew = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nautoscaled: {grew}")
    assert grew["workers_at_start"] == 0 and grew["worker_nodes_seen"] == 2 and grew["most_proxy_actors"] == 2
    assert grew["workers_left"] == 0  # and back down once the work is done
    report = json.loads(run.report.read_text())
    assert report["docs_in"] == DOCS and report["invariant_ok"] and report["accounted"]


@pytest.mark.slow
def test_the_cascade_teacher_runs_only_on_the_node_with_its_resource(setup, tmp_path):  # noqa: F811
    """`mine.teacher_resources: {llm: 1}` keeps the cascade's teacher actors on the node
    started with that resource, whatever other room the cluster has."""
    import numpy as np

    from falconer_ray.corpus.read import iter_corpus
    from falconer_ray.mine.cascade import cascade_file
    from falconer_ray.plan.execute import ProxyAnswers, apply_plan
    from falconer_ray.plan.schema import Plan
    from falconer_ray.proxy import Proxy
    from test_faults import PLAN

    root, proxy_dir, cfg = setup
    docs = 60
    cfg = merge(cfg, {"limit": docs, "mine.actors": 2, "mine.target_agreement": 0.9, "mine.delta": 0.05,
                      "mine.teacher_resources": {"llm": 1}})
    texts = [t for table in iter_corpus(cfg.corpus, id_field="id", limit=docs) for t in table.column("text").to_pylist()]
    confidence = [a.confidence for a in apply_plan(ProxyAnswers(Proxy.load(proxy_dir), cfg), Plan.model_validate(PLAN), texts)]
    run = mined_run(root, "cascade-placed", proxy_dir, cfg)
    threshold = float(np.quantile(confidence, 0.15))  # a few documents go to the teacher
    # What calibration writes, with the threshold chosen here (calibration is not what this tests)
    cascade_file(run).write_text(json.dumps({"target": 0.9, "delta": 0.05, "threshold": threshold, "n": docs,
                                             "agreement": 0.9, "to_teacher": 0.15, "proxy_only_agreement": 0.8}))
    # Room for the teacher elsewhere too: without the resource, it landed on a worker in
    # one of two runs here.
    where = mine_on_cluster(run, workers=2, llm_node=True, worker_cpus=2)
    assert where["teacher_nodes"] == [where["llm_node"]]
    report = json.loads(run.report.read_text())
    assert report["docs_in"] == docs and report["invariant_ok"] and report["cascade"]["docs_to_teacher"] > 0
