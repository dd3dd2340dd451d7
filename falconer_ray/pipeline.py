"""The stages of a run, each readable from and writable into one run directory.

`mine_all` chains them; the CLI's `plan`, `annotate`, `train` and `run` call one
each, so a user can stop after any stage, edit plan.json, and go on.
"""

from __future__ import annotations

import time
from pathlib import Path

from falconer_ray.config import RunConfig
from falconer_ray.plan import Plan
from falconer_ray.progress import console
from falconer_ray.rundir import RunDir, write_json


def make_run_teacher(cfg: RunConfig):
    from falconer_ray.teacher import teacher_from_config

    return teacher_from_config(cfg.teacher)


def stage_plan(run: RunDir, cfg: RunConfig, plan_file: str | Path | None = None, teacher=None) -> Plan:
    """Plan from a user's file, or from the teacher; saved as plan.json."""
    from falconer_ray.planner import make_plan

    run.create()
    if plan_file:
        plan = Plan.load(plan_file)
        write_json(run.plan_stats, {"teacher": None, "stats": {}})  # no teacher call was paid for
        if cfg.instruction and not plan.instruction:
            plan = plan.model_copy(update={"instruction": cfg.instruction})
    else:
        console.print(f"[bold]planning[/] with the teacher ({cfg.teacher.kind}: {cfg.teacher.model_name()})")
        teacher = teacher or make_run_teacher(cfg)
        before = teacher.stats.snapshot()
        plan = make_plan(cfg.instruction, teacher)
        write_json(run.plan_stats, {"teacher": teacher.name, "stats": teacher.stats.since(before).to_dict()})
    plan.save(run.plan)
    cfg.save(run.path)
    return plan


def stage_annotate(run: RunDir, cfg: RunConfig, teacher=None) -> dict:
    from falconer_ray.annotate.stage import annotate_documents
    from falconer_ray.corpus import read_corpus
    from falconer_ray.ray_env import init_ray
    from falconer_ray.sample import sample_documents

    plan = Plan.load(run.require(run.plan, "plan"))
    init_ray()
    docs = sample_documents(read_corpus(cfg.corpus, cfg.text_field, cfg.id_field, cfg.text_unit, cfg.limit),
                            cfg.n_annotate, cfg.seed)
    if not docs:
        raise ValueError(f"{cfg.corpus} has no valid document to annotate (see errors in `falconer run`)")
    console.print(f"[bold]annotating[/] {len(docs)} documents with the teacher ({cfg.teacher.kind}: {cfg.teacher.model_name()})")
    return annotate_documents(docs, plan, teacher or make_run_teacher(cfg), cfg, run)


def stage_train(run: RunDir, cfg: RunConfig) -> dict:
    from falconer_ray.annotate.stage import load_annotations
    from falconer_ray.ray_env import init_ray
    from falconer_ray.rundir import write_json
    from falconer_ray.train import agreement, train_proxy

    plan = Plan.load(run.require(run.plan, "plan"))
    rows = load_annotations(run)
    init_ray()
    console.print(f"[bold]training[/] the proxy ({cfg.proxy.base}) on {sum(r['split'] == 'train' for r in rows)} "
                  f"documents with {cfg.train.num_workers} Ray Train workers")
    metrics = train_proxy(plan, rows, cfg, run)
    metrics["agreement"] = agreement(plan, rows, run.proxy, cfg)
    write_json(run.train_metrics, metrics)
    return metrics


def stage_mine(run: RunDir, cfg: RunConfig) -> dict:
    from falconer_ray.mine import mine
    from falconer_ray.ray_env import init_ray

    plan = Plan.load(run.require(run.plan, "plan"))
    init_ray()
    console.print(f"[bold]mining[/] {cfg.corpus} with the proxy")
    return mine(plan, cfg, run)


def finish(run: RunDir, started: float | None = None) -> dict:
    from falconer_ray.report import build_report
    from falconer_ray.rundir import read_json

    plan = Plan.load(run.plan)
    trained = read_json(run.train_metrics)
    return build_report(run, plan, None if started is None else time.monotonic() - started, trained.get("agreement"))


def mine_all(cfg: RunConfig, out: str | Path, plan_file: str | Path | None = None) -> dict:
    """Instruction + corpus -> plan -> annotations -> proxy -> mined results + report."""
    started = time.monotonic()
    run = RunDir(out).create()
    cfg.save(run.path)
    teacher = make_run_teacher(cfg)  # one load serves planning and annotation
    stage_plan(run, cfg, plan_file, teacher)
    stage_annotate(run, cfg, teacher)
    del teacher
    stage_train(run, cfg)
    stage_mine(run, cfg)
    return finish(run, started)
