"""Options and helpers shared by the `falconer` commands: flag types, config loading,
and the one-line error handling every command gets."""

from __future__ import annotations

import json
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Optional

import typer

from falconer_ray.config import RunConfig, merge
from falconer_ray.rundir import RunDir

Out = Annotated[Path, typer.Option("--out", "-o", help="Run directory (created if missing).")]
RunPath = Annotated[Path, typer.Argument(help="Run directory made by `falconer mine` or `falconer plan`.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="YAML file with run settings; flags override it.")]
PlanFile = Annotated[Optional[Path], typer.Option("--plan", help="Use this plan JSON instead of asking the teacher.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Go on with the plan without asking (in a terminal the run shows the "
                                   "plan and asks: go on, edit it, or stop, before the teacher annotates anything).")]
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")]
CORPUS_HELP = ("A file or a folder of JSONL, Parquet, CSV or .txt files (optionally .gz), local or in an object store "
               "(s3://, gs://, hdfs://, abfs://; credentials come from the environment).")
TextField = Annotated[Optional[str], typer.Option(
    help=f"Field holding the document text (default: {RunConfig.model_fields['text_field'].default}; "
         "a .txt file's text is always 'text').")]

TeacherKind = Annotated[Optional[str], typer.Option("--teacher", help="Teacher backend: embedded (llama.cpp on CPU), openai (any OpenAI-compatible endpoint) or vllm (vLLM engines on GPUs).")]
TeacherModel = Annotated[Optional[str], typer.Option("--teacher-model", help="embedded: qwen2.5-1.5b, qwen2.5-0.5b, gemma3-270m, smollm2-135m or a .gguf path; openai: the served model name; vllm: a hub id or path.")]
TeacherUrl = Annotated[Optional[str], typer.Option("--teacher-url", help="openai: base URL of the API, e.g. http://127.0.0.1:8080/v1.")]
TeacherKeyEnv = Annotated[Optional[str], typer.Option("--teacher-api-key-env", metavar="NAME", help="openai: environment variable holding the API key (the key is never stored).")]


def teacher_flags(kind: str | None, model: str | None, url: str | None, key_env: str | None) -> dict:
    return {"teacher.kind": kind, "teacher.model": model, "teacher.url": url, "teacher.api_key_env": key_env}


SECRET_NAMES = {"api_key_env", "token_env"}  # settings whose bad value may be a pasted secret: never echoed


def friendly(fn):
    """Known user errors end with a one-line message and exit code 2, not a traceback."""
    from falconer_ray.corpus.read import CorpusError
    from falconer_ray.plan.schema import PlanError

    from pydantic import ValidationError

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValidationError as e:  # a setting out of range: name it, say what is allowed
            for err in e.errors():
                where = setting_name(err["loc"])
                shown = err["type"] != "extra_forbidden" and not SECRET_NAMES & set(map(str, err["loc"]))
                got = f" (got {err['input']!r:.60})" if shown else ""
                what = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
                typer.secho(f"error: {where}: {what}{got}", fg="red", err=True)
            raise typer.Exit(2) from None
        except (PlanError, CorpusError, FileNotFoundError, ValueError) as e:
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


Replicas = Annotated[int, typer.Option(min=1, help="Serve replicas, each holding one proxy (resources as a mining actor).")]


class Runtime(str, Enum):
    torch = "torch"
    onnx_int8 = "onnx-int8"


ProxyRuntime = Annotated[Optional[Runtime], typer.Option(
    "--proxy-runtime",
    help="What runs the proxy while mining: torch (default), or onnx-int8 on CPUs (needs onnxruntime and onnx: the onnx extra), "
         "two to three times faster, used only if its answers match torch's on the annotated documents "
         "(proxy.int8_max_disagreement).")]


def load_config(config: Path | None, run: RunDir | None = None, **flags) -> RunConfig:
    if run is not None and run.config.exists():
        base = RunConfig.load(run.path)
    elif config is not None:
        if not config.is_file():
            raise FileNotFoundError(f"config file not found: {config}")
        base = RunConfig.from_yaml(config)
    else:
        base = RunConfig()
    return merge(base, flags)


def corpus_location(corpus: str | None) -> str | None:
    """What config.json records of a corpus: an object-store URI as given (checked, it must
    not carry a secret), or a local path made absolute (Ray workers may not share our cwd)."""
    from falconer_ray.corpus.remote import check_uri, is_remote

    if corpus is None or is_remote(corpus):
        return corpus and check_uri(corpus)
    path = Path(corpus).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    return str(path.resolve())


def int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, e.g. 1,2 (got {text!r})") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers (got {text!r})")
    return values


def emit_json(result: dict, json_file: Path | None) -> None:
    print(json.dumps(result, indent=2))
    if json_file:
        from falconer_ray.rundir import write_json

        write_json(json_file.resolve(), result)


def existing_run(path: Path) -> RunDir:
    """A run directory the stages can read: a missing or foreign folder is named as such
    before any stage-specific hint."""
    run = RunDir(path).check_is_run()
    run.require(run.plan, "plan")
    return run


HELP_WIDTH = 120  # help read in a pipe or a log


def widen_help_off_terminal() -> None:
    """Help printed to a pipe or a log is HELP_WIDTH columns wide instead of rich's
    80-column guess, which squeezes descriptions and cuts long flag names. A terminal
    keeps its own width, and TERMINAL_WIDTH or COLUMNS, when set, still decide."""
    import os
    import sys

    if sys.stdout.isatty() or os.environ.get("TERMINAL_WIDTH") or os.environ.get("COLUMNS"):
        return
    import typer.rich_utils

    typer.rich_utils.MAX_WIDTH = HELP_WIDTH


def show_summary(report: dict, run: RunDir) -> None:
    """The end-of-run table (report.summary imports pyarrow and jinja: only once a run ended)."""
    from falconer_ray.report.summary import show_summary as show

    show(report, run)


def setting_name(loc: tuple) -> str:
    """A validation error's place as the user writes it: `teacher.url`, not the
    `teacher.openai.url` of the union that picked the backend's class."""
    from falconer_ray.config.teacher import BACKENDS

    parts = [str(p) for i, p in enumerate(loc) if not (i and loc[i - 1] == "teacher" and p in BACKENDS)]
    return ".".join(parts) or "settings"
