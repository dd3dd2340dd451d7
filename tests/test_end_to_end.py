"""`falconer mine` end to end with the real embedded teacher and the real proxy."""

import json
import random

import pyarrow.dataset as pads
import pytest
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.eval.datasets import movie_reviews

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    reviews = movie_reviews("rotten_tomatoes")
    random.Random(1).shuffle(reviews)
    for shard in range(2):
        with (root / f"part-{shard}.jsonl").open("w") as f:
            for i, r in enumerate(reviews[shard * 30:(shard + 1) * 30]):
                f.write(json.dumps({"id": f"s{shard}-{i}", "text": r["text"]}) + "\n")
    (root / "part-2.jsonl").write_text('{"id": "bad", "text": ""}\n{oops\n')
    return root


def test_mine_runs_every_stage_and_reruns_from_cache(ray_local, corpus, tmp_path, cache_dir):
    config = tmp_path / "run.yaml"
    config.write_text(f"cache_dir: {cache_dir}\nn_annotate: 24\ntrain:\n  epochs: 1\n"
                      "prices:\n  hardware: {gpu: {usd_per_hour: 3.6}}\n  teacher: {hardware: gpu}\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["mine", "Extract the names of people praised in positive movie reviews.",
                                      str(corpus), "--out", str(out), "--id-field", "id", "--config", str(config)])
    assert result.exit_code == 0, result.output
    # The plan is shown, with how to change it, before the teacher annotates anything.
    shown, annotating = result.output.find("to change the plan:"), result.output.find("annotating")
    assert "Plan: Extract the names" in result.output and 0 <= shown < annotating, result.output
    summary = " ".join(result.output.replace("│", " ").split())
    assert "this run" in summary and "at the config's `prices:`, as in report.html and report.json" in summary
    for name in ("plan.json", "config.json", "annotations/annotations.jsonl", "proxy/proxy.safetensors",
                 "results", "errors", "report.json", "report.html"):
        assert (out / name).exists(), name
    page = (out / "report.html").read_text()
    plan = json.loads((out / "plan.json").read_text())
    assert all(f"<code>{s['id']}</code>" in page for s in plan["steps"]) and page.count("<svg") >= 2
    report = json.loads((out / "report.json").read_text())
    assert report["docs_in"] == 62 == report["docs_kept"] + report["docs_filtered"] + report["docs_error"]
    assert report["docs_error"] == 2
    assert report["teacher"]["model"].startswith("embedded:gemma3-270m")
    assert report["teacher"]["calls"] > 0 and report["teacher"]["docs_per_s"] > 0
    assert report["proxy"]["docs_per_s"] > 0
    assert set(report["agreement"]) >= {"label", "span_f1"}
    cost = report["cost"]  # the planner made one call; annotation paid per uncached document and step
    assert cost["stages"]["plan"]["calls"] == 1 and cost["stages"]["plan"]["prompt_tokens"] > 0
    assert cost["stages"]["annotate"]["calls"] == report["teacher"]["calls"]
    assert cost["teacher"]["usd"] == pytest.approx(cost["teacher"]["seconds"] / 3600 * 3.6, abs=1e-5)
    assert cost["stages"]["proxy"]["usd"] > 0 and cost["usd"] > cost["teacher"]["usd"]
    assert f"${cost['usd']:.4g} this run" in summary  # the summary's dollars are report.json's
    assert isinstance(report["teacher"]["rejected"], dict) and report["teacher"]["docs_failed"] == 0

    annotations = [json.loads(line) for line in (out / "annotations/annotations.jsonl").open()]
    assert len(annotations) == 24
    for row in annotations:
        for spans in row["spans"].values():
            assert all(row["text"][s["start"]:s["end"]] == s["text"] for s in spans)
    results = pads.dataset(out / "results").to_table().to_pylist()
    texts = {}
    for f in corpus.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            try:
                rec = json.loads(line)
                texts[rec["id"]] = rec["text"]
            except json.JSONDecodeError:
                pass
    for row in results:
        for key, spans in row.items():
            if key.startswith("span_") and spans:
                assert all(texts[row["doc_id"]][s["start"]:s["end"]] == s["text"] for s in spans)

    again = CliRunner().invoke(app, ["annotate", str(out)])
    assert again.exit_code == 0, again.output
    stats = json.loads((out / "annotations/stats.json").read_text())
    assert stats["teacher"]["calls"] == 0


def test_bad_arguments_get_clear_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["mine", "find things", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "corpus not found" in missing.output
    bad_plan = tmp_path / "plan.json"
    bad_plan.write_text('{"steps": [{"id": "x", "op": "get_span", "instruction": "abc"}], "keep": "x"}')
    (tmp_path / "c.jsonl").write_text('{"text": "hello"}\n')
    result = runner.invoke(app, ["mine", "x", str(tmp_path / "c.jsonl"), "--plan", str(bad_plan), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a valid plan" in result.output
    no_run = runner.invoke(app, ["train", str(tmp_path / "empty")])
    assert no_run.exit_code == 2 and "falconer plan" in no_run.output
