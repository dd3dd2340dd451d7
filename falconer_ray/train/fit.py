"""Fine-tuning the proxy on teacher annotations with Ray Train.

One metamodel learns every plan step at once: each (step instruction, document)
pair is an example, a label example trains the label head, a span example trains
the BIO tag head. The examples are tokenized once on the driver, shared with the
workers through the object store, and sharded by Ray Train's distributed sampler.
`fit` trains on any prebuilt examples (self-supervised pretraining uses it too).
"""

from __future__ import annotations

import math
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from falconer_ray.config import RunConfig
from falconer_ray.plan.execute import TEACHER_YES
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import watch
from falconer_ray.proxy import Proxy, ProxyModel, collate, label_examples, resolve_base, run_epoch, span_examples
from falconer_ray.rundir import RunDir, write_json
from falconer_ray.spans import span_f1


def build_examples(plan: Plan, rows: list[dict], tokenizer, cfg: RunConfig) -> tuple[list[dict], float | None]:
    """Training examples for every step, plus a positive-class weight for label balance."""
    texts = [r["text"] for r in rows]
    examples: list[dict] = []
    positives = negatives = 0
    kw = {"max_length": cfg.proxy.max_length, "stride": cfg.proxy.stride}
    for step in plan.label_steps:
        probs = [float(r["labels"][step.id]) for r in rows]
        yes = sum(p >= TEACHER_YES for p in probs)
        positives += yes
        negatives += len(probs) - yes
        targets = probs if cfg.train.label_targets == "soft" else [float(p >= TEACHER_YES) for p in probs]
        examples += label_examples(tokenizer, step.instruction, texts, targets, **kw)
    for step in plan.span_steps:  # from the documents the teacher was asked this step about
        asked = [r for r in rows if step.id in r["spans"]]
        spans = [[(s["start"], s["end"]) for s in r["spans"][step.id]] for r in asked]
        examples += span_examples(tokenizer, step.instruction, [r["text"] for r in asked], spans, **kw)
    pos_weight = None
    if cfg.train.balance and positives and negatives:
        pos_weight = min(5.0, max(0.2, negatives / positives))
    return examples, pos_weight


def train_loop_per_worker(config: dict) -> None:
    """Runs on every Ray Train worker: a plain epoch loop over its shard."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    from torch.utils.data import DataLoader
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(config["seed"])
    examples = ray.get(config["examples"])
    model = ProxyModel.from_base(config["base"], max_length=config["max_length"], stride=config["stride"])
    tokenizer = model.tokenizer
    model = ray.train.torch.prepare_model(model)
    loader = DataLoader(examples, batch_size=config["batch_size"], shuffle=True, collate_fn=collate)
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=0.01)
    total_steps = max(1, len(loader) * config["epochs"])
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total_steps), total_steps)
    rank = ray.train.get_context().get_world_rank()
    on_batch = StepsReported.reporter(config["progress"]) if rank == 0 and config.get("progress") is not None else None
    for epoch in range(config["epochs"]):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        loss = run_epoch(model, loader, optimizer, scheduler, pos_weight=config["pos_weight"], on_batch=on_batch)
        if on_batch is not None:
            on_batch.flush()
        metrics = {"epoch": epoch + 1, "loss": loss}
        if epoch + 1 == config["epochs"] and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                inner = model.module if hasattr(model, "module") else model
                inner.tokenizer = tokenizer
                inner.save(tmp)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


class StepsReported:
    """Optimizer steps done on rank 0, which every worker matches: rank 0 pushes its
    count into a Ray queue every few seconds and the driver's progress bar polls it,
    so training moves within an epoch, not only at its end."""

    def __init__(self):
        from ray.util.queue import Queue

        self.queue = Queue(actor_options={"num_cpus": 0})  # never waits for a core the workers hold
        self.done = 0

    @staticmethod
    def total(n_examples: int, workers: int, batch_size: int, epochs: int) -> int:
        """Steps per worker over all epochs (DistributedSampler pads shards to equal size)."""
        return epochs * math.ceil(math.ceil(n_examples / workers) / batch_size)

    @staticmethod
    def reporter(queue, every_s: float = 2.0):
        """A worker-side `on_batch` that counts steps and puts the count now and then."""
        state = {"steps": 0, "sent": 0.0}

        def on_batch() -> None:
            state["steps"] += 1
            now = time.monotonic()
            if now - state["sent"] >= every_s:
                state["sent"] = now
                queue.put(state["steps"])

        def flush() -> None:
            queue.put(state["steps"])

        on_batch.flush = flush
        return on_batch

    def __call__(self) -> int:
        while not self.queue.empty():
            self.done = max(self.done, int(self.queue.get_nowait()))
        return self.done

    def close(self) -> None:
        self.queue.shutdown()


@contextmanager
def sigint_handler_kept():
    """Put the process's Ctrl-C handler back after Ray Train. Its trainer installs one that
    holds the training controller actor, which then lives (about 400 MB) and answers
    Ctrl-C for the rest of the run, mining included."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


