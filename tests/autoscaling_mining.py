"""Mine a prepared run directory on an autoscaling Ray cluster that starts with no worker
node: Ray's fake multi-node provider (`RAY_FAKE_CLUSTER`) starts and stops worker nodes
on this machine as its autoscaler asks. Started with `ray start` in a temp dir of its own
and stopped by PID (never `ray stop`, which would stop every Ray on the machine). Prints
one JSON line: the most proxy actors alive at once, the worker nodes seen, and how long
the idle nodes took to go once mining was over.

    python tests/autoscaling_mining.py RUN_DIR --max-workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # every socket on 127.0.0.1

from falconer_ray.bench.serve import free_port  # noqa: E402
from ray_processes import kill_ray  # noqa: E402 - beside this file


def autoscaler_config(port: int, max_workers: int) -> dict:
    """The cluster config of the fake provider: a head without CPU, one worker type of
    one CPU each, scaled between 0 and `max_workers`."""
    return {
        "cluster_name": "falconer-test", "max_workers": max_workers, "upscaling_speed": 10.0,
        "idle_timeout_minutes": 0.2,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{port}"},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "cpu_node": {"resources": {"CPU": 1, "object_store_memory": 150_000_000}, "node_config": {},
                         "min_workers": 0, "max_workers": max_workers},
        },
        "docker": {}, "auth": {}, "file_mounts": {}, "cluster_synced_files": [], "rsync_exclude": [],
        "rsync_filter": [], "file_mounts_sync_continuously": False, "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def workers_up(ray) -> int:
    """Worker nodes alive (the head has no CPU)."""
    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--max-workers", type=int, default=2)
    args = ap.parse_args()

    temp = tempfile.mkdtemp(prefix="fra-", dir="/tmp")  # short: Ray's socket paths must fit
    port, dashboard, client, agent = (free_port() for _ in range(4))
    config = Path(temp) / "autoscaler.json"
    config.write_text(json.dumps(autoscaler_config(port, args.max_workers)))
    # Ray 2.60 starts a cluster with token auth: the nodes and this driver share a fresh token.
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"})
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=0",
                    f"--temp-dir={temp}", f"--autoscaling-config={config}", "--object-store-memory=150000000",
                    "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                    f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
                    "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
    import ray

    from falconer_ray.config import RunConfig
    from falconer_ray.pipeline import finish, stage_mine
    from falconer_ray.rundir import RunDir

    most, nodes, done = [0], set(), threading.Event()

    def watch() -> None:
        from ray.util.state import list_actors

        while not done.wait(0.5):
            try:
                alive = [a for a in list_actors(address=f"http://127.0.0.1:{dashboard}", limit=1000,
                                                filters=[("state", "=", "ALIVE")]) if "ProxyStage" in a.class_name]
                workers = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0}
            except Exception as e:  # noqa: BLE001 - the state API can miss a beat while nodes come and go
                print(f"watch: {type(e).__name__}: {e}"[:300], file=sys.stderr)
                continue
            most[0] = max(most[0], len(alive))
            nodes.update(workers)

    try:
        ray.init(address=f"127.0.0.1:{port}", logging_level="WARNING")
        at_start = workers_up(ray)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        run = RunDir(args.run_dir)
        stage_mine(run, RunConfig.load(run.path))
        finish(run)
        done.set()
        watcher.join(timeout=10)
        ended = time.monotonic()
        while time.monotonic() - ended < 120 and workers_up(ray):  # idle nodes go after idle_timeout_minutes
            time.sleep(1)
        left, down_s = workers_up(ray), round(time.monotonic() - ended, 1)
        ray.shutdown()
    finally:
        kill_ray(temp)
    print(json.dumps({"workers_at_start": at_start, "most_proxy_actors": most[0], "worker_nodes_seen": len(nodes),
                      "workers_left": left, "scaled_down_after_s": down_s}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
