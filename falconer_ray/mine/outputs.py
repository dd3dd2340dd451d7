"""The end of mining: the committed rows split by status into results/, filtered/ and
errors/, repeated ids moved to errors, and every document counted.

Everything here reads the committed Parquet units one record batch at a time, so the
driver never holds a column of the whole corpus.
"""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from falconer_ray.config import RunConfig
from falconer_ray.corpus.read import Shard
from falconer_ray.corpus.repeated_ids import repeated_ids
from falconer_ray.plan.execute import output_schema
from falconer_ray.plan.schema import Plan
from falconer_ray.files import written_atomically
from falconer_ray.rundir import RunDir


def mark_duplicate_ids(run: RunDir, shards: list[Shard], plan: Plan) -> int:
    """Keep the first document of every id (corpus order: file, then row); move the
    others to errors under a unique id `<id>#<file>:<row>`, so no row is lost and
    every doc_id in the outputs is unique. Rewrites only the units that hold one."""
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
    answer_columns = {s.column for s in plan.steps} | {"text"}
    for unit, at in moves.items():
        path = run.rows / f"{unit}.parquet"
        table = pq.read_table(path)
        rows_ = table.to_pydict()
        for i, row in enumerate(rows_["_row"]):
            if row in at:
                rows_["doc_id"][i], rows_["error"][i] = at[row]
                rows_["status"][i] = "error"
                for name in rows_:
                    if name in answer_columns:
                        rows_[name][i] = None
        with written_atomically(path) as tmp:
            pq.write_table(pa.table(rows_, schema=table.schema), tmp)
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
    duplicates = mark_duplicate_ids(run, shards, plan)
    cascade = cfg.mine.target_agreement is not None
    schema = output_schema(plan, cfg.mine.keep_text, cascade)
    meta = [pa.field("_unit", pa.string()), pa.field("_row", pa.int64()), pa.field("_windows", pa.int32())]
    rows = pads.dataset(str(run.rows), format="parquet", schema=pa.schema(list(schema) + meta))
    counts = tally(rows, cascade)
    label_cols = [s.column for s in plan.label_steps] + (["source", "confidence"] if cascade else [])
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
            # in unit order, so that the same corpus gives the same files, byte for byte
            pads.write_dataset(scanner, str(staging), format="parquet", basename_template="part-{i}.parquet",
                               existing_data_behavior="overwrite_or_ignore", preserve_order=True)
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
    with written_atomically(path) as tmp, tmp.open("w") as f:
        for batch in pads.dataset(str(parquet_dir), format="parquet").to_batches():
            for row in batch.to_pylist():
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