def fit(examples: list[dict], cfg: RunConfig, out: Path, storage: Path, pos_weight: float | None = None,
        description: str = "proxy training") -> dict:
    """Fine-tune cfg.proxy.base on prebuilt examples with Ray Train; the proxy lands in
    `out`, replaced only once training has succeeded. `storage` holds Ray Train's files
    meanwhile (on a cluster: a path every node mounts) and is removed afterwards."""
    import ray
    from ray.train import RunConfig as RayRunConfig
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    if not examples:
        raise ValueError("no training examples")
    out, storage = Path(out), Path(storage)
    started = time.monotonic()
    steps = StepsReported()
    total = StepsReported.total(len(examples), cfg.train.num_workers, cfg.train.batch_size, cfg.train.epochs)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "examples": ray.put(examples), "base": cfg.proxy.base, "max_length": cfg.proxy.max_length,
            "stride": cfg.proxy.stride, "batch_size": cfg.train.batch_size, "lr": cfg.train.lr,
            "epochs": cfg.train.epochs, "pos_weight": pos_weight, "seed": cfg.seed, "progress": steps.queue,
        },
        scaling_config=ScalingConfig(num_workers=cfg.train.num_workers, use_gpu=bool(cfg.train.use_gpu)),
        run_config=RayRunConfig(name="proxy", storage_path=str(storage)),
    )
    try:
        with watch(f"{description} ({cfg.train.epochs} epochs)", total, steps, unit="steps"), sigint_handler_kept():
            result = trainer.fit()
    finally:
        steps.close()
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint: {result.error}")
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    result.checkpoint.to_directory(str(staging))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    shutil.rmtree(storage, ignore_errors=True)
    return {"examples": len(examples), "pos_weight": pos_weight, "final_loss": result.metrics.get("loss"),
            "epochs": cfg.train.epochs, "workers": cfg.train.num_workers,
            "wall_s": round(time.monotonic() - started, 3)}


def train_proxy(plan: Plan, rows: list[dict], cfg: RunConfig, run: RunDir) -> dict:
    """Fit the proxy on the train split of `rows`; writes the checkpoint to run/proxy."""
    from transformers import AutoTokenizer

    train_rows = [r for r in rows if r["split"] == "train"]
    if len(train_rows) < 4:
        raise ValueError(f"only {len(train_rows)} annotated training documents; annotate more (--n-annotate)")
    tokenizer = AutoTokenizer.from_pretrained(resolve_base(cfg.proxy.base))
    examples, pos_weight = build_examples(plan, train_rows, tokenizer, cfg)
    trained = fit(examples, cfg, run.proxy, run.path / "ray_train", pos_weight)
    metrics = {
        "examples": len(examples), "train_docs": len(train_rows), "pos_weight": pos_weight,
        "final_loss": trained["final_loss"], "epochs": cfg.train.epochs,
        "workers": cfg.train.num_workers, "wall_s": trained["wall_s"],
    }
    write_json(run.train_metrics, metrics)
    return metrics


def agreement(plan: Plan, rows: list[dict], proxy_dir: Path, cfg: RunConfig) -> dict:
    """Proxy vs teacher on held-out annotated documents: label accuracy, span F1."""
    held = [r for r in rows if r["split"] == "heldout"]
    if not held:
        return {"label": None, "span_f1": None, "heldout_docs": 0, "steps": {}}
    proxy = Proxy.load(proxy_dir)
    texts = [r["text"] for r in held]
    correct = total = 0
    steps: dict[str, dict] = {}
    for step in plan.label_steps:
        scores = proxy.label_scores(texts, step.instruction, pooling=cfg.proxy.label_pooling)
        # Confusion counts with the teacher as truth: "tp" = both say yes.
        cells = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
        for r, s in zip(held, scores):
            proxy_yes, teacher_yes = s >= cfg.mine.label_threshold, r["labels"][step.id] >= TEACHER_YES
            cells[("t" if proxy_yes == teacher_yes else "f") + ("p" if proxy_yes else "n")] += 1
        correct += cells["tp"] + cells["tn"]
        total += len(held)
        steps[step.id] = {"op": "get_label", "accuracy": round((cells["tp"] + cells["tn"]) / len(held), 4),
                          "confusion": cells}
    predicted, gold = [], []
    for step in plan.span_steps:  # on the held-out documents the teacher was asked this step about
        asked = [r for r in held if step.id in r["spans"]]
        found = proxy.extract([r["text"] for r in asked], step.instruction, threshold=cfg.mine.span_threshold)
        step_pred = [[(s.start, s.end) for s in spans] for spans in found]
        step_gold = [[(s["start"], s["end"]) for s in r["spans"][step.id]] for r in asked]
        steps[step.id] = {"op": "get_span", "f1": round(span_f1(step_pred, step_gold), 4) if asked else None,
                          "docs": len(asked)}
        predicted += step_pred
        gold += step_gold
    return {
        "label": round(correct / total, 4) if total else None,
        "span_f1": round(span_f1(predicted, gold), 4) if predicted else None,
        "heldout_docs": len(held),
        "steps": steps,
    }

