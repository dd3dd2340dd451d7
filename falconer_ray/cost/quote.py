"""`falconer quote`: what a run will cost, before paying for it, against the teacher alone.

A small pilot measures the real parts on this machine (the teacher on a few documents
per step, one proxy training pass over their examples, proxy forward passes over a few
batches), counts the corpus cheaply, and scales each measurement to the run's sizes.
Hours become dollars through the run's one price table (`prices:`, see
`falconer_ray.config.prices`), whose figures are assumptions the output always shows.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from falconer_ray.config import RunConfig
from falconer_ray.corpus.count import count_documents, pilot_texts
from falconer_ray.cost import baseline as all_teacher
from falconer_ray.cost.accounting import stage_usd
from falconer_ray.plan.execute import TEACHER_YES
from falconer_ray.plan.planner import make_plan
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import duration, emit, note
from falconer_ray.teacher import teacher_from_config

TIMED_TRAIN_STEPS = 4  # optimizer steps timed for the training estimate, after one untimed


def time_teacher(teacher, plan: Plan, texts: list[str]) -> dict:
    """Seconds and tokens per document for each kind of step, plus the keep rate."""
    per_op = {}
    said_yes = [{} for _ in texts]
    for op, steps in (("label", plan.label_steps), ("span", plan.span_steps)):
        if not steps:
            continue
        tokens_in, tokens_out = teacher.stats.prompt_tokens, teacher.stats.completion_tokens
        started = time.perf_counter()
        for step in steps:
            if op == "label":
                for yes, p in zip(said_yes, teacher.label(texts, step.instruction)):
                    yes[step.id] = p >= TEACHER_YES
            else:
                teacher.extract(texts, step.instruction)
        seconds, n = time.perf_counter() - started, len(texts) * len(steps)
        per_op[op] = {"s_per_call": seconds / n,
                      "input_tokens_per_call": (teacher.stats.prompt_tokens - tokens_in) / n,
                      "output_tokens_per_call": (teacher.stats.completion_tokens - tokens_out) / n}
    # Laplace's rule: a handful of pilot answers must not promise that no document is kept
    keep = (sum(plan.keeps(y) for y in said_yes) + 1) / (len(texts) + 2) if plan.label_steps else 1.0
    return {"per_op": per_op, "keep_fraction": keep}


def time_proxy(cfg: RunConfig, plan: Plan, texts: list[str]) -> dict:
    """Proxy forward seconds per document (label and span passes) and training seconds
    per example, measured on a fresh proxy: speed does not depend on the weights, nor
    the number of examples per document (one per window per step) on the answers, so
    every pilot text counts for that, not only the few the teacher answered."""
    import torch
    from torch.utils.data import DataLoader

    # torch: only for the pilot (report.json reads `compare` from this module)
    from falconer_ray.proxy import Proxy, ProxyModel, collate, run_epoch
    from falconer_ray.train.fit import build_examples

    model = ProxyModel.from_base(cfg.proxy.base, max_length=cfg.proxy.max_length, stride=cfg.proxy.stride)
    rows = [{"text": t, "labels": {s.id: 0.5 for s in plan.label_steps}, "spans": {s.id: [] for s in plan.span_steps}}
            for t in texts]
    examples, _ = build_examples(plan, rows, model.tokenizer, cfg)
    examples_per_doc = len(examples) / len(rows)
    bs = cfg.train.batch_size
    # a seeded sample: examples come grouped by step, and one step's windows may be longer;
    # the first optimizer step pays for allocations (optimizer state, buffers): untimed
    picked = random.Random(cfg.seed).sample(examples, min(len(examples), bs * (1 + TIMED_TRAIN_STEPS)))
    warm, timed = picked[:bs], picked[bs:] or picked[:bs]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    run_epoch(model, DataLoader(warm, batch_size=bs, collate_fn=collate), optimizer)
    started = time.perf_counter()
    run_epoch(model, DataLoader(timed, batch_size=bs, shuffle=False, collate_fn=collate), optimizer)
    train_s_per_example = (time.perf_counter() - started) / len(timed)

    proxy = Proxy(model, batch_size=cfg.mine.windows_per_forward())
    proxy.label_scores(texts[:4], "warm up")
    out = {"train_s_per_example": train_s_per_example, "examples_per_doc": examples_per_doc}
    started = time.perf_counter()
    proxy.label_scores(texts, plan.steps[0].instruction, pooling=cfg.proxy.label_pooling)
    out["label_s_per_doc"] = (time.perf_counter() - started) / len(texts)
    started = time.perf_counter()
    proxy.extract(texts, plan.steps[-1].instruction, threshold=cfg.mine.span_threshold)
    out["span_s_per_doc"] = (time.perf_counter() - started) / len(texts)
    out["device"] = str(proxy.device)
    return out


def estimate(cfg: RunConfig, plan: Plan, corpus: dict, teacher: dict, proxy: dict,
             plan_s: float = 0.0, teacher_name: str = "") -> dict:
    """Scale the pilot's measurements to the run and to the all-teacher baseline."""
    q, prices = cfg.quote, cfg.prices
    n_label, n_span = len(plan.label_steps), len(plan.span_steps)
    docs, keep = corpus["docs"], teacher["keep_fraction"]
    op = teacher["per_op"]
    annotate_docs = min(cfg.n_annotate, docs)
    speed = {stage: prices.of(stage).speed * getattr(prices, stage).units for stage in ("teacher", "train", "mine")}

    # falconer: the teacher labels the sample and asks the span steps about the documents its labels
    # keep (at least min_span_docs of them); the proxy filters, then spans kept docs
    span_share = max(keep, min(cfg.min_span_docs, annotate_docs) / annotate_docs) if annotate_docs else 1.0
    sample = all_teacher.estimate(op, annotate_docs, n_label, n_span, keep=span_share)
    annotate_s, f_tokens = sample["seconds"] / speed["teacher"], sample["tokens"]
    train_examples = annotate_docs * (1 - cfg.train.heldout) * proxy["examples_per_doc"]
    train_s = q.train_overhead_s + train_examples * cfg.train.epochs * proxy["train_s_per_example"] / speed["train"]
    mine_s = q.mine_overhead_s + docs * (n_label * proxy["label_s_per_doc"] + keep * n_span * proxy["span_s_per_doc"]) / speed["mine"]
    f_stages = {"plan": plan_s, "annotate": annotate_s, "train": train_s, "mine": mine_s}
    f_usd = {"plan": plan_s * prices.of("teacher").usd_per_hour / 3600,
             "annotate": stage_usd(prices, "teacher", annotate_s, f_tokens["input"], f_tokens["output"]),
             "train": stage_usd(prices, "train", train_s), "mine": stage_usd(prices, "mine", mine_s)}
    base = all_teacher.estimate(op, docs, n_label, n_span, keep)
    a_s, a_tokens = base["seconds"] / speed["teacher"], base["tokens"]
    a_usd = stage_usd(prices, "teacher", a_s, a_tokens["input"], a_tokens["output"])
    f_total_s, f_total_usd = sum(f_stages.values()), sum(f_usd.values())
    return {
        "instruction": plan.instruction,
        "corpus": {**corpus, "path": cfg.corpus},
        "plan": plan.model_dump(by_alias=True),
        "measured": {"teacher": teacher["per_op"], "teacher_model": teacher_name, "keep_fraction": round(keep, 4),
                     "proxy": {k: v for k, v in proxy.items()}, "plan_s": round(plan_s, 3),
                     "pilot_docs": q.pilot_docs},
        "falconer": {"teacher_calls": sample["teacher_calls"], "tokens": f_tokens,
                     "seconds": {k: round(v, 1) for k, v in f_stages.items()}, "total_s": round(f_total_s, 1),
                     "usd": {k: round(v, 4) for k, v in f_usd.items()}, "total_usd": round(f_total_usd, 4)},
        "all_teacher": {"teacher_calls": base["teacher_calls"], "calls_by_op": base["calls"], "tokens": a_tokens,
                        "total_s": round(a_s, 1), "total_usd": round(a_usd, 4)},
        "savings": {"time_x": round(a_s / f_total_s, 2) if f_total_s else None,
                    "usd_x": round(a_usd / f_total_usd, 2) if f_total_usd else None},
        "assumptions": assumptions(cfg, docs, annotate_docs, keep),
        "prices": prices.model_dump(),
    }


