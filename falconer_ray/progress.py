"""Progress for long steps, readable wherever it lands.

Three modes, chosen once per process (`falconer --quiet`, `falconer --log-json`):
- "auto": a live bar in a terminal; in a log file (stderr not a TTY), one plain
  timestamped line per ~10% or 30 s with counts, rate and ETA, never a carriage return;
- "quiet": nothing but errors;
- "json": one JSON object per line on stderr for every event (start, progress, end,
  note), for job logs that machines read.
Third-party bars (transformers' tqdm, Ray Data's) are switched off outside a terminal,
where they only write carriage-return noise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

MODES = ("auto", "quiet", "json")
console = Console(stderr=True)
_mode = "auto"


def set_mode(mode: str) -> None:
    """Pick the output mode; call before Ray or transformers start (their bars read the environment)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
    _mode = mode
    console.quiet = mode != "auto"  # rich output (tables, notes) only in the plain mode
    if mode != "auto" or not sys.stderr.isatty():
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers/hub tqdm, here and in Ray workers
        os.environ["TQDM_DISABLE"] = "1"


def mode() -> str:
    return _mode


def quiet_libraries() -> None:
    """Ray Data's own bars and its every-10-s log blocks, off unless a person watches a
    terminal: our own progress line per step says the same in one line."""
    if _mode != "auto" or not sys.stderr.isatty():
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        if hasattr(ctx, "enable_operator_progress_bars"):
            ctx.enable_operator_progress_bars = False


def emit(event: str, **fields) -> None:
    """One JSON line on stderr (json mode only)."""
    if _mode == "json":
        print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str),
              file=sys.stderr, flush=True)


def note(message: str) -> None:
    """A one-line status message ("training the proxy ..."), in rich markup."""
    if _mode == "json":
        emit("note", message=Text.from_markup(message).plain)
    elif _mode == "auto":
        console.print(message)


LOG_WIDTH = 120  # tables written to a log or a pipe


def print_table(table) -> None:
    """A rich table on the status console: a terminal's own width (or COLUMNS), LOG_WIDTH
    columns in a log or a pipe, where rich would guess 80 and squeeze long values."""
    if console.is_terminal or os.environ.get("COLUMNS"):
        console.print(table)
    else:
        Console(stderr=True, width=LOG_WIDTH, quiet=console.quiet).print(table)


def duration(seconds: float) -> str:
    """Seconds as a person reads them: "8.2 s", "42 s", "3.5 min", "2.1 h", "1.5 d"."""
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def progress_line(description: str, done: int, total: int, elapsed: float, unit: str) -> str:
    """The log-file form of a progress event (no carriage returns, no colour)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate else float("inf")
    pct = 100 * done / total if total else 100.0
    stamp = time.strftime("%H:%M:%S")
    return (f"{stamp} {description}: {done}/{total} {unit} ({pct:.0f}%), {rate:.3g} {unit}/s, "
            f"elapsed {_clock(elapsed)}, eta {_clock(eta)}")


@contextmanager
def progress(description: str, total: int, unit: str = "docs"):
    """Yield `advance(n=1)`; shows counts, rate and ETA for `total` items."""
    if total <= 0 or _mode == "quiet":
        yield lambda n=1: None
        return
    if _mode == "auto" and sys.stderr.isatty():
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        return
    start = last = time.monotonic()
    done = 0
    step = max(1, total // (20 if _mode == "json" else 10))
    emit("start", step=description, total=total, unit=unit)

    def advance(n: int = 1) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if done >= total or done % step < n or now - last > (15 if _mode == "json" else 30):
            elapsed = now - start
            if _mode == "json":
                rate = done / elapsed if elapsed > 0 else 0.0
                emit("progress", step=description, done=done, total=total, unit=unit, rate=round(rate, 4),
                     elapsed_s=round(elapsed, 1), eta_s=round((total - done) / rate, 1) if rate else None)
            else:
                print(progress_line(description, done, total, elapsed, unit), file=sys.stderr, flush=True)
            last = now

    try:
        yield advance
    finally:
        emit("end", step=description, done=done, total=total, unit=unit,
             elapsed_s=round(time.monotonic() - start, 1))


@contextmanager
def watch(description: str, total: int, poll, unit: str = "docs", interval: float = 2.0):
    """Progress for work running elsewhere (Ray actors, Ray Train workers): a thread calls
    `poll()` -> items done so far every `interval` seconds until the block exits."""
    import threading

    stop = threading.Event()
    with progress(description, total, unit) as advance:
        seen = 0

        def update() -> None:
            nonlocal seen
            try:
                now = min(int(poll()), total)
            except Exception:  # a poll that fails (file mid-write, actor gone) just waits for the next
                return
            if now > seen:
                advance(now - seen)
                seen = now

        def loop() -> None:
            while not stop.wait(interval):
                update()

        thread = threading.Thread(target=loop, name=f"progress: {description}", daemon=True)
        thread.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            stop.set()
            thread.join(timeout=interval + 5)
            if ok:
                update()
