"""proxy.runtime onnx-int8: the quantized graph and its cache, the check against torch
that decides whether mining may use it, and mining with it on real Ray."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from falconer_ray.bench.corpus import bench_texts, write_corpus
from falconer_ray.bench.throughput import fresh_proxy
from falconer_ray.config import RunConfig, merge
from falconer_ray.plan.execute import Answer
from falconer_ray.plan.schema import Plan
from falconer_ray.proxy import Proxy
from falconer_ray.proxy.int8 import INT8_NAME, SOURCE_NAME, Int8Forward, is_current
from falconer_ray.mine.runtime_choice import choose_runtime
from falconer_ray.spans import Span
from mining_helpers import PLAN, split_point
from test_faults import mined_run, outputs

LABEL, SPAN = PLAN["steps"][0]["instruction"], PLAN["steps"][1]["instruction"]


@pytest.fixture(scope="module")
def proxy_dir(tmp_path_factory):
    import torch

    torch.manual_seed(0)  # untrained heads: the same ones every run
    return fresh_proxy(RunConfig(), tmp_path_factory.mktemp("int8") / "proxy")


def test_int8_scores_track_torch_and_the_graph_is_cached(proxy_dir):
    texts = bench_texts(40, "rotten_tomatoes") + ["word " * 600]  # one long document: several windows
    exact, fast = Proxy.load(proxy_dir), Proxy.load(proxy_dir, runtime="onnx-int8")
    graph = proxy_dir / INT8_NAME
    assert graph.is_file()
    assert (fast.max_length, fast.stride) == (exact.max_length, exact.stride)
    assert isinstance(fast.forward, Int8Forward)  # no torch copy of the weights
    diff = np.abs(exact.label_scores(texts, LABEL) - fast.label_scores(texts, LABEL))
    assert diff.max() < 0.03 and diff.mean() > 0  # close, and really another runtime
    _, sure_exact = exact.extract_with_confidence(texts, SPAN)
    _, sure_fast = fast.extract_with_confidence(texts, SPAN)
    assert np.abs(sure_exact - sure_fast).max() < 0.05
    assert fast.last_windows[-1] > 1
    built = graph.stat().st_mtime_ns
    Proxy.load(proxy_dir, runtime="onnx-int8")
    assert graph.stat().st_mtime_ns == built  # reused
    with pytest.raises(ValueError, match="'torch' or 'onnx-int8'"):
        Proxy.load(proxy_dir, runtime="tensorrt")


def test_the_cached_graph_follows_the_weights_not_their_timestamps(proxy_dir, tmp_path):
    """Clocks differ between cluster nodes and copies reset mtimes: the graph is rebuilt
    when the weights' content changes, and only then."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = tmp_path / "proxy"
    shutil.copytree(proxy_dir, folder)
    graph, weights = folder / INT8_NAME, folder / "proxy.safetensors"
    Proxy.load(folder, runtime="onnx-int8")
    built = graph.stat().st_mtime_ns
    for shift in (3600, -3600):  # a copy from a node whose clock runs ahead, or behind
        stamp = graph.stat().st_mtime + shift
        os.utime(weights, (stamp, stamp))
        assert is_current(folder)
        Proxy.load(folder, runtime="onnx-int8")
        assert graph.stat().st_mtime_ns == built
    copy = tmp_path / "copied"
    copy.mkdir()
    for f in folder.iterdir():
        shutil.copyfile(f, copy / f.name)  # new mtimes, same content
    assert is_current(copy)

    text = "A warm, funny film about two sisters in Lisbon."
    before = Proxy.load(folder, runtime="onnx-int8").label_scores([text], LABEL)[0]
    with safe_open(weights, "pt") as f:  # retrained in place: other weights, older timestamp
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    head = next(k for k in tensors if k.startswith("label_head") and k.endswith("bias"))
    tensors[head] = tensors[head] + 3.0
    save_file(tensors, str(weights), metadata=meta)
    os.utime(weights, ns=(built - 10**9, built - 10**9))
    assert not is_current(folder)
    after = Proxy.load(folder, runtime="onnx-int8").label_scores([text], LABEL)[0]
    assert graph.stat().st_mtime_ns != built and after != pytest.approx(before, abs=1e-3)
    assert is_current(folder)
    (folder / SOURCE_NAME).write_text("{not json")  # damaged: built again, not trusted
    assert not is_current(folder)


