"""report.html: one self-contained page a data scientist can open, share and archive.

It reads only what a run directory already holds (report.json, plan, annotations,
Parquet outputs) and needs no network: styles are inline, charts are inline SVG.
Document text is untrusted, so everything goes through Jinja's autoescaping; span
highlights are built from escaped pieces. Label scores are sampled from the Parquet
outputs so the page renders in seconds on a run of any size.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
from markupsafe import Markup, escape

from falconer_ray.config import RunConfig
from falconer_ray.files import write_text
from falconer_ray.cost import baseline as all_teacher
from falconer_ray.cost.accounting import stage_usd
from falconer_ray.plan.execute import TEACHER_YES
from falconer_ray.plan.schema import Plan, condition_text
from falconer_ray.progress import duration
from falconer_ray.report.findings import REJECTED_WARN, findings, heldout_teacher_counts, majority, wilson
from falconer_ray.report.teacher import teacher_summary
from falconer_ray.rundir import RunDir, read_json

SCORE_SAMPLE = 50_000  # label scores read per run for the histograms
SAMPLE_DOCS = 6  # annotated documents shown
ERROR_SCAN = 200_000  # error rows read to count reasons


def write_report_html(run: RunDir, report: dict | None = None) -> Path:
    """Render report.html into the run directory; returns its path."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    report = report if report is not None else read_json(run.report)
    if not report:
        raise FileNotFoundError(f"{run.report} is missing: run `falconer run {run.path}` first")
    env = Environment(loader=PackageLoader("falconer_ray.report", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["code_marks"] = code_marks
    html = env.get_template("report.html.j2").render(**context(run, report))
    out = run.path / "report.html"
    write_text(out, html)
    return out


def code_marks(text: str) -> Markup:
    """Escaped `text` with each `backquoted` piece (a command, a file) set in <code>."""
    parts = str(text).split("`")
    if len(parts) % 2 == 0:  # an unmatched backquote: show the text as it is
        return escape(text)
    return Markup("").join(Markup("<code>{}</code>").format(p) if i % 2 else escape(p) for i, p in enumerate(parts))


def context(run: RunDir, report: dict) -> dict:
    plan = Plan.load(run.plan)
    cfg = RunConfig.load(run.path) if run.config.exists() else RunConfig()
    quote = read_json(run.path / "quote.json")
    annotation_stats = read_json(run.annotation_stats)
    speed_figures = speed(report, cfg, quote)
    held = heldout_teacher_counts(run, [s.id for s in plan.label_steps], [s.id for s in plan.span_steps])
    agreement = agreement_rows(plan, report.get("agreement") or {}, held)
    teacher = teacher_summary(run, plan, report, annotation_stats, cfg)
    return {
        "run": run.path,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "report": report,
        "wall_time": duration(report["wall_s"]) if report.get("wall_s") else None,
        "plan": plan,
        "keep_text": condition_text(plan.keep),
        "counts": counts(report),
        "errors": error_reasons(run, report.get("docs_error") or 0),
        "agreement": agreement,
        "teacher": {**teacher, "histograms": teacher_histograms(teacher),
                    "rejected_high": (teacher["rejected_share"] or 0) > REJECTED_WARN},
        "histograms": histograms(run, plan, report, cfg.mine.label_threshold),
        "speed": speed_figures,
        "documents": annotated_documents(run, plan),
        "results": result_rows(run, plan),
        "quote": quote_comparison(report, quote, speed_figures.get("usd") or {}),
        "findings": findings(report, agreement, held, cfg.mine.label_threshold, plan.keep is not None,
                             teacher=teacher, heldout_share=cfg.train.heldout),
        "threshold": cfg.mine.label_threshold,
        "files": files(run),
    }


def counts(report: dict) -> list[dict]:
    total = report.get("docs_in") or 0
    rows = []
    for key, name in (("docs_kept", "kept"), ("docs_filtered", "filtered out"), ("docs_error", "errors")):
        n = report.get(key) or 0
        rows.append({"name": name, "n": n, "pct": 100 * n / total if total else 0.0})
    return rows


def error_reasons(run: RunDir, n_errors: int) -> list[tuple[str, int]]:
    """Error counts by reason (the text before the first ':'), most common first."""
    if not n_errors or not run.errors.exists():
        return []
    table = pads.dataset(str(run.errors), format="parquet").head(ERROR_SCAN, columns=["error"])
    reasons = Counter((e or "unknown").split(":", 1)[0].strip() for e in table.column("error").to_pylist())
    return reasons.most_common(20)


def agreement_rows(plan: Plan, agreement: dict, held: dict | None = None) -> dict:
    """Per step agreement with its 95% interval and the score of always giving the teacher's
    majority answer, and the teacher spans each span step was scored on."""
    steps = agreement.get("steps") or {}
    labels, spans = [], []
    for step in plan.label_steps:
        got = steps.get(step.id) or {}
        cells = got.get("confusion")
        n = sum(cells.values()) if cells else 0
        labels.append({"step": step, "accuracy": got.get("accuracy"), "cells": cells, "n": n,
                       "interval": wilson(cells["tp"] + cells["tn"], n) if n else None,
                       "majority": majority(cells) if n else None})
    for step in plan.span_steps:
        spans.append({"step": step, "f1": (steps.get(step.id) or {}).get("f1"),
                      "teacher_spans": ((held or {}).get("spans") or {}).get(step.id)})
    return {"label": agreement.get("label"), "span_f1": agreement.get("span_f1"),
            "heldout": agreement.get("heldout_docs"), "labels": labels, "spans": spans}


def sample_scores(run: RunDir, column: str, kept: int, filtered: int, limit: int = SCORE_SAMPLE) -> list[float]:
    """Up to `limit` scores of one label column, drawn from results/ and filtered/ in
    proportion to their counts and spread over every Parquet file of each."""
    total = kept + filtered
    scores: list[float] = []
    for folder, n in ((run.results, kept), (run.filtered, filtered)):
        if not n or not folder.exists():
            continue
        want = max(1, round(limit * n / total)) if total > limit else n
        fragments = list(pads.dataset(str(folder), format="parquet").get_fragments())
        per = math.ceil(want / max(1, len(fragments)))
        for frag in fragments:
            if frag.physical_schema.get_field_index(column) < 0:
                continue
            scores += [v for v in frag.head(per, columns=[column]).column(column).to_pylist() if v is not None]
    return scores


def histograms(run: RunDir, plan: Plan, report: dict, threshold: float) -> list[dict]:
    from falconer_ray.report.plots import histogram  # Matplotlib: only while drawing the page

    out = []
    for step in plan.label_steps:
        scores = sample_scores(run, step.column, report.get("docs_kept") or 0, report.get("docs_filtered") or 0)
        if scores:
            out.append({"step": step, "n": len(scores),
                        "svg": Markup(histogram(scores, threshold, f"{step.id}: {len(scores):,} documents"))})
    return out


def teacher_histograms(teacher: dict) -> list[Markup]:
    """The teacher's P(yes) per label step over the annotated documents, yes from 0.5 dashed."""
    from falconer_ray.report.plots import TEACHER, histogram  # Matplotlib: only while drawing

    return [Markup(histogram(a["scores"], TEACHER_YES, f"{a['step']}: {a['n']:,} annotated documents",
                             xlabel="teacher P(yes)", color=TEACHER, mark="yes from"))
            for a in teacher["labels"] if a["n"]]


def speed(report: dict, cfg, quote: dict) -> dict:
    """Docs/s of teacher and proxy, the all-teacher time extrapolated to docs_in, and
    both in dollars from the config's `prices:` table. When the annotations came from the
    cache, the teacher's speed is the one the quote's pilot measured, if there is one."""
    from falconer_ray.report.plots import bars, stacked_time  # Matplotlib: only while drawing

    teacher, proxy = report.get("teacher") or {}, report.get("proxy") or {}
    p_rate, docs = proxy.get("docs_per_s"), report.get("docs_in") or 0
    n_label, n_span = all_teacher.step_counts(report.get("plan"))
    per_op, keep, source = teacher.get("per_op"), teacher.get("keep_fraction"), "measured while annotating"
    if not teacher.get("docs_per_s") and quote:
        measured = quote.get("measured") or {}
        per_op, source = measured.get("teacher"), "measured by the quote's pilot (annotations came from the cache)"
        keep = keep if keep is not None else measured.get("keep_fraction")
    per_doc_s = all_teacher.seconds_per_document(per_op or {}, n_label, n_span)
    t_rate = teacher.get("docs_per_s") or (1 / per_doc_s if per_doc_s > 0 else None)
    baseline = all_teacher.estimate(per_op or {}, docs, n_label, n_span, 1.0 if keep is None else keep)
    out = {"teacher_rate": t_rate, "teacher_source": source, "proxy_rate": p_rate, "docs": docs, "svgs": []}
    if t_rate and p_rate:
        out["speedup"] = p_rate / t_rate
        out["svgs"].append(Markup(bars(["teacher (annotation)", "proxy (mining)"], [t_rate, p_rate],
                                       "throughput (longer is faster)", "docs/s", log=True,
                                       colors=["#c0504d", "#4f81bd"], xlabel="documents per second")))
    stages = {"annotate (teacher)": teacher.get("seconds") or 0.0,
              "train proxy": (proxy.get("train") or {}).get("wall_s") or 0.0,
              "mine (proxy)": proxy.get("mine_s") or 0.0}
    out["stages"] = stages
    out["falconer_s"] = sum(stages.values())
    if t_rate and docs and baseline["seconds"] > 0:
        out["all_teacher_s"] = baseline["seconds"]
        out["all_teacher_calls"] = baseline["teacher_calls"]
        out["keep_fraction"] = keep
        out["svgs"].append(Markup(stacked_time({"all-teacher (estimated)": {"annotate (teacher)": out["all_teacher_s"]},
                                                "falconer (measured)": stages},
                                               f"time for {docs:,} documents (shorter is better)")))
    out["takeaway"] = time_takeaway(stages, out.get("all_teacher_s"), t_rate, docs, teacher.get("annotated_docs"),
                                    report.get("wall_s"))
    out["usd"] = dollars(cfg, report, out.get("all_teacher_s"), baseline["tokens"])
    if out["usd"].get("all_teacher") is not None:
        out["svgs"].append(Markup(bars(["all-teacher (estimated)", "falconer (this run)"],
                                       [out["usd"]["all_teacher"], out["usd"]["falconer"]],
                                       "cost at the configured prices", "$", colors=["#c0504d", "#4f81bd"],
                                       xlabel="dollars")))
    return out


def time_takeaway(stages: dict, all_teacher_s: float | None, t_rate: float | None, docs: int,
                  annotated: int | None = None, wall_s: float | None = None) -> str | None:
    """One sentence: whether falconer or the teacher alone was faster and by how much, and
    from which corpus size the fixed cost of annotating and training pays off (the proxy's
    per-document time against the teacher's). Both sides count stage time only; `wall_s`
    (the summary's wall time, which adds planning, pricing and start-up) is named beside it
    so the two figures are not confused. Cached annotations cost this run nothing but
    would cost a fresh one: they are counted at the teacher's speed for the break-even."""
    if not all_teacher_s or not t_rate or not docs:
        return None
    ours = sum(stages.values())
    annotate, cached = stages["annotate (teacher)"], ""
    if not annotate and annotated:
        annotate = annotated / t_rate
        cached = f" (annotation counted at the teacher's speed, {duration(annotate)}: this run's came from the cache)"
    fixed = annotate + stages["train proxy"]
    per_doc_gain = all_teacher_s / docs - stages["mine (proxy)"] / docs
    wall = (f" ({duration(wall_s)} wall time at the top also counts planning, pricing and start-up)"
            if wall_s and duration(wall_s) != duration(ours) else "")
    head = (f"Annotating, training and mining took {duration(ours)} in this run{wall}; running the teacher alone "
            f"on these {docs:,} documents would take about {duration(all_teacher_s)}")
    if per_doc_gain <= 0:
        return head + (", and the proxy is not faster per document than the teacher here, so falconer never pays "
                       "off on this machine.")
    even = math.ceil(fixed / per_doc_gain)
    if ours < all_teacher_s:
        verdict = f", so falconer was {all_teacher_s / ours:.1f}x faster than the teacher alone"
    else:
        verdict = (f", so the teacher alone would have been {ours / all_teacher_s:.1f}x faster than falconer: "
                   "the corpus is too small to pay back annotating and training")
    return (head + verdict + f". Annotating and training cost a fixed {duration(fixed)}{cached}; after that each "
            f"document saves {per_doc_gain:.2g} s, so falconer wins from about {even:,} documents on.")


def dollars(cfg, report: dict, all_teacher_s: float | None, all_teacher_tokens: dict) -> dict:
    """This run's dollars (report.json's `cost` block: planning, annotation, training and
    mining) and the all-teacher estimate (its seconds and tokens), from the one price table."""
    prices = cfg.prices
    try:
        described = prices.describe()
    except ValueError:  # a stage names hardware the table lacks
        return {}
    # a report written before it had the block priced nothing
    out = {"falconer": (report.get("cost") or {}).get("usd", 0.0), "all_teacher": None, "prices": described}
    if all_teacher_s is not None:
        out["all_teacher"] = stage_usd(prices, "teacher", all_teacher_s, all_teacher_tokens["input"],
                                       all_teacher_tokens["output"])
    return out


def highlight(text: str, spans: dict[str, list[dict]], step_ids: list[str]) -> Markup:
    """Escaped `text` with every span wrapped in <mark>, coloured by its step's place in
    `step_ids`; where spans overlap, the step listed first gives the colour."""
    cuts = {0, len(text)}
    marked = []
    for step_id, found in spans.items():
        for s in found or []:
            start, end = int(s["start"]), int(s["end"])
            if 0 <= start < end <= len(text):
                marked.append((start, end, step_id))
                cuts |= {start, end}
    points = sorted(cuts)
    pieces = []
    for a, b in zip(points, points[1:]):
        chunk = escape(text[a:b])
        active = sorted({sid for s, e, sid in marked if s <= a and b <= e},
                        key=lambda sid: (step_ids.index(sid) if sid in step_ids else len(step_ids), sid))
        if active:
            color = step_ids.index(active[0]) % 6 if active[0] in step_ids else 0
            pieces.append(Markup('<mark class="c{}" title="{}">{}</mark>').format(color, ", ".join(active), chunk))
        else:
            pieces.append(chunk)
    return Markup("").join(pieces)


def annotated_documents(run: RunDir, plan: Plan, limit: int = SAMPLE_DOCS) -> list[dict]:
    """A few teacher-annotated documents, those with spans first."""
    if not run.annotations.exists():
        return []
    rows = []
    with run.annotations.open() as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) >= 500:
                break
    rows.sort(key=lambda r: -sum(len(v) for v in r.get("spans", {}).values()))
    span_ids = [s.id for s in plan.span_steps]
    return [{"doc_id": r["doc_id"], "split": r.get("split"), "labels": r.get("labels", {}),
             "spans": {k: [s["text"] for s in v] for k, v in r.get("spans", {}).items()},
             "html": highlight(r["text"], r.get("spans", {}), span_ids)} for r in rows[:limit]]


def result_rows(run: RunDir, plan: Plan, limit: int = 10) -> list[dict]:
    """The first kept documents as mined by the proxy (highlighted when text was kept)."""
    if not run.results.exists():
        return []
    ds = pads.dataset(str(run.results), format="parquet")
    span_ids = [s.id for s in plan.span_steps]
    out = []
    for r in ds.head(limit).to_pylist():
        spans = {s.id: r.get(s.column) or [] for s in plan.span_steps}
        out.append({"doc_id": r["doc_id"],
                    "labels": {s.id: r.get(s.column) for s in plan.label_steps},
                    "spans": {k: [s["text"] for s in v] for k, v in spans.items()},
                    "html": highlight(r["text"], spans, span_ids) if r.get("text") else None})
    return out


def quote_comparison(report: dict, quote: dict, usd: dict) -> dict | None:
    """report.json's quote rows, this run's dollars beside the quoted ones (both at the
    config's `quote:` prices), and one sentence on how good the estimate was."""
    got = report.get("quote_vs_actual")
    if not got:
        return None
    rows = list(got.get("rows") or [])
    quoted_usd, actual_usd = (quote.get("falconer") or {}).get("total_usd"), usd.get("falconer")
    if isinstance(quoted_usd, (int, float)) and isinstance(actual_usd, (int, float)):
        rows.append({"what": "dollars", "quoted": quoted_usd, "actual": actual_usd, "dollars": True,
                     "actual_over_quoted": round(actual_usd / quoted_usd, 2) if quoted_usd else None})
    by_name = {r["what"]: r for r in rows}
    total = by_name.get("total seconds (annotate + train + mine)")
    what, verdict = "The run's stages", None
    if (by_name.get("teacher calls") or {}).get("actual") == 0 and (by_name.get("annotation seconds") or {}).get("quoted"):
        # Cached annotations cost nothing: judge the estimate on the stages the run paid for.
        parts = [by_name.get("training seconds") or {}, by_name.get("mining seconds") or {}]
        if all(isinstance(p.get("quoted"), (int, float)) and isinstance(p.get("actual"), (int, float)) for p in parts):
            q, a = sum(p["quoted"] for p in parts), sum(p["actual"] for p in parts)
            total = {"quoted": q, "actual": a, "actual_over_quoted": round(a / q, 2) if q else None}
            what = "Training and mining"
    if total and total.get("actual_over_quoted"):
        ratio = total["actual_over_quoted"]
        took = f"{what} took {duration(total['actual'])} against {duration(total['quoted'])} quoted"
        if 0.67 <= ratio <= 1.5:
            verdict = f"{took}: the estimate was close (within a factor of 1.5)."
        elif ratio < 1:
            verdict = f"{took}: the quote over-estimated by {1 / ratio:.1f}x."
        else:
            verdict = f"{took}: the quote under-estimated by {ratio:.1f}x."
    return {"rows": rows, "note": got.get("note"), "verdict": verdict}


def files(run: RunDir) -> list[dict]:
    """Relative links to what the run wrote, so the page works wherever the folder goes."""
    candidates = [("plan.json", "the plan"), ("config.json", "run settings"), ("report.json", "this report as JSON"),
                  ("quote.json", "cost estimate made before the run"),
                  ("annotations/annotations.jsonl", "teacher annotations"), ("annotations/stats.json", "teacher stats"),
                  ("proxy/metrics.json", "training metrics"), ("results/", "kept documents (Parquet)"),
                  ("results.jsonl", "kept documents (JSONL)"), ("filtered/", "filtered-out documents (Parquet)"),
                  ("errors/", "documents with errors (Parquet)"), ("proxy/", "proxy checkpoint")]
    return [{"href": name, "what": what} for name, what in candidates if (run.path / name.rstrip("/")).exists()]
