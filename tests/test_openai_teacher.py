"""The openai teacher against a REAL OpenAI-compatible server on 127.0.0.1.

The server is `falconer_ray.teacher.gguf_server` (llama-cpp-python's server
with the embedded Gemma GGUF), started as a subprocess on a free loopback port
and stopped by PID. Annotation goes through Ray Data LLM's HTTP processor.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from falconer_ray.annotate.stage import annotate_documents, load_annotations
from falconer_ray.config import OpenAITeacherConfig, RunConfig
from falconer_ray.plan.schema import Plan, Step
from falconer_ray.rundir import RunDir
from falconer_ray.teacher import make_teacher
from falconer_ray.teacher.base import Failed

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "uvicorn", "sse_starlette", "starlette_context")),
        reason="needs llama-cpp-python with its server extras (pip install -e .[dev])",
    ),
]

DOCS = [
    {"doc_id": "a", "text": "A wonderful film. Tom Hanks was superb and the story moved me."},
    {"doc_id": "b", "text": "Dull and far too long;\nMeryl Streep was wasted in it."},
    {"doc_id": "c", "text": "We flew to Paris and then took the train to Rome."},
]


KEY_ENV = "FALCONER_TEST_TEACHER_KEY"
KEY = "test-key-" + os.urandom(8).hex()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, KEY_ENV: KEY,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "falconer_ray.teacher.gguf_server", "--model", "gemma3-270m",
         "--host", "127.0.0.1", "--port", str(port), "--n-ctx", "1024", "--threads", "1",
         "--api-key-env", KEY_ENV],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the GGUF server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                req = urllib.request.Request(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if json.load(r)["data"][0]["id"] == "gemma3-270m":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the GGUF server did not answer within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY_ENV


def test_annotate_through_ray_data_llm(server, key, ray_local, tmp_path):
    tcfg = OpenAITeacherConfig(model="gemma3-270m", url=server, api="completions", span_format="text",
                               timeout_s=120, batch_size=2, concurrency=1, qps=20, api_key_env=key)
    cfg = RunConfig(cache_dir=str(tmp_path / "cache"), teacher=tcfg)
    plan = Plan(instruction="people in positive reviews", steps=[
        Step(id="positive", op="get_label", instruction="Is this movie review positive?"),
        Step(id="person", op="get_span", instruction="Extract the names of people."),
    ], keep="positive")
    run = RunDir(tmp_path / "run").create()
    from falconer_ray.teacher import teacher_from_config

    teacher = teacher_from_config(tcfg)
    stats = annotate_documents(DOCS, plan, teacher, cfg, run)

    rows = load_annotations(run)
    assert [r["doc_id"] for r in rows] == ["a", "b", "c"] and stats["docs_failed"] == 0
    for r in rows:
        assert 0.0 <= r["labels"]["positive"] <= 1.0
        for s in r["spans"]["person"]:  # validated: exact substrings with offsets
            assert r["text"][s["start"]:s["end"]] == s["text"]
    probs = {r["doc_id"]: r["labels"]["positive"] for r in rows}
    assert len(set(probs.values())) > 1  # scored from logprobs, not a constant
    t = stats["teacher"]
    assert t["calls"] == 6 and t["calls_by_op"] == {"label": 3, "span": 3}
    per_op = t["per_op"]  # seconds and tokens per call of each kind: what the teacher-alone baseline scales
    assert set(per_op) == {"label", "span"} and per_op["label"]["input_tokens_per_call"] > 300
    assert per_op["span"]["output_tokens_per_call"] >= 1
    assert t["docs_per_s"] == pytest.approx(1 / (per_op["label"]["s_per_call"] + per_op["span"]["s_per_call"]), rel=0.01)
    assert stats["keep_fraction"] == round(sum(p >= 0.5 for p in probs.values()) / 3, 4)
    assert t["stats"]["calls"] == 6 and t["stats"]["prompt_tokens"] > 3 * 300
    assert t["stats"]["completion_tokens"] >= 3 and t["stats"]["errors"] == {}
    assert isinstance(stats["rejected"], dict)
    assert run.annotation_errors.read_text() == ""
    cfg.save(run.path)
    for f in run.path.rglob("*"):  # the key authenticated every call, and is written nowhere
        assert not f.is_file() or KEY not in f.read_text(errors="ignore"), f

    again = annotate_documents(DOCS, plan, teacher, cfg, run)  # cached: nothing paid
    assert again["teacher"]["calls"] == 0 and again["teacher"]["stats"]["calls"] == 0

    text = teacher.complete("The capital of France is", max_tokens=4, stop=["\n"])  # the planner's plain path
    assert isinstance(text, str) and teacher.stats.calls == 7


def test_chat_with_json_schema_spans(server, key, ray_local):
    teacher = make_teacher("openai", model="gemma3-270m", url=server, api="chat", span_format="json_object",
                           max_span_tokens=48, timeout_s=120, api_key_env=key)
    out = teacher.extract([DOCS[0]["text"]], "Extract the names of people.")
    assert len(out) == 1
    # Either a (bounded) list of strings, or - if the tiny model ran out of tokens - a counted rejection.
    if isinstance(out[0], Failed):
        assert out[0].reason == "truncated_json" and teacher.stats.rejected == {"truncated_json": 1}
    else:
        assert all(isinstance(s, str) and len(s) <= 80 for s in out[0]) and len(out[0]) <= 8
    assert teacher.stats.calls == 1 and teacher.stats.completion_tokens > 0


def test_server_failures_become_error_rows(server, key, ray_local, monkeypatch):
    texts = [d["text"] for d in DOCS[:2]]
    slow = make_teacher("openai", model="gemma3-270m", url=server, api="completions", span_format="text",
                        timeout_s=0.001, max_retries=1, retry_wait_s=0.01, api_key_env=key)
    got = slow.label(texts, "Is this movie review positive?")
    assert got == [Failed("timeout", got[0].detail)] * 2 and "attempts: 2" in got[0].detail
    assert slow.stats.errors == {"timeout": 2} and slow.stats.calls == 2

    wrong = make_teacher("openai", model="gemma3-270m", url=server + "/no-such-api", api="completions",
                         span_format="text", max_retries=3, api_key_env=key)
    got = wrong.extract(texts, "Extract the names of people.")
    assert [f.reason for f in got] == ["http_404", "http_404"]
    assert "attempts: 1" in got[0].detail  # a 404 is not retried

    monkeypatch.setenv(KEY_ENV, "not-the-key")
    denied = make_teacher("openai", model="gemma3-270m", url=server, api="completions", span_format="text",
                          api_key_env=key)
    assert [f.reason for f in denied.label(texts, "Positive?")] == ["http_401", "http_401"]
