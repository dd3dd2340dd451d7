"""Mining: the trained proxy runs the plan over the whole corpus with Ray Data.

The corpus streams through one pool of proxy actors (`mine.actors`); each batch gets
every label step's score, the plan's `keep` condition decides which documents go on,
and only those get span extraction. One metamodel serves both primitives, so one
actor holds one model. Every row comes out with a status (kept / filtered / error)
and is committed in resumable units; a final pass (`mine.outputs`) splits them into
results/, filtered/ and errors/ and counts them, so every document in is accounted for.
"""

from __future__ import annotations

import shutil
import time

import pyarrow.compute as pc

from falconer_ray.config import RunConfig
from falconer_ray.corpus.count import count_documents
from falconer_ray.corpus.read import corpus_shards, read_corpus
from falconer_ray.mine.actors import ACTOR, BUSY, ProxyStage, TeacherStage
from falconer_ray.mine.cascade import load_threshold
from falconer_ray.mine.outputs import split_outputs
from falconer_ray.mine.runtime_choice import choose_runtime
from falconer_ray.mine.units import (ResumeError, UnitCollector, UnitStore, check_complete, fingerprint, shard_done,
                                    teacher_identity)
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import note, watch
from falconer_ray.rundir import RunDir, read_json, write_json


def actors_that_fit(cfg: RunConfig, resources: dict[str, float]) -> int:
    """Proxy actors the nodes in `resources` hold: one per `cpus_per_actor` CPUs, or per
    `gpus_per_actor` GPUs."""
    if cfg.mine.gpus_per_actor:
        return int(resources.get("GPU", 0) / cfg.mine.gpus_per_actor)
    return int(resources.get("CPU", 1) / cfg.mine.cpus_per_actor)


def pool_size(cfg: RunConfig, resources: dict[str, float]) -> tuple[int, int]:
    """Proxy actor pool bounds (min, max) that Ray Data autoscales within. Set bounds
    are kept whatever `resources` (the nodes up now) holds: on an autoscaling cluster
    the actors waiting for room are what makes it add nodes, so a cold cluster grows to
    `mine.actors`. Unset, both are what fits the nodes up, at least one."""
    fit = max(1, actors_that_fit(cfg, resources))
    high = cfg.mine.actors or fit
    return min(cfg.mine.min_actors or fit, high), high


CALLS_PER_ACTOR = 4
MIN_DOCS_PER_CALL = 16