def assumptions(cfg: RunConfig, docs: int, annotate_docs: int, keep: float) -> list[str]:
    q = cfg.quote
    lines = [f"{docs:,} documents; the teacher annotates {annotate_docs:,} of them for every step "
             f"({cfg.train.heldout:.0%} held out), the proxy trains {cfg.train.epochs} epochs",
             f"keep rate {keep:.0%}, from the teacher's pilot answers ((kept + 1) / (pilot + 2)): span steps run on that share "
             "(for the proxy and for the all-teacher baseline alike)",
             "times are this machine's measured speeds divided by each stage's hardware speed x units"]
    for stage in ("teacher", "train", "mine"):
        sh, hw = getattr(cfg.prices, stage), cfg.prices.of(stage)
        lines.append(f"{stage}: {sh.units} x {sh.hardware} at ${hw.usd_per_hour:g}/h, speed {hw.speed:g}x"
                     + (f" ({hw.note})" if hw.note else ""))
    lines.append(f"teacher tokens: ${cfg.prices.prompt_per_1m:g} / ${cfg.prices.completion_per_1m:g} "
                 "per million input / output tokens")
    lines.append(f"training adds a fixed {q.train_overhead_s:g} s and mining {q.mine_overhead_s:g} s (actors starting, "
                 "the proxy loading); corpus reading and writing are not counted")
    return lines


