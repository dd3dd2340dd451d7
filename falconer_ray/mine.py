"""Mining: the trained proxy runs the plan over the whole corpus with Ray Data.

The corpus streams through one pool of proxy actors; each batch first gets every
label step's score, the plan's `keep` condition decides which documents go on,
and only those get span extraction. One metamodel serves both primitives, so one
actor holds one model. Every row comes out with a status (kept / filtered /
error); a final pass splits them into results/, filtered/ and errors/ and counts
them, so every document in is accounted for.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from falconer_ray.config import RunConfig
from falconer_ray.corpus import Shard, corpus_shards, read_corpus
from falconer_ray.heap import trim_heap
from falconer_ray.plan import Plan
from falconer_ray.progress import watch
from falconer_ray.quote import count_documents
from falconer_ray.rundir import RunDir, read_json, write_json
from falconer_ray.spans import Span
from falconer_ray.units import ResumeError, UnitCollector, UnitStore, check_complete, fingerprint, shard_done

UNIT_META = ("_unit", "_row", "_unit_rows", "_last")
BUSY = "_busy_s"  # a proxy call's seconds, per row: the driver sums them (start_and_steady)
ACTOR = "_actor"  # which actor answered: an autoscaled pool's busy seconds are split over the actors that ran
SPAN_TYPE = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()), ("score", pa.float64())]))


def output_schema(plan: Plan, keep_text: bool, cascade: bool = False, routed_text: bool = False) -> pa.Schema:
    """Result columns; with the cascade, `source` (proxy / teacher) and the proxy's
    `confidence`, and between the two stages the text of rows routed to the teacher."""
    fields = [("doc_id", pa.string()), ("status", pa.string()), ("error", pa.string())]
    fields += [(f"label_{s.id}", pa.float64()) for s in plan.label_steps]
    fields += [(f"span_{s.id}", SPAN_TYPE) for s in plan.span_steps]
    if keep_text:
        fields.append(("text", pa.string()))
    if cascade:
        fields += [("source", pa.string()), ("confidence", pa.float64())]
    if routed_text:
        fields.append(("_text", pa.string()))
    return pa.schema(fields)


@dataclass(frozen=True)
class Answer:
    """One document's answer to a plan: every label score, whether `keep` holds, and
    (only when kept) the spans of every span step."""

    kept: bool
    labels: dict[str, float]
    spans: dict[str, list[Span]]
    # Lowest confidence over the answer's parts: each label's chosen side and, when
    # kept, each span step's tokens (see Proxy.extract_with_confidence). The cascade
    # sends documents below its threshold to the teacher.
    confidence: float = 1.0
    windows: int = 1  # model windows the document took: > 1 for a long document

    def to_dict(self) -> dict:
        return {"kept": self.kept, "labels": self.labels,
                "spans": {k: [s.to_dict() for s in v] for k, v in self.spans.items()}}


def apply_plan(proxy, plan: Plan, cfg: RunConfig, texts: list[str]) -> list[Answer]:
    """Labels for every text, the `keep` condition, then spans for the kept texts only.

    The one place a plan meets the proxy: the mining actors and the online server
    both call it, so a document gets the same answer in a batch run and over HTTP.
    Texts go through each step together, so callers pass whole batches.
    """
    if not texts:
        return []
    labels: list[dict[str, float]] = [{} for _ in texts]
    confidence = [1.0] * len(texts)
    said_yes: list[dict[str, bool]] = [{} for _ in texts]
    windows: list[int] = []
    for step in plan.label_steps:
        scores = proxy.label_scores(texts, step.instruction, pooling=cfg.proxy.label_pooling)
        for doc, yes, score in zip(labels, said_yes, map(float, scores)):
            doc[step.id] = score  # decide on the stored float64 score, not the float32 one
            yes[step.id] = score >= cfg.mine.label_threshold
        for j, score in enumerate(map(float, scores)):
            confidence[j] = min(confidence[j], max(score, 1.0 - score))
        windows = windows or list(getattr(proxy, "last_windows", []))
    kept = [plan.keeps(yes) for yes in said_yes]
    kept_at = [j for j, k in enumerate(kept) if k]
    spans: list[dict[str, list[Span]]] = [{} for _ in texts]
    for step in plan.span_steps:
        found, sure = proxy.extract_with_confidence([texts[j] for j in kept_at], step.instruction,
                                                    threshold=cfg.mine.span_threshold) if kept_at else ([], [])
        for j, doc_spans, c in zip(kept_at, found, sure):
            spans[j][step.id] = doc_spans
            confidence[j] = min(confidence[j], float(c))
        if not windows and len(kept_at) == len(texts):
            windows = list(getattr(proxy, "last_windows", []))
    windows = windows or [1] * len(texts)
    return [Answer(k, doc_labels, doc_spans, c, w)
            for k, doc_labels, doc_spans, c, w in zip(kept, labels, spans, confidence, windows)]


class ProxyStage:
    """A Ray Data actor: loads the proxy once, then labels and extracts per batch."""

    def __init__(self, proxy_dir: str, plan_json: str, cfg_json: str, threads: int, threshold: float | None = None):
        from falconer_ray.proxy import Proxy

        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.plan = Plan.model_validate_json(plan_json)
        self.proxy = Proxy.load(proxy_dir, batch_size=self.cfg.mine.windows_per_forward(),
                                runtime=self.cfg.proxy.runtime, threads=max(1, threads))
        self.threshold = threshold  # cascade: below it, the teacher answers
        self.actor_id = uuid.uuid4().int >> 65  # unique across nodes and restarts, fits int64
        cascade = threshold is not None
        self.schema = output_schema(self.plan, self.cfg.mine.keep_text, cascade, routed_text=cascade)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        table = self._answer(batch)
        trim_heap()  # or the actor's heap creeps up call after call (see falconer_ray.heap)
        # the call's seconds, spread over its rows so that any split of the block sums right
        busy = (time.perf_counter() - started) / max(1, batch.num_rows)
        table = table.append_column(BUSY, pa.array([busy] * batch.num_rows, pa.float64()))
        return table.append_column(ACTOR, pa.array([self.actor_id] * batch.num_rows, pa.int64()))

    def _answer(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        ok = [i for i, r in enumerate(rows) if not r["error"]]
        out = {f.name: [None] * len(rows) for f in self.schema}
        out["doc_id"] = [r["doc_id"] for r in rows]
        out["error"] = [r["error"] for r in rows]
        out["status"] = ["error" if r["error"] else "filtered" for r in rows]
        answers = apply_plan(self.proxy, self.plan, self.cfg, [rows[i]["text"] for i in ok])
        windows = [0] * len(rows)
        for i, answer in zip(ok, answers):
            windows[i] = answer.windows
            for step_id, score in answer.labels.items():
                out[f"label_{step_id}"][i] = score
            if answer.kept:
                out["status"][i] = "kept"
                for step_id, spans in answer.spans.items():
                    out[f"span_{step_id}"][i] = [s.to_dict() for s in spans]
        if self.cfg.mine.keep_text:
            out["text"] = [r["text"] if s == "kept" else None for r, s in zip(rows, out["status"])]
        if self.threshold is not None:
            for i, answer in zip(ok, answers):
                out["confidence"][i] = answer.confidence
                if answer.confidence < self.threshold:
                    out["source"][i], out["_text"][i] = "teacher", rows[i]["text"]
                else:
                    out["source"][i] = "proxy"
        table = pa.table(out, schema=self.schema).append_column("_windows", pa.array(windows, pa.int32()))
        for name in UNIT_META:  # the reader's unit bookkeeping rides along unchanged
            if name in batch.column_names:
                table = table.append_column(batch.schema.field(name), batch.column(name))
        return table


def pool_size(cfg: RunConfig) -> tuple[int, int]:
    """Actor pool bounds for the hardware Ray sees: as many actors as fit, or a range
    (`min_actors`) that Ray Data autoscales within on a cluster."""
    import ray

    resources = ray.cluster_resources()
    if cfg.mine.gpus_per_actor:
        fit = int(resources.get("GPU", 0) / cfg.mine.gpus_per_actor)
    else:
        fit = int(resources.get("CPU", 1) / cfg.mine.cpus_per_actor)
    top = max(1, min(fit, cfg.mine.actors or fit))
    return min(top, cfg.mine.min_actors or top), top


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

    Work is committed in units (see `falconer_ray.units`); with `resume`, the units an
    interrupted run committed are kept and only the rest is mined.
    """
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().target_max_block_size = cfg.mine.block_bytes
    from falconer_ray.routing import TeacherStage, load_threshold
    from falconer_ray.runtime_choice import choose_runtime

    proxy_dir = run.require(run.proxy, "train")
    cfg, runtime = choose_runtime(run, plan, cfg)
    threshold = load_threshold(run, cfg)
    read_args = (cfg.text_field, cfg.id_field, cfg.text_unit)
    shards = corpus_shards(cfg.corpus, cfg.limit, *read_args)
    fp = fingerprint(shards, plan, cfg, proxy_dir)
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
    todo = [s for s in shards if not shard_done(s, reused, unit_rows)]
    started = time.monotonic()
    low, high = pool_size(cfg)
    if threshold is not None:  # leave room for the teacher actor, or it never starts
        high = max(1, high - 1)
        low = min(low, high)
    collector = UnitCollector(store)
    expected = count_documents(cfg, cfg.quote.count_bytes)["docs"] - sum(store.entries[u]["rows"] for u in reused)
    per_call = call_size(cfg, expected, high)
    busy, answered = 0.0, 0  # seconds the proxy actors spent in their calls; how many actors
    if todo:
        ds = read_corpus(cfg.corpus, *read_args, shards=todo, unit_rows=unit_rows, skip=frozenset(reused), readers=high)
        threads = max(1, int(cfg.mine.cpus_per_actor))
        ds = ds.map_batches(
            ProxyStage,
            fn_constructor_args=(str(proxy_dir), plan.model_dump_json(by_alias=True), cfg.model_dump_json(), threads,
                                 threshold),
            batch_size=per_call,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(min_size=low, max_size=high),
            num_cpus=cfg.mine.cpus_per_actor,
            num_gpus=cfg.mine.gpus_per_actor or None,
            # A dead actor process (OOM, SIGKILL, lost node) is restarted by Ray and its
            # in-flight batches rerun; set here, not left to Ray Data's defaults (-1/-1 in
            # 2.60), so a batch that keeps killing its actor fails instead of looping.
            max_restarts=cfg.mine.actor_restarts,
            max_task_retries=cfg.mine.task_retries,
        )
        if threshold is not None:
            ds = ds.map_batches(
                TeacherStage, fn_constructor_args=(plan.model_dump_json(by_alias=True), cfg.model_dump_json()),
                batch_size=per_call, batch_format="pyarrow", compute=ActorPoolStrategy(size=1),
                num_cpus=cfg.mine.cpus_per_actor, max_restarts=cfg.mine.actor_restarts,
                max_task_retries=cfg.mine.task_retries,
            )
        # The driver commits units as their rows stream in: output rows are small, and
        # only the driver sees every row of a unit, so only it can tell one is complete.
        with watch("proxy mining", max(0, expected), lambda: collector.rows):
            busy, answered = stream_into(collector, ds)
            collector.finish()
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
             "units": {"total": len(store.entries), "reused": len(reused), "mined": collector.committed,
                       "unit_rows": unit_rows, "commit_s": round(collector.seconds, 3)},
             "fingerprint": fp}
    write_json(run.mine_stats, stats)
    shutil.rmtree(run.rows, ignore_errors=True)
    return stats


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
    when they were done (two actors' first calls, done 0.5 s apart, came 4 s apart)."""
    if busy_s <= 0 or not mined_docs:
        return {"start_s": None, "steady_docs_per_s": None}
    per_actor = busy_s / max(1, actors)
    return {"start_s": round(max(0.0, mined_s - per_actor), 3), "steady_docs_per_s": round(mined_docs / per_actor, 3)}


def mark_duplicate_ids(run: RunDir, shards: list[Shard]) -> int:
    """Keep the first document of every id (corpus order: file, then row); move the
    others to errors under a unique id `<id>#<file>:<row>`, so no row is lost and
    every doc_id in the outputs is unique. Rewrites only the units that hold one."""
    from falconer_ray.repeated_ids import repeated_ids

    rows = pads.dataset(str(run.rows), format="parquet")
    repeated = repeated_ids(rows, run.path)
    if not len(repeated):
        return 0
    # the unit and row of the repeated ids alone
    ids = rows.to_table(columns=["doc_id", "_unit", "_row"], filter=pads.field("doc_id").isin(repeated))
    rel = {s.index: s.rel for s in shards}
    where = lambda unit, row: f"{rel[int(unit[1:8])]}:{row}"  # noqa: E731
    seen: dict[str, str] = {}
    moves: dict[str, dict[int, tuple[str, str]]] = {}
    dups = ids.sort_by([("doc_id", "ascending"), ("_unit", "ascending"), ("_row", "ascending")])
    for r in dups.to_pylist():
        if r["doc_id"] not in seen:
            seen[r["doc_id"]] = where(r["_unit"], r["_row"])
            continue
        here = where(r["_unit"], r["_row"])
        moves.setdefault(r["_unit"], {})[r["_row"]] = (
            f"{r['doc_id']}#{here}", f"duplicate_id: '{r['doc_id']}' at {here} was first seen at {seen[r['doc_id']]}")
    for unit, at in moves.items():
        path = run.rows / f"{unit}.parquet"
        table = pq.read_table(path)
        rows_ = table.to_pydict()
        for i, row in enumerate(rows_["_row"]):
            if row in at:
                rows_["doc_id"][i], rows_["error"][i] = at[row]
                rows_["status"][i] = "error"
                for name in rows_:
                    if name.startswith(("label_", "span_")) or name == "text":
                        rows_[name][i] = None
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.table(rows_, schema=table.schema), tmp)
        os.replace(tmp, path)
    return sum(len(at) for at in moves.values())


