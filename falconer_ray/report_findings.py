"""The "Read this first" box of report.html: what a first-time reader should check
before trusting a run, in plain words, each with the figure behind it and what to do.

A report full of numbers does not say whether they are good; a run that kept nothing
or measured agreement on four documents looks as finished as a sound one. These
checks turn the few failure patterns that mislead most into sentences.
"""

from __future__ import annotations

import json

from falconer_ray.rundir import RunDir

FEW_HELDOUT = 30  # below this, one disagreement moves agreement by more than 3 points
LOW_AGREEMENT = 0.8
LOW_SPAN_F1 = 0.5


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n: honest for small n and for 0 or n."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def heldout_teacher_counts(run: RunDir, label_ids: list[str], span_ids: list[str]) -> dict:
    """Per step, what the teacher said on the held-out documents: yes answers for label
    steps, spans found for span steps (an F1 of 1.0 over no spans at all proves nothing)."""
    yes = dict.fromkeys(label_ids, 0)
    spans = dict.fromkeys(span_ids, 0)
    if not run.annotations.exists():
        return {"yes": yes, "spans": spans}
    with run.annotations.open() as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("split") != "heldout":
                continue
            for sid in label_ids:
                yes[sid] += (row.get("labels") or {}).get(sid, 0.0) >= 0.5
            for sid in span_ids:
                spans[sid] += len((row.get("spans") or {}).get(sid) or [])
    return {"yes": yes, "spans": spans}


def findings(report: dict, agreement: dict, held: dict, threshold: float, has_filter: bool) -> list[dict]:
    """Findings, worst first; `level` is bad, warn or ok."""
    out: list[dict] = []
    docs_in, kept = report.get("docs_in") or 0, report.get("docs_kept") or 0
    if report.get("invariant_ok") is False:
        out.append({"level": "bad", "text": "Documents in does not equal kept + filtered out + errors: some "
                    "documents are unaccounted for. Rerun `falconer run DIR --resume` or mine again."})
    if docs_in and has_filter and kept == 0:
        out.append({"level": "bad", "text": f"No document was kept: the proxy scored every document below the "
                    f"keep threshold ({threshold:g}), so there are no extracted spans. Check Label confidence and "
                    "the teacher's answers below; if the teacher says yes on some documents, the proxy has not "
                    "learned the filter yet: annotate more (--n-annotate) or train longer (--epochs)."})
    elif docs_in and has_filter and kept == docs_in:
        out.append({"level": "warn", "text": "Every document was kept: the filter dropped nothing. Check that "
                    "the plan's label steps ask what you meant (Plan below)."})
    n = agreement.get("heldout") or 0
    if not n:
        out.append({"level": "warn", "text": "Agreement was not measured (no held-out annotations): nothing says "
                    "how closely the proxy follows the teacher. Annotate more documents (--n-annotate)."})
    for a in agreement.get("labels", []):
        cells = a.get("cells")
        if not cells or not a.get("n"):
            continue
        sid, total = a["step"].id, a["n"]
        agree = cells["tp"] + cells["tn"]
        lo, hi = wilson(agree, total)
        teacher_yes = cells["tp"] + cells["fn"]
        if cells["tp"] + cells["fp"] == 0 and teacher_yes:
            out.append({"level": "bad", "text": f"Step {sid}: the proxy said no on every held-out document, the "
                        f"teacher said yes on {teacher_yes}. The proxy has not learned this question: annotate "
                        "more documents (--n-annotate) or train more epochs (--epochs)."})
        elif cells["tn"] + cells["fn"] == 0 and cells["fp"]:
            out.append({"level": "bad", "text": f"Step {sid}: the proxy said yes on every held-out document, the "
                        f"teacher said no on {cells['fp']}. The proxy has not learned this question: annotate "
                        "more documents (--n-annotate) or train more epochs (--epochs)."})
        elif agree / total < LOW_AGREEMENT:
            out.append({"level": "warn", "text": f"Step {sid}: the proxy gives the teacher's answer on only "
                        f"{agree} of {total} held-out documents ({agree / total:.0%}). Annotate more, train longer, "
                        "or make the step's question clearer."})
        if total < FEW_HELDOUT:
            out.append({"level": "warn", "text": f"Step {sid}: agreement {agree}/{total} is measured on only {total} "
                        f"held-out documents; the true rate could be anywhere from {lo:.0%} to {hi:.0%} (95% "
                        f"interval). Hold out more: 20% of --n-annotate is held out, so {FEW_HELDOUT * 5} "
                        f"annotations give {FEW_HELDOUT}."})
    f1s = {s["step"].id: s.get("f1") for s in agreement.get("spans", [])}
    for sid, found in (held.get("spans") or {}).items():
        if n and found == 0:
            out.append({"level": "warn", "text": f"Step {sid}: the teacher found no span on the held-out documents, "
                        "so its span F1 (1.0 when neither side finds anything) says nothing about extraction."})
        elif n and found and f1s.get(sid) is not None and f1s[sid] < LOW_SPAN_F1:
            level = "bad" if f1s[sid] == 0 else "warn"
            out.append({"level": level, "text": f"Step {sid}: span F1 {f1s[sid]:g} against the teacher's {found} "
                        f"span{'' if found == 1 else 's'} on held-out documents: the proxy "
                        f"{'found none of them' if f1s[sid] == 0 else 'misses or cuts most of them'}, so its "
                        f"span_{sid} column is not reliable yet. Annotate more documents with spans (--n-annotate), "
                        "train longer (--epochs), or make the step's question more precise."})
    if report.get("docs_error"):
        out.append({"level": "warn", "text": f"{report['docs_error']:,} documents could not be processed: see "
                    "Error reasons under Documents, and errors/ for each one."})
    out.sort(key=lambda f: ("bad", "warn", "ok").index(f["level"]))  # stable: worst first, then in page order
    if not out:
        total = sum(a["n"] for a in agreement.get("labels", []) if a.get("cells"))
        agree = sum(a["cells"]["tp"] + a["cells"]["tn"] for a in agreement.get("labels", []) if a.get("cells"))
        text = "No warning signs: every document is accounted for"
        if total:
            lo, hi = wilson(agree, total)
            text += (f", and the proxy gives the teacher's answer on {agree} of {total} held-out label answers "
                     f"({agree / total:.0%}, 95% interval {lo:.0%} to {hi:.0%})")
        out.append({"level": "ok", "text": text + "."})
    return out
