"""`falconer quote`: counting, scaling, prices, the comparison with a real run, the CLI."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.config import RunConfig
from falconer_ray.plan.schema import Plan
from falconer_ray.cost.quote import compare, count_documents, estimate

PLAN = Plan.model_validate({"instruction": "people in positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Names of people praised."}], "keep": "positive"})


def write_corpus(root):
    root.mkdir()
    (root / "a.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(7)))
    (root / "b.jsonl.gz").write_bytes(gzip.compress(b'{"text": "x"}\n{"text": "y"}'))  # no final newline
    (root / "c.csv").write_text("text,id\nhello,1\nworld,2\n")
    pq.write_table(pa.table({"text": ["p"] * 5}), root / "d.parquet")
    (root / "e.txt").write_text("one file, one document\nstill the same one\n")
    return root


def test_count_documents_by_format_and_extrapolated(tmp_path):
    cfg = RunConfig(corpus=str(write_corpus(tmp_path / "c")))
    exact = count_documents(cfg, budget=1 << 30)
    assert exact["docs"] == 7 + 2 + 2 + 5 + 1 and exact["files"] == 5 and exact["estimated_docs"] == 0
    assert count_documents(cfg.model_copy(update={"limit": 4}), budget=1 << 30)["docs"] == 4
    big = tmp_path / "big"
    big.mkdir()
    for k in range(4):  # same-sized shards: counting one and extrapolating the rest is exact
        (big / f"p{k}.jsonl").write_text("".join(json.dumps({"text": f"d{k:02d}{i:03d}"}) + "\n" for i in range(100)))
    partial = count_documents(RunConfig(corpus=str(big)), budget=1)
    assert partial["docs"] == 400 and partial["estimated_docs"] == 300


MEASURED_TEACHER = {"per_op": {"label": {"s_per_call": 2.0, "input_tokens_per_call": 500, "output_tokens_per_call": 1},
                               "span": {"s_per_call": 4.0, "input_tokens_per_call": 600, "output_tokens_per_call": 20}},
                    "keep_fraction": 0.25}
MEASURED_PROXY = {"train_s_per_example": 0.5, "examples_per_doc": 2.0, "label_s_per_doc": 0.01, "span_s_per_doc": 0.02}


def test_estimate_scales_measurements_and_prices():
    cfg = RunConfig(instruction=PLAN.instruction, n_annotate=100, train={"epochs": 2, "heldout": 0.2},
                    quote={"train_overhead_s": 10, "mine_overhead_s": 5},
                    prices={"prompt_per_1m": 1.0, "completion_per_1m": 2.0})
    q = estimate(cfg, PLAN, {"docs": 10_000, "files": 1, "estimated_docs": 0, "bytes": 1}, MEASURED_TEACHER, MEASURED_PROXY)
    fal, base = q["falconer"], q["all_teacher"]
    assert fal["teacher_calls"] == 200 and base["teacher_calls"] == 10_000 + 2_500
    # spans are annotated on the kept quarter once the sample holds more than min_span_docs of them
    few = estimate(RunConfig.model_validate({**cfg.model_dump(), "min_span_docs": 10}), PLAN,
                   {"docs": 10_000, "files": 1, "estimated_docs": 0, "bytes": 1}, MEASURED_TEACHER, MEASURED_PROXY)
    assert few["falconer"]["teacher_calls"] == 100 + 25
    assert fal["seconds"]["annotate"] == 100 * 2.0 + 100 * 4.0
    assert fal["seconds"]["train"] == 10 + 100 * 0.8 * 2.0 * 2 * 0.5
    assert fal["seconds"]["mine"] == pytest.approx(5 + 10_000 * (0.01 + 0.25 * 0.02), abs=0.1)
    assert base["total_s"] == 10_000 * 2.0 + 2_500 * 4.0
    assert base["tokens"] == {"input": 10_000 * 500 + 2_500 * 600, "output": 10_000 + 2_500 * 20}
    cpu = 0.10 / 3600
    assert base["total_usd"] == pytest.approx(base["total_s"] * cpu + (6_500_000 * 1 + 60_000 * 2) / 1e6, abs=1e-3)
    assert q["savings"]["time_x"] == pytest.approx(base["total_s"] / fal["total_s"], rel=0.01)
    assert any("keep rate 25%" in a for a in q["assumptions"])
    assert any("mining 5 s" in a for a in q["assumptions"])

    faster = RunConfig.model_validate({**cfg.model_dump(), "prices": {**cfg.prices.model_dump(),
        "mine": {"hardware": "gpu-node", "units": 2}, "teacher": {"hardware": "cpu-node", "units": 4}}})
    q2 = estimate(faster, PLAN, {"docs": 10_000, "files": 1, "estimated_docs": 0, "bytes": 1}, MEASURED_TEACHER, MEASURED_PROXY)
    assert q2["falconer"]["seconds"]["mine"] == pytest.approx(5 + (fal["seconds"]["mine"] - 5) / 80, abs=0.1)  # the start is not divided
    assert q2["all_teacher"]["total_s"] == pytest.approx(base["total_s"] / 4)
    with pytest.raises(ValueError, match="hardware 'tpu' of stage mine is not in the table"):
        RunConfig.model_validate({**cfg.model_dump(), "prices": {"mine": {"hardware": "tpu"}}})
    # hardware a config names joins the default table: the other stages keep theirs
    gpu_only = RunConfig.model_validate({"prices": {"hardware": {"gpu": {"usd_per_hour": 3.6}}, "mine": {"hardware": "gpu"}}})
    assert gpu_only.prices.of("train").usd_per_hour == 0.10 and gpu_only.prices.of("mine").usd_per_hour == 3.6


def test_compare_sets_quote_against_the_run():
    quote = {"corpus": {"docs": 1000}, "falconer": {"teacher_calls": 40, "seconds": {"annotate": 100, "train": 50, "mine": 20}}}
    report = {"docs_in": 1000, "teacher": {"calls": 40, "seconds": 150.0}, "proxy": {"mine_s": 10.0, "train": {"wall_s": 50.0}}}
    rows = {r["what"]: r for r in compare(quote, report)["rows"]}
    assert rows["annotation seconds"]["actual_over_quoted"] == 1.5 and rows["mining seconds"]["actual_over_quoted"] == 0.5
    assert rows["documents"]["quoted"] == rows["documents"]["actual"] == 1000
    total = rows["total seconds (annotate + train + mine)"]
    assert (total["quoted"], total["actual"], total["actual_over_quoted"]) == (170, 210.0, 1.24)
    cached = compare(quote, {**report, "teacher": {"calls": 0, "seconds": 0.0}})
    assert "cache" in cached["note"] and "teacher-alone seconds (estimated)" not in {r["what"] for r in cached["rows"]}
    # the teacher-alone baseline, quoted from the pilot and recomputed from the run's own teacher timings
    quote["all_teacher"] = {"teacher_calls": 1250, "total_s": 4000.0}
    report.update(plan=PLAN.model_dump(by_alias=True), teacher={
        "calls": 40, "seconds": 150.0, "keep_fraction": 0.5,
        "per_op": {"label": {"s_per_call": 1.0}, "span": {"s_per_call": 4.0}}})
    rows = {r["what"]: r for r in compare(quote, report)["rows"]}
    assert rows["teacher-alone calls (estimated)"]["actual"] == 1000 + 500
    assert rows["teacher-alone seconds (estimated)"] == {"what": "teacher-alone seconds (estimated)", "quoted": 4000.0,
                                                         "actual": 1000 * 1.0 + 500 * 4.0, "actual_over_quoted": 0.75}


def test_quote_cli_rejects_bad_input(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["quote", "find people", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "corpus not found" in missing.output
    (tmp_path / "c.jsonl").write_text('{"text": "only one"}\n')
    cfg = tmp_path / "q.yaml"
    cfg.write_text(yaml.safe_dump({"prices": {"mine": {"hardware": "tpu-pod"}}}))
    bad_hw = runner.invoke(app, ["quote", "find people", str(tmp_path / "c.jsonl"), "--config", str(cfg)])
    assert bad_hw.exit_code == 2 and "tpu-pod" in bad_hw.output
    cfg.write_text(yaml.safe_dump({"prices": {"hardware": {"cpu-node": {"usd_per_hour": -1}}}}))
    negative = runner.invoke(app, ["quote", "find people", str(tmp_path / "c.jsonl"), "--config", str(cfg)])
    assert negative.exit_code == 2 and "prices.hardware.cpu-node.usd_per_hour" in negative.output
    # the hardware table's place before `prices:` existed still reads, and is checked the same
    cfg.write_text(yaml.safe_dump({"quote": {"mine": {"hardware": "tpu-pod"}}}))
    old = runner.invoke(app, ["quote", "find people", str(tmp_path / "c.jsonl"), "--config", str(cfg)])
    assert old.exit_code == 2 and "tpu-pod" in old.output


@pytest.mark.slow
def test_quote_pilot_with_the_real_teacher_and_proxy(tmp_path, cache_dir):
    from falconer_ray.eval.datasets import write_imdb_corpus

    corpus = write_imdb_corpus(tmp_path / "corpus", 60, shards=2)
    plan_file = tmp_path / "plan.json"
    PLAN.save(plan_file)
    cfg = tmp_path / "q.yaml"
    cfg.write_text(yaml.safe_dump({"cache_dir": cache_dir, "n_annotate": 20, "quote": {"pilot_docs": 2, "pilot_batches": 1},
                                   "mine": {"forward_batch": 8}}))  # pilot forward on 8 documents
    out, js = tmp_path / "run", tmp_path / "quote.json"
    result = CliRunner().invoke(app, ["quote", PLAN.instruction, str(corpus), "--plan", str(plan_file), "--config",
                                      str(cfg), "--out", str(out), "--json", str(js)])
    assert result.exit_code == 0, result.output
    assert "all-teacher / falconer" in result.stdout and "assumptions" in result.stdout
    q = json.loads(js.read_text())
    assert json.loads((out / "quote.json").read_text()) == q
    assert q["corpus"]["docs"] == 60
    measured = q["measured"]
    assert measured["teacher"]["label"]["s_per_call"] > 0 and measured["teacher"]["label"]["input_tokens_per_call"] > 50
    assert measured["proxy"]["label_s_per_doc"] > 0 and measured["proxy"]["train_s_per_example"] > 0
    assert q["falconer"]["teacher_calls"] == 40 and q["all_teacher"]["teacher_calls"] >= 60
