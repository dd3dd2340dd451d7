"""`falconer bench throughput`: teacher vs proxy pipeline vs bare forward, in one run.

Three rates on the same documents and the same machine:
- teacher: the LLM answering get_label and get_span per document;
- proxy pipeline: `falconer run`'s mining stage (Ray Data read -> proxy actors ->
  Parquet), with a one-step plan per primitive;
- bare forward: the proxy's forward pass alone over the same pre-tokenized
  batches, in as many single-thread workers as the pipeline has actors, all
  timed over one shared window. That is the practical limit of this hardware;
  `overhead` is how far the pipeline falls short of it.
Whole-plan rates (label then span on every document) combine the two primitives'
times per document. Each pipeline rate also comes split into its fixed start and its
steady rate, from the actors' own busy seconds (`falconer_ray.mine.driver.start_and_steady`).
"""

from __future__ import annotations

import os
import platform
import random
import tempfile
import time
from pathlib import Path

from falconer_ray.bench.corpus import bench_texts, write_corpus
from falconer_ray.config import RunConfig, merge
from falconer_ray.mine.driver import call_size, mine
from falconer_ray.plan.schema import Plan, Step
from falconer_ray.progress import console, progress
from falconer_ray.proxy import Proxy, ProxyModel, encode_windows
from falconer_ray.ray_env import init_ray
from falconer_ray.rundir import RunDir
from falconer_ray.teacher import teacher_from_config

LABEL_INSTRUCTION = "Is this review positive?"
SPAN_INSTRUCTION = "Extract the names of people mentioned."


def _combined(a: float, b: float) -> float:
    """Docs/s of doing both: per-document times add."""
    return 1.0 / (1.0 / a + 1.0 / b)


def _both(label: dict, span: dict) -> dict:
    """The whole-plan rates: every docs/s field of the two primitives combined."""
    return {k: _combined(label[k], span[k]) for k in label if k.endswith("docs_per_s") and label[k] and span.get(k)}


def _ratios(r: dict) -> None:
    """Speedup and overhead of one result, in place; `steady_overhead` leaves out the
    pipeline's fixed start (actors starting, the proxy loading)."""
    r["speedup_vs_teacher"] = r["proxy_docs_per_s"] / r["teacher_docs_per_s"]
    r["overhead"] = 1.0 - r["proxy_docs_per_s"] / r["bare_forward_docs_per_s"]
    if r.get("proxy_steady_docs_per_s"):
        r["steady_overhead"] = 1.0 - r["proxy_steady_docs_per_s"] / r["bare_forward_docs_per_s"]


def teacher_rates(texts: list[str], cfg: RunConfig) -> dict:
    """The teacher's docs/s per primitive, uncached, on `texts`."""
    teacher = teacher_from_config(cfg.teacher)
    out = {"model": cfg.teacher.model_name(), "docs": len(texts)}
    for name, call, instruction in (("get_label", teacher.label, LABEL_INSTRUCTION),
                                    ("get_span", teacher.extract, SPAN_INSTRUCTION)):
        with progress(f"teacher {name}", len(texts)) as advance:
            start = time.perf_counter()
            done = 0

            def tick(n_done: int) -> None:
                nonlocal done
                advance(n_done - done)
                done = n_done

            call(texts, instruction, on_progress=tick)
            out[name] = len(texts) / (time.perf_counter() - start)
    return out


class BareLoop:
    """One worker sized like a mining actor: it loads the proxy and tokenizes its texts
    when created, so that timing covers the forward passes alone."""

    def __init__(self, proxy_dir: str, texts: list[str], instruction: str, batch_size: int, threads: int,
                 device: str, runtime: str = "torch"):
        proxy = Proxy.load(proxy_dir, device=device, batch_size=batch_size, runtime=runtime, threads=threads)
        windows = encode_windows(proxy.tokenizer, instruction, texts, proxy.max_length, proxy.stride, with_offsets=False)
        batches = list(proxy.padded_batches(windows))
        # In longest-first order, a window too short to go through every batch would time
        # only the longest texts; in a fixed shuffled order any stretch is a fair sample.
        random.Random(0).shuffle(batches)
        self.per_window = len(texts) / len(windows)
        self.forward = proxy.forward
        self.batches = [(idx, self.forward.place(*rest)) for idx, *rest in batches]
        self.forward(*self.batches[0][1])  # warm-up
        self.forward.sync()

    def ready(self) -> bool:
        return True

    def run(self, start_at: float, seconds: float) -> tuple[int, float]:
        """Forward passes from `start_at` (a wall-clock time shared by all workers) for `seconds`."""
        time.sleep(max(0.0, start_at - time.time()))
        start, done, k = time.time(), 0.0, 0
        while time.time() - start < seconds:
            idx, placed = self.batches[k % len(self.batches)]
            self.forward(*placed)
            done += len(idx) * self.per_window
            k += 1
        self.forward.sync()
        return int(done), time.time() - start


