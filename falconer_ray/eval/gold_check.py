"""How right a run's kept/filtered decisions are, against gold labels the corpus carries.

Agreement says how often the proxy gives the teacher's answer; on a corpus with gold
labels (the demo's `gold_positive`) this says how often the run is right, which also
shows how good the teacher was.
"""

from __future__ import annotations

import pyarrow.dataset as pads

from falconer_ray.rundir import RunDir, write_json


def mined_ids(folder) -> list[str]:
    if not folder.exists():
        return []
    return pads.dataset(str(folder), format="parquet").to_table(columns=["doc_id"]).column("doc_id").to_pylist()


def gold_check(run: RunDir, gold: dict[str, int], field: str = "gold_positive") -> dict:
    """Kept (in results/) against gold 1, filtered out against gold 0; error rows and
    documents without a gold label are counted apart, not scored."""
    kept, filtered = mined_ids(run.results), mined_ids(run.filtered)
    cells = {"kept_positive": 0, "kept_negative": 0, "filtered_positive": 0, "filtered_negative": 0}
    unlabelled = 0
    for side, ids in (("kept", kept), ("filtered", filtered)):
        for doc_id in ids:
            if doc_id not in gold:
                unlabelled += 1
            else:
                cells[f"{side}_{'positive' if gold[doc_id] else 'negative'}"] += 1
    scored = sum(cells.values())
    n_kept = cells["kept_positive"] + cells["kept_negative"]
    positives = cells["kept_positive"] + cells["filtered_positive"]

    def share(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {
        "gold_field": field,
        "docs_scored": scored,
        "docs_without_gold": unlabelled,
        **cells,
        "accuracy": share(cells["kept_positive"] + cells["filtered_negative"], scored),
        "kept_really_positive": share(cells["kept_positive"], n_kept),
        "positives_kept": share(cells["kept_positive"], positives),
        "gold_positive_share": share(positives, scored),
    }


def gold_summary(check: dict) -> str:
    """One line for the terminal summary."""
    def pct(v):
        return "n/a" if v is None else f"{v:.1%}"

    return (f"against {check['gold_field']} on {check['docs_scored']} documents: accuracy "
            f"{pct(check['accuracy'])}, kept really positive {pct(check['kept_really_positive'])} "
            f"({check['kept_positive']} of {check['kept_positive'] + check['kept_negative']}), positives kept "
            f"{pct(check['positives_kept'])} (gold positives {pct(check['gold_positive_share'])})")


def record_gold_check(run: RunDir, report: dict, gold: dict[str, int]) -> dict:
    """Score a finished run, keep the result in gold_check.json (so `falconer report`
    carries it on) and in report.json as `demo_gold_check`."""
    check = gold_check(run, gold)
    write_json(run.gold_check, check)
    report["demo_gold_check"] = check
    write_json(run.report, report)
    return check
