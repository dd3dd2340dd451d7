"""Which runtime answers for the proxy: int8 only where it answers like the torch proxy.

`proxy.runtime: onnx-int8` is a request, not an order. Before mining, both runtimes
answer the whole plan on up to `CHECK_DOCS` documents (the teacher-annotated ones when
the run has them, else the corpus's first): when more than
`proxy.int8_max_disagreement` of them get a different answer (kept or not, a label on
the other side of its threshold, other spans), mining falls back to torch and says so.
The verdict is kept beside the graph (`int8_check.json`) with a key of everything it
depends on, so a resumed or repeated run does not check again.
"""

from __future__ import annotations

from pathlib import Path

from falconer_ray.annotate.stage import load_annotations
from falconer_ray.config import RunConfig, merge
from falconer_ray.corpus.count import pilot_texts
from falconer_ray.mine.units import digest, file_stat
from falconer_ray.plan.execute import ProxyAnswers, apply_plan
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import note
from falconer_ray.proxy import Proxy, int8
from falconer_ray.proxy.folder import WEIGHTS_NAME
from falconer_ray.proxy.int8 import INT8_NAME
from falconer_ray.rundir import read_json, write_json

CHECK_DOCS = 200
CHECK_NAME = "int8_check.json"


class Int8Failed(RuntimeError):
    """The int8 graph could not be built or loaded (a model the exporter cannot trace,
    a proxy folder it cannot write, a damaged cached graph): mining uses torch."""


def check_texts(run, cfg: RunConfig) -> list[str]:
    """The teacher-annotated documents (held-out first), else the corpus's first documents."""
    texts: list[str] = []
    if run.annotations.exists():
        rows = load_annotations(run)
        rows.sort(key=lambda r: r.get("split") != "heldout")
        texts = [r["text"] for r in rows[:CHECK_DOCS]]
    if not texts:
        texts = pilot_texts(cfg, CHECK_DOCS)
    return texts


def check_key(proxy_dir: Path, plan: Plan, cfg: RunConfig, texts: list[str]) -> str:
    """What the int8 verdict depends on: the weights and graph, the plan, the thresholds,
    the batch size (padding moves scores a little) and the documents checked."""
    files = [[name, *file_stat(proxy_dir / name)] for name in (WEIGHTS_NAME, INT8_NAME) if (proxy_dir / name).exists()]
    return digest([files, plan.model_dump(by_alias=True), cfg.mine.label_threshold, cfg.mine.span_threshold,
                   cfg.mine.windows_per_forward(), cfg.proxy.int8_max_disagreement, digest(texts)])


def int8_verdict(run, plan: Plan, cfg: RunConfig) -> dict:
    """Both runtimes' answers compared on the check documents, or the verdict saved by an
    earlier run with the same key."""
    texts = check_texts(run, cfg)
    try:
        saved = read_json(run.proxy / CHECK_NAME)
    except (OSError, ValueError):  # unreadable or damaged: check again
        saved = {}
    if isinstance(saved, dict) and saved.get("key") == check_key(run.proxy, plan, cfg, texts):
        note("[bold]proxy runtime[/]: the int8 graph was checked against the torch proxy before; not checking again")
        return saved["info"]
    note("[bold]proxy runtime[/]: building the int8 graph and checking it against the torch proxy")
    batch = cfg.mine.windows_per_forward()
    torch_answers = apply_plan(ProxyAnswers(Proxy.load(run.proxy, batch_size=batch), cfg), plan, texts)
    try:
        int8_proxy = Proxy.load(run.proxy, batch_size=batch, runtime="onnx-int8")
    except Exception as e:  # noqa: BLE001 - whatever stops the graph, torch can still answer
        raise Int8Failed(f"{type(e).__name__}: {e}") from e
    int8_answers = apply_plan(ProxyAnswers(int8_proxy, cfg), plan, texts)
    changed = sum(a.differs(b, plan) for a, b in zip(torch_answers, int8_answers))
    info = {"checked_docs": len(texts), "changed_docs": changed, "disagreement": round(changed / len(texts), 4),
            "max_disagreement": cfg.proxy.int8_max_disagreement}
    try:
        write_json(run.proxy / CHECK_NAME, {"key": check_key(run.proxy, plan, cfg, texts), "info": info})
    except OSError as e:  # a read-only proxy folder: the next run checks again
        note(f"[yellow]proxy runtime[/]: could not keep the int8 check's verdict ({e})")
    return info


def choose_runtime(run, plan: Plan, cfg: RunConfig) -> tuple[RunConfig, dict]:
    """The config mining should use (proxy.runtime settled) and what was decided, why."""
    asked = cfg.proxy.runtime
    info = {"requested": asked, "used": asked}
    if asked == "torch":
        return cfg, info

    if cfg.mine.gpus_per_actor:
        why = "onnx-int8 runs on CPUs only and mining asks for GPUs"
    elif cfg.mine.target_agreement is not None:
        why = "the cascade's threshold was calibrated on the torch proxy's confidences"
    else:
        why = int8.available()
    if why is None:
        try:
            check = int8_verdict(run, plan, cfg)
        except Int8Failed as e:
            why = f"the int8 graph could not be built or loaded ({e})"
    if why is None:
        info.update(checked_docs=check["checked_docs"], disagreement=check["disagreement"],
                    max_disagreement=check["max_disagreement"])
        if info["disagreement"] > cfg.proxy.int8_max_disagreement:
            why = (f"int8 answers differ from the torch proxy's on {check['changed_docs']} of {check['checked_docs']} "
                   f"documents ({info['disagreement']:.1%}, more than proxy.int8_max_disagreement="
                   f"{cfg.proxy.int8_max_disagreement:.1%})")
    if why is not None:
        info.update(used="torch", fallback=why)
        note(f"[bold yellow]proxy runtime[/]: torch instead of onnx-int8: {why}")
        return merge(cfg, {"proxy.runtime": "torch"}), info
    note(f"[bold]proxy runtime[/]: onnx-int8 (answers differ from torch on {info['disagreement']:.1%} of "
         f"{info['checked_docs']} documents)")
    return cfg, info