def bare_forward_rate(proxy_dir: str, texts: list[str], instruction: str, workers: int,
                      cfg: RunConfig, seconds: float) -> float:
    """Docs/s of `workers` forward loops at once (cfg.proxy.runtime), each a Ray actor
    with a mining actor's resources. They start together once all have loaded and
    tokenized, so the window they share times forward passes only."""
    import ray

    gpus = cfg.mine.gpus_per_actor
    actor = ray.remote(num_cpus=cfg.mine.cpus_per_actor, num_gpus=gpus or None)(BareLoop)
    args = (instruction, cfg.mine.windows_per_forward(), max(1, int(cfg.mine.cpus_per_actor)), "cuda" if gpus else "cpu",
            cfg.proxy.runtime)
    loops = [actor.remote(proxy_dir, texts[i::workers], *args) for i in range(workers)]
    try:
        ray.get([loop.ready.remote() for loop in loops])
        start_at = time.time() + 0.5
        results = ray.get([loop.run.remote(start_at, seconds) for loop in loops])
    finally:
        for loop in loops:
            ray.kill(loop)
    return sum(done / secs for done, secs in results)


def pipeline_rate(corpus: Path, proxy_dir: Path, plan: Plan, cfg: RunConfig, actors: int, work: Path) -> dict:
    """The real mining stage with a fixed pool of `actors` (cfg.proxy.runtime): its
    docs/s from first read to last commit, its fixed start (seconds beyond its steady
    rate) and that steady rate."""
    run = RunDir(work / f"{plan.steps[0].id}-{actors}-{cfg.proxy.runtime}").create()
    if not run.proxy.exists():
        run.proxy.symlink_to(proxy_dir, target_is_directory=True)
    cfg = merge(cfg, {"corpus": str(corpus), "id_field": "id", "mine.actors": actors, "mine.min_actors": actors})
    stats = mine(plan, cfg, run)
    if stats["docs_error"]:
        raise RuntimeError(f"{stats['docs_error']} documents failed during the benchmark; see {run.errors}")
    if stats["runtime"]["used"] != cfg.proxy.runtime:
        raise RuntimeError(f"mining ran {stats['runtime']['used']}, not {cfg.proxy.runtime}: {stats['runtime'].get('fallback')}")
    return {"proxy_docs_per_s": stats["docs_in"] / stats["mine_s"], "proxy_start_s": stats["start_s"],
            "proxy_steady_docs_per_s": stats["steady_docs_per_s"]}


def fresh_proxy(cfg: RunConfig, folder: Path) -> Path:
    """An untrained proxy of the configured base: throughput does not depend on weights.
    Its heads are drawn from cfg.seed, so reruns compare the same model (the int8
    runtime's disagreement with torch, for one, depends on the weights)."""
    import torch

    torch.manual_seed(cfg.seed)
    ProxyModel.from_base(cfg.proxy.base, max_length=cfg.proxy.max_length, stride=cfg.proxy.stride).save(folder)
    return folder


