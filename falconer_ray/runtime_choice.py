"""Which runtime answers for the proxy: int8 only where it answers like the torch proxy.

`proxy.runtime: onnx-int8` is a request, not an order. Before mining, both runtimes
answer the whole plan on up to `CHECK_DOCS` documents (the teacher-annotated ones when
the run has them, else the corpus's first): when more than
`proxy.int8_max_disagreement` of them get a different answer (kept or not, a label on
the other side of its threshold, other spans), mining falls back to torch and says so.
"""

from __future__ import annotations

from falconer_ray.config import RunConfig, merge
from falconer_ray.plan import Plan

CHECK_DOCS = 200


def differs(a, b, plan: Plan, threshold: float) -> bool:
    """Whether two `mine.Answer`s for one document would read differently in the results."""
    if a.kept != b.kept:
        return True
    if any((a.labels[s.id] >= threshold) != (b.labels[s.id] >= threshold) for s in plan.label_steps):
        return True
    spans = lambda ans, sid: {(s.start, s.end) for s in ans.spans.get(sid, [])}  # noqa: E731
    return any(spans(a, s.id) != spans(b, s.id) for s in plan.span_steps)


def check_texts(run, cfg: RunConfig) -> list[str]:
    """The teacher-annotated documents (held-out first), else the corpus's first documents."""
    from falconer_ray.annotate.stage import load_annotations

    texts: list[str] = []
    if run.annotations.exists():
        rows = load_annotations(run)
        rows.sort(key=lambda r: r.get("split") != "heldout")
        texts = [r["text"] for r in rows[:CHECK_DOCS]]
    if not texts:
        from falconer_ray.quote import pilot_texts

        texts = pilot_texts(cfg, CHECK_DOCS)
    return texts


def choose_runtime(run, plan: Plan, cfg: RunConfig) -> tuple[RunConfig, dict]:
    """The config mining should use (proxy.runtime settled) and what was decided, why."""
    from falconer_ray.progress import note

    asked = cfg.proxy.runtime
    info = {"requested": asked, "used": asked}
    if asked == "torch":
        return cfg, info
    from falconer_ray.mine import apply_plan
    from falconer_ray.proxy import Proxy, int8

    if cfg.mine.gpus_per_actor:
        why = "onnx-int8 runs on CPUs only and mining asks for GPUs"
    elif cfg.mine.target_agreement is not None:
        why = "the cascade's threshold was calibrated on the torch proxy's confidences"
    else:
        why = int8.available()
    if why is None:
        note("[bold]proxy runtime[/]: building the int8 graph and checking it against the torch proxy")
        texts = check_texts(run, cfg)
        batch = cfg.mine.windows_per_forward()
        torch_answers = apply_plan(Proxy.load(run.proxy, batch_size=batch), plan, cfg, texts)
        int8_answers = apply_plan(Proxy.load(run.proxy, batch_size=batch, runtime="onnx-int8"), plan, cfg, texts)
        changed = sum(differs(a, b, plan, cfg.mine.label_threshold) for a, b in zip(torch_answers, int8_answers))
        info.update(checked_docs=len(texts), disagreement=round(changed / len(texts), 4),
                    max_disagreement=cfg.proxy.int8_max_disagreement)
        if info["disagreement"] > cfg.proxy.int8_max_disagreement:
            why = (f"int8 answers differ from the torch proxy's on {changed} of {len(texts)} documents "
                   f"({info['disagreement']:.1%}, more than proxy.int8_max_disagreement="
                   f"{cfg.proxy.int8_max_disagreement:.1%})")
    if why is not None:
        info.update(used="torch", fallback=why)
        note(f"[bold yellow]proxy runtime[/]: torch instead of onnx-int8: {why}")
        return merge(cfg, {"proxy.runtime": "torch"}), info
    note(f"[bold]proxy runtime[/]: onnx-int8 (answers differ from torch on {info['disagreement']:.1%} of "
         f"{info['checked_docs']} documents)")
    return cfg, info
