"""Starting or joining Ray the same way from the CLI, jobs, tests and notebooks."""

from __future__ import annotations

import os
import sys

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
