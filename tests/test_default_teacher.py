"""The default embedded teacher, end to end: the other tests run a smaller model
($FALCONER_TEACHER_MODEL, set in conftest) for speed; this one runs what a user gets."""

import json
import random

import pytest
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.config.teacher import DEFAULT_EMBEDDED_MODEL, MODEL_ENV
from falconer_ray.eval.datasets import movie_reviews
from falconer_ray.plan.execute import TEACHER_YES

pytestmark = pytest.mark.slow
PLAN = {"instruction": "Extract the names of people praised in positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Extract the names of people praised in the review."}],
    "keep": "positive"}


def test_mine_with_the_default_teacher(ray_local, tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv(MODEL_ENV, raising=False)
    reviews = movie_reviews("rotten_tomatoes")
    random.Random(5).shuffle(reviews)
    pos = [r for r in reviews if r["label"] == 1][:20]
    neg = [r for r in reviews if r["label"] == 0][:20]
    gold = {}
    with (tmp_path / "c.jsonl").open("w") as f:
        for i, r in enumerate(pos + neg):
            gold[f"r{i}"] = bool(r["label"])
            f.write(json.dumps({"id": f"r{i}", "text": r["text"]}) + "\n")
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    (tmp_path / "run.yaml").write_text(f"cache_dir: {cache_dir}\nn_annotate: 40\nmin_span_docs: 5\ntrain:\n  epochs: 1\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["mine", PLAN["instruction"], str(tmp_path / "c.jsonl"), "--out", str(out),
                                      "--plan", str(tmp_path / "plan.json"), "--id-field", "id",
                                      "--config", str(tmp_path / "run.yaml"), "--yes"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["model"].startswith(f"embedded:{DEFAULT_EMBEDDED_MODEL}:")
    assert report["docs_in"] == 40 == report["docs_kept"] + report["docs_filtered"] + report["docs_error"]
    rows = [json.loads(line) for line in (out / "annotations" / "annotations.jsonl").open()]
    right = sum((r["labels"]["positive"] >= TEACHER_YES) == gold[r["doc_id"]] for r in rows)
    assert right / len(rows) >= 0.8, f"the default teacher labels {right} of {len(rows)} reviews right"
    kept = {r["doc_id"] for r in rows if r["labels"]["positive"] >= TEACHER_YES}
    assert len(kept) >= 5 and {r["doc_id"] for r in rows if "people" in r["spans"]} == kept  # spans where it keeps
