"""The summary `falconer` prints when a run ends: counts, speed, dollars, agreement, and
what went wrong, with where to look next."""

from __future__ import annotations

from rich.table import Table

from falconer_ray.config import RunConfig
from falconer_ray.eval.gold_check import gold_summary
from falconer_ray.progress import console, emit, print_table
from falconer_ray.report.html import speed
from falconer_ray.rundir import RunDir, read_json


def show_summary(report: dict, run: RunDir) -> None:
    """The table `falconer` prints when a run ends (a `done` event with --log-json)."""
    emit("done", run=str(run.path), report=report)
    t = Table(title=f"falconer run: {run.path}", show_header=False)
    for key in ("docs_in", "docs_kept", "docs_filtered", "docs_error", "wall_s"):
        t.add_row(key, str(report.get(key)))
    rate = report["teacher"]["docs_per_s"]
    t.add_row("teacher", f"{report['teacher']['model']}: {report['teacher']['calls']} calls, "
                         + (f"{rate} docs/s" if rate else "answers from the cache"))
    proxy = report["proxy"]
    started = (f" ({proxy['start_s']:.0f} s to start, then {proxy['steady_docs_per_s']} docs/s)"
               if proxy.get("start_s") is not None and proxy.get("steady_docs_per_s") else "")
    t.add_row("proxy", f"{proxy['docs_per_s']} docs/s{started}")
    for key, value in cost_rows(report, run):
        t.add_row(key, value)
    agreement = report.get("agreement") or {}
    if agreement.get("heldout_docs"):
        t.add_row("agreement", f"proxy vs teacher on {agreement['heldout_docs']} held-out documents: labels "
                               f"{agreement.get('label')}, span F1 {agreement.get('span_f1')} (1.0 = same answers)")
    else:
        t.add_row("agreement", "not measured (no held-out annotations)")
    if report.get("cascade"):
        c = report["cascade"]
        t.add_row("cascade", f"target {c['target_agreement']} (delta {c['delta']}), threshold {c['threshold']}, "
                             f"held-out agreement {c['heldout_agreement']:.3f}, to teacher {c['fraction_to_teacher']}")
    if report.get("demo_gold_check"):
        t.add_row("gold check", gold_summary(report["demo_gold_check"]))
    if report.get("errors_by_reason"):
        t.add_row("errors by reason", ", ".join(f"{k}: {v}" for k, v in sorted(report["errors_by_reason"].items())))
    if report.get("docs_windowed"):
        t.add_row("long documents", f"{report['docs_windowed']} read in several windows")
    units = report.get("units") or {}
    if units.get("reused"):
        t.add_row("resumed", f"{units['reused']} of {units['total']} units reused, {units['mined']} mined")
    failed = (report.get("teacher") or {}).get("errors_by_reason")
    if failed:
        t.add_row("teacher failures", ", ".join(f"{k}: {v}" for k, v in sorted(failed.items())))
    print_table(t)
    console.print(f"results: {run.results}   errors: {run.errors}")
    console.print(f"next: open {run.path / 'report.html'} in a browser (its 'Read this first' box says what to check)")


def cost_rows(report: dict, run: RunDir) -> list[tuple[str, str]]:
    """Dollars as report.html and report.json show them (the run's `prices:` table), the
    quote made before the run beside them, and the teacher's usage."""
    cfg = RunConfig.load(run.path) if run.config.exists() else RunConfig()
    quote = read_json(run.path / "quote.json")
    usd = speed(report, cfg, quote).get("usd") or {}
    rows = []
    if usd:
        line = f"${usd['falconer']:.4g} this run"
        if usd.get("all_teacher") is not None:
            line += f", ${usd['all_teacher']:.4g} for the teacher on every document (estimated)"
        rows.append(("cost", line + " at the config's `prices:`, as in report.html and report.json"))
    quoted = (quote.get("falconer") or {}).get("total_usd")
    if quoted is not None:
        rows.append(("quoted", f"${quoted:.4g} estimated before the run (quote.json, same prices; "
                               "report.html compares the two)"))
    cost = report.get("cost") or {}
    if cost:
        tc = cost["teacher"]
        rows.append(("teacher usage", f"{tc['prompt_tokens']} prompt + {tc['completion_tokens']} completion tokens, "
                                      f"{tc['seconds']} s"))
    return rows
