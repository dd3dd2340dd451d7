"""`falconer serve` on real Ray Serve (127.0.0.1) with a real MiniLM proxy: the same answers
as the batch path, a clear 4xx for every bad request, the token, and the bounded load test."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pyarrow.dataset as pads
import pytest
import torch
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.config import RunConfig
from falconer_ray.eval.datasets import movie_reviews
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir
from mining_helpers import PLAN, split_point

TOKEN = "test-token-0123456789abcdef"
MAX_BATCH = 6
MAX_BYTES = 100_000
MAX_DOC_CHARS = 30_000
MAX_REQUEST_CHARS = 40_000


@pytest.fixture(scope="module")
def docs():
    reviews = [r["text"] for r in movie_reviews("rotten_tomatoes", limit=10)]
    long_doc = " ".join(r["text"] for r in movie_reviews("imdb", limit=4))  # several windows
    return reviews + [long_doc, "Émilie Dequenne est magnifique — un rôle 🎬 inoubliable."]


@pytest.fixture(scope="module")
def run(tmp_path_factory, docs, cache_dir):
    """A run directory with an untrained MiniLM proxy and thresholds that split the documents."""
    from falconer_ray.proxy import Proxy, ProxyModel

    root = tmp_path_factory.mktemp("serve")
    run = RunDir(root / "run").create()
    torch.manual_seed(0)
    ProxyModel.from_base("minilm").save(run.proxy)
    plan = Plan.model_validate(PLAN)
    plan.save(run.plan)
    proxy = Proxy.load(run.proxy)
    labels = proxy.label_scores(docs, PLAN["steps"][0]["instruction"])
    spans = [s.score for found in proxy.extract(docs, PLAN["steps"][1]["instruction"], threshold=0.0) for s in found]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
    cfg = RunConfig(corpus=str(corpus), id_field="id", cache_dir=cache_dir,
                    mine={"actors": 1, "label_threshold": split_point(labels), "span_threshold": split_point(spans)})
    cfg.save(run.path)
    return run


@pytest.fixture(scope="module")
def batch_answers(ray_local, run):
    """What `falconer run` writes for the same documents, by doc_id."""
    from falconer_ray.pipeline import stage_mine

    stage_mine(run, RunConfig.load(run.path))
    out = {}
    for row in pads.dataset(run.results).to_table().to_pylist():
        out[row["doc_id"]] = {"kept": True, "labels": {"positive": row["label_positive"]}, "spans": {"people": row["span_people"]}}
    for row in pads.dataset(run.filtered).to_table().to_pylist():
        out[row["doc_id"]] = {"kept": False, "labels": {"positive": row["label_positive"]}, "spans": {}}
    return out


def call(url: str, path: str, body=None, token: str | None = TOKEN, method: str | None = None,
         headers: dict | None = None) -> tuple[int, dict]:
    """(status, JSON body); fails the test if the server answers anything but JSON."""
    data = body if body is None or isinstance(body, bytes) or hasattr(body, "__next__") else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method or ("GET" if data is None else "POST"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow
class TestServer:
    @pytest.fixture(scope="class")
    def url(self, ray_local, batch_answers, run):
        from falconer_ray import serve as server
        from falconer_ray.bench.serve import free_port

        limits = server.Limits(max_batch=MAX_BATCH, max_request_bytes=MAX_BYTES, max_doc_chars=MAX_DOC_CHARS,
                               max_request_chars=MAX_REQUEST_CHARS, batch_chars=500)
        url = server.start(run, "127.0.0.1", free_port(), limits=limits, token=TOKEN)
        yield url
        server.stop()

    def test_answers_equal_the_batch_path(self, url, docs, batch_answers):
        assert {a["kept"] for a in batch_answers.values()} == {True, False}
        chunks = [docs[i:i + 3] for i in range(0, len(docs), 3)]
        with ThreadPoolExecutor(len(chunks)) as pool:  # concurrent: serve.batch pools them
            replies = list(pool.map(lambda texts: call(url, "/v1/mine", {"texts": texts}), chunks))
        assert all(status == 200 for status, _ in replies), replies
        served = [r for _, reply in replies for r in reply["results"]]
        assert len(served) == len(docs)
        spans_seen = 0
        for i, (got, text) in enumerate(zip(served, docs)):
            want = batch_answers[f"d{i}"]
            assert got["kept"] == want["kept"], i
            assert got["labels"] == pytest.approx(want["labels"], abs=1e-5)
            assert set(got["spans"]) == set(want["spans"])
            for step, spans in got["spans"].items():
                assert [(s["start"], s["end"], s["text"]) for s in spans] == \
                       [(s["start"], s["end"], s["text"]) for s in want["spans"][step]]
                assert [s["score"] for s in spans] == pytest.approx([s["score"] for s in want["spans"][step]], abs=1e-5)
                assert all(text[s["start"]:s["end"]] == s["text"] for s in spans)
                spans_seen += len(spans)
        assert spans_seen > 0

    def test_an_abandoned_long_text_stops_and_leaves_the_lane_answering(self, url, docs, batch_answers):
        """A client that gives up on a long text (the long lane) stops that work; the
        lane then answers the same text in full, as the batch path does."""
        long_at = max(range(len(docs)), key=lambda i: len(docs[i]))
        body = json.dumps({"texts": [docs[long_at]]}).encode()
        req = urllib.request.Request(url + "/v1/mine", data=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                                           "Content-Type": "application/json"})
        with pytest.raises(OSError):  # timed out: the client is gone
            urllib.request.urlopen(req, timeout=0.05).read()
        status, reply = call(url, "/v1/mine", {"texts": [docs[long_at]]})
        assert status == 200
        got, want = reply["results"][0], batch_answers[f"d{long_at}"]
        assert got["kept"] == want["kept"] and got["labels"] == pytest.approx(want["labels"], abs=1e-5)

    def test_health_and_plan(self, url, run):
        assert call(url, "/healthz", token=None) == (200, {"status": "ok"})
        status, body = call(url, "/v1/plan")
        assert status == 200 and body["plan"]["keep"] == "positive"
        assert body["label_threshold"] == RunConfig.load(run.path).mine.label_threshold
        assert body["max_batch"] == MAX_BATCH

    @pytest.mark.parametrize("token,scheme", [(None, None), ("wrong", "Bearer"), (TOKEN, "Basic"), (TOKEN + "x", "Bearer")])
    def test_token_is_required(self, url, token, scheme):
        headers = {"Authorization": f"{scheme} {token}"} if token else {}
        for path, body in (("/v1/mine", {"texts": ["A fine film."]}), ("/v1/plan", None)):
            status, reply = call(url, path, body, token=None, headers=headers)
            assert status == 401 and "token" in reply["error"]

    @pytest.mark.parametrize("body,method,path,status,reason", [
        (b"not json", None, "/v1/mine", 400, "not valid JSON"),
        (b"\xff\xfe\x00", None, "/v1/mine", 400, "not valid JSON"),
        (b'{"texts": ["a"', None, "/v1/mine", 400, "not valid JSON"),
        (b"[" * (MAX_BYTES + 1), None, "/v1/mine", 413, "--max-request-bytes"),
        (b"[" * 50_000, None, "/v1/mine", 400, "not valid JSON"),  # nesting deeper than Python recurses
        ((b'{"texts": ["', b"x" * MAX_BYTES, b'"]}'), None, "/v1/mine", 413, "--max-request-bytes"),  # chunked
        (["a", "b"], None, "/v1/mine", 422, "expected an object"),
        ({"text": "a"}, None, "/v1/mine", 422, "texts"),
        ({"texts": "one string"}, None, "/v1/mine", 422, "texts"),
        ({"texts": []}, None, "/v1/mine", 422, "at least 1"),
        ({"texts": ["ok", 3]}, None, "/v1/mine", 422, "texts.1"),
        ({"texts": ["ok", None]}, None, "/v1/mine", 422, "texts.1"),
        ({"texts": ["ok", "   "]}, None, "/v1/mine", 422, "texts[1] is empty"),
        ({"texts": ["bad \ud800 surrogate"]}, None, "/v1/mine", 422, "lone surrogate"),
        ({"texts": ["ok"], "extra": 1}, None, "/v1/mine", 422, "extra"),
        ({"texts": ["ok"] * (MAX_BATCH + 1)}, None, "/v1/mine", 413, "--max-batch"),
        ({"texts": ["x" * MAX_BYTES]}, None, "/v1/mine", 413, "--max-request-bytes"),
        ({"texts": ["ok", "y " * (MAX_DOC_CHARS // 2 + 1)]}, None, "/v1/mine", 413, "texts[1] has 30,002 characters"),
        ({"texts": ["z " * (MAX_REQUEST_CHARS // 4)] * 3}, None, "/v1/mine", 413, "--max-request-chars"),
        (None, "GET", "/v1/mine", 405, "takes POST"),
        ({"texts": ["ok"]}, None, "/v1/plan", 405, "takes GET"),
        (None, "GET", "/v2/mine", 404, "no route"),
    ])
    def test_bad_requests_get_a_clear_4xx(self, url, body, method, path, status, reason):
        if isinstance(body, tuple):
            body = iter(body)  # no length known: urllib sends it chunked
        got, reply = call(url, path, body, method=method)
        assert got == status and reason in reply["error"], reply
        assert "Traceback" not in reply["error"]

    @pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "10.0.0.1", "[2001:db8::1]:8000"])
    def test_a_foreign_host_header_is_refused(self, url, host):
        """A page whose name was rebound to 127.0.0.1 still sends its own name as Host."""
        status, reply = call(url, "/v1/mine", {"texts": ["A fine film."]}, headers={"Host": host})
        assert status == 400 and "Host header" in reply["error"]
        assert call(url, "/healthz", token=None, headers={"Host": "localhost:1"})[0] == 200

    def test_still_answers_after_bad_requests(self, url):
        status, reply = call(url, "/v1/mine", {"texts": ["Tom Hanks is superb."]})
        assert status == 200 and set(reply["results"][0]) == {"kept", "labels", "spans"}


@pytest.mark.slow
def test_load_test_reports_sane_figures(ray_local, run):
    from ray import serve

    from falconer_ray.bench.serve import run_serve_bench

    from falconer_ray.serve import Limits

    small = Limits(max_doc_chars=1000, max_request_chars=4000, batch_chars=1000)  # heavy requests a CI machine can take
    out = run_serve_bench(run.path, requests=8, concurrency=2, texts_per_request=3, source="rotten_tomatoes",
                          heavy=True, limits=small)
    assert out["ok"] == 8 and out["errors"] == 0, out["error_examples"]
    beside = out["beside_heavy"]
    assert beside["ok"] == 8 and beside["errors"] == 0, beside["error_examples"]  # no light request fails
    assert beside["heavy_request_chars"] == 4000 and sum(beside["heavy_outcomes"].values()) >= 1
    assert beside["p99_ratio"] > 0 and beside["light_after_abandoned_heavy_ms"] > 0
    assert beside["long_text_alone_ms"] > 0 and beside["long_text_after_abandoned_heavy_ms"] > 0
    assert beside["abandoned_work_kept_s"] >= 0
    lat = out["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert out["requests_per_s"] > 0 and out["docs_per_s"] == pytest.approx(3 * out["requests_per_s"], rel=0.01)
    assert out["wall_s"] > 0
    assert not serve.status().proxies  # it stopped the Serve it started


def test_serve_cli_errors_are_clear(tmp_path, monkeypatch):
    runner = CliRunner()
    missing = runner.invoke(app, ["serve", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "falconer plan" in missing.output
    run = RunDir(tmp_path / "run").create()
    Plan.model_validate(PLAN).save(run.plan)
    monkeypatch.delenv("FALCONER_TEST_TOKEN", raising=False)
    no_token = runner.invoke(app, ["serve", str(run.path), "--token-env", "FALCONER_TEST_TOKEN"])
    assert no_token.exit_code == 2 and "FALCONER_TEST_TOKEN is not set" in no_token.output
    untrained = runner.invoke(app, ["serve", str(run.path)])
    assert untrained.exit_code == 2 and "falconer train" in untrained.output
    for host in ("0.0.0.0", "192.0.2.7", "::"):  # off loopback, a token is not optional
        open_door = runner.invoke(app, ["serve", str(run.path), "--host", host])
        assert open_door.exit_code == 2 and "needs a token" in open_door.output, open_door.output
    for args in (["--requests", "0"], ["--concurrency", "0"], ["--texts-per-request", "0"]):
        bad = runner.invoke(app, ["bench", "serve", str(run.path), *args])
        assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_request_limits_and_host_rules():
    from falconer_ray.serve import hosts_allowed, host_name, pieces

    assert pieces(["aaaa", "bb", "c", "dddddd", "e"], 6) == [["aaaa", "bb"], ["c"], ["dddddd"], ["e"]]
    assert pieces(["x" * 10], 4) == [["x" * 10]]  # a text is never split
    assert [host_name(h) for h in ("LocalHost:8000", "127.0.0.1", "[::1]:80", "::1", "evil.example:1")] == \
        ["localhost", "127.0.0.1", "::1", "::1", "evil.example"]
    assert hosts_allowed("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert hosts_allowed("0.0.0.0") is None and hosts_allowed("0.0.0.0", ("api.example",)) == {"api.example"}
    assert hosts_allowed("192.0.2.7", ("api.example",)) == {"192.0.2.7", "api.example"}


@pytest.mark.slow
def test_a_full_queue_answers_503_at_once(ray_local, run):
    """A flood beyond what the replica takes in and `max_queued` waiting gets 503 at
    once; every request gets 200 or 503, nothing else."""
    import asyncio

    import aiohttp

    from falconer_ray import serve as server
    from falconer_ray.bench.serve import free_port

    url = server.start(run, "127.0.0.1", free_port(), limits=server.Limits(max_queued=2), token=TOKEN)

    async def flood(n: int) -> list[int]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = {"texts": ["A long, slow and thoughtful film about memory and loss. " * 20]}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            async def one() -> int:
                async with session.post(f"{url}/v1/mine", json=body, headers=headers) as r:
                    await r.read()
                    return r.status
            return await asyncio.gather(*(one() for _ in range(n)))

    try:
        statuses = asyncio.run(flood(120))
    finally:
        server.stop()
    assert set(statuses) == {200, 503}, statuses  # some answered, the rest shed; no other outcome