def make_quote(cfg: RunConfig, plan_file: str | Path | None = None, teacher=None, plan: Plan | None = None) -> dict:
    """Plan (or take the given plan), run the pilot, and estimate the run."""
    q = cfg.quote
    for stage in ("teacher", "train", "mine"):
        cfg.prices.of(stage)  # an unknown hardware name fails before any work
    corpus = count_documents(cfg, q.count_bytes)
    note(f"[bold]quote[/]: {corpus['docs']:,} documents in {corpus['files']} file{'s' if corpus['files'] != 1 else ''}"
                  + (f" ({corpus['estimated_docs']:,} extrapolated)" if corpus["estimated_docs"] else ""))
    texts = pilot_texts(cfg, max(q.pilot_docs, q.pilot_batches * cfg.mine.windows_per_forward()))
    teacher = teacher or teacher_from_config(cfg.teacher)
    plan_s = 0.0
    if plan is None and plan_file:
        plan = Plan.load(plan_file)
    if plan is None:
        started = time.perf_counter()
        plan = make_plan(cfg.instruction, teacher)
        plan_s = time.perf_counter() - started
    note(f"[bold]quote[/]: timing the teacher on {q.pilot_docs} documents x {len(plan.steps)} steps")
    teacher_out = time_teacher(teacher, plan, texts[:q.pilot_docs])
    note(f"[bold]quote[/]: timing the proxy on {len(texts)} documents")
    proxy = time_proxy(cfg, plan, texts)
    return estimate(cfg, plan, corpus, teacher_out, proxy, plan_s, getattr(teacher, "name", ""))