ANSWER_IN_A_FRESH_PROCESS = """
import sys
from falconer_ray.proxy import Proxy
proxy = Proxy.load(sys.argv[1], runtime="onnx-int8", threads=1)
print(repr(float(proxy.label_scores([sys.argv[2]], sys.argv[3])[0])))
print(repr(proxy.extract([sys.argv[2]], sys.argv[4])))
print(sorted(m for m in ("torch", "transformers", "onnx") if m in sys.modules))
"""


def test_an_int8_proxy_answers_without_importing_torch_or_transformers(proxy_dir):
    """What makes an int8 mining actor start in about 1 s instead of 6.5: once the graph
    is cached, answering imports neither torch, transformers nor the quantizer."""
    here = Proxy.load(proxy_dir, runtime="onnx-int8", threads=1)  # builds or reuses the graph
    text = "A warm, funny film about two sisters in Lisbon."
    out = subprocess.run([sys.executable, "-c", ANSWER_IN_A_FRESH_PROCESS, str(proxy_dir), text, LABEL, SPAN],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    score, spans, loaded = out.stdout.splitlines()
    assert float(score) == pytest.approx(float(here.label_scores([text], LABEL)[0]), abs=1e-6)
    assert spans == repr(here.extract([text], SPAN))
    assert loaded == "[]"


def test_differs_reads_answers_as_the_results_would():
    plan = Plan.model_validate(PLAN)
    ann = Span(0, 3, "Ann", 0.9)
    yes, no = {"positive": True}, {"positive": False}
    base = Answer(True, {"positive": 0.8}, {"people": [ann]}, said_yes=yes)
    assert not base.differs(Answer(True, {"positive": 0.7}, {"people": [Span(0, 3, "Ann", 0.6)]}, said_yes=yes), plan)
    assert base.differs(Answer(True, {"positive": 0.8}, {"people": []}, said_yes=yes), plan)
    assert base.differs(Answer(False, {"positive": 0.4}, {}, said_yes=no), plan)
    # filtered either way, but one label on the other side of its threshold
    assert Answer(False, {"positive": 0.45}, {}, said_yes=no).differs(Answer(False, {"positive": 0.55}, {}, said_yes=yes), plan)


def test_int8_is_refused_where_its_answers_could_not_be_trusted(tmp_path):
    plan = Plan.model_validate(PLAN)
    asked = RunConfig(proxy={"runtime": "onnx-int8"})
    for extra, why in (({"mine.target_agreement": 0.9}, "cascade"), ({"mine.gpus_per_actor": 1.0}, "CPUs only")):
        cfg, info = choose_runtime(None, plan, merge(asked, extra))
        assert cfg.proxy.runtime == "torch" and info["used"] == "torch" and why in info["fallback"]
    cfg, info = choose_runtime(None, plan, RunConfig())
    assert info == {"requested": "torch", "used": "torch"}


def test_a_graph_that_cannot_be_built_or_loaded_sends_mining_to_torch(proxy_dir, tmp_path, cache_dir):
    """onnx-int8 is a request: when the graph cannot be built (here its path is taken by
    a folder) or a cached one cannot be loaded (damaged bytes beside a record that
    matches the weights), mining falls back to torch, says why, and the answers are
    torch's."""
    from falconer_ray.proxy.int8 import weights_source
    from falconer_ray.proxy.folder import WEIGHTS_NAME

    corpus = write_corpus(bench_texts(40, "rotten_tomatoes"), tmp_path / "corpus", shards=1)
    cfg = RunConfig(corpus=str(corpus), id_field="id", cache_dir=cache_dir, proxy={"runtime": "onnx-int8"})
    plan = Plan.model_validate(PLAN)
    for fault in ("unbuildable", "damaged"):
        own = tmp_path / fault / "proxy"
        shutil.copytree(proxy_dir, own, ignore=shutil.ignore_patterns("proxy.int8*", "int8_check.json"))
        if fault == "unbuildable":
            (own / INT8_NAME).mkdir()
        else:
            (own / INT8_NAME).write_bytes(b"not an onnx graph" * 100)
            (own / SOURCE_NAME).write_text(json.dumps(weights_source(own / WEIGHTS_NAME)))
        run = mined_run(tmp_path / fault, "run", own, cfg)
        settled, info = choose_runtime(run, plan, cfg)
        assert settled.proxy.runtime == "torch" and info["used"] == "torch", fault
        assert "could not be built or loaded" in info["fallback"], fault


@pytest.mark.slow
def test_mining_with_int8_gives_the_torch_answers(ray_local, proxy_dir, tmp_path, cache_dir, monkeypatch):
    texts = bench_texts(400, "rotten_tomatoes")
    corpus = write_corpus(texts, tmp_path / "corpus", shards=4)
    exact = Proxy.load(proxy_dir)
    spans = [s.score for found in exact.extract(texts[:60], SPAN, threshold=0.0) for s in found]
    cfg = RunConfig(corpus=str(corpus), id_field="id", cache_dir=cache_dir, mine={
        "actors": 2, "min_actors": 2, "label_threshold": split_point(exact.label_scores(texts[:200], LABEL)),
        "span_threshold": split_point(spans)})
    from falconer_ray.mine.driver import mine

    plan = Plan.model_validate(PLAN)
    runs = {}
    for runtime in ("torch", "onnx-int8"):
        run_cfg = merge(cfg, {"proxy.runtime": runtime, "proxy.int8_max_disagreement": 1.0})
        run = mined_run(tmp_path, runtime, proxy_dir, run_cfg)
        stats = mine(plan, run_cfg, run)
        assert stats["accounted"] and stats["docs_in"] == 400
        runs[runtime] = (stats, outputs(run))
    info = runs["onnx-int8"][0]["runtime"]
    assert info["used"] == "onnx-int8" and info["checked_docs"] == 200 and 0 < info["disagreement"] <= 1
    torch_rows, int8_rows = runs["torch"][1], runs["onnx-int8"][1]
    assert torch_rows.keys() == int8_rows.keys()
    gaps = [abs(torch_rows[k]["label_positive"] - int8_rows[k]["label_positive"]) for k in torch_rows]
    assert 0 < max(gaps) < 0.03  # every document answered by the int8 graph, close to torch
    # untrained heads put spans anywhere: their answers differ enough to fail a strict limit,
    # which sends mining back to torch and says why
    strict = merge(cfg, {"proxy.runtime": "onnx-int8", "proxy.int8_max_disagreement": 0.0})
    strict_run = mined_run(tmp_path, "strict", proxy_dir, strict)
    _, decided = choose_runtime(strict_run, plan, strict)
    assert decided["used"] == "torch" and "int8_max_disagreement" in decided["fallback"]

    # The verdict is kept beside the graph: asked again (a resume), neither runtime is loaded;
    # a change to what it depends on checks again.
    def load(*args, **kwargs):
        raise AssertionError("checked again")

    monkeypatch.setattr(Proxy, "load", classmethod(load))
    assert choose_runtime(strict_run, plan, strict)[1] == decided
    with pytest.raises(AssertionError, match="checked again"):
        choose_runtime(strict_run, plan, merge(strict, {"proxy.int8_max_disagreement": 0.5}))
