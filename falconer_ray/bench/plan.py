"""`falconer bench plan`: how often does a teacher turn an instruction into the right plan?

Each case of a JSONL file (default: the packaged `plan_cases.jsonl`) has an
instruction and its expected plan. The teacher plans every instruction through the
real planner (constrained output, validation, one repair round); a planning failure
is a result (counted, with the raw output), never a crash. Scores are defined in
`falconer_ray.bench.plan_score`.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from falconer_ray.bench.plan_score import exact_match, match_steps
from falconer_ray.plan.planner import PlanningFailed, plan_with_trace
from falconer_ray.plan.schema import Plan, PlanError
from falconer_ray.progress import progress
from falconer_ray.teacher import make_teacher


class PlanCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=80)
    category: str = Field(min_length=1, max_length=40)
    instruction: str = Field(min_length=3, max_length=2000)
    plan: Plan


def default_cases_path() -> Path:
    return Path(str(resources.files("falconer_ray.bench") / "plan_cases.jsonl"))


def load_cases(path: str | Path | None = None) -> list[PlanCase]:
    """Every case of a JSONL file, validated; a bad line is a PlanError naming it."""
    p = Path(path) if path else default_cases_path()
    if not p.is_file():
        raise FileNotFoundError(f"cases file not found: {p}")
    cases: list[PlanCase] = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            cases.append(PlanCase.model_validate(json.loads(line)))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'case'}: {err['msg']}" for err in e.errors())
            raise PlanError(f"{p}:{n} is not a valid case (id, category, instruction, plan): {problems}") from None
        except ValueError as e:
            raise PlanError(f"{p}:{n} is not valid JSON: {e}") from None
    if not cases:
        raise PlanError(f"{p} has no case")
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise PlanError(f"{p}: case ids must be unique")
    return cases


def score_cases(cases: list[PlanCase], predicted: list[Plan | None]) -> dict[str, Any]:
    """Aggregate scores; `None` is a failed plan (no match, no predicted step).

    step_f1 is micro-averaged (pairs, predicted and expected steps summed over all
    cases); step_f1_macro is the mean of per-case F1.
    """
    pairs = n_pred = n_exp = exact = 0
    per_case_f1: list[float] = []
    by_category: dict[str, dict[str, float]] = {}
    for case, pred in zip(cases, predicted, strict=True):
        n_exp += len(case.plan.steps)
        f1 = 0.0
        hit = False
        if pred is not None:
            m = match_steps(pred, case.plan)
            pairs, n_pred, f1 = pairs + len(m.pairs), n_pred + m.n_pred, m.f1
            hit = exact_match(pred, case.plan)
        exact += hit
        per_case_f1.append(f1)
        cat = by_category.setdefault(case.category, {"n": 0, "exact_match": 0.0, "step_f1_macro": 0.0})
        cat["n"] += 1
        cat["exact_match"] += hit
        cat["step_f1_macro"] += f1
    for cat in by_category.values():
        cat["exact_match"] = round(cat["exact_match"] / cat["n"], 4)
        cat["step_f1_macro"] = round(cat["step_f1_macro"] / cat["n"], 4)
    precision = pairs / n_pred if n_pred else 0.0
    recall = pairs / n_exp if n_exp else 0.0
    return {
        "instructions": len(cases),
        "exact_match": round(exact / len(cases), 4) if cases else 0.0,
        "step_f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "step_precision": round(precision, 4),
        "step_recall": round(recall, 4),
        "step_f1_macro": round(sum(per_case_f1) / len(cases), 4) if cases else 0.0,
        "failures": sum(p is None for p in predicted),
        "by_category": by_category,
    }


def run_plan_bench(kind: str = "embedded", model: str | None = None, cases_path: str | Path | None = None,
                   limit: int | None = None, **teacher_kw: Any) -> dict[str, Any]:
    """Plan every case with `make_teacher(kind, model=model, **teacher_kw)` and score it."""
    cases = load_cases(cases_path)[:limit] if limit else load_cases(cases_path)
    started = time.perf_counter()
    teacher = make_teacher(kind, model=model, **teacher_kw)
    load_s = time.perf_counter() - started
    results, predicted = [], []
    with progress("planning", len(cases)) as advance:
        for case in cases:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"id": case.id, "category": case.category, "instruction": case.instruction,
                                   "expected": case.plan.model_dump(by_alias=True)}
            fitted: list[str] = []
            try:
                plan, rejected = plan_with_trace(case.instruction, teacher, on_note=fitted.append)
            except PlanningFailed as e:
                plan, rejected = None, e.attempts
                row["error"] = str(e).splitlines()[0]
            except ValueError as e:  # an empty instruction, a prompt too long for the teacher, ...
                plan, rejected = None, []
                row["error"] = str(e)
            row["predicted"] = plan.model_dump(by_alias=True) if plan else None
            row["repairs"] = len(rejected) if plan else max(len(rejected) - 1, 0)
            if fitted:  # what was cut to fit the request (falconer_ray/plan/fit.py)
                row["fitted"] = fitted
            if rejected:
                row["rejected"] = [{"raw": raw, "reason": reason} for raw, reason in rejected]
            if plan is not None:
                m = match_steps(plan, case.plan)
                row.update(exact_match=exact_match(plan, case.plan), step_f1=round(m.f1, 4),
                           matched=[[plan.steps[i].id, case.plan.steps[j].id, round(s, 3)] for i, j, s in m.pairs])
            else:
                row.update(exact_match=False, step_f1=0.0, matched=[])
            row["seconds"] = round(time.perf_counter() - t0, 3)
            results.append(row)
            predicted.append(plan)
            advance()
    seconds = time.perf_counter() - started
    return {
        "benchmark": "plan",
        "teacher": getattr(teacher, "name", kind),
        "kind": kind,
        "model": model,
        "cases_file": str(Path(cases_path).resolve()) if cases_path else "falconer_ray/bench/plan_cases.jsonl",
        **score_cases(cases, predicted),
        "repaired": sum(1 for r in results if r["predicted"] and r["repairs"]),
        "seconds": round(seconds, 2),
        "load_seconds": round(load_s, 2),
        "seconds_per_instruction": round((seconds - load_s) / len(cases), 3),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "cases": results,
    }
