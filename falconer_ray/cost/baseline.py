"""The baseline falconer is measured against: the teacher alone over the whole corpus.

One definition for the quote (from its pilot) and the report (from the run's own
annotation): every label step on every document, every span step on the documents the
teacher's labels keep, each call at the teacher's measured seconds and tokens per call
of its kind. `per_op` is {"label"|"span": {"s_per_call", "input_tokens_per_call",
"output_tokens_per_call"}}, as `teacher_per_op` builds it.
"""

from __future__ import annotations


def teacher_per_op(calls: dict[str, int], seconds: dict[str, float], tokens_in: dict[str, int],
                   tokens_out: dict[str, int]) -> dict:
    """Seconds and tokens per call of each kind, from totals; kinds without calls are left out."""
    return {op: {"s_per_call": seconds.get(op, 0.0) / n,
                 "input_tokens_per_call": tokens_in.get(op, 0) / n,
                 "output_tokens_per_call": tokens_out.get(op, 0) / n}
            for op, n in calls.items() if n}


def step_counts(plan: dict | None) -> tuple[int, int]:
    """(label steps, span steps) of a plan as report.json holds it."""
    ops = [s.get("op") for s in (plan or {}).get("steps", [])]
    return ops.count("get_label"), ops.count("get_span")


def seconds_per_document(per_op: dict, n_label: int, n_span: int) -> float:
    """Teacher seconds to annotate one document for every step (as annotation does)."""
    return n_label * _get(per_op, "label", "s_per_call") + n_span * _get(per_op, "span", "s_per_call")


def estimate(per_op: dict, docs: float, n_label: int, n_span: int, keep: float) -> dict:
    """Calls, seconds and tokens of the teacher alone on `docs` documents, span steps
    running on the `keep` share of them."""
    calls = {"label": docs * n_label, "span": docs * keep * n_span if n_label else docs * n_span}
    return {
        "calls": {k: round(v) for k, v in calls.items()},
        "teacher_calls": round(sum(calls.values())),
        "seconds": sum(calls[k] * _get(per_op, k, "s_per_call") for k in calls),
        "tokens": {"input": round(sum(calls[k] * _get(per_op, k, "input_tokens_per_call") for k in calls)),
                   "output": round(sum(calls[k] * _get(per_op, k, "output_tokens_per_call") for k in calls))},
    }


def _get(per_op: dict, op: str, key: str) -> float:
    return float((per_op.get(op) or {}).get(key) or 0.0)
