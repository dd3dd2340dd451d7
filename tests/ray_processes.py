"""Finding and killing the processes of one Ray by the temp dir (or session) on their
command lines: tests stop the clusters they start by PID, never with `ray stop`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def ray_pids(marker: str) -> list[int]:
    """Processes whose command line names `marker`, the temp dir their Ray lives in."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
    return pids


def kill_ray(marker: str) -> None:
    """SIGKILL every process of that Ray, until none is left (10 s at most)."""
    for _ in range(20):
        pids = ray_pids(marker)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"Ray processes of {marker} survived SIGKILL: {ray_pids(marker)}")
