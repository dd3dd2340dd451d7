"""Remote teacher backends without a model: request building, answer parsing,
HTTP retries against a real loopback server, config/CLI wiring, vLLM plumbing, cost."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from falconer_ray.annotate import AnnotationCache, cached_extract, cached_label
from falconer_ray.config import EmbeddedTeacherConfig, OpenAITeacherConfig, RunConfig, VLLMTeacherConfig, merge
from falconer_ray.teacher import make_teacher, prompts, teacher_from_config
from falconer_ray.teacher.base import Failed, TeacherStats
from falconer_ray.teacher.batched import answers, requests
from falconer_ray.teacher.batched.http import ResilientSession, RetryPolicy, post_json, unwrap

# ------------------------------------------------------------------ requests


def test_label_requests_per_api():
    comp = requests.to_openai(requests.label_request("Great film.", "Positive?", api="completions",
                                                     label_mode="logprobs"), "m", "text")
    assert comp["prompt"] == prompts.label_prompt("Positive?", "Great film.")  # same prompt as embedded
    assert comp["max_tokens"] == 1 and comp["logprobs"] == requests.TOP_LOGPROBS and comp["temperature"] == 0
    chat = requests.to_openai(requests.label_request("Great film.", "Positive?", api="chat", label_mode="logprobs"),
                              "m", "json_schema")
    assert chat["messages"] == prompts.label_messages("Positive?", "Great film.")
    assert chat["logprobs"] is True and chat["top_logprobs"] == requests.TOP_LOGPROBS
    gen = requests.to_openai(requests.label_request("x", "q", api="chat", label_mode="generate",
                                                    temperature=0.7, seed=3), "m", "text")
    assert "logprobs" not in gen and gen["seed"] == 3 and gen["temperature"] == 0.7


def test_span_requests_bound_the_answer():
    schema_req = requests.span_request("Tom met Ann.", "Names?", api="chat", span_format="json_schema",
                                       max_span_tokens=200)
    body = requests.to_openai(schema_req, "m", "json_schema")
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["spans"]["maxItems"] == prompts.MAX_SPAN_ITEMS
    assert schema["properties"]["spans"]["items"]["maxLength"] == prompts.MAX_SPAN_CHARS
    assert body["max_tokens"] == 200
    assert json.loads(body["messages"][1]["content"]) == {"spans": ["Boston", "Denver"]}  # demos in JSON
    llama = requests.to_openai(schema_req, "m", "json_object")
    assert llama["response_format"] == {"type": "json_object", "schema": schema}
    text = requests.to_openai(requests.span_request("d", "q", api="completions", span_format="text",
                                                    max_span_tokens=200), "m", "text")
    assert text["stop"] == ["\n"] and text["max_tokens"] == requests.SPAN_TEXT_TOKENS
    assert "response_format" not in text
    vllm = requests.to_vllm(schema_req)
    assert vllm["sampling_params"]["structured_outputs"] == {"json": schema}
    assert vllm["messages"] == schema_req["messages"]


# ------------------------------------------------------------------- answers


def _comp(text, top=None, finish="stop"):
    choice = {"text": text, "finish_reason": finish}
    if top is not None:
        choice["logprobs"] = {"top_logprobs": [top]}
    return {"choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}


def test_label_from_logprobs_and_text():
    p, rej = answers.parse_label(_comp(" yes", {" yes": math.log(0.6), " Yes": math.log(0.1),
                                                " no": math.log(0.1), " the": math.log(0.2)}))
    assert p == pytest.approx(0.7 / 0.8) and rej == {}
    chat = {"choices": [{"message": {"content": "No"}, "logprobs": {"content": [
        {"token": "No", "logprob": math.log(0.9), "top_logprobs": [
            {"token": "No", "logprob": math.log(0.9)}, {"token": "Yes", "logprob": math.log(0.05)}]}]}}]}
    assert answers.parse_label(chat)[0] == pytest.approx(0.05 / 0.95)
    assert answers.parse_label(_comp(" Yes.", None))[0] == 1.0  # no logprobs: the word decides
    assert answers.parse_label(_comp(" no", {" The": -0.1}))[0] == 0.0  # top has no yes/no
    failed, rej = answers.parse_label(_comp(" maybe", None))
    assert isinstance(failed, Failed) and failed.reason == "label_unparsed" and rej == {"label_unparsed": 1}
    # Arrow may fill absent keys with None: ignored, not a crash
    assert answers.parse_label(_comp(" yes", {" yes": -0.1, " no": None}))[0] == 1.0


def test_spans_from_text_and_json():
    doc = "Tom met Ann\nin Paris."
    items, rej = answers.parse_spans(_comp(" Tom | Ann in Paris"), doc, "text")
    assert items == ["Tom", "Ann\nin Paris"]  # mapped back onto the original line break
    items, rej = answers.parse_spans(_comp(" Tom | Ann | Par", finish="length"), doc, "text")
    assert items == ["Tom", "Ann"] and rej == {"truncated": 1}
    items, rej = answers.parse_spans({"choices": [{"message": {"content": '{"spans": ["Tom", 3, "Ann"]}'}}]},
                                     doc, "json_schema")
    assert items == ["Tom", "Ann"] and rej == {"not_a_string": 1}
    cut = {"choices": [{"message": {"content": '{"spans": ["To'}, "finish_reason": "length"}]}
    failed, rej = answers.parse_spans(cut, doc, "json_schema")
    assert failed.reason == "truncated_json" and rej == {"truncated_json": 1}


def test_error_bodies_become_failed():
    assert answers.parse_label({"falconer_error": "timeout", "detail": "x"})[0] == Failed("timeout", "x")
    assert answers.parse_label({"error": {"message": "model not found"}})[0].reason == "api_error"
    assert answers.parse_spans({"choices": []}, "d", "text")[0].reason == "no_choices"
    assert answers.usage({"usage": {"prompt_tokens": 3, "completion_tokens": 2}}) == (3, 2)


# ----------------------------------------------- HTTP retries, real loopback server


class _Scripted(BaseHTTPRequestHandler):
    """Answers POSTs with a script of (status, body, delay_s); the last entry repeats."""

    script: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(self.headers.get("Authorization"))
        status, body, delay = self.script[min(len(self.seen) - 1, len(self.script) - 1)]
        time.sleep(delay)
        data = body.encode()
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client timed out first
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    """A real HTTP server on 127.0.0.1; set `.script` before calling it."""
    handler = type("H", (_Scripted,), {"script": [], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/v1/completions"
    yield handler
    server.shutdown()
    server.server_close()


OK = json.dumps({"choices": [{"text": " yes", "finish_reason": "stop"}], "usage": {"prompt_tokens": 5}})
FAST = RetryPolicy(max_retries=2, base_wait_s=0.01, timeout_s=2.0)


def test_post_json_retries_429_then_succeeds(scripted):
    scripted.script = [(429, "{}", 0), (503, "busy", 0), (200, OK, 0)]
    assert post_json(scripted.url, {"x": 1}, {"Authorization": "Bearer k"}, FAST)["usage"]["prompt_tokens"] == 5
    assert scripted.seen == ["Bearer k"] * 3


def test_post_json_gives_up_with_a_reason(scripted):
    scripted.script = [(500, "boom", 0)]
    body = post_json(scripted.url, {}, {}, FAST)
    assert body["falconer_error"] == "http_500" and "attempts: 3" in body["detail"]
    assert len(scripted.seen) == 3
    scripted.seen.clear()
    scripted.script = [(404, '{"error": "no such route"}', 0)]
    assert post_json(scripted.url, {}, {}, FAST)["falconer_error"] == "http_404"
    assert len(scripted.seen) == 1  # not worth retrying


def test_resilient_session_as_ray_uses_it(scripted):
    """The exact calls Ray Data LLM's HTTP stage makes on its session_factory."""
    scripted.script = [(429, "{}", 0), (200, OK, 0)]

    async def go(policy, n, url=scripted.url):
        async with ResilientSession(policy) as session:
            pending = [session.post(url, headers={}, data="{}") for _ in range(n)]
            out = []
            for req in pending:
                async with await req as resp:
                    assert resp.status == 200
                    out.append(unwrap(await resp.json()))
            return out

    got = asyncio.run(go(FAST, 1))
    assert got[0]["choices"][0]["text"] == " yes"
    scripted.seen.clear()
    scripted.script = [(200, OK, 0.5)]
    t0 = time.monotonic()
    slow = asyncio.run(go(RetryPolicy(max_retries=1, base_wait_s=0.01, timeout_s=0.1), 3))
    assert [b["falconer_error"] for b in slow] == ["timeout"] * 3
    assert time.monotonic() - t0 < 2.0  # the three ran concurrently, each bounded by the timeout
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/v1/completions"
    bad = asyncio.run(go(RetryPolicy(max_retries=1, base_wait_s=0.01, timeout_s=1), 1, closed))
    assert bad[0]["falconer_error"] == "connection_error" and "attempts: 2" in bad[0]["detail"]