def error_reasons(errors: pads.Dataset) -> dict[str, int]:
    """Errors counted by reason, the text before the first colon (`malformed_json`,
    ...), one record batch at a time: a corpus can fail everywhere."""
    out: dict[str, int] = {}
    for batch in errors.scanner(columns=["error"]).to_batches():
        if not batch.num_rows:
            continue
        reasons = pc.utf8_trim_whitespace(pc.list_element(pc.split_pattern(batch.column("error"), ":", max_splits=1), 0))
        for r in pc.value_counts(reasons).to_pylist():
            out[r["values"]] = out.get(r["values"], 0) + r["counts"]
    return out


def tally(rows: pads.Dataset, cascade: bool) -> dict[str, int]:
    """Documents by status, windowed ones and (cascade) those the teacher answered, one
    record batch at a time: the driver never holds a column of the whole corpus."""
    out = {"kept": 0, "filtered": 0, "error": 0, "windowed": 0, "to_teacher": 0}
    for batch in rows.scanner(columns=["status", "_windows"] + (["source"] if cascade else [])).to_batches():
        status = pc.value_counts(batch.column("status"))
        for value, n in zip(status.field("values").to_pylist(), status.field("counts").to_pylist()):
            if value in ("kept", "filtered", "error"):
                out[value] += n
        out["windowed"] += int(pc.sum(pc.greater(batch.column("_windows"), 1)).as_py() or 0)
        if cascade:
            out["to_teacher"] += int(pc.sum(pc.equal(batch.column("source"), "teacher")).as_py() or 0)
    return out


