"""Mine a prepared run directory on a multi-node Ray cluster started on this machine
(`ray.cluster_utils.Cluster`: a head with no CPU, as in cluster.yaml, and worker nodes
of `--worker-cpus` CPUs), in a process of its own; `--remove-node` takes away the worker node of
a busy proxy actor once some units are committed, `--llm-node` adds a node with the
custom resource `llm`. Prints one JSON line: where the proxy and teacher actors ran, the
nodes, and the node removed.

    python tests/cluster_mining.py RUN_DIR --workers 3 [--remove-node] [--llm-node]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every socket on 127.0.0.1

from pathlib import Path  # noqa: E402

from falconer_ray.bench.serve import free_port  # noqa: E402
from falconer_ray.config import RunConfig  # noqa: E402
from falconer_ray.mine.units import MANIFEST  # noqa: E402
from falconer_ray.rundir import RunDir  # noqa: E402


def stage_actor_nodes(dashboard: str, stage: str) -> dict[str, str]:
    """Alive actors of one mining stage (ProxyStage, TeacherStage) by actor id: the node
    each runs on (asked of this cluster's dashboard by name: the test session's own Ray
    may be up too)."""
    from ray.util.state import list_actors

    return {a.actor_id: a.node_id for a in list_actors(address=f"http://{dashboard}", limit=1000,
                                                       filters=[("state", "=", "ALIVE")])
            if stage in a.class_name and a.node_id}


def committed(run: RunDir) -> int:
    path = run.rows / MANIFEST
    return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--worker-cpus", type=int, default=1)
    ap.add_argument("--remove-node", action="store_true")
    ap.add_argument("--llm-node", action="store_true", help="one more worker, of 2 CPUs and the custom resource llm")
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from falconer_ray.pipeline import finish, stage_mine

    temp = tempfile.mkdtemp(prefix="frc-", dir="/tmp")  # short: Ray's socket paths must fit
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": 150_000_000, "temp_dir": temp, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": free_port()})  # the session's own Ray may hold 8265
    workers = [cluster.add_node(num_cpus=args.worker_cpus, object_store_memory=150_000_000,
                                resources={"cpu_worker": 1}) for _ in range(args.workers)]
    llm = cluster.add_node(num_cpus=2, object_store_memory=150_000_000, resources={"llm": 1}) if args.llm_node else None
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    run = RunDir(args.run_dir)
    seen: dict[str, str] = {}
    teachers: dict[str, str] = {}
    removed: list[str] = []
    done = threading.Event()

    def watch() -> None:
        """Note where proxy actors run; with --remove-node, take one's node away mid-run."""
        while not done.wait(0.5):
            try:
                seen.update(stage_actor_nodes(cluster.webui_url, "ProxyStage"))
                teachers.update(stage_actor_nodes(cluster.webui_url, "TeacherStage"))
            except Exception:  # noqa: BLE001 - the state API can miss a beat while a node dies
                continue
            if args.remove_node and not removed and committed(run) >= 3 and seen:
                busy = set(seen.values())
                node = next((w for w in workers if w.node_id in busy), None)
                if node is not None:
                    removed.append(node.node_id)
                    cluster.remove_node(node, allow_graceful=False)

    head, worker_ids = cluster.head_node.node_id, [w.node_id for w in workers]
    llm_id = llm.node_id if llm is not None else None
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stage_mine(run, RunConfig.load(run.path))
        finish(run)
    finally:
        done.set()
        watcher.join(timeout=10)
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps({"actor_nodes": sorted(set(seen.values())), "teacher_nodes": sorted(set(teachers.values())),
                      "head": head, "workers": worker_ids, "llm_node": llm_id,
                      "removed": removed, "restarts": json.loads(run.mine_stats.read_text())["restarts"]}))


if __name__ == "__main__":
    main()
