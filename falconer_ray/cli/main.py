"""`falconer`: mine structured knowledge from a corpus with an LLM teacher and a small proxy.

The commands of a run, whole (`mine`) and stage by stage. Each imports the stage it
runs when it runs, so `falconer --help` and a mistyped flag answer at once, without
importing torch, Ray or pyarrow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from falconer_ray.cli.app import app
from falconer_ray.cli.bench import bench_app
from falconer_ray.cli.review import plan_review
from falconer_ray.cli.options import (CORPUS_HELP, ConfigFile, JsonOut, Out, PlanFile, ProxyRuntime, RunPath,
                                      TeacherKeyEnv, TeacherKind, TeacherModel, TeacherUrl, TextField, corpus_location,
                                      existing_run, friendly, Yes, load_config, show_summary, teacher_flags)

from falconer_ray.rundir import RunDir


@app.command()
@friendly
def mine(
    instruction: Annotated[str, typer.Argument(help='What to find, e.g. "Extract all laptop prices from positive reviews".')],
    corpus: Annotated[str, typer.Argument(help=CORPUS_HELP)],
    out: Out = Path("runs/latest"),
    plan: PlanFile = None,
    config: ConfigFile = None,
    text_field: TextField = None,
    id_field: Annotated[Optional[str], typer.Option(help="Field holding a document id (default: file:row).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N documents.")] = None,
    n_annotate: Annotated[Optional[int], typer.Option(help="Documents the teacher annotates (default 300); 20% are held out to measure the proxy's agreement, so more gives a surer figure.")] = None,
    teacher: TeacherKind = None,
    teacher_model: TeacherModel = None,
    teacher_url: TeacherUrl = None,
    teacher_api_key_env: TeacherKeyEnv = None,
    proxy_base: Annotated[Optional[str], typer.Option(help="Proxy to start from: minilm, an encoder (path or hub id), or a saved proxy folder (e.g. another run's proxy/, or one from falconer pretrain).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 5).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray Train workers.")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--no-gpu", help="Train and mine on GPUs.")] = None,
    proxy_runtime: ProxyRuntime = None,
    jsonl: Annotated[Optional[bool], typer.Option("--jsonl/--no-jsonl", help="Also write results.jsonl.")] = None,
    keep_text: Annotated[Optional[bool], typer.Option("--keep-text/--no-keep-text", help="Copy texts into results/ (and show them in report.html).")] = None,
    quote: Annotated[bool, typer.Option("--quote", help="First write quote.json (see `falconer quote`); "
                                        "report.html then compares it with what happened.")] = False,
    target_agreement: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Cascade: the teacher answers documents the proxy is unsure of, so that answers agree with the teacher's on at least this fraction (calibrated on the held-out annotations).")] = None,
    delta: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Cascade: allowed probability of missing --target-agreement (default 0.05).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Go on with an interrupted run in --out: finished stages and mined units are kept.")] = False,
    yes: Yes = False,
):
    """Run everything: plan, annotate a sample with the teacher, train the proxy, mine the corpus.

    Example: falconer mine "Extract the names of people praised in positive reviews" reviews/ --out runs/people
    """
    from falconer_ray.pipeline import mine_all

    if plan is not None:
        from falconer_ray.plan.schema import Plan

        Plan.load(plan)  # a bad plan file fails now, not after the teacher has loaded
    elif not instruction.strip():
        raise ValueError("the instruction is empty; say what to find or extract")
    cfg = load_config(config, None, instruction=instruction, corpus=corpus_location(corpus), text_field=text_field,
                  id_field=id_field, limit=limit, n_annotate=n_annotate, **{
                      **teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env), "proxy.base": proxy_base, "train.epochs": epochs,
                      "train.num_workers": workers, "train.use_gpu": gpu, "mine.gpus_per_actor": None if gpu is None else float(gpu),
                      "proxy.runtime": proxy_runtime and proxy_runtime.value, "mine.jsonl": jsonl, "mine.keep_text": keep_text,
                      "mine.target_agreement": target_agreement, "mine.delta": delta})
    report = mine_all(cfg, out, plan, quote=quote, resume=resume, review=plan_review(yes))
    show_summary(report, RunDir(out))


@app.command("plan")
@friendly
def plan_cmd(
    instruction: Annotated[str, typer.Argument(help="What to find or extract.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to write plan.json into.")] = None,
    corpus: Annotated[Optional[str], typer.Option(help="Corpus to record for the next stages (a path or a URI).")] = None,
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the plan JSON here.")] = None,
    plan: PlanFile = None,
    config: ConfigFile = None,
    teacher: TeacherKind = None,
    teacher_model: TeacherModel = None,
    teacher_url: TeacherUrl = None,
    teacher_api_key_env: TeacherKeyEnv = None,
    schema: Annotated[bool, typer.Option("--schema", help="Print the plan JSON schema and exit.")] = False,
):
    """Turn an instruction into a plan (get_label filters, get_span fields) and print it.

    Edit the written plan.json and pass it back with --plan to change what is mined.

    Example: falconer plan "Extract the names of people praised in positive reviews" --corpus reviews/ --out runs/people
    """
    from rich.console import Console

    from falconer_ray.pipeline import stage_plan
    from falconer_ray.plan.schema import plan_json_schema, plan_table
    from falconer_ray.progress import note

    if schema:
        print(json.dumps(plan_json_schema(), indent=2))
        return
    run = RunDir(out or Path("runs/latest"))
    cfg = load_config(config, None, instruction=instruction, corpus=corpus_location(corpus),
                  **teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env))
    result = stage_plan(run, cfg, plan)
    Console(width=max(Console().width, 100)).print(plan_table(result))
    if json_file:
        result.save(json_file)
    note(f"written: {run.plan}" + (f" and {json_file}" if json_file else ""))


@app.command()
@friendly
def annotate(run_dir: RunPath, corpus: Annotated[Optional[str], typer.Option(help="Corpus, if not recorded (a path or a URI).")] = None,
             n_annotate: Annotated[Optional[int], typer.Option(help="Documents to annotate.")] = None,
             teacher: TeacherKind = None, teacher_model: TeacherModel = None, teacher_url: TeacherUrl = None,
             teacher_api_key_env: TeacherKeyEnv = None):
    """Annotate a sample of the corpus with the teacher (cached: a rerun pays nothing).

    Documents the teacher fails on (timeouts, rate limits, unusable answers) are listed
    with their reasons in annotations/errors.jsonl; a rerun asks for them again.

    Example: falconer annotate runs/people --n-annotate 300
    """
    from falconer_ray.pipeline import stage_annotate

    run = existing_run(run_dir)
    cfg = load_config(None, run, corpus=corpus_location(corpus), n_annotate=n_annotate,
                  **teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env))
    if not cfg.corpus:
        raise ValueError("no corpus recorded for this run: pass --corpus PATH")
    cfg.save(run.path)
    stats = stage_annotate(run, cfg)
    print(json.dumps(stats, indent=2))


@app.command()
@friendly
def train(run_dir: RunPath, epochs: Annotated[Optional[int], typer.Option(help="Training epochs (more when the report shows low agreement).")] = None,
          workers: Annotated[Optional[int], typer.Option(help="Ray Train workers.")] = None):
    """Fine-tune the proxy on the run's annotations with Ray Train.

    Example: falconer train runs/people --epochs 5 --workers 2
    """
    from falconer_ray.pipeline import stage_train

    run = existing_run(run_dir)
    cfg = load_config(None, run, **{"train.epochs": epochs, "train.num_workers": workers})
    cfg.save(run.path)
    print(json.dumps(stage_train(run, cfg), indent=2))


@app.command()
@friendly
def run(run_dir: RunPath, corpus: Annotated[Optional[str], typer.Option(help="Mine another corpus with this proxy (a path or a URI).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Go on with an interrupted run: finish missing stages, keep mined units.")] = False,
        proxy_runtime: ProxyRuntime = None):
    """Mine the corpus with the trained proxy and write results/, errors/, report.json and report.html.

    After an interrupted run (killed, out of memory, lost node), --resume finishes it: stages
    already done are skipped and only the corpus units not yet committed are mined.

    Example: falconer run runs/people --resume   (or --corpus other_reviews/ to mine another corpus with the same proxy)
    """
    from falconer_ray.pipeline import finish, run_stages, stage_mine

    run_path = existing_run(run_dir)
    cfg = load_config(None, run_path, corpus=corpus_location(corpus),
                      **{"proxy.runtime": proxy_runtime and proxy_runtime.value})
    if resume:
        show_summary(run_stages(run_path, cfg, resume=True), run_path)
        return
    stage_mine(run_path, cfg)
    show_summary(finish(run_path), run_path)


@app.command("quote")
@friendly
def quote_cmd(
    instruction: Annotated[str, typer.Argument(help="What to find or extract, as for `falconer mine`.")],
    corpus: Annotated[str, typer.Argument(help="The corpus `falconer mine` would read (a path or a URI).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to write quote.json into; "
                                                "a later `falconer mine --out` there compares it with what happened.")] = None,
    json_file: JsonOut = None,
    plan: PlanFile = None,
    config: ConfigFile = None,
    text_field: TextField = None,
    id_field: Annotated[Optional[str], typer.Option(help="Field holding a document id (default: file:row).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N documents.")] = None,
    n_annotate: Annotated[Optional[int], typer.Option(help="Documents the teacher would annotate.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 5).")] = None,
    teacher: TeacherKind = None, teacher_model: TeacherModel = None, teacher_url: TeacherUrl = None,
    teacher_api_key_env: TeacherKeyEnv = None,
    pilot_docs: Annotated[Optional[int], typer.Option(help="Documents the teacher answers in the pilot.")] = None,
):
    """Estimate a run's time and dollars against running the teacher on every document.

    A pilot plans the instruction (or takes --plan), times the teacher on a few documents and the proxy on a few batches, and counts the corpus cheaply; prices and hardware come from the `quote:` section of --config (defaults are shown as assumptions). With --out, the run's report.html later sets this estimate against what the run cost.

    Example: falconer quote "Extract the names of people praised in positive reviews" reviews/ --json quote.json
    """
    from falconer_ray.pipeline import check_corpus, show_plan
    from falconer_ray.plan.schema import Plan
    from falconer_ray.cost.quote import make_quote, show

    cfg = load_config(config, None, instruction=instruction, corpus=corpus_location(corpus), text_field=text_field,
                  id_field=id_field, limit=limit, n_annotate=n_annotate, **{
                      **teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env), "train.epochs": epochs,
                      "quote.pilot_docs": pilot_docs})
    check_corpus(cfg)
    result = make_quote(cfg, plan)
    show_plan(Plan.model_validate(result["plan"]))  # what was priced
    show(result)
    if out:
        from falconer_ray.rundir import write_json

        write_json(RunDir(out).create().path / "quote.json", result)
    if json_file:
        from falconer_ray.rundir import write_json

        write_json(json_file.resolve(), result)


@app.command("report")
@friendly
def report_cmd(run_dir: RunPath):
    """Rewrite report.json and report.html of a mined run (e.g. after retraining or editing thresholds).

    report.html is one self-contained page (no network needed): plan, proxy-vs-teacher agreement,
    label confidence, speed and cost against running the teacher on everything, sample documents.

    Example: falconer report runs/people && xdg-open runs/people/report.html
    """
    from falconer_ray.pipeline import refresh_report

    show_summary(refresh_report(existing_run(run_dir)), RunDir(run_dir))


from falconer_ray.cli import extras  # noqa: E402,F401 - registers the commands around a run, listed after these

app.add_typer(bench_app, name="bench")


def main() -> None:  # pragma: no cover
    sys.exit(app())