def run_throughput(docs: int, source: str, teacher_docs: int, actors: list[int], cfg: RunConfig,
                   proxy_dir: str | None = None, bare_seconds: float = 30.0, runtimes: tuple[str, ...] = ("torch",)) -> dict:
    """The issue's fields for the torch proxy at the top level; every other runtime in
    `runtimes` under `runtimes.NAME`, measured the same way, with its speedup over torch."""
    texts = bench_texts(docs, source)
    top = max(actors)
    with tempfile.TemporaryDirectory(prefix="falconer-bench-") as tmp:
        work = Path(tmp)
        corpus = write_corpus(texts, work / "corpus")
        proxy = Path(proxy_dir).resolve() if proxy_dir else fresh_proxy(cfg, work / "proxy")
        console.print(f"[bold]teacher[/] on {min(teacher_docs, docs)} of the documents")
        teacher = teacher_rates(texts[:teacher_docs], cfg)
        init_ray()
        plans = {"get_label": Plan(steps=[Step(id="label", op="get_label", instruction=LABEL_INSTRUCTION)]),
                 "get_span": Plan(steps=[Step(id="span", op="get_span", instruction=SPAN_INSTRUCTION)])}
        scaling = {}
        for n in sorted(set(actors)):
            console.print(f"[bold]proxy pipeline[/] get_label, {n} actor(s), {docs} documents")
            scaling[n] = pipeline_rate(corpus, proxy, plans["get_label"], cfg, n, work)
        result: dict = {}
        for name, plan in plans.items():
            instruction = plan.steps[0].instruction
            pipeline = scaling[top] if name == "get_label" else None
            if pipeline is None:
                console.print(f"[bold]proxy pipeline[/] {name}, {top} actor(s), {docs} documents")
                pipeline = pipeline_rate(corpus, proxy, plan, cfg, top, work)
            console.print(f"[bold]bare forward[/] {name}, {top} worker(s), {bare_seconds:.0f}s")
            bare = bare_forward_rate(str(proxy), texts, instruction, top, cfg, bare_seconds)
            result[name] = {"teacher_docs_per_s": teacher[name], **pipeline, "bare_forward_docs_per_s": bare}
        others = {rt: runtime_rates(corpus, proxy, texts, plans, cfg, rt, top, work, bare_seconds, teacher)
                  for rt in runtimes if rt != "torch"}
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "docs": docs, "source": source, "teacher_docs": teacher["docs"], "teacher_model": teacher["model"],
        "proxy_base": cfg.proxy.base, "actors": top, "docs_per_call": call_size(cfg, docs, top),
        "forward_batch": cfg.mine.windows_per_forward(),
        **_both(result["get_label"], result["get_span"]), **{name: dict(r) for name, r in result.items()},
        "actor_scaling": {str(n): r["proxy_docs_per_s"] for n, r in scaling.items()},
    }
    for r in (out, out["get_label"], out["get_span"]):
        _ratios(r)
    if len(scaling) > 1:
        out["actor_scaling"]["ratio_max_vs_min"] = scaling[top]["proxy_docs_per_s"] / scaling[min(scaling)]["proxy_docs_per_s"]
    if others:
        out["runtimes"] = {}
        for rt, parts in others.items():
            entry = out["runtimes"][rt] = {**_both(parts["get_label"], parts["get_span"]), **parts}
            for r, base in ((entry, out), (entry["get_label"], out["get_label"]), (entry["get_span"], out["get_span"])):
                _ratios(r)
                r["speedup_vs_torch"] = r["proxy_docs_per_s"] / base["proxy_docs_per_s"]
    return _rounded(out)


def runtime_rates(corpus: Path, proxy: Path, texts: list[str], plans: dict, cfg: RunConfig, runtime: str,
                  actors: int, work: Path, bare_seconds: float, teacher: dict) -> dict:
    """Pipeline and bare-forward docs/s of one more proxy runtime, per primitive. Speed
    only: mining's own check of its answers against torch is told to pass here."""
    cfg = merge(cfg, {"proxy.runtime": runtime, "proxy.int8_max_disagreement": 1.0})
    out = {}
    for name, plan in plans.items():
        console.print(f"[bold]proxy pipeline[/] {name}, {runtime}, {actors} actor(s), {len(texts)} documents")
        pipeline = pipeline_rate(corpus, proxy, plan, cfg, actors, work)
        console.print(f"[bold]bare forward[/] {name}, {runtime}, {actors} worker(s), {bare_seconds:.0f}s")
        bare = bare_forward_rate(str(proxy), texts, plan.steps[0].instruction, actors, cfg, bare_seconds)
        out[name] = {"teacher_docs_per_s": teacher[name], **pipeline, "bare_forward_docs_per_s": bare}
    return out


def _rounded(d):
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    return round(d, 3) if isinstance(d, float) else d
