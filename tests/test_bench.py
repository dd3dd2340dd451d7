"""`falconer bench`: the benchmarks run end to end on tiny inputs and report consistent numbers.

They are not timed tests: only structure and internal consistency are checked here;
the figures themselves go to docs/RESULTS.md.
"""

import pytest
from typer.testing import CliRunner

from falconer_ray.bench.throughput import _combined
from falconer_ray.cli.main import app
from falconer_ray.config import RunConfig


def test_combined_rate_adds_per_document_times():
    assert _combined(2.0, 2.0) == pytest.approx(1.0)
    assert _combined(1.0, 1e9) == pytest.approx(1.0)


@pytest.mark.parametrize("args", [["throughput", "--actors", "0"], ["throughput", "--actors", "one"],
                                  ["throughput", "--runtimes", "torch,tensorrt"], ["memory", "--docs", "10,x"]])
def test_bad_bench_arguments_are_clear_errors(args):
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert "must be" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_throughput_reports_every_rate_and_ratio(ray_local, cache_dir):
    from falconer_ray.bench.throughput import run_throughput

    out = run_throughput(24, "rotten_tomatoes", 2, [1, 2], RunConfig(cache_dir=cache_dir), bare_seconds=2,
                         runtimes=("torch", "onnx-int8"))
    assert out["docs"] == 24 and out["teacher_docs"] == 2 and out["actors"] == 2
    int8 = out["runtimes"]["onnx-int8"]
    for part, torch_part in ((int8, out), (int8["get_label"], out["get_label"]), (int8["get_span"], out["get_span"])):
        assert part["speedup_vs_torch"] == pytest.approx(part["proxy_docs_per_s"] / torch_part["proxy_docs_per_s"], rel=0.01)
        assert part["teacher_docs_per_s"] == torch_part["teacher_docs_per_s"]  # the same teacher measurement
    for part in (out, out["get_label"], out["get_span"], int8, int8["get_label"], int8["get_span"]):
        for key in ("teacher_docs_per_s", "proxy_docs_per_s", "bare_forward_docs_per_s"):
            assert part[key] > 0, key
        assert part["speedup_vs_teacher"] == pytest.approx(part["proxy_docs_per_s"] / part["teacher_docs_per_s"], rel=0.01)
        assert part["overhead"] == pytest.approx(1 - part["proxy_docs_per_s"] / part["bare_forward_docs_per_s"], abs=0.01)
    for part in (out["get_label"], out["get_span"], int8["get_label"], int8["get_span"]):
        if part["proxy_steady_docs_per_s"] is not None:  # more than one block came back
            assert 0 <= part["proxy_start_s"] <= 24 / part["proxy_docs_per_s"]  # the start is part of the whole
            assert part["steady_overhead"] == pytest.approx(
                1 - part["proxy_steady_docs_per_s"] / part["bare_forward_docs_per_s"], abs=0.01)
    assert "proxy_start_s" not in out  # seconds do not combine like rates
    assert set(out["actor_scaling"]) == {"1", "2", "ratio_max_vs_min"}


@pytest.mark.slow
def test_memory_bench_samples_a_whole_mine_in_a_child_process(tmp_path, monkeypatch):
    from falconer_ray.bench.memory import run_memory

    monkeypatch.setenv("FALCONER_CACHE", str(tmp_path / "cache"))
    out = run_memory([12], "rotten_tomatoes", n_annotate=10, epochs=1, work=tmp_path)
    run = out["runs"]["12"]
    assert run["docs_in"] == run["docs_kept"] == 12  # keep_all: every document reaches span extraction
    # The tree holds the driver, Ray and the actors: far more than the driver alone.
    assert run["peak_pss_mb"] > run["peak_driver_rss_mb"] > 100
    assert "growth_largest_vs_smallest" not in out  # one size: nothing to compare
    # Each step the child announced holds its own peaks, none above the whole run's.
    assert {"annotating", "training", "mining"} <= set(run["steps"])
    for step in run["steps"].values():
        assert 0 < step["peak_pss_mb"] <= run["peak_pss_mb"] and step["seconds"] > 0
    assert sum(s["seconds"] for s in run["steps"].values()) <= run["wall_s"]
    at_peak = run["steps"]["mining"]["at_peak_mb"]  # who held the memory: the driver, Ray, the proxy actors
    assert "driver" in at_peak and "raylet" in at_peak and any("ProxyStage" in kind for kind in at_peak), at_peak
    assert sum(at_peak.values()) == pytest.approx(run["steps"]["mining"]["peak_pss_mb"], abs=1)


