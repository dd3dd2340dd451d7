"""Ray Data actors that answer a plan per batch: the proxy, and (with the cascade) the
teacher for the rows the proxy was unsure of.

Each loads its model once and answers whole batches through `plan.execute.apply_plan`,
so a row gets the answer it would get online or in the int8 check. The unit
bookkeeping columns of the reader ride along unchanged.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pyarrow as pa

from falconer_ray.annotate import AnnotationCache
from falconer_ray.annotate.answers import TeacherAnswers
from falconer_ray.config import RunConfig
from falconer_ray.mine.heap import trim_heap
from falconer_ray.plan.execute import ProxyAnswers, apply_plan, fill, output_schema
from falconer_ray.plan.schema import Plan
from falconer_ray.proxy import Proxy
from falconer_ray.teacher import teacher_from_config

UNIT_META = ("_unit", "_row", "_unit_rows", "_last")
BUSY = "_busy_s"  # a proxy call's seconds, per row: the driver sums them (start_and_steady)
ACTOR = "_actor"  # which actor answered: an autoscaled pool's busy seconds are split over the actors that ran
TEXT_FOR_TEACHER = "_text"  # carried only for rows routed to the teacher, dropped after it


class ProxyStage:
    """Loads the proxy once, then labels and extracts per batch."""

    def __init__(self, proxy_dir: str, plan_json: str, cfg_json: str, threads: int, threshold: float | None = None):
        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.plan = Plan.model_validate_json(plan_json)
        self.proxy = Proxy.load(proxy_dir, batch_size=self.cfg.mine.windows_per_forward(),
                                runtime=self.cfg.proxy.runtime, threads=max(1, threads))
        self.answers = ProxyAnswers(self.proxy, self.cfg)
        self.threshold = threshold  # cascade: below it, the teacher answers
        self.actor_id = uuid.uuid4().int >> 65  # unique across nodes and restarts, fits int64
        cascade = threshold is not None
        self.schema = output_schema(self.plan, self.cfg.mine.keep_text, cascade, routed_text=cascade)

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.perf_counter()
        table = self._answer(batch)
        trim_heap()  # or the actor's heap creeps up call after call (see falconer_ray.mine.heap)
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
        answers = apply_plan(self.answers, self.plan, [rows[i]["text"] for i in ok])
        windows = [0] * len(rows)
        for i, answer in zip(ok, answers):
            windows[i] = answer.windows
            fill(out, self.plan, i, answer)
        if self.cfg.mine.keep_text:
            out["text"] = [r["text"] if s == "kept" else None for r, s in zip(rows, out["status"])]
        if self.threshold is not None:
            for i, answer in zip(ok, answers):
                out["confidence"][i] = answer.confidence
                if answer.confidence < self.threshold:
                    out["source"][i], out[TEXT_FOR_TEACHER][i] = "teacher", rows[i]["text"]
                else:
                    out["source"][i] = "proxy"
        table = pa.table(out, schema=self.schema).append_column("_windows", pa.array(windows, pa.int32()))
        return carry(batch, table, UNIT_META)


class TeacherStage:
    """Answers the rows the proxy routed to it with the teacher."""

    def __init__(self, plan_json: str, cfg_json: str):
        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.plan = Plan.model_validate_json(plan_json)
        self.teacher = teacher_from_config(self.cfg.teacher)
        self.schema = output_schema(self.plan, self.cfg.mine.keep_text, cascade=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Opened per batch: Ray Data may call the actor from another thread than the
        # one that built it, and a sqlite connection must stay in its thread.
        with AnnotationCache(Path(self.cfg.cache_dir) / "annotations.sqlite") as cache:
            return self._answer(batch, cache)

    def _answer(self, batch: pa.Table, cache) -> pa.Table:
        out = batch.to_pydict()
        todo = [i for i, s in enumerate(out["source"]) if s == "teacher"]
        answers = apply_plan(TeacherAnswers(self.teacher, cache), self.plan, [out[TEXT_FOR_TEACHER][i] for i in todo])
        for i, answer in zip(todo, answers):
            if not answer.answered:  # the teacher could not label it: the proxy's answer stays, and says so
                out["source"][i] = "proxy"
                continue
            fill(out, self.plan, i, answer)
            if self.cfg.mine.keep_text:
                out["text"][i] = out[TEXT_FOR_TEACHER][i] if out["status"][i] == "kept" else None
        table = pa.table({f.name: out[f.name] for f in self.schema}, schema=self.schema)
        later = tuple(n for n in batch.column_names if n.startswith("_") and n != TEXT_FOR_TEACHER)
        return carry(batch, table, later)


def carry(batch: pa.Table, table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    """Append the batch's bookkeeping columns `names` (those it has) to the answered table."""
    for name in names:
        if name in batch.column_names:
            table = table.append_column(batch.schema.field(name), batch.column(name))
    return table
