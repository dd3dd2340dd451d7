"""`falconer bench memory`: peak memory of a whole `falconer mine` at several corpus sizes.

Each size runs as a child process; its whole process tree (driver, Ray's GCS and
raylet, every worker and actor) is sampled once a second. Memory is counted as
PSS, which splits shared pages (Ray's object store, shared libraries) between the
processes that map them, so the sum is what the run really holds. A streaming
engine keeps the peak flat as the corpus grows.

The whole run's peak can be set by a fixed step (the teacher, Ray Train), which would
hide a rise while mining; so the child logs JSON events, each sample is put in the step
it fell in, and the mining step is also cut into quarters of its time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import psutil

from falconer_ray.bench.corpus import bench_texts, write_corpus
from falconer_ray.plan.schema import Plan, Step
from falconer_ray.progress import console, progress_line

PLAN = Plan(instruction="Extract the names of people praised in positive reviews.", steps=[
    Step(id="positive", op="get_label", instruction="Is this review positive?"),
    Step(id="people", op="get_span", instruction="Extract the names of people who are praised."),
], keep="positive")


def process_kind(p: psutil.Process, root: psutil.Process) -> str:
    """What a process of the tree is: the driver, a Ray actor or task by the title Ray
    gives it, less the method it runs now (`ray::MapWorker(MapBatches(ProxyStage))`,
    `ray::IDLE`), the dashboard's modules as one, a Python service by its script, or its name."""
    if p.pid == root.pid:
        return "driver"
    cmd = p.cmdline() or [p.name()]
    if cmd[0].startswith("ray::"):
        return re.sub(r"\.[A-Za-z_]\w*$", "", cmd[0].split()[0])
    if cmd[0].startswith("ray-dashboard-"):
        return "ray-dashboard-modules"
    script = next((os.path.basename(a) for a in cmd[1:4] if a.endswith(".py")), None)
    return script or os.path.basename(cmd[0])


def tree_memory(root: psutil.Process) -> tuple[dict[str, int], int]:
    """(PSS per kind of process in the tree, RSS of the root), in bytes."""
    kinds: dict[str, int] = {}
    procs = [root]
    try:
        procs += root.children(recursive=True)
    except psutil.Error:
        pass
    for p in procs:
        try:
            kind = process_kind(p, root)
            kinds[kind] = kinds.get(kind, 0) + p.memory_full_info().pss
        except psutil.Error:  # exited between listing and reading, or not ours to read
            continue
    try:
        rss = root.memory_info().rss
    except psutil.Error:
        rss = 0
    return kinds, rss


class Sample(NamedTuple):
    t: float  # wall clock, as the child's JSON events stamp it
    kinds: dict[str, int]  # PSS in bytes per kind of process
    rss: int  # bytes, the driver

    @property
    def pss(self) -> int:
        return sum(self.kinds.values())


STEPS = ("planning", "annotating", "training", "mining")  # the first word of each step's note


def events(lines: list[str]):
    """The JSON events among a child's log lines (libraries print other lines there too)."""
    for line in lines:
        if line.startswith("{"):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event


class ChildLog:
    """Reads the child's JSON log as it grows: shows its notes and progress, so a run of
    most of an hour is not silent, and keeps when each step (`STEPS`) began."""

    def __init__(self, log: Path):
        self.log, self.offset = log, 0
        self.step_starts: list[tuple[float, str]] = []  # (wall time, step), in order

    def __call__(self) -> None:
        with self.log.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self.offset += len(complete)
        for e in events(complete.decode(errors="replace").splitlines()):
            if e.get("event") == "note":
                line = str(e.get("message", ""))
                word = line.split(" ", 1)[0].rstrip(":")
                if word in STEPS and isinstance(e.get("ts"), (int, float)):
                    self.step_starts.append((float(e["ts"]), word))
            elif e.get("event") == "progress" and isinstance(e.get("done"), int) and isinstance(e.get("total"), int):
                line = progress_line(str(e.get("step")), e["done"], e["total"], float(e.get("elapsed_s") or 0),
                                     str(e.get("unit", "docs")))
            else:
                continue
            console.print(f"    {line}", markup=False, highlight=False, soft_wrap=True)


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def peaks(samples: list[Sample]) -> dict:
    """The highest tree PSS and driver RSS, and what each kind of process held at that PSS peak."""
    top = max(samples, key=lambda s: s.pss)
    kinds = {k: _mb(v) for k, v in sorted(top.kinds.items(), key=lambda kv: -kv[1])}
    return {"peak_pss_mb": _mb(top.pss), "peak_driver_rss_mb": _mb(max(s.rss for s in samples)), "at_peak_mb": kinds}