def compare(quote: dict, report: dict) -> dict:
    """Quoted vs actual figures of a finished run, for report.json and report.html."""
    teacher, proxy = report.get("teacher") or {}, report.get("proxy") or {}
    fal = quote.get("falconer", {})
    actual = {"docs": report.get("docs_in"), "teacher_calls": teacher.get("calls"),
              "annotate_s": teacher.get("seconds"), "train_s": (proxy.get("train") or {}).get("wall_s"),
              "mine_s": proxy.get("mine_s")}
    quoted = {"docs": quote.get("corpus", {}).get("docs"), "teacher_calls": fal.get("teacher_calls"),
              "annotate_s": fal.get("seconds", {}).get("annotate"), "train_s": fal.get("seconds", {}).get("train"),
              "mine_s": fal.get("seconds", {}).get("mine")}
    base = quote.get("all_teacher") or {}
    quoted.update(all_calls=base.get("teacher_calls"), all_s=base.get("total_s"))
    actual.update(all_calls=None, all_s=None)
    if teacher.get("per_op") and isinstance(actual["docs"], int):  # the same baseline from the run's own teacher
        keep = teacher.get("keep_fraction")
        run_base = all_teacher.estimate(teacher["per_op"], actual["docs"], *all_teacher.step_counts(report.get("plan")),
                                        1.0 if keep is None else keep)
        actual.update(all_calls=run_base["teacher_calls"], all_s=run_base["seconds"])
    stages = ("annotate_s", "train_s", "mine_s")
    for side in (actual, quoted):
        parts = [side[k] for k in stages if isinstance(side[k], (int, float))]
        side["total_s"] = sum(parts) if parts else None
    names = {"docs": "documents", "teacher_calls": "teacher calls", "annotate_s": "annotation seconds",
             "train_s": "training seconds", "mine_s": "mining seconds",
             "total_s": "total seconds (annotate + train + mine)",
             "all_calls": "teacher-alone calls (estimated)", "all_s": "teacher-alone seconds (estimated)"}
    rows = []
    for key, what in names.items():
        q, a = quoted[key], actual[key]
        if q is None and a is None:
            continue
        ratio = round(a / q, 2) if isinstance(q, (int, float)) and isinstance(a, (int, float)) and q else None
        rows.append({"what": what, "quoted": q, "actual": a, "actual_over_quoted": ratio})
    note = None
    if actual["teacher_calls"] == 0:
        note = "annotations came from the cache: the run paid no teacher calls, the quote assumed it would"
    return {"rows": rows, "note": note}


def show(quote: dict) -> None:
    """The quote as a table, with its assumptions under it."""
    from rich.console import Console
    from rich.table import Table

    console = Console()  # the quote is the command's output: stdout, in every mode

    fal, base = quote["falconer"], quote["all_teacher"]
    t = Table(title=f"quote: {quote['instruction'] or 'falconer run'}")
    t.add_column("")
    t.add_column("falconer", justify="right")
    t.add_column("teacher on every document", justify="right")
    t.add_row("documents", f"{quote['corpus']['docs']:,}", f"{quote['corpus']['docs']:,}")
    t.add_row("teacher calls", f"{fal['teacher_calls']:,}", f"{base['teacher_calls']:,}")
    t.add_row("teacher tokens in / out", f"{fal['tokens']['input']:,} / {fal['tokens']['output']:,}",
              f"{base['tokens']['input']:,} / {base['tokens']['output']:,}")
    stages = ", ".join(f"{k} {duration(v)}" for k, v in fal["seconds"].items() if v)
    t.add_row("time", f"{duration(fal['total_s'])} ({stages})", duration(base["total_s"]))
    t.add_row("cost", f"${fal['total_usd']:,.2f}", f"${base['total_usd']:,.2f}")
    sv = quote["savings"]
    t.add_row("all-teacher / falconer", f"time {sv['time_x']}x, cost {sv['usd_x']}x", "")
    console.print(t)
    emit("quote", quote=quote)
    console.print("[bold]assumptions[/] (edit the `quote:` section of a --config YAML):")
    for line in quote["assumptions"]:
        console.print(f"  - {line}")
