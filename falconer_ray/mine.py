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
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from falconer_ray.config import RunConfig
from falconer_ray.corpus import read_corpus
from falconer_ray.plan import Plan
from falconer_ray.progress import watch
from falconer_ray.quote import count_documents
from falconer_ray.rundir import RunDir, write_json
from falconer_ray.spans import Span

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
    for step in plan.label_steps:
        scores = proxy.label_scores(texts, step.instruction, pooling=cfg.proxy.label_pooling)
        for doc, yes, score in zip(labels, said_yes, map(float, scores)):
            doc[step.id] = score  # decide on the stored float64 score, not the float32 one
            yes[step.id] = score >= cfg.mine.label_threshold
        for j, score in enumerate(map(float, scores)):
            confidence[j] = min(confidence[j], max(score, 1.0 - score))
    kept = [plan.keeps(yes) for yes in said_yes]
    kept_at = [j for j, k in enumerate(kept) if k]
    spans: list[dict[str, list[Span]]] = [{} for _ in texts]
    for step in plan.span_steps:
        found, sure = proxy.extract_with_confidence([texts[j] for j in kept_at], step.instruction,
                                                    threshold=cfg.mine.span_threshold) if kept_at else ([], [])
        for j, doc_spans, c in zip(kept_at, found, sure):
            spans[j][step.id] = doc_spans
            confidence[j] = min(confidence[j], float(c))
    return [Answer(k, doc_labels, doc_spans, c) for k, doc_labels, doc_spans, c in zip(kept, labels, spans, confidence)]


class ProxyStage:
    """A Ray Data actor: loads the proxy once, then labels and extracts per batch."""

    def __init__(self, proxy_dir: str, plan_json: str, cfg_json: str, threads: int, threshold: float | None = None):
        import torch

        from falconer_ray.proxy import Proxy

        torch.set_num_threads(max(1, threads))
        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.plan = Plan.model_validate_json(plan_json)
        self.proxy = Proxy.load(proxy_dir, batch_size=self.cfg.mine.windows_per_forward())
        self.threshold = threshold  # cascade: below it, the teacher answers
        cascade = threshold is not None
        self.schema = output_schema(self.plan, self.cfg.mine.keep_text, cascade, routed_text=cascade)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        ok = [i for i, r in enumerate(rows) if not r["error"]]
        out = {f.name: [None] * len(rows) for f in self.schema}
        out["doc_id"] = [r["doc_id"] for r in rows]
        out["error"] = [r["error"] for r in rows]
        out["status"] = ["error" if r["error"] else "filtered" for r in rows]
        answers = apply_plan(self.proxy, self.plan, self.cfg, [rows[i]["text"] for i in ok])
        for i, answer in zip(ok, answers):
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
        return pa.table(out, schema=self.schema)


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


def mine(plan: Plan, cfg: RunConfig, run: RunDir) -> dict:
    """Run the proxy over the corpus; write results/, filtered/, errors/ and counts."""
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().target_max_block_size = cfg.mine.block_bytes
    from falconer_ray.routing import TeacherStage, load_threshold

    proxy_dir = run.require(run.proxy, "train")
    threshold = load_threshold(run, cfg)
    started = time.monotonic()
    ds = read_corpus(cfg.corpus, cfg.text_field, cfg.id_field, cfg.text_unit, cfg.limit)
    low, high = pool_size(cfg)
    if threshold is not None:  # leave room for the teacher actor, or it never starts
        high = max(1, high - 1)
        low = min(low, high)
    threads = max(1, int(cfg.mine.cpus_per_actor))
    ds = ds.map_batches(
        ProxyStage,
        fn_constructor_args=(str(proxy_dir), plan.model_dump_json(by_alias=True), cfg.model_dump_json(), threads,
                             threshold),
        batch_size=cfg.mine.docs_per_call(),
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
            batch_size=cfg.mine.docs_per_call(), batch_format="pyarrow", compute=ActorPoolStrategy(size=1),
            num_cpus=cfg.mine.cpus_per_actor, max_restarts=cfg.mine.actor_restarts,
            max_task_retries=cfg.mine.task_retries,
        )
    shutil.rmtree(run.rows, ignore_errors=True)
    expected = count_documents(cfg, cfg.quote.count_bytes)["docs"]
    # Writes ask for no CPU, as reads do: the actors hold every core, and writes that
    # wait for one would hold all output in the object store until the last batch.
    with watch("proxy mining", expected, RowsWritten(run.rows)):
        ds.write_parquet(str(run.rows), ray_remote_args={"num_cpus": 0})
    mined_s = time.monotonic() - started
    counts = split_outputs(plan, cfg, run)
    read = read_corpus(cfg.corpus, cfg.text_field, cfg.id_field, cfg.text_unit, cfg.limit).count()
    counts["accounted"] = read == counts["docs_in"]
    if not counts["accounted"]:
        raise RuntimeError(f"{read} documents read but {counts['docs_in']} written: documents were lost")
    stats = {**counts, "mine_s": round(mined_s, 3), "actors": [low, high],
             "proxy_docs_per_s": round(counts["docs_in"] / mined_s, 3) if mined_s > 0 else None}
    write_json(run.mine_stats, stats)
    return stats


class RowsWritten:
    """Rows in the finished Parquet files of a folder Ray Data is writing into; each
    file's footer is read once, files still being written are skipped until done."""

    def __init__(self, folder):
        self.folder = folder
        self.counted: dict[str, int] = {}

    def __call__(self) -> int:
        if self.folder.is_dir():
            for f in self.folder.glob("*.parquet"):
                if f.name not in self.counted:
                    try:
                        self.counted[f.name] = pq.ParquetFile(f).metadata.num_rows
                    except (OSError, pa.ArrowException):
                        pass  # no footer yet
        return sum(self.counted.values())


def split_outputs(plan: Plan, cfg: RunConfig, run: RunDir) -> dict:
    """Split the mined rows by status into their folders, each committed atomically."""
    cascade = cfg.mine.target_agreement is not None
    rows = pads.dataset(str(run.rows), format="parquet", schema=output_schema(plan, cfg.mine.keep_text, cascade))
    status = rows.to_table(columns=["status"]).column("status")
    counts = {s: int(pc.sum(pc.equal(status, s)).as_py() or 0) for s in ("kept", "filtered", "error")}
    label_cols = [f"label_{s.id}" for s in plan.label_steps] + (["source", "confidence"] if cascade else [])
    to_teacher = None
    if cascade:
        to_teacher = int(pc.sum(pc.equal(rows.to_table(columns=["source"]).column("source"), "teacher")).as_py() or 0)
    targets = {
        run.results: ("kept", None),
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
    shutil.rmtree(run.rows, ignore_errors=True)
    docs_in = sum(counts.values())
    out = {"docs_in": docs_in, "docs_kept": counts["kept"], "docs_filtered": counts["filtered"],
           "docs_error": counts["error"]}
    if to_teacher is not None:
        out["docs_to_teacher"] = to_teacher
    return out


def write_jsonl(parquet_dir, path) -> None:
    import json

    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for batch in pads.dataset(str(parquet_dir), format="parquet").to_batches():
            for row in batch.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
