"""The "Read this first" box of report.html: what a first-time reader should check
before trusting a run, in plain words, each with the figure behind it and what to do.

A report full of numbers does not say whether they are good; a run that kept nothing
or measured agreement on four documents looks as finished as a sound one. These
checks turn the few failure patterns that mislead most into sentences.
"""

from __future__ import annotations

import math

from falconer_ray.report.teacher import annotation_rows
from falconer_ray.rundir import RunDir
from falconer_ray.plan.execute import TEACHER_YES

FEW_HELDOUT = 30  # below this, one disagreement moves agreement by more than 3 points
LOW_AGREEMENT = 0.8
LOW_SPAN_F1 = 0.5
# The teacher's own weaknesses (see teacher_findings for why these values).
REJECTED_WARN, REJECTED_BAD, MIN_PROPOSED = 0.3, 0.5, 10
SQUEEZED_IQR, UNSURE_LOW, UNSURE_HIGH = 0.2, 0.2, 0.8
ONE_SIDED, MIN_TEACHER_DOCS = 0.05, 20
STRONGER_TEACHER = ("try a stronger teacher (`--teacher openai` with `--teacher-model` and `--teacher-url`, or "
                    "`--teacher vllm` on a GPU) or reword {what}, then rerun `falconer annotate`; "
                    "annotating more documents with this teacher will not help")


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n: honest for small n and for 0 or n."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def majority(cells: dict) -> dict:
    """The trivial proxy's score: always giving the teacher's more common held-out answer."""
    yes, no = cells["tp"] + cells["fn"], cells["fp"] + cells["tn"]
    answer, k = ("yes", yes) if yes > no else ("no", no)
    n = yes + no
    return {"answer": answer, "k": k, "n": n, "share": k / n if n else None}


def heldout_teacher_counts(run: RunDir, label_ids: list[str], span_ids: list[str]) -> dict:
    """Per step, what the teacher said on the held-out documents: yes answers for label
    steps, spans found for span steps (an F1 of 1.0 over no spans at all proves nothing)."""
    yes = dict.fromkeys(label_ids, 0)
    spans = dict.fromkeys(span_ids, 0)
    for row in annotation_rows(run):
        if row.get("split") != "heldout":
            continue
        for sid in label_ids:
            yes[sid] += (row.get("labels") or {}).get(sid, 0.0) >= TEACHER_YES
        for sid in span_ids:
            spans[sid] += len((row.get("spans") or {}).get(sid) or [])
    return {"yes": yes, "spans": spans}