def call_size(cfg: RunConfig, docs: int, actors: int) -> int:
    """Documents per actor call: `mine.batch_size` when set; otherwise the default,
    cut so that every actor gets at least CALLS_PER_ACTOR calls. Ray Data hands
    each call to one actor, so a corpus of only a few large calls leaves the other
    actors idle (1,000 IMDB reviews in 512-document calls ran no faster on 2 actors
    than on 1)."""
    if cfg.mine.batch_size or docs <= 0:
        return cfg.mine.docs_per_call()
    even = -(-docs // (CALLS_PER_ACTOR * max(1, actors)))
    return max(MIN_DOCS_PER_CALL, min(cfg.mine.docs_per_call(), even))


def mine(plan: Plan, cfg: RunConfig, run: RunDir, resume: bool = False) -> dict:
    """Run the proxy over the corpus; write results/, filtered/, errors/ and counts.

    Work is committed in units (see `falconer_ray.mine.units`); with `resume`, the units an
    interrupted run committed are kept and only the rest is mined.
    """
    import ray
    from ray.data import DataContext

    DataContext.get_current().target_max_block_size = cfg.mine.block_bytes
    proxy_dir = run.require(run.proxy, "train")
    cfg, runtime = choose_runtime(run, plan, cfg)
    threshold = load_threshold(run, cfg)
    read_args = cfg.read_options()
    shards = corpus_shards(cfg.corpus, cfg.limit, **read_args)
    fp = fingerprint(shards, plan, cfg, proxy_dir, threshold, teacher_identity(cfg) if threshold is not None else None)
    done_before = read_json(run.mine_stats)
    if resume and not run.rows.exists() and done_before.get("fingerprint"):  # the last run finished
        changed = sorted(k for k in fp if done_before["fingerprint"].get(k) != fp[k])
        if changed:
            raise ResumeError(f"cannot resume: the {', '.join(changed)} changed since the run in {run.path} "
                              "finished; rerun without --resume to mine everything again")
        if all(p.exists() for p in (run.results, run.filtered, run.errors)):
            units = done_before["units"]
            stats = {**done_before, "units": {**units, "reused": units["total"], "mined": 0}}
            write_json(run.mine_stats, stats)  # the report says this resume mined nothing
            return stats
    store = UnitStore(run.rows)
    reused = store.open(fp, resume)
    unit_rows = cfg.mine.unit_rows
    started = time.monotonic()
    up = ray.cluster_resources()
    low, high = pool_size(cfg, up)
    if low > (fit := actors_that_fit(cfg, up)):
        note(f"the proxy actor pool starts with {low} actor(s) and the nodes up now hold "
             f"{fit}: mining starts once the autoscaler has added nodes for them")
    if threshold is not None:  # leave room for the teacher actor, or it never starts
        high = max(1, high - 1)
        low = min(low, high)
    expected = count_documents(cfg, cfg.quote.count_bytes)["docs"] - sum(store.entries[u]["rows"] for u in reused)
    per_call = call_size(cfg, expected, high)
    busy, answered = 0.0, 0  # seconds the proxy actors spent in their calls; how many actors
    committed, commit_s, before = 0, 0.0, 0  # over every attempt; rows committed by earlier attempts
    lost, restarts = lost_errors(), []
    for attempt in range(cfg.mine.stream_retries + 1):
        todo = [s for s in shards if not shard_done(s, store.entries, unit_rows)]
        if not todo:
            break
        collector = UnitCollector(store)
        ds = mining_dataset(cfg, plan, proxy_dir, threshold, todo, frozenset(store.entries), (low, high), per_call)
        try:
            # The driver commits units as their rows stream in: output rows are small, and
            # only the driver sees every row of a unit, so only it can tell one is complete.
            with watch("proxy mining", max(0, expected), lambda: before + collector.rows):
                b, a = stream_into(collector, ds)
                collector.finish()
            busy, answered = busy + b, max(answered, a)
            break
        except lost as e:
            if attempt == cfg.mine.stream_retries:
                raise
            note(f"mining lost a node or an actor ({type(e).__name__}); the units committed so far are kept and the "
                 f"rest is mined again (retry {attempt + 1} of {cfg.mine.stream_retries})")
            restarts.append(type(e).__name__)
        finally:
            committed, commit_s = committed + collector.committed, commit_s + collector.seconds
            before = sum(store.entries[u]["rows"] for u in store.entries if u not in reused)
    mined_s = time.monotonic() - started
    check_complete(shards, store.entries, unit_rows, read_args)
    counts = split_outputs(plan, cfg, run, shards)
    counts["accounted"] = counts["docs_in"] == sum(e["rows"] for e in store.entries.values())
    if not counts["accounted"]:
        raise RuntimeError(f"{sum(e['rows'] for e in store.entries.values())} documents read but "
                           f"{counts['docs_in']} written: documents were lost")
    mined_docs = sum(store.entries[u]["rows"] for u in store.entries if u not in reused)
    stats = {**counts, "mine_s": round(mined_s, 3), "actors": [low, high], "docs_per_call": per_call,
             "proxy_docs_per_s": round(mined_docs / mined_s, 3) if mined_s > 0 and mined_docs else None,
             # with a teacher stage, the teacher sets the pace: the split would say nothing
             **start_and_steady(0.0 if threshold is not None else busy, answered, mined_s, mined_docs),
             "runtime": runtime,
             "units": {"total": len(store.entries), "reused": len(reused), "mined": committed,
                       "unit_rows": unit_rows, "commit_s": round(commit_s, 3)},
             "restarts": restarts,  # why mining started again from its committed units, once per time
             "fingerprint": fp}
    write_json(run.mine_stats, stats)
    shutil.rmtree(run.rows, ignore_errors=True)
    return stats


def lost_errors() -> tuple[type[Exception], ...]:
    """What Ray raises when a node, an actor or an object is lost: mining goes on from the
    units already committed (a lost node takes the actors and blocks on it with it)."""
    from ray import exceptions as rx

    return (rx.RayActorError, rx.NodeDiedError, rx.ObjectLostError, rx.WorkerCrashedError, rx.LocalRayletDiedError)


def mining_dataset(cfg: RunConfig, plan: Plan, proxy_dir, threshold: float | None, todo: list, done: frozenset[str],
                   pool: tuple[int, int], per_call: int):
    """The corpus files `todo` (less the units `done`) read and answered by the proxy
    actor pool, then, in a cascade, by the teacher pool."""
    from ray.data import ActorPoolStrategy

    ds = read_corpus(cfg.corpus, **cfg.read_options(), shards=todo, unit_rows=cfg.mine.unit_rows, skip=done,
                     readers=pool[1])
    threads = max(1, int(cfg.mine.cpus_per_actor))
    ds = ds.map_batches(
        ProxyStage,
        fn_constructor_args=(str(proxy_dir), plan.model_dump_json(by_alias=True), cfg.model_dump_json(), threads,
                             threshold),
        batch_size=per_call,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=pool[0], max_size=pool[1]),
        num_cpus=cfg.mine.cpus_per_actor,
        num_gpus=cfg.mine.gpus_per_actor or None,
        # A dead actor process (OOM, SIGKILL) is restarted by Ray and its in-flight
        # batches rerun; set here, not left to Ray Data's defaults (-1/-1 in 2.60), so a
        # batch that keeps killing its actor fails instead of looping.
        max_restarts=cfg.mine.actor_restarts,
        max_task_retries=cfg.mine.task_retries,
    )
    if threshold is not None:
        ds = ds.map_batches(
            TeacherStage, fn_constructor_args=(plan.model_dump_json(by_alias=True), cfg.model_dump_json()),
            batch_size=per_call, batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=1, max_size=cfg.mine.teacher_actors),
            num_cpus=cfg.mine.cpus_per_actor, resources=cfg.mine.teacher_resources or None,
            max_restarts=cfg.mine.actor_restarts,
            max_task_retries=cfg.mine.task_retries,
        )
    return ds