def test_retry_policy_backoff():
    p = RetryPolicy(base_wait_s=0.5, max_wait_s=3)
    assert [p.wait(a) for a in range(4)] == [0.5, 1.0, 2.0, 3]
    assert p.wait(0, "2") == 2.0 and p.wait(0, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.5


# ---------------------------------------------------------- config and CLI


def test_teacher_config_validation():
    with pytest.raises(ValueError, match="url"):
        OpenAITeacherConfig(model="m")
    with pytest.raises(ValueError, match="model"):
        VLLMTeacherConfig()
    with pytest.raises(ValueError, match="api=chat"):
        VLLMTeacherConfig(model="m", api="completions", span_format="json_schema")
    # each backend holds its own fields: one set for another backend is refused by name
    with pytest.raises(ValueError, match="url"):
        RunConfig.model_validate({"teacher": {"kind": "embedded", "url": "http://127.0.0.1:9/v1"}})
    # a config saved flat (every backend's fields, the others at their defaults) still loads
    flat = {"kind": "openai", "model": "m", "url": "http://127.0.0.1:9/v1", "tensor_parallel_size": 1,
            "engine_kwargs": {}, "max_model_len": None, "price": {"prompt_per_1m": 0.0, "gpu_hour": 0.0}}
    assert RunConfig.model_validate({"teacher": flat}).teacher == OpenAITeacherConfig(model="m", url="http://127.0.0.1:9/v1")
    # --teacher embedded over a config file's openai teacher: the endpoint's settings do not follow
    switched = merge(RunConfig(teacher=OpenAITeacherConfig(model="m", url="http://127.0.0.1:9/v1", qps=5)),
                     {"teacher.kind": "embedded", "teacher.model": None})
    assert switched.teacher == EmbeddedTeacherConfig()
    with pytest.raises(ValueError) as e:
        RunConfig.model_validate({"teacher": {"api_key_env": "sk-secret-value-123"}})
    assert "sk-secret" not in str(e.value)  # a pasted key is not echoed


def test_the_default_embedded_model_is_named_once(monkeypatch):
    from falconer_ray.config.teacher import DEFAULT_EMBEDDED_MODEL, MODEL_ENV
    from falconer_ray.teacher.gguf_models import ALIASES

    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert EmbeddedTeacherConfig().model_name() == DEFAULT_EMBEDDED_MODEL in ALIASES
    monkeypatch.setenv(MODEL_ENV, "qwen2.5-0.5b")  # a house default
    assert EmbeddedTeacherConfig().model_name() == "qwen2.5-0.5b"
    assert EmbeddedTeacherConfig(model="gemma3-270m").model_name() == "gemma3-270m"  # a named model wins


def test_openai_teacher_key_from_env_only(monkeypatch, tmp_path):
    cfg = OpenAITeacherConfig(model="m", url="http://127.0.0.1:9/v1", api_key_env="FALCONER_TEST_KEY")
    monkeypatch.delenv("FALCONER_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="FALCONER_TEST_KEY is not set"):
        teacher_from_config(cfg)
    monkeypatch.setenv("FALCONER_TEST_KEY", "sk-very-secret")
    t = teacher_from_config(cfg)
    assert t._headers == {"Authorization": "Bearer sk-very-secret"}
    assert t.name == "openai:m:chat:logprobs:json_schema"
    run_cfg = RunConfig(teacher=cfg)
    run_cfg.save(tmp_path)
    assert "sk-very-secret" not in (tmp_path / "config.json").read_text()
    assert "FALCONER_TEST_KEY" in (tmp_path / "config.json").read_text()


def test_cli_teacher_flags_reach_the_config(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from falconer_ray.cli.main import app

    monkeypatch.setenv("FALCONER_TEST_KEY", "sk-very-secret")
    yaml = tmp_path / "cfg.yaml"
    yaml.write_text("teacher:\n  kind: openai\n  model: from-yaml\n  url: http://127.0.0.1:9/v1\n"
                    "  max_retries: 0\n  timeout_s: 0.5\n  price: {prompt_per_1m: 2.5}\n")
    res = CliRunner().invoke(app, ["plan", "Find positive reviews", "--out", str(tmp_path / "run"),
                                   "--config", str(yaml), "--teacher-model", "from-flag",
                                   "--teacher-api-key-env", "FALCONER_TEST_KEY"])
    assert res.exit_code == 2  # nothing listens on port 9: a one-line error, not a traceback
    assert "connection_error" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["plan", "x", "--out", str(tmp_path / "r2"), "--teacher", "openai"])
    assert res.exit_code == 2 and "needs a url" in res.output
    res = CliRunner().invoke(app, ["plan", "x", "--out", str(tmp_path / "r3"), "--teacher", "gpt"])
    assert res.exit_code == 2 and "embedded" in res.output


def test_make_teacher_kinds():
    with pytest.raises(ValueError, match="openai"):
        make_teacher("anthropic-someday")
    with pytest.raises(ValueError, match="URL"):
        make_teacher("openai", model="m", url="ftp://x")


# ------------------------------------------------------------ failed answers


class _Flaky:
    """A teacher whose second document always fails (as a remote one can)."""

    name = "flaky"
    max_doc_chars = 100
    call_chunk = None

    def __init__(self):
        self.stats = TeacherStats()
        self.asked = 0

    def label(self, texts, instruction, on_progress=None):
        self.asked += len(texts)
        return [Failed("timeout", "slow") if "2" in t else 0.8 for t in texts]

    def extract(self, texts, instruction, on_progress=None):
        self.asked += len(texts)
        return [Failed("http_429") if "2" in t else ["doc"] for t in texts]

    def complete(self, prompt, max_tokens, stop=None, grammar=None):
        return ""


def test_failed_answers_are_reported_and_never_cached():
    t, cache = _Flaky(), AnnotationCache(":memory:")
    texts = ["doc 1", "doc 2", "doc 3"]
    lab = cached_label(t, cache, texts, "q")
    assert lab.probs == [0.8, None, 0.8] and lab.errors == {1: Failed("timeout", "slow")}
    ext = cached_extract(t, cache, texts, "q")
    assert ext.spans[1] is None and ext.errors[1].reason == "http_429" and ext.spans[0][0].text == "doc"
    again = cached_label(t, cache, texts, "q")
    assert again.calls == 1 and again.errors  # only the failed document is asked again


def test_self_consistency_votes():
    from falconer_ray.teacher.batched.base import combine_votes, result_row

    def vote(v):
        return result_row({"i": 0}, v, {}, (10, 1))

    assert combine_votes([vote(1.0), vote(0.0), vote(1.0), vote(Failed("label_unparsed"))]) == pytest.approx(2 / 3)
    assert combine_votes([vote(0.25)]) == 0.25
    assert combine_votes([vote(Failed("timeout", "x")), vote(Failed("timeout", "y"))]) == Failed("timeout", "x")
    t = make_teacher("openai", model="m", url="http://127.0.0.1:9/v1", label_mode="generate", votes=5)
    assert t.votes == 5 and t.name == "openai:m:chat:generate:votes5:json_schema"
    assert make_teacher("openai", model="m", url="http://127.0.0.1:9/v1", votes=5).votes == 1  # logprobs: one score


# ---------------------------------------------------------------- vLLM plumbing


def test_vllm_config_and_rows():
    from ray.data.llm import vLLMEngineProcessorConfig

    from falconer_ray.teacher.batched.vllm import VLLMTeacher, _result_or_engine_error, vllm_request, vllm_result

    cfg = VLLMTeacherConfig(model="Qwen/Qwen2.5-7B-Instruct", tensor_parallel_size=2, concurrency=4,
                        batch_size=64, max_model_len=4096, engine_kwargs={"gpu_memory_utilization": 0.85},
                        accelerator_type="A100")
    t = teacher_from_config(cfg)
    assert isinstance(t, VLLMTeacher) and t.name.startswith("vllm:Qwen/Qwen2.5-7B-Instruct:chat")
    pc = t.processor_config()
    assert isinstance(pc, vLLMEngineProcessorConfig)
    assert pc.engine_kwargs["tensor_parallel_size"] == 2 and pc.engine_kwargs["max_model_len"] == 4096
    assert pc.engine_kwargs["gpu_memory_utilization"] == 0.85 and pc.concurrency == 4 and pc.batch_size == 64
    assert pc.should_continue_on_error is True
    assert pc.accelerator_type == "A100"  # engines only on the nodes that have that GPU (cluster.yaml's llm_workers)
    assert teacher_from_config(VLLMTeacherConfig(model="m")).processor_config().accelerator_type is None

    kw = dict(instruction="Positive?", api="completions", label_mode="logprobs", span_format="text",
              max_span_tokens=64, votes=1, vote_temperature=0.7)
    req = vllm_request({"i": 0, "v": 0, "doc": "Great."}, op="label", **kw)
    assert req["prompt"] == prompts.label_prompt("Positive?", "Great.")
    assert req["sampling_params"] == {"max_tokens": 1, "temperature": 0.0, "logprobs": requests.TOP_LOGPROBS}
    # An engine output row as Ray's vLLM stage leaves it (token id -> logprob info)
    out = {**req, "i": 0, "doc": "Great.", "generated_text": " yes", "num_input_tokens": 300,
           "num_generated_tokens": 1, "logprobs": [{"5": {"logprob": math.log(0.75), "rank": 1, "decoded_token": " yes"},
                                                    "6": {"logprob": math.log(0.25), "rank": 2, "decoded_token": " no"}}]}
    row = vllm_result(out, op="label", span_format="text")
    assert json.loads(row["value"]) == pytest.approx(0.75) and row["prompt_tokens"] == 300 and not row["error"]
    span_req = vllm_request({"i": 1, "v": 0, "doc": "Tom met Ann."}, op="span",
                            **{**kw, "api": "chat", "span_format": "json_schema"})
    assert span_req["sampling_params"]["structured_outputs"]["json"]["required"] == ["spans"]
    span_out = {**span_req, "i": 1, "doc": "Tom met Ann.", "generated_text": '{"spans": ["Tom", "Ann"]}',
                "num_input_tokens": 90, "num_generated_tokens": 9}
    assert json.loads(vllm_result(span_out, op="span", span_format="json_schema")["value"]) == ["Tom", "Ann"]
    err = _result_or_engine_error({"i": 2, "__inference_error__": "CUDA out of memory", "doc": "x"})
    assert err["error"] == "engine_error" and "out of memory" in err["detail"]


# ---------------------------------------------------------------------- cost


def test_run_cost_prices_tokens_and_each_stages_hardware():
    from falconer_ray.cost.accounting import run_cost

    gpu = {"hardware": {"gpu": {"usd_per_hour": 3.6}, "node": {"usd_per_hour": 0.36}}}
    cfg = RunConfig(teacher=OpenAITeacherConfig(model="m", url="http://127.0.0.1:1/v1"),
                    prices={**gpu, "prompt_per_1m": 2.0, "completion_per_1m": 8.0, "teacher": {"hardware": "node"},
                            "train": {"hardware": "gpu", "units": 2}, "mine": {"hardware": "node", "units": 3}})
    plan = {"stats": {"calls": 1, "prompt_tokens": 500_000, "completion_tokens": 0, "seconds": 2}}
    ann = {"teacher": {"stats": {"calls": 10, "prompt_tokens": 500_000, "completion_tokens": 250_000, "seconds": 8}}}
    cost = run_cost(plan, ann, {"wall_s": 100}, {"mine_s": 50, "actors": [1, 2], "docs_in": 1000}, cfg)
    assert cost["teacher"] == {"calls": 11, "prompt_tokens": 1_000_000, "completion_tokens": 250_000,
                               "seconds": 10.0, "usd": pytest.approx(4.0 + 10 / 3600 * 0.36)}
    # the proxy on its own hardware, not the teacher's
    assert cost["stages"]["proxy"]["usd"] == pytest.approx(100 / 3600 * 3.6 * 2 + 50 / 3600 * 0.36 * 3)
    assert cost["usd"] == pytest.approx(cost["teacher"]["usd"] + cost["stages"]["proxy"]["usd"])
    # a config from before the one table: teacher.price's device hour becomes the teacher's hardware
    local = RunConfig.model_validate({"teacher": {"kind": "vllm", "model": "m", "tensor_parallel_size": 2,
                                                  "concurrency": 2, "price": {"gpu_hour": 3.6}}})
    assert run_cost({}, ann, {}, {}, local)["stages"]["annotate"]["usd"] == pytest.approx(8 / 3600 * 4 * 3.6)