def by_step(samples: list[Sample], starts: list[tuple[float, str]], quarters_of: str = "mining") -> dict:
    """Peaks within each step (from its note to the next one, the last to the end); the
    step `quarters_of` also by quarter of its time, to show a rise or a late peak."""
    out = {}
    bounds = starts + [(float("inf"), "")]
    for (begin, name), (end, _) in zip(bounds, bounds[1:]):
        inside = [s for s in samples if begin <= s.t < end]
        if not inside:
            continue
        out[name] = {"seconds": round(min(end, samples[-1].t) - begin, 1), **peaks(inside)}
        if name == quarters_of and len(inside) >= 4:
            span = inside[-1].t - inside[0].t or 1.0
            quarters = [[s for s in inside if min(3, int(4 * (s.t - inside[0].t) / span)) == q] for q in range(4)]
            out[name]["quarters"] = [peaks(q) for q in quarters if q]
    return out


def watch(cmd: list[str], log: Path, timeout_s: float, interval_s: float = 1.0) -> dict:
    """Run `cmd`, sampling its tree's memory until it exits; kill it at the timeout."""
    started = time.monotonic()
    samples: list[Sample] = []
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        root = psutil.Process(proc.pid)
        child_log = ChildLog(log)
        while proc.poll() is None:
            child_log()
            if time.monotonic() - started > timeout_s:
                for child in root.children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
                raise TimeoutError(f"run exceeded {timeout_s:.0f}s; log: {log}")
            samples.append(Sample(time.time(), *tree_memory(root)))
            time.sleep(interval_s)
    child_log()
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"run failed (exit {proc.returncode}); log: {log}\n{tail}")
    if not samples:  # exited before the first sample
        samples.append(Sample(time.time(), {}, 0))
    return {**peaks(samples), "wall_s": round(time.monotonic() - started, 1),
            "steps": by_step(samples, child_log.step_starts)}


def run_memory(sizes: list[int], source: str, n_annotate: int, epochs: int, keep_all: bool = True,
               work: Path | None = None, timeout_s: float = 3 * 3600) -> dict:
    """`keep_all` sets the label threshold to 0, so every document also goes through span
    extraction and into results: the heaviest path, whatever a small proxy learned."""
    texts = bench_texts(max(sizes), source)
    results = {}
    with tempfile.TemporaryDirectory(prefix="falconer-membench-") as tmp:
        root = Path(work or tmp)
        plan_file = root / "plan.json"
        PLAN.save(plan_file)
        config_file = root / "config.yaml"
        config_file.write_text("mine:\n  label_threshold: 0.0\n" if keep_all else "{}\n")
        for n in sizes:
            corpus = write_corpus(texts[:n], root / f"corpus-{n}")
            out = root / f"run-{n}"
            cmd = [sys.executable, "-m", "falconer_ray", "--log-json", "mine", PLAN.instruction, str(corpus),
                   "--out", str(out), "--plan", str(plan_file), "--config", str(config_file), "--id-field", "id",
                   "--n-annotate", str(n_annotate), "--epochs", str(epochs)]
            console.print(f"[bold]falconer mine[/] on {n} documents (log: {out}.log)")
            stats = watch(cmd, root / f"run-{n}.log", timeout_s)
            report = json.loads((out / "report.json").read_text())
            stats.update(docs_in=report.get("docs_in"), docs_kept=report.get("docs_kept"))
            mining = stats["steps"].get("mining", {})
            console.print(f"  peak {stats['peak_pss_mb']} MB (tree PSS), {mining.get('peak_pss_mb', '?')} MB"
                          f" while mining, {stats['wall_s']} s")
            results[str(n)] = stats
    out = {"source": source, "n_annotate": n_annotate, "epochs": epochs, "keep_all": keep_all,
           "cpus": os.cpu_count(), "runs": results}
    if len(results) > 1:
        out["growth_largest_vs_smallest"] = growth(results)
        mining = {n: r["steps"]["mining"] for n, r in results.items() if "mining" in r["steps"]}
        if len(mining) == len(results):
            out["mining_growth_largest_vs_smallest"] = growth(mining)
    return out


def growth(runs: dict[str, dict]) -> float:
    """Peak memory of the largest corpus over that of the smallest, minus one."""
    small, large = min(runs, key=int), max(runs, key=int)
    return round(runs[large]["peak_pss_mb"] / runs[small]["peak_pss_mb"] - 1, 3)