def split_outputs(plan: Plan, cfg: RunConfig, run: RunDir, shards: list[Shard]) -> dict:
    """Split the mined rows by status into their folders, each committed atomically."""
    duplicates = mark_duplicate_ids(run, shards)
    cascade = cfg.mine.target_agreement is not None
    schema = output_schema(plan, cfg.mine.keep_text, cascade)
    meta = [pa.field("_unit", pa.string()), pa.field("_row", pa.int64()), pa.field("_windows", pa.int32())]
    rows = pads.dataset(str(run.rows), format="parquet", schema=pa.schema(list(schema) + meta))
    counts = tally(rows, cascade)
    label_cols = [f"label_{s.id}" for s in plan.label_steps] + (["source", "confidence"] if cascade else [])
    targets = {
        run.results: ("kept", schema.names),
        run.filtered: ("filtered", ["doc_id", *label_cols]),
        run.errors: ("error", ["doc_id", "error"]),
    }
    for folder, (wanted, columns) in targets.items():
        staging = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        scanner = rows.scanner(columns=columns, filter=pads.field("status") == wanted)
        if counts[wanted]:
            pads.write_dataset(scanner, str(staging), format="parquet", basename_template="part-{i}.parquet",
                               existing_data_behavior="overwrite_or_ignore")
        else:  # an empty folder would hide the columns; write an empty table with them
            staging.mkdir(parents=True)
            pq.write_table(scanner.projected_schema.empty_table(), staging / "part-0.parquet")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    if cfg.mine.jsonl:
        write_jsonl(run.results, run.path / "results.jsonl")
    docs_in = counts["kept"] + counts["filtered"] + counts["error"]
    errors = pads.dataset(str(run.errors), format="parquet")
    out = {"docs_in": docs_in, "docs_kept": counts["kept"], "docs_filtered": counts["filtered"],
           "docs_error": counts["error"], "errors_by_reason": error_reasons(errors),
           "duplicate_ids": duplicates, "docs_windowed": counts["windowed"]}
    if cascade:
        out["docs_to_teacher"] = counts["to_teacher"]
    return out


def write_jsonl(parquet_dir, path) -> None:
    import json

    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for batch in pads.dataset(str(parquet_dir), format="parquet").to_batches():
            for row in batch.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
