"""The stages of a run, each readable from and writable into one run directory.

`mine_all` chains them; the CLI's `plan`, `annotate`, `train` and `run` call one
each, so a user can stop after any stage, edit plan.json, and go on. Training (torch,
Ray Train), mining (SciPy, Ray Data's actors) and the report (Jinja, Matplotlib) are
imported by the stage that runs them, so `falconer plan` starts in a fraction of a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from falconer_ray.annotate.stage import annotate_documents, load_annotations
from falconer_ray.config import RunConfig
from falconer_ray.corpus.read import check_fields, read_corpus
from falconer_ray.corpus.sample import sample_documents
from falconer_ray.plan.planner import make_plan
from falconer_ray.plan.schema import Plan, plan_table
from falconer_ray.progress import console, emit, note, print_table
from falconer_ray.ray_env import init_ray, with_gpus
from falconer_ray.rundir import RunDir, read_json, write_json
from falconer_ray.teacher import teacher_from_config


def stage_plan(run: RunDir, cfg: RunConfig, plan_file: str | Path | None = None, teacher=None) -> Plan:
    """Plan from a user's file, or from the teacher; saved as plan.json."""
    run.create()
    if plan_file:
        plan = Plan.load(plan_file)
        write_json(run.plan_stats, {"teacher": None, "stats": {}})  # no teacher call was paid for
        if cfg.instruction and not plan.instruction:
            plan = plan.model_copy(update={"instruction": cfg.instruction})
    else:
        note(f"[bold]planning[/] with the teacher ({cfg.teacher.kind}: {cfg.teacher.model_name()})")
        teacher = teacher or teacher_from_config(cfg.teacher)
        before = teacher.stats.snapshot()
        plan = make_plan(cfg.instruction, teacher, on_note=lambda line: note(f"plan: {line}"))
        write_json(run.plan_stats, {"teacher": teacher.name, "stats": teacher.stats.since(before).to_dict()})
    plan.save(run.plan)
    cfg.save(run.path)
    return plan


def show_plan(plan: Plan, run: RunDir | None = None) -> None:
    """The plan as `falconer plan` prints it, and how to change it, before the teacher
    spends time on it (a JSON `plan` event with --log-json, nothing with --quiet)."""
    emit("plan", path=str(run.plan) if run else None, plan=plan.model_dump(by_alias=True))
    print_table(plan_table(plan))
    if run is not None:
        hint = (f"to change the plan: stop here (Ctrl-C), edit {run.plan}, and rerun with `--plan {run.plan}` "
                f"(or go on stage by stage: `falconer annotate {run.path}`, then train and run)")
    else:
        hint = ("to change the plan: write it with `falconer plan INSTRUCTION --out DIR`, edit DIR/plan.json, "
                "and pass `--plan DIR/plan.json`")
    console.print(hint, soft_wrap=True, markup=False)


def check_corpus(cfg: RunConfig) -> None:
    """The corpus's fields, from its first rows, before any teacher call."""
    check_fields(cfg.corpus, **cfg.read_options())


def stage_annotate(run: RunDir, cfg: RunConfig, teacher=None) -> dict:
    plan = Plan.load(run.require(run.plan, "plan"))
    check_corpus(cfg)
    init_ray()
    docs = sample_documents(read_corpus(cfg.corpus, **cfg.read_options(), limit=cfg.limit),
                            cfg.n_annotate, cfg.seed)
    if not docs:
        raise ValueError(f"{cfg.corpus} has no valid document to annotate (see errors in `falconer run`)")
    note(f"[bold]annotating[/] {len(docs)} documents with the teacher ({cfg.teacher.kind}: {cfg.teacher.model_name()})")
    return annotate_documents(docs, plan, teacher or teacher_from_config(cfg.teacher), cfg, run)


def stage_train(run: RunDir, cfg: RunConfig) -> dict:
    from falconer_ray.train.fit import agreement, train_proxy  # torch: only when training

    plan = Plan.load(run.require(run.plan, "plan"))
    rows = load_annotations(run)
    init_ray()
    cfg = with_gpus(cfg)
    note(f"[bold]training[/] the proxy ({cfg.proxy.base}) on {sum(r['split'] == 'train' for r in rows)} "
                  f"documents with {cfg.train.num_workers} Ray Train workers")
    metrics = train_proxy(plan, rows, cfg, run)
    metrics["agreement"] = agreement(plan, rows, run.proxy, cfg)
    if cfg.mine.target_agreement is not None:
        from falconer_ray.mine.cascade import calibrate_run  # SciPy: only with a cascade

        metrics["cascade"] = calibrate_run(plan, rows, run, cfg)
    write_json(run.train_metrics, metrics)
    return metrics


