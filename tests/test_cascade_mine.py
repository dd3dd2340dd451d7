"""The cascade in a run: calibration after training, teacher routing while mining."""

import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from falconer_ray.config import RunConfig
from falconer_ray.eval.datasets import movie_reviews
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir
from falconer_ray.corpus.sample import is_heldout

pytestmark = pytest.mark.slow


def test_mine_routes_unsure_documents_to_the_teacher(ray_local, tmp_path, cache_dir):
    from falconer_ray.annotate import AnnotationCache, cached_label
    from falconer_ray.plan.execute import ProxyAnswers, apply_plan
    from falconer_ray.pipeline import finish, stage_mine, stage_train
    from falconer_ray.teacher import teacher_from_config
    from falconer_ray.proxy import Proxy

    reviews = movie_reviews("rotten_tomatoes")
    random.Random(1).shuffle(reviews)
    reviews = reviews[:100]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with (corpus / "rt.jsonl").open("w") as f:
        for i, r in enumerate(reviews):
            f.write(json.dumps({"id": f"rt{i}", "text": r["text"]}) + "\n")
        f.write(json.dumps({"id": "blank", "text": " "}) + "\n")
    run = RunDir(tmp_path / "run").create()
    plan = Plan.model_validate({"instruction": "positive reviews", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"}], "keep": "positive"})
    plan.save(run.plan)
    cfg = RunConfig(instruction="positive reviews", corpus=str(corpus), id_field="id", cache_dir=cache_dir,
                    train={"epochs": 1, "heldout": 0.5}, mine={"target_agreement": 0.6, "delta": 0.2})
    cfg.save(run.path)
    run.annotations_dir.mkdir()
    with run.annotations.open("w") as f:
        for i, r in enumerate(reviews):
            split = "heldout" if is_heldout(f"rt{i}", 0, 0.5) else "train"
            f.write(json.dumps({"doc_id": f"rt{i}", "text": r["text"], "split": split,
                                "labels": {"positive": float(r["label"])}, "spans": {}}) + "\n")

    cal = stage_train(run, cfg)["cascade"]
    held = sum(is_heldout(f"rt{i}", 0, 0.5) for i in range(len(reviews)))
    assert cal["n"] == held and cal["target"] == 0.6 and cal["delta"] == 0.2
    assert 0.0 <= cal["to_teacher"] <= 1.0 and cal["agreement"] >= cal["proxy_only_agreement"]
    if cal["threshold"] is not None:
        assert cal["errors"] <= held * (1 - cal["agreement"]) + 1e-9

    # Route at the median confidence so both sides get documents, whatever was calibrated.
    texts = [r["text"] for r in reviews]
    median = float(np.median([a.confidence for a in apply_plan(ProxyAnswers(Proxy.load(run.proxy), cfg), plan, texts)]))
    (run.path / "cascade.json").write_text(json.dumps(cal | {"threshold": median}))
    stats = stage_mine(run, cfg)
    report = finish(run)

    rows = pa.concat_tables([pads.dataset(run.results).to_table(columns=["doc_id", "label_positive", "source", "confidence"]),
                             pads.dataset(run.filtered).to_table(columns=["doc_id", "label_positive", "source", "confidence"])
                             ]).to_pylist()
    assert len(rows) == len(reviews) and stats["docs_error"] == 1
    to_teacher = [r for r in rows if r["source"] == "teacher"]
    assert all(r["confidence"] < median for r in to_teacher)
    assert all(r["confidence"] >= median for r in rows if r["source"] == "proxy")
    assert abs(len(to_teacher) - len(reviews) / 2) <= 10
    assert stats["docs_to_teacher"] == len(to_teacher)
    c = report["cascade"]
    assert c["threshold"] == median and c["docs_to_teacher"] == len(to_teacher)
    assert c["fraction_to_teacher"] == pytest.approx(len(to_teacher) / stats["docs_in"], abs=1e-4)

    # The teacher's answers replaced the proxy's: same P(yes) as the teacher gives (from its cache).
    teacher = teacher_from_config(cfg.teacher)
    with AnnotationCache(f"{cache_dir}/annotations.sqlite") as cache:
        by_id = {f"rt{i}": t for i, t in enumerate(texts)}
        probs = cached_label(teacher, cache, [by_id[r["doc_id"]] for r in to_teacher], plan.steps[0].instruction)
    assert probs.calls == 0
    assert [r["label_positive"] for r in to_teacher] == pytest.approx(probs.probs)
    kept_ids = {r["doc_id"] for r in pads.dataset(run.results).to_table(columns=["doc_id"]).to_pylist()}
    for r, p in zip(to_teacher, probs.probs):
        assert (r["doc_id"] in kept_ids) == (p >= 0.5)
    assert not math.isnan(report["cascade"]["heldout_agreement"])
