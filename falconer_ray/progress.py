"""Progress for long steps: a live bar in a terminal, periodic log lines in a file.

Rich's live display prints nothing useful into a log file, so when stderr is not a
terminal we fall back to one line per ~10% (or per 30 s) with counts and an ETA.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


@contextmanager
def progress(description: str, total: int):
    """Yield `advance(n=1)`; shows counts, rate and ETA for `total` items."""
    if total <= 0:
        yield lambda n=1: None
        return
    if sys.stderr.isatty():
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        return
    start = last = time.monotonic()
    done = 0
    step = max(1, total // 10)

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if done == total or done % step < n or now - last > 30:
            rate = done / max(now - start, 1e-9)
            eta = (total - done) / rate if rate else float("inf")
            print(f"{description}: {done}/{total} ({rate:.2f}/s, eta {eta:.0f}s)", file=sys.stderr, flush=True)
            last = now

    yield advance