def stream_into(collector: UnitCollector, ds) -> tuple[float, int]:
    """Feed the mined rows to the collector; the seconds the proxy actors were busy
    (their calls' `_busy_s`, summed) and how many actors answered."""
    busy, actors = 0.0, set()
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        busy += pc.sum(block.column(BUSY)).as_py() or 0.0
        actors.update(pc.unique(block.column(ACTOR)).to_pylist())
        collector.add(block.drop_columns([BUSY, ACTOR]))
    return busy, len(actors)


def start_and_steady(busy_s: float, actors: int, mined_s: float, mined_docs: int) -> dict:
    """`steady_docs_per_s`: the pool's rate while its actors are busy (docs over busy
    seconds per actor), which is what a large corpus sees; `start_s`: the seconds the
    run took beyond that rate, i.e. starting the actors, loading the proxy, the first
    reads and the last actor finishing alone: a fixed cost of every run. Measured in
    the actors: the driver sees blocks when Ray Data hands them over, which is not
    when they were done."""
    if busy_s <= 0 or not mined_docs:
        return {"start_s": None, "steady_docs_per_s": None}
    per_actor = busy_s / max(1, actors)
    return {"start_s": round(max(0.0, mined_s - per_actor), 3), "steady_docs_per_s": round(mined_docs / per_actor, 3)}


