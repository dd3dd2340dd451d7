"""Starting or joining Ray the same way from the CLI, jobs, tests and notebooks."""

from __future__ import annotations

import os
import sys

from falconer_ray.config import RunConfig, merge
from falconer_ray.progress import mode, quiet_libraries


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster a job was submitted to, or start a private local one.

    A private instance binds to loopback only (Ray reads the switch for that when it
    is first imported, so it is set before the import) and gets a modest object
    store, so a laptop run neither exposes ports nor grabs half the memory.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    local = not address or address == "local"
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    quiet_libraries()  # before any Dataset exists: each one keeps the context it was made with
    if ray.is_initialized():
        return
    chatty = mode() == "auto"  # --quiet / --log-json: no worker log lines mixed into the output
    if not local:
        ray.init(address=address, log_to_driver=chatty)
        return
    for attempt in range(3):
        try:
            _init_local(ray, num_cpus, chatty)
            return
        except Exception as e:  # Ray raises a bare Exception here
            # Ray gives a new node 30 s (fixed) to register; on an overloaded machine it
            # can take longer: start again rather than fail the whole command.
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
            ray.shutdown()


def _init_local(ray, num_cpus: int | None, log_to_driver: bool) -> None:
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=True,  # Ray Train polls the state API, which the dashboard serves
        dashboard_host="127.0.0.1",
        object_store_memory=int(os.environ.get("FALCONER_OBJECT_STORE_BYTES", 1_000_000_000)),
        log_to_driver=log_to_driver,
        configure_logging=True,
        logging_level="WARNING",
    )


def cluster_gpus() -> float:
    """GPUs of the nodes up, or the most the autoscaler's cluster config can start,
    whichever is larger: a cold cluster with GPU node types has GPUs to come."""
    import ray

    up = ray.cluster_resources().get("GPU", 0.0)
    try:  # Ray's own view of the cluster config (autoscaler v2); absent on a local Ray
        from ray._private.state import state

        declared = (state.get_max_resources_from_cluster_config() or {}).get("GPU", 0.0)
    except Exception:  # noqa: BLE001 - a private API: without it, what is up decides
        declared = 0.0
    return max(up, declared)


def with_gpus(cfg: RunConfig, gpus: float | None = None) -> RunConfig:
    """`cfg` with the GPU settings left unset decided by `gpus` (default: `cluster_gpus()`,
    which needs Ray up); set by a flag or a config file, they are kept."""
    if cfg.train.use_gpu is not None and cfg.mine.gpus_per_actor is not None:
        return cfg
    has = (cluster_gpus() if gpus is None else gpus) > 0
    return merge(cfg, {"train.use_gpu": has if cfg.train.use_gpu is None else cfg.train.use_gpu,
                       "mine.gpus_per_actor": (1.0 if has else 0.0) if cfg.mine.gpus_per_actor is None
                       else cfg.mine.gpus_per_actor})
