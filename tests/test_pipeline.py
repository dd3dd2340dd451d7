"""Integration through a local Ray: Ray Train fine-tuning, Ray Data mining, the CLI."""

import json
import random
import signal
import time

import pyarrow.dataset as pads
import pytest

from falconer_ray.config import RunConfig
from falconer_ray.eval.datasets import movie_reviews
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir
from falconer_ray.corpus.sample import is_heldout

pytestmark = pytest.mark.slow


def gold_run(tmp_path, n, epochs, cache_dir):
    """A run directory whose annotations are the gold Rotten Tomatoes labels."""
    reviews = movie_reviews("rotten_tomatoes")
    random.Random(0).shuffle(reviews)
    reviews = reviews[:n]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with (corpus / "rt.jsonl").open("w") as f:
        for i, r in enumerate(reviews):
            f.write(json.dumps({"id": f"rt{i}", "text": r["text"]}) + "\n")
        f.write("{not json\n" + json.dumps({"id": "blank", "text": " "}) + "\n")
    run = RunDir(tmp_path / "run").create()
    Plan.model_validate({"instruction": "positive reviews", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"}],
        "keep": "positive"}).save(run.plan)
    cfg = RunConfig(instruction="positive reviews", corpus=str(corpus), id_field="id", cache_dir=cache_dir,
                    train={"epochs": epochs})
    cfg.save(run.path)
    run.annotations_dir.mkdir()
    with run.annotations.open("w") as f:
        for i, r in enumerate(reviews):
            split = "heldout" if is_heldout(f"rt{i}", 0, 0.2) else "train"
            f.write(json.dumps({"doc_id": f"rt{i}", "text": r["text"], "split": split,
                                "labels": {"positive": float(r["label"])}, "spans": {}}) + "\n")
    return run, cfg, reviews


def live_train_controllers(ray) -> int:
    from ray.util.state import list_actors

    url = "http://" + ray._private.worker.global_worker.node.address_info["webui_url"]
    return len(list_actors(address=url, filters=[("class_name", "=", "TrainController"), ("state", "=", "ALIVE")]))


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def test_proxy_learns_and_mines_every_document(ray_local, tmp_path, cache_dir):
    from falconer_ray.pipeline import finish, stage_mine, stage_train

    run, cfg, reviews = gold_run(tmp_path, 400, epochs=4, cache_dir=cache_dir)
    handler = signal.getsignal(signal.SIGINT)
    metrics = stage_train(run, cfg)
    # Ray Train's Ctrl-C handler would keep its controller actor alive while mining.
    assert signal.getsignal(signal.SIGINT) is handler
    assert wait_for(lambda: live_train_controllers(ray_local) == 0, seconds=60), "the training controller outlived training"
    held = [r for i, r in enumerate(reviews) if is_heldout(f"rt{i}", 0, 0.2)]
    majority = max(sum(r["label"] for r in held), len(held) - sum(r["label"] for r in held)) / len(held)
    assert metrics["agreement"]["heldout_docs"] == len(held)
    assert metrics["agreement"]["label"] >= majority + 0.08, (metrics, majority)
    step = metrics["agreement"]["steps"]["positive"]
    assert sum(step["confusion"].values()) == len(held)
    assert step["accuracy"] == metrics["agreement"]["label"]  # one label step: the same figure
    assert (run.proxy / "proxy.safetensors").exists()

    stats = stage_mine(run, cfg)
    report = finish(run)
    assert stats["docs_in"] == len(reviews) + 2 and stats["docs_error"] == 2
    assert report["docs_in"] == report["docs_kept"] + report["docs_filtered"] + report["docs_error"]
    kept = pads.dataset(run.results).to_table().to_pylist()
    assert all(r["status"] == "kept" and r["label_positive"] >= 0.5 for r in kept)
    errors = {r["doc_id"]: r["error"] for r in pads.dataset(run.errors).to_table().to_pylist()}
    assert errors["blank"] == "empty_text" and any(e.startswith("malformed_json") for e in errors.values())
    filtered = pads.dataset(run.filtered).to_table().to_pylist()
    assert all(r["label_positive"] < 0.5 for r in filtered)
    assert not run.rows.exists() and not list(run.path.glob("*.tmp"))
    assert "Is this movie review positive?" in (run.path / "report.html").read_text()
