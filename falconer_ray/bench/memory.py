"""`falconer bench memory`: peak memory of a whole `falconer mine` at several corpus sizes.

Each size runs as a child process; its whole process tree (driver, Ray's GCS and
raylet, every worker and actor) is sampled once a second. Memory is counted as
PSS, which splits shared pages (Ray's object store, shared libraries) between the
processes that map them, so the sum is what the run really holds. A streaming
engine keeps the peak flat as the corpus grows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from falconer_ray.plan import Plan, Step
from falconer_ray.progress import console

PLAN = Plan(instruction="Extract the names of people praised in positive reviews.", steps=[
    Step(id="positive", op="get_label", instruction="Is this review positive?"),
    Step(id="people", op="get_span", instruction="Extract the names of people who are praised."),
], keep="positive")


def tree_memory(root: psutil.Process) -> tuple[int, int]:
    """(PSS summed over the process tree, RSS of the root) in bytes."""
    total = 0
    procs = [root]
    try:
        procs += root.children(recursive=True)
    except psutil.Error:
        pass
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:  # exited between listing and reading, or not ours to read
            continue
    try:
        rss = root.memory_info().rss
    except psutil.Error:
        rss = 0
    return total, rss


def watch(cmd: list[str], log: Path, timeout_s: float, interval_s: float = 1.0) -> dict:
    """Run `cmd`, sampling its tree's memory until it exits; kill it at the timeout."""
    started = time.monotonic()
    peak = peak_driver = 0
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            if time.monotonic() - started > timeout_s:
                for child in root.children(recursive=True):
                    child.kill()
                proc.kill()
                proc.wait()
                raise TimeoutError(f"run exceeded {timeout_s:.0f}s; log: {log}")
            pss, rss = tree_memory(root)
            peak, peak_driver = max(peak, pss), max(peak_driver, rss)
            time.sleep(interval_s)
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RuntimeError(f"run failed (exit {proc.returncode}); log: {log}\n{tail}")
    return {"peak_pss_mb": round(peak / 2**20, 1), "peak_driver_rss_mb": round(peak_driver / 2**20, 1),
            "wall_s": round(time.monotonic() - started, 1)}


def run_memory(sizes: list[int], source: str, n_annotate: int, epochs: int, keep_all: bool = True,
               work: Path | None = None, timeout_s: float = 3 * 3600) -> dict:
    """`keep_all` sets the label threshold to 0, so every document also goes through span
    extraction and into results: the heaviest path, whatever a small proxy learned."""
    from falconer_ray.bench.corpus import bench_texts, write_corpus

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
            cmd = [sys.executable, "-m", "falconer_ray", "mine", PLAN.instruction, str(corpus), "--out", str(out),
                   "--plan", str(plan_file), "--config", str(config_file), "--id-field", "id", "--n-annotate", str(n_annotate),
                   "--epochs", str(epochs)]
            console.print(f"[bold]falconer mine[/] on {n} documents (log: {out}.log)")
            stats = watch(cmd, root / f"run-{n}.log", timeout_s)
            report = json.loads((out / "report.json").read_text())
            stats.update(docs_in=report.get("docs_in"), docs_kept=report.get("docs_kept"))
            console.print(f"  peak {stats['peak_pss_mb']} MB (tree PSS), {stats['wall_s']} s")
            results[str(n)] = stats
    out = {"source": source, "n_annotate": n_annotate, "epochs": epochs, "keep_all": keep_all,
           "cpus": os.cpu_count(), "runs": results}
    if len(results) > 1:
        out["growth_largest_vs_smallest"] = growth(results)
    return out


def growth(runs: dict[str, dict]) -> float:
    """Peak memory of the largest corpus over that of the smallest, minus one."""
    small, large = min(runs, key=int), max(runs, key=int)
    return round(runs[large]["peak_pss_mb"] / runs[small]["peak_pss_mb"] - 1, 3)