def teacher_findings(teacher: dict) -> tuple[list[dict], set[str]]:
    """What the teacher itself could not do, and the steps it answered poorly.

    Thresholds, and why:
    - Span answers: a span text that is not an exact piece of the document (or was cut
      off, ...) is thrown away. Over 30% of the texts it proposed thrown away is a Check,
      over 50% a Problem: the proxy then learns spans from a minority of what the teacher
      meant. Judged only from 10 proposed texts on, so two of five is no alarm.
    - Squeezed scores: a teacher that tells documents apart puts most P(yes) near 0 or 1;
      its interquartile range on a balanced step is well over 0.5, and on a lopsided one
      its quartiles sit near 0 or near 1. Half of the documents inside a band narrower than
      0.2 that lies between 0.2 and 0.8 means the score follows the prompt, not the
      document: its yes/no at 0.5 is close to a coin toss. (The embedded gemma3-270m
      teacher's scores on the IMDB demo sat at quartiles 0.35 to 0.49, IQR 0.15: a
      cut at 0.1 would miss it.)
    - One-sided: yes (or no) on 95% of the annotated documents or more leaves the proxy
      almost nothing to learn the other answer from; it may also be the corpus, so Check.
    Both score checks need 20 annotated documents: fewer give no stable quartiles.
    """
    out: list[dict] = []
    weak: set[str] = set()
    share, proposed = teacher.get("rejected_share"), teacher.get("spans_proposed") or 0
    if share is not None and proposed >= MIN_PROPOSED and share > REJECTED_WARN:
        reasons = ", ".join(f"{r['n']:,} {r['reason'].replace('_', ' ')}" for r in teacher["rejected"])
        steps = ", ".join(teacher["span_steps"])
        weak |= set(teacher["span_steps"])
        out.append({"level": "bad" if share > REJECTED_BAD else "warn", "text": (
            f"Of the {proposed:,} span texts the teacher gave in its {teacher['span_asked']:,} span answers, "
            f"{teacher['rejected_total']:,} ({share:.0%}) were rejected ({reasons}; see Teacher below). Rejected "
            f"texts are left out of training, so the proxy learns spans from the "
            f"{proposed - teacher['rejected_total']:,} that remain. The teacher cannot do the span "
            f"step{'s' if len(teacher['span_steps']) > 1 else ''} "
            f"({steps}) well: "
            + STRONGER_TEACHER.format(what="their questions in plan.json (ask for words copied exactly from the "
                                      "document)") + ".")})
    for a in teacher.get("labels", []):
        if a["n"] < MIN_TEACHER_DOCS:
            continue
        sid = a["step"]
        if a["iqr"] < SQUEEZED_IQR and UNSURE_LOW < a["q25"] and a["q75"] < UNSURE_HIGH:
            weak.add(sid)
            out.append({"level": "bad", "text": (
                f"Step {sid}: the teacher's scores barely differ between documents. Half of the {a['n']:,} "
                f"annotated documents got a P(yes) between {a['q25']:.2f} and {a['q75']:.2f} (interquartile range "
                f"{a['iqr']:.2f}; see Teacher below), so its {a['yes']:,} yes answers (from 0.5) are close to a coin "
                "toss, and the proxy learns that confusion. The teacher cannot do this step well: "
                + STRONGER_TEACHER.format(what="the step's question in plan.json") + ".")})
        elif a["yes_share"] >= 1 - ONE_SIDED or a["yes_share"] <= ONE_SIDED:
            weak.add(sid)
            word, k = ("yes", a["yes"]) if a["yes_share"] >= 0.5 else ("no", a["n"] - a["yes"])
            out.append({"level": "warn", "text": (
                f"Step {sid}: the teacher said {word} to {k:,} of {a['n']:,} annotated documents "
                f"({k / a['n']:.0%}), leaving the proxy almost no other answer to learn from. Either nearly every "
                f"document of this corpus is a {word}, or the teacher cannot do this step well: read a few in "
                "annotations/annotations.jsonl; if the answers are wrong, "
                + STRONGER_TEACHER.format(what="the step's question in plan.json") + ".")})
    return out, weak


def heldout_advice(n: int, annotated: int, docs_in: int, share: float) -> str:
    """How to get enough held-out documents, or why this corpus cannot give them. The split
    is by a hash of each id, so the held-out count is only about `share` of the annotations."""
    got = (f"about {share:.0%} of the annotated documents are held out, picked by a hash of each id "
           f"(here {n} of {annotated:,})")
    rough = ("That makes agreement a rough guide rather than a measurement: read the mined results below, or score "
             "the proxy against gold labels (`falconer eval`). A larger `train.heldout` in config.json (up to 0.5) "
             "holds out more, but leaves fewer documents to learn from.")
    if docs_in and annotated >= docs_in:
        return (f"All {docs_in:,} documents of the corpus were annotated already and {got}: the corpus is too small "
                f"to measure agreement closely, and more annotations cannot help. {rough} The teacher's own answers "
                "cover every document (annotations/annotations.jsonl).")
    needed = math.ceil(FEW_HELDOUT / share)
    if docs_in and docs_in < needed:
        return (f"{got[0].upper()}{got[1:]}; even annotating all {docs_in:,} documents (`--n-annotate {docs_in}`) "
                f"would hold out only about {round(docs_in * share)}, so the corpus is too small to measure "
                f"agreement closely. {rough}")
    return f"Hold out more: {got}, so `--n-annotate {needed}` would hold out about {FEW_HELDOUT}."


