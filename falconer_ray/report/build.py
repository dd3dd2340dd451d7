"""report.json: what a run did, what it cost, and how far the proxy can be trusted."""

from __future__ import annotations

from falconer_ray.config import RunConfig
from falconer_ray.cost.accounting import run_cost
from falconer_ray.cost.quote import compare
from falconer_ray.rundir import RunDir, read_json, write_json


def build_report(run: RunDir, plan, wall_s: float | None = None, agreement: dict | None = None) -> dict:
    cfg = RunConfig.load(run.path) if run.config.exists() else RunConfig()
    ann = read_json(run.annotation_stats)
    mined = read_json(run.mine_stats)
    trained = read_json(run.train_metrics)
    report = {
        "instruction": plan.instruction,
        "plan": plan.model_dump(by_alias=True),
        "docs_in": mined.get("docs_in"),
        "docs_kept": mined.get("docs_kept"),
        "docs_filtered": mined.get("docs_filtered"),
        "docs_error": mined.get("docs_error"),
        "accounted": mined.get("accounted"),
        "errors_by_reason": mined.get("errors_by_reason"),
        "docs_windowed": mined.get("docs_windowed"),
        "units": mined.get("units"),
        "teacher": {
            "model": ann.get("teacher", {}).get("model"),
            "calls": ann.get("teacher", {}).get("calls"),
            "docs_per_s": ann.get("teacher", {}).get("docs_per_s"),
            "per_op": ann.get("teacher", {}).get("per_op"),
            "keep_fraction": ann.get("keep_fraction"),
            "seconds": ann.get("teacher", {}).get("seconds"),
            "annotated_docs": ann.get("docs"),
            "cached": ann.get("cached"),
            "rejected_spans": ann.get("rejected_spans"),
            "rejected": ann.get("rejected"),
            "docs_failed": ann.get("docs_failed"),
            "errors_by_reason": ann.get("errors_by_reason"),
            "clipped_docs": ann.get("clipped_docs"),
        },
        "cost": run_cost(read_json(run.plan_stats), ann, trained, mined, cfg),
        "proxy": {
            "docs_per_s": mined.get("proxy_docs_per_s"),
            "mine_s": mined.get("mine_s"),
            "start_s": mined.get("start_s"),
            "steady_docs_per_s": mined.get("steady_docs_per_s"),
            "actors": mined.get("actors"),
            "runtime": mined.get("runtime"),
            "train": trained,
        },
        "agreement": agreement if agreement is not None else read_json(run.report).get("agreement"),
        "wall_s": round(wall_s, 3) if wall_s is not None else None,
    }
    quote = read_json(run.path / "quote.json")
    if quote:
        report["quote_vs_actual"] = compare(quote, report)
    cascade = read_json(run.path / "cascade.json")
    if cascade and mined.get("docs_to_teacher") is not None:
        report["cascade"] = {
            "target_agreement": cascade["target"], "delta": cascade["delta"], "threshold": cascade["threshold"],
            "heldout_docs": cascade["n"], "heldout_agreement": cascade["agreement"],
            "heldout_to_teacher": cascade["to_teacher"], "proxy_only_agreement": cascade.get("proxy_only_agreement"),
            "docs_to_teacher": mined["docs_to_teacher"],
            "fraction_to_teacher": round(mined["docs_to_teacher"] / mined["docs_in"], 4) if mined.get("docs_in") else None,
        }
    gold = read_json(run.gold_check)
    if gold:  # written by `falconer demo`, whose corpus carries gold labels
        report["demo_gold_check"] = gold
    if report["docs_in"] is not None:
        total = report["docs_kept"] + report["docs_filtered"] + report["docs_error"]
        report["invariant_ok"] = report["docs_in"] == total
    write_json(run.report, report)
    return report
