"""The two primitives as a Python API (get_label, get_span), and a run's outputs as
pandas DataFrames or Ray Datasets for notebooks.

`model` is what answers: a trained proxy (a `Proxy`, its checkpoint folder, or a
run directory holding `proxy/`) or a teacher (anything with the Teacher interface),
so the same call compares the proxy with the LLM it was induced from.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from falconer_ray.plan.schema import Plan
from falconer_ray.proxy import Proxy
from falconer_ray.ray_env import init_ray
from falconer_ray.spans import Span
from falconer_ray.teacher.validate import validate_spans


@lru_cache(maxsize=4)
def _load_proxy(path: str) -> Proxy:
    p = Path(path)
    if (p / "proxy").is_dir():
        p = p / "proxy"
    if not p.is_dir():
        raise FileNotFoundError(f"no proxy checkpoint at {path}: pass a run directory or its proxy/ folder")
    return Proxy.load(p)


def _resolve(model):
    if isinstance(model, (str, Path)):
        return _load_proxy(str(Path(model).resolve()))
    if model is None:
        raise ValueError("pass model=: a run directory, a proxy checkpoint, a Proxy or a teacher")
    return model


def _check(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not str")
    return texts


def label_scores(texts: list[str], instruction: str, model) -> list[float]:
    """P(yes) per text: does the text satisfy the instruction?"""
    texts, m = _check(texts), _resolve(model)
    if not texts:
        return []
    if isinstance(m, Proxy):
        return [float(s) for s in m.label_scores(texts, instruction)]
    return [float(s) for s in m.label(texts, instruction)]


def get_label(texts: list[str], instruction: str, model, threshold: float = 0.5) -> list[bool]:
    """Whether each text satisfies the instruction."""
    return [s >= threshold for s in label_scores(texts, instruction, model)]


def get_spans(texts: list[str], instruction: str, model, threshold: float = 0.5) -> list[list[Span]]:
    """Exact substrings answering the instruction, with character offsets and scores."""
    texts, m = _check(texts), _resolve(model)
    if not texts:
        return []
    if isinstance(m, Proxy):
        return m.extract(texts, instruction, threshold=threshold)

    return [validate_spans(t, raw)[0] for t, raw in zip(texts, m.extract(texts, instruction))]


def get_span(texts: list[str], instruction: str, model, threshold: float = 0.5) -> list[list[str]]:
    """Exact substrings of each text that answer the instruction."""
    return [[s.text for s in found] for found in get_spans(texts, instruction, model, threshold)]


OUTPUTS = ("results", "filtered", "errors")


def _output_dir(run_dir, which: str) -> Path:
    if which not in OUTPUTS:
        raise ValueError(f"which must be one of {', '.join(OUTPUTS)}, not {which!r}")
    folder = Path(run_dir) / which
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is missing: mine the run first (`falconer run {run_dir}`)")
    return folder


def load_results(run_dir, which: str = "results", columns: list[str] | None = None, limit: int | None = None):
    """A run's kept documents (or `filtered` / `errors`) as a pandas DataFrame.

    Span columns hold lists of {start, end, text, score}. For outputs larger than
    memory use `results_dataset` or pass `columns` / `limit`.
    """
    import pyarrow.dataset as pads

    ds = pads.dataset(str(_output_dir(run_dir, which)), format="parquet")
    table = ds.head(limit, columns=columns) if limit is not None else ds.to_table(columns=columns)
    return table.to_pandas()


def results_dataset(run_dir, which: str = "results"):
    """The same outputs as a Ray Dataset (streamed, for any size)."""
    import ray.data

    init_ray()
    return ray.data.read_parquet(str(_output_dir(run_dir, which)))


def load_plan(run_dir):
    """The run's plan, to inspect or edit (add_step, update_step, remove_step, with_keep)."""
    path = Path(run_dir)
    return Plan.load(path / "plan.json" if path.is_dir() else path)


def load_report(run_dir) -> dict:
    """report.json of a mined run."""
    import json

    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: mine the run first (`falconer run {run_dir}`)")
    return json.loads(path.read_text())