def stage_mine(run: RunDir, cfg: RunConfig, resume: bool = False) -> dict:
    from falconer_ray.mine.driver import mine  # the mining stack: only when mining

    plan = Plan.load(run.require(run.plan, "plan"))
    check_corpus(cfg)
    init_ray()
    cfg = with_gpus(cfg)
    note(f"[bold]mining[/] {cfg.corpus} with the proxy" + (" (resuming)" if resume else ""))
    return mine(plan, cfg, run, resume=resume)


def finish(run: RunDir, started: float | None = None) -> dict:
    from falconer_ray.report.build import build_report  # the cost and quote modules: only at the end

    plan = Plan.load(run.plan)
    trained = read_json(run.train_metrics)
    report = build_report(run, plan, None if started is None else time.monotonic() - started, trained.get("agreement"))
    write_html(run, report)
    return report


def refresh_report(run: RunDir) -> dict:
    """Rebuild report.json and report.html of a mined run, keeping its measured wall time."""
    from falconer_ray.report.build import build_report  # the cost and quote modules: only at the end

    run.require(run.mine_stats, "run")
    plan = Plan.load(run.plan)
    report = build_report(run, plan, read_json(run.report).get("wall_s"), read_json(run.train_metrics).get("agreement"))
    write_html(run, report)
    return report


def write_html(run: RunDir, report: dict | None = None) -> None:
    """report.html next to report.json; a rendering failure costs the page, never the run."""
    from falconer_ray.report.html import write_report_html  # Jinja and Matplotlib: only for the page

    try:
        path = write_report_html(run, report)
    except Exception as e:  # the results are written: say what failed and how to retry
        note(f"[yellow]warning:[/] report.html not written ({type(e).__name__}: {e}); "
                      f"retry with `falconer report {run.path}`")
        return
    note(f"report: {path}")


def changed_settings(saved: RunConfig, wanted: RunConfig) -> list[str]:
    """Dotted names of the settings that differ between two configs."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(saved.model_dump()), flat(wanted.model_dump())
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def run_stages(run: RunDir, cfg: RunConfig, plan_file: str | Path | None = None, resume: bool = False,
               quote: bool = False, review: Callable[[Plan, RunDir], Plan] | None = None) -> dict:
    """Every stage in order; with `resume`, the stages whose output is complete are skipped
    (each stage writes its completion file last: plan.json, annotations/stats.json,
    proxy/metrics.json) and mining goes on from its committed units. `review` gets the
    shown plan before the teacher annotates for it, and returns the plan to go on with
    (saved in plan.json). With `quote`, the plan is priced first (quote.json) so the
    report can set the estimate against what the run then cost."""
    started = time.monotonic()
    need_plan = not (resume and run.plan.exists())
    need_annotations = not (resume and run.annotation_stats.exists())
    teacher = teacher_from_config(cfg.teacher) if need_plan or need_annotations else None  # one load serves both
    if need_plan:
        plan = stage_plan(run, cfg, plan_file, teacher)
    else:
        plan = Plan.load(run.plan)
        note(f"plan: reusing {run.plan}")
    show_plan(plan, run)
    if review is not None and need_annotations:
        plan = review(plan, run)
    if quote and not (resume and (run.path / "quote.json").exists()):
        from falconer_ray.cost.quote import make_quote, show  # the pilot's torch: only with --quote

        priced = make_quote(cfg, teacher=teacher, plan=plan)
        write_json(run.path / "quote.json", priced)
        show(priced)
    if need_annotations:
        stage_annotate(run, cfg, teacher)
    else:
        note(f"annotations: reusing {run.annotations}")
    del teacher
    if not (resume and run.train_metrics.exists()):
        stage_train(run, cfg)
    else:
        note(f"proxy: reusing {run.proxy}")
    stage_mine(run, cfg, resume=resume)
    return finish(run, started)


def mine_all(cfg: RunConfig, out: str | Path, plan_file: str | Path | None = None, resume: bool = False,
             quote: bool = False, review: Callable[[Plan, RunDir], Plan] | None = None) -> dict:
    """Instruction + corpus -> plan -> annotations -> proxy -> mined results + report.

    `quote` prices the run before it starts and `review` checks the plan (see `run_stages`);
    `resume` goes on with an interrupted run in `out`, refusing if its settings differ.
    """
    check_corpus(cfg)  # a mistyped --text-field fails now, not after planning
    run = RunDir(out).create()
    if resume and run.config.exists():
        changed = changed_settings(RunConfig.load(run.path), cfg)
        if changed:
            raise ValueError(f"cannot resume {run.path}: its settings differ in {', '.join(changed)}; "
                             "pass the same arguments as the interrupted run, or drop --resume to start over")
    cfg.save(run.path)
    run.gold_check.unlink(missing_ok=True)  # it scored an earlier run in this folder
    return run_stages(run, cfg, plan_file, resume, quote, review)