def findings(report: dict, agreement: dict, held: dict, threshold: float, has_filter: bool,
             teacher: dict | None = None, heldout_share: float = 0.2) -> list[dict]:
    """Findings, worst first; `level` is bad, warn or ok. `teacher` is report_teacher's
    summary; `heldout_share` the config's train.heldout."""
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
    weak_teacher: set[str] = set()
    if teacher:
        found, weak_teacher = teacher_findings(teacher)
        out += found
    n = agreement.get("heldout") or 0
    if not n:
        out.append({"level": "warn", "text": "Agreement was not measured (no held-out annotations): nothing says "
                    "how closely the proxy follows the teacher. Annotate more documents (--n-annotate)."})
    few = []
    for a in agreement.get("labels", []):
        cells = a.get("cells")
        if not cells or not a.get("n"):
            continue
        sid, total = a["step"].id, a["n"]
        agree = cells["tp"] + cells["tn"]
        teacher_yes = cells["tp"] + cells["fn"]
        base = majority(cells)
        if cells["tp"] + cells["fp"] == 0 and teacher_yes:
            out.append({"level": "bad", "text": f"Step {sid}: the proxy said no on every held-out document, the "
                        f"teacher said yes on {teacher_yes}. The proxy has not learned this question: annotate "
                        "more documents (--n-annotate) or train more epochs (--epochs)."})
        elif cells["tn"] + cells["fn"] == 0 and cells["fp"]:
            out.append({"level": "bad", "text": f"Step {sid}: the proxy said yes on every held-out document, the "
                        f"teacher said no on {cells['fp']}. The proxy has not learned this question: annotate "
                        "more documents (--n-annotate) or train more epochs (--epochs)."})
        elif agree <= base["k"]:
            if base["k"] == total:
                head = (f"Step {sid}: the teacher answered {base['answer']} on all {total} held-out documents, so "
                        f"agreement {agree}/{total} cannot show whether the proxy learned anything: it is no better "
                        f"than always answering {base['answer']}.")
            else:
                head = (f"Step {sid}: label agreement {agree / total:.3f} ({agree} of {total} held-out documents) is "
                        f"no better than always answering \"{base['answer']}\", the teacher's majority answer, which "
                        f"scores {base['share']:.3f} ({base['k']} of {total}): the proxy is not better than always "
                        "answering the majority.")
            if sid in weak_teacher:
                tail = (" The teacher's own answers on this step are the likely cause (see its finding and "
                        "Teacher below).")
            else:
                tail = (" Annotate more documents (--n-annotate), train longer (--epochs), set `train.balance` in "
                        "config.json to up-weight the rarer answer, or make the step's question clearer in plan.json.")
            out.append({"level": "bad", "text": head + tail})
        elif agree / total < LOW_AGREEMENT:
            out.append({"level": "warn", "text": f"Step {sid}: the proxy gives the teacher's answer on only "
                        f"{agree} of {total} held-out documents ({agree / total:.0%}; always answering "
                        f"{base['answer']} would give {base['share']:.0%}). Annotate more, train longer, or make the "
                        "step's question clearer."})
        if total < FEW_HELDOUT:
            lo, hi = wilson(agree, total)
            few.append(f"{sid} {agree}/{total} could truly be anywhere from {lo:.0%} to {hi:.0%}")
    if few:
        annotated = (report.get("teacher") or {}).get("annotated_docs") or (teacher or {}).get("docs") or 0
        out.append({"level": "warn", "text": f"Agreement is measured on only {n} held-out documents ("
                    f"{'; '.join(few)}, 95% interval). "
                    + heldout_advice(n, annotated, docs_in, heldout_share)})
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
                        f"span_{sid} column is not reliable yet. " + (
                            "The teacher's span answers are the likely cause (see its finding and Teacher below)."
                            if sid in weak_teacher else "Annotate more documents with spans (--n-annotate), train "
                            "longer (--epochs), or make the step's question more precise.")})
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