def test_memory_samples_fall_in_the_step_announced_before_them(tmp_path):
    from falconer_ray.bench.memory import ChildLog, Sample, by_step

    log = tmp_path / "run.log"
    lines = ['{"ts": 100.0, "event": "note", "message": "annotating 40 documents with the teacher"}',
             "a line some library printed", "{not json",
             '{"ts": 110.0, "event": "note", "message": "proxy runtime: torch"}',  # not a step
             '{"ts": 120.0, "event": "note", "message": "training the proxy (minilm) on 30 documents"}',
             '{"ts": 130.0, "event": "start", "step": "mining", "total": 9}',  # a progress event, not a note
             '{"ts": 140.0, "event": "note", "message": "mining corpus/ with the proxy"}']
    log.write_text("\n".join(lines) + "\n")
    child_log = ChildLog(log)
    child_log()
    assert child_log.step_starts == [(100.0, "annotating"), (120.0, "training"), (140.0, "mining")]
    mb = 2**20
    samples = [Sample(95.0, {"driver": 50 * mb}, 40 * mb)]  # before any step: in no step
    samples += [Sample(100.0 + i, {"driver": 300 * mb}, 100 * mb) for i in range(20)]  # annotating
    samples += [Sample(120.0 + i, {"driver": 200 * mb, "ray::RayTrainWorker": 700 * mb}, 120 * mb)
                for i in range(20)]  # training
    samples += [Sample(140.0 + i, {"ray::ProxyStage": (300 + 10 * i) * mb, "driver": 100 * mb}, (100 + i) * mb)
                for i in range(41)]  # mining, the actors rising
    steps = by_step(samples, child_log.step_starts)
    assert list(steps) == ["annotating", "training", "mining"]
    assert steps["annotating"] == {"seconds": 20.0, "peak_pss_mb": 300.0, "peak_driver_rss_mb": 100.0,
                                   "at_peak_mb": {"driver": 300.0}}
    assert steps["training"]["peak_pss_mb"] == 900.0  # the run's peak: training's, not mining's
    assert list(steps["training"]["at_peak_mb"]) == ["ray::RayTrainWorker", "driver"]  # largest first
    mining = steps["mining"]
    assert mining["seconds"] == 40.0 and mining["peak_pss_mb"] == 800.0
    assert mining["at_peak_mb"] == {"ray::ProxyStage": 700.0, "driver": 100.0}
    assert [q["peak_pss_mb"] for q in mining["quarters"]] == [490.0, 590.0, 690.0, 800.0]  # the rise shows
    assert "quarters" not in steps["training"]


def test_memory_growth_compares_the_largest_corpus_with_the_smallest():
    from falconer_ray.bench.memory import growth

    runs = {"100000": {"peak_pss_mb": 1150.0}, "9000": {"peak_pss_mb": 1000.0}, "10000": {"peak_pss_mb": 1100.0}}
    assert growth(runs) == 0.15  # by corpus size, not by the order or the text of the keys


def test_start_and_steady_split_the_fixed_start_from_the_rate():
    from falconer_ray.mine.driver import start_and_steady

    # Two actors were busy 40 s in all (20 s each) for 1,000 rows of a 30 s run: 50 docs/s
    # while busy, and 30 - 20 = 10 s that no steady rate explains (start, the last call alone).
    assert start_and_steady(40.0, 2, 30.0, 1000) == {"start_s": 10.0, "steady_docs_per_s": 50.0}
    assert start_and_steady(0.0, 2, 30.0, 1000) == {"start_s": None, "steady_docs_per_s": None}  # not measured
    assert start_and_steady(0.0, 2, 0.0, 0) == {"start_s": None, "steady_docs_per_s": None}


