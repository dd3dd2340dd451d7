"""The cascade inside a run: calibrate on held-out annotations, route while mining.

A document's answer is whether the plan keeps it and, if kept, its spans. After
training, the proxy answers the held-out annotated documents; the teacher already
has, so each one gives (proxy confidence, whether the two answers agree), and
`cascade.calibrate` turns those into a threshold (written to cascade.json). While
mining, documents whose proxy confidence falls below it are answered by the teacher
in a second Ray Data stage, and every row records which of the two answered it.
"""

from __future__ import annotations

import pyarrow as pa

from falconer_ray.config import RunConfig
from falconer_ray.plan import Plan
from falconer_ray.rundir import RunDir, read_json, write_json

TEXT_FOR_TEACHER = "_text"  # carried only for rows routed to the teacher, dropped after it


def teacher_answer(plan: Plan, row: dict, cfg: RunConfig) -> tuple[bool, dict[str, set[tuple[int, int]]]]:
    """The teacher's answer in an annotation row: kept, and the spans of kept documents."""
    kept = plan.keeps({s.id: row["labels"][s.id] >= 0.5 for s in plan.label_steps})
    spans = {s.id: {(x["start"], x["end"]) for x in row["spans"][s.id]} for s in plan.span_steps} if kept else {}
    return kept, spans


def agrees(plan: Plan, answer, row: dict, cfg: RunConfig) -> bool:
    kept, spans = teacher_answer(plan, row, cfg)
    if answer.kept != kept:
        return False
    return all({(s.start, s.end) for s in answer.spans.get(k, [])} == v for k, v in spans.items())


def calibrate_run(plan: Plan, rows: list[dict], run: RunDir, cfg: RunConfig) -> dict:
    """Choose the cascade threshold on the held-out annotations; writes cascade.json."""
    from falconer_ray.cascade import calibrate
    from falconer_ray.mine import apply_plan
    from falconer_ray.proxy import Proxy

    held = [r for r in rows if r["split"] == "heldout"]
    if not held:
        raise ValueError("no held-out annotated documents to calibrate the cascade on: annotate more (--n-annotate)")
    proxy = Proxy.load(run.proxy)
    answers = apply_plan(proxy, plan, cfg, [r["text"] for r in held])
    agree = [agrees(plan, a, r, cfg) for a, r in zip(answers, held)]
    cal = calibrate([a.confidence for a in answers], agree, cfg.mine.target_agreement, cfg.mine.delta)
    out = cal.to_dict() | {"proxy_only_agreement": round(sum(agree) / len(agree), 4)}
    write_json(cascade_file(run), out)
    return out


def cascade_file(run: RunDir):
    return run.path / "cascade.json"


def load_threshold(run: RunDir, cfg: RunConfig) -> float | None:
    """The calibrated threshold when the run asks for a cascade (None: proxy only)."""
    import math

    if cfg.mine.target_agreement is None:
        return None
    data = read_json(run.require(cascade_file(run), "train"))
    if data.get("target") != cfg.mine.target_agreement or data.get("delta") != cfg.mine.delta:
        raise ValueError(f"{cascade_file(run)} was calibrated for target {data.get('target')}, delta {data.get('delta')}: "
                         "run `falconer train` again with the new target")
    return math.inf if data["threshold"] is None else float(data["threshold"])


class TeacherStage:
    """A Ray Data actor: answers the rows the proxy routed to it with the teacher."""

    def __init__(self, plan_json: str, cfg_json: str):
        from falconer_ray.mine import output_schema
        from falconer_ray.pipeline import make_run_teacher

        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.plan = Plan.model_validate_json(plan_json)
        self.teacher = make_run_teacher(self.cfg)
        self.schema = output_schema(self.plan, self.cfg.mine.keep_text, cascade=True)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pathlib import Path

        from falconer_ray.annotate import AnnotationCache

        # Opened per batch: Ray Data may call the actor from another thread than the
        # one that built it, and a sqlite connection must stay in its thread.
        with AnnotationCache(Path(self.cfg.cache_dir) / "annotations.sqlite") as cache:
            return self._answer(batch, cache)

    def _answer(self, batch: pa.Table, cache) -> pa.Table:
        from falconer_ray.annotate import cached_extract, cached_label

        out = batch.to_pydict()
        todo = [i for i, s in enumerate(out["source"]) if s == "teacher"]
        texts = [out[TEXT_FOR_TEACHER][i] for i in todo]
        probs = {step.id: cached_label(self.teacher, cache, texts, step.instruction).probs if texts else []
                 for step in self.plan.label_steps}
        # A document the teacher could not label keeps the proxy's answer (source says so).
        unanswered = {i for step_probs in probs.values() for i, p in zip(todo, step_probs) if p is None}
        for i in unanswered:
            out["source"][i] = "proxy"
        yes = {i: {} for i in todo if i not in unanswered}
        for step_id, step_probs in probs.items():
            for i, p in zip(todo, step_probs):
                if i in yes:
                    out[f"label_{step_id}"][i] = float(p)
                    yes[i][step_id] = p >= 0.5
        todo = list(yes)
        kept = [i for i in todo if self.plan.keeps(yes[i])]
        kept_set = set(kept)
        for i in todo:
            out["status"][i] = "kept" if i in kept_set else "filtered"
            for step in self.plan.span_steps:
                out[f"span_{step.id}"][i] = None
        for step in self.plan.span_steps:
            got = cached_extract(self.teacher, cache, [out[TEXT_FOR_TEACHER][i] for i in kept],
                                 step.instruction) if kept else None
            for j, i in enumerate(kept):
                if got.spans[j] is not None:
                    out[f"span_{step.id}"][i] = [s.to_dict() for s in got.spans[j]]
                else:  # counted with the other errors, never silently empty
                    failure = got.errors[j]
                    out["status"][i], out["error"][i] = "error", f"teacher_{failure.reason}: {failure.detail}"[:500]
        if self.cfg.mine.keep_text:
            for i in todo:
                out["text"][i] = out[TEXT_FOR_TEACHER][i] if out["status"][i] == "kept" else None
        table = pa.table({f.name: out[f.name] for f in self.schema}, schema=self.schema)
        for name in batch.column_names:  # bookkeeping columns of later stages ride along
            if name.startswith("_") and name != TEXT_FOR_TEACHER:
                table = table.append_column(batch.schema.field(name), batch.column(name))
        return table