def test_mining_actors_report_their_busy_seconds(ray_local, tmp_path):
    """The split comes from the actors' own call times: they are measured (a split
    exists), and an actor is busy for less than the whole run (some start is left)."""
    from falconer_ray.bench.corpus import write_corpus
    from falconer_ray.bench.throughput import LABEL_INSTRUCTION, fresh_proxy, pipeline_rate
    from falconer_ray.plan.schema import Plan, Step

    cfg = RunConfig()
    texts = [f"review {i}: " + "a fine film " * (i % 7 + 1) for i in range(200)]
    corpus = write_corpus(texts, tmp_path / "corpus")
    proxy = fresh_proxy(cfg, tmp_path / "proxy")
    plan = Plan(steps=[Step(id="label", op="get_label", instruction=LABEL_INSTRUCTION)])
    r = pipeline_rate(corpus, proxy, plan, cfg, 1, tmp_path / "work")
    assert r["proxy_steady_docs_per_s"] >= r["proxy_docs_per_s"] > 0
    assert 0 < r["proxy_start_s"] < 200 / r["proxy_docs_per_s"]


def test_the_benchmark_proxy_is_drawn_from_the_seed(tmp_path):
    import torch
    from safetensors.torch import load_file

    from falconer_ray.bench.throughput import fresh_proxy
    from falconer_ray.proxy.model import WEIGHTS_NAME

    def heads(seed, name):
        folder = fresh_proxy(RunConfig(seed=seed), tmp_path / name)
        state = load_file(folder / WEIGHTS_NAME)
        return {k: v for k, v in state.items() if "head" in k}

    first, again, other = heads(0, "a"), heads(0, "b"), heads(1, "c")
    assert first and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_the_gpu_benchmark_measures_the_host_side_without_a_gpu(tmp_path):
    """`python -m falconer_ray.bench.gpu_proxy --host-only` runs anywhere: the proxy path against an
    instant forward pass, then against a simulated device, whose busy share is a fraction."""
    import json
    import subprocess
    import sys

    out = tmp_path / "host.json"
    subprocess.run([sys.executable, "-m", "falconer_ray.bench.gpu_proxy", "--host-only", "--docs", "200", "--batches", "32",
                    "--call-docs", "64", "--device-us", "50", "--json", str(out)], check=True, timeout=300)
    got = json.loads(out.read_text())
    for what in ("label", "span"):
        assert got[f"host_{what}_docs_per_s"] > 0
        assert 0 < got[f"simulated_{what}_device_busy"] <= 1
        # the device alone allows 1 / 50 us = 20,000 docs/s; the path cannot beat that or the host
        assert got[f"simulated_{what}_docs_per_s"] <= 20_000 * 1.05
    assert got["host_spans_per_doc"] > 0 and "device" not in got


def test_memory_bench_relays_the_childs_notes_and_progress_as_lines_complete(tmp_path, capsys):
    from falconer_ray.bench.memory import ChildLog

    log = tmp_path / "run.log"
    log.write_text('{"ts": 1, "event": "note", "message": "mining corpus/ with the proxy"}\n'
                   '{"ts": 2, "event": "progress", "step": "mining", "done": 500, "total": 1000, "unit": "docs", '
                   '"elapsed_s": 10.0}\n{"ts": 3, "event": "note", "mess')  # the child is still writing this one
    child_log = ChildLog(log)
    child_log()
    shown = capsys.readouterr().err
    assert "mining corpus/ with the proxy" in shown and "mining: 500/1000 docs (50%), 50 docs/s" in shown
    with log.open("a") as f:
        f.write('age": "report: out/report.html"}\n')
    child_log()
    shown = capsys.readouterr().err
    assert "report: out/report.html" in shown and "mining corpus/" not in shown  # only what is new


@pytest.mark.slow
def test_label_scoring_reads_only_the_document_after_the_shared_prefix(tmp_path, cache_dir):
    import json

    from falconer_ray.bench import teacher_rate

    out = tmp_path / "rate.json"
    teacher_rate.main_args(["--model", "gemma3-270m", "--n", "6", "--repeats", "1", "--threads", "1",
                            "--json", str(out)])
    got = json.loads(out.read_text())
    assert got["docs"] == 6 and got["label_tokens_per_s"] > 0 and got["llama_pp512_tokens_per_s"] > 0
    # the demonstrations (hundreds of tokens) stay in the KV cache: a call evaluates the review and a few more
    assert got["tokens_evaluated"] < got["prompt_tokens"] / 4
    assert got["ratio_to_pp512"] == pytest.approx(got["label_tokens_per_s"] / got["llama_pp512_tokens_per_s"], rel=0.01)
