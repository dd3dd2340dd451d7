"""`falconer serve`: a run's trained pipeline online, as one Ray Serve deployment.

POST /v1/mine {"texts": [...]} answers each text exactly as `falconer run` would:
both paths call `plan.execute.apply_plan`. Concurrent requests are pooled by `serve.batch`
into batches of about a second of work (`Limits.batch_chars`), and a large request enters the
pool a batch's worth at a time: small requests queued meanwhile ride in the next batch
instead of waiting for all of it, and a client that hangs up stops its request at the
next batch. A text longer than a batch goes to a lane of its own, so it never holds up
the short ones, and stops within a fraction of a batch's work when its client hangs up.
Everything a client sends is checked before it reaches the model (body size, JSON,
schema, characters per text and per request, token, Host), and every refusal is a 4xx
with a JSON `error`, never a traceback; a full queue answers 503 at once.

Routes: POST /v1/mine; GET /v1/plan (the plan and thresholds the answers follow);
GET /healthz (no token, for load balancers).

Ray is imported inside functions only: a private local Ray binds to loopback only
if it is configured before Ray's first import (see `ray_env.init_ray`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import threading
import time
from copy import copy

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from falconer_ray.config import RunConfig
from falconer_ray.mine.runtime_choice import choose_runtime
from falconer_ray.plan.execute import ProxyAnswers, apply_plan
from falconer_ray.plan.schema import Plan
from falconer_ray.proxy import Proxy, Stopped
from falconer_ray.ray_env import init_ray, with_gpus
from falconer_ray.rundir import RunDir

APP_NAME = "falconer"
ROUTES = {"/v1/mine": "POST", "/v1/plan": "GET", "/healthz": "GET"}
logger = logging.getLogger(__name__)


class ServeError(ValueError):
    """The server cannot start as asked; the message says why."""


class MineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr] = Field(min_length=1, description="Documents; long ones are windowed like in a run.")

    @field_validator("texts")
    @classmethod
    def _usable(cls, texts: list[str]) -> list[str]:
        # A run never gives the proxy an empty text (it is an `empty_text` error
        # there), and the tokenizer cannot take lone surrogates, which JSON allows.
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"texts[{i}] is empty")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"texts[{i}] is not valid Unicode (it has a lone surrogate)") from None
        return texts


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
BATCH_UNITS = 32  # a pooled batch's size, in parts of `Limits.batch_chars`


def is_loopback(host: str) -> bool:
    try:
        return host in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Limits(BaseModel):
    """How much work one request may ask for, and how long it may wait."""

    model_config = ConfigDict(extra="forbid")
    max_batch: int = Field(64, ge=1, le=65_536, description="Most texts one request may carry.")
    max_request_bytes: int = Field(1 << 20, ge=1024, description="Largest request body, in bytes.")
    max_doc_chars: int = Field(32_000, ge=100, description="Longest text, in characters.")
    max_request_chars: int = Field(256_000, ge=100, description="Most characters of all texts of one request.")
    batch_chars: int | None = Field(None, ge=100, description="Characters the proxy reads in one pooled batch, "
                                    "so about the longest a small request waits for work queued before it (a "
                                    "longer text is a batch of its own). Default: about a second of work, "
                                    "4,000 on CPUs, 32,000 on a GPU.")
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="A request still unanswered after this is "
                                     "cancelled and answered 408.")
    max_queued: int = Field(256, ge=1, description="Requests waiting for a replica beyond this get 503 at once.")

    def batch_budget(self, gpu: bool) -> int:
        return self.batch_chars or (32_000 if gpu else 4_000)


def hosts_allowed(bind: str, extra: tuple[str, ...] = ()) -> frozenset[str] | None:
    """Host header names a request may carry (None: any). Bound to loopback, only loopback
    names: a web page that rebinds its own name to 127.0.0.1 cannot reach the server."""
    if is_loopback(bind):
        return frozenset(LOOPBACK_NAMES | set(extra))
    if bind in ("0.0.0.0", "::", ""):
        return frozenset(extra) if extra else None
    return frozenset({bind, *extra})


def host_name(header: str) -> str:
    """The name of a Host header, without its port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Reject(Exception):
    """A request refused with an HTTP status and a reason for the client."""

    def __init__(self, status: int, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


class MineServer:
    """The deployment: one proxy per replica, plus the checks in front of it.

    Only the token's SHA-256 reaches the replica, so the token itself is never
    stored in Ray's deployment state.
    """

    def __init__(self, proxy_dir: str, plan_json: str, cfg_json: str, limits_json: str,
                 token_sha256: str | None, hosts: list[str] | None):
        from ray import serve

        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.plan = Plan.model_validate_json(plan_json)
        self.limits = Limits.model_validate_json(limits_json)
        self.proxy = Proxy.load(proxy_dir, batch_size=self.cfg.mine.windows_per_forward(),
                                runtime=self.cfg.proxy.runtime, threads=max(1, int(self.cfg.mine.cpus_per_actor)))
        self.answers = ProxyAnswers(self.proxy, self.cfg)
        self.token_sha256 = token_sha256
        self.hosts = frozenset(hosts) if hosts is not None else None
        self.budget = self.limits.batch_budget(gpu=bool(self.cfg.mine.gpus_per_actor))

        def size(requests: list[list[str]]) -> int:
            """Characters, a longer text counted as a full batch (it runs alone, never
            split), in 1/BATCH_UNITS of a batch: Serve compares max_batch_size with
            max_ongoing_requests as if it counted requests, and warns otherwise."""
            chars = sum(min(sum(map(len, texts)), self.budget) for texts in requests)
            return -(-chars * BATCH_UNITS // self.budget)

        # Two lanes: pooled batches of short texts, and texts longer than a batch one at a
        # time, so a short request never waits behind a long text (each lane runs one
        # batch at a time, in a thread of its own).
        self.short_lane = serve.batch(max_batch_size=BATCH_UNITS, batch_wait_timeout_s=0.01,
                                      batch_size_fn=size)(self._answer)
        # The long lane's proxy shares the model but runs forward batches of about half a
        # pooled batch's work (a window holds about 4 characters per token), asking
        # between two whether its client is still there.
        self.long_proxy = copy(self.proxy)
        self.long_proxy.batch_size = max(1, min(self.proxy.batch_size, self.budget // (8 * self.proxy.max_length)))
        self.long_answers = ProxyAnswers(self.long_proxy, self.cfg)
        self.long_lane = asyncio.Lock()

    async def _answer(self, requests: list[list[str]]) -> list[list[dict]]:
        """One apply_plan call for the texts of all pooled requests, off the event loop."""
        texts = [t for texts in requests for t in texts]
        answers = await asyncio.to_thread(apply_plan, self.answers, self.plan, texts)
        out, at = [], 0
        for texts in requests:
            out.append([a.to_dict() for a in answers[at: at + len(texts)]])
            at += len(texts)
        return out

    async def _answer_long(self, text: str) -> list[dict]:
        """One long text, alone. A cancelled request (client gone, timeout) stops the
        work at the next forward batch, and the lane is free once it has."""
        async with self.long_lane:
            gone = threading.Event()
            self.long_proxy.stop_when = gone.is_set
            work = asyncio.ensure_future(asyncio.to_thread(apply_plan, self.long_answers, self.plan, [text]))
            try:
                answers = await asyncio.shield(work)
            except asyncio.CancelledError:
                gone.set()
                try:
                    await work
                except Stopped:
                    pass
                raise
            return [a.to_dict() for a in answers]

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        try:
            return JSONResponse(await self._route(request))
        except Reject as e:
            return JSONResponse({"error": e.reason}, status_code=e.status, headers=e.headers)
        except Exception:  # the client gets no internals; the replica's log has the traceback
            logger.exception("request failed")
            return JSONResponse({"error": "internal error; see the server log"}, status_code=500)

    async def _route(self, request) -> dict:
        path, method = request.url.path, request.method
        if path not in ROUTES:
            raise Reject(404, f"no route {path}: use POST /v1/mine, GET /v1/plan or GET /healthz")
        if method != ROUTES[path]:
            raise Reject(405, f"{path} takes {ROUTES[path]}, not {method}", {"Allow": ROUTES[path]})
        if self.hosts is not None and host_name(request.headers.get("host", "")) not in self.hosts:
            raise Reject(400, "the Host header names another server; use the address the server listens on")
        if path == "/healthz":
            return {"status": "ok"}
        self._authorize(request.headers.get("authorization", ""))
        if path == "/v1/plan":
            return {"plan": json.loads(self.plan.to_json()), "label_threshold": self.cfg.mine.label_threshold,
                    "span_threshold": self.cfg.mine.span_threshold, "label_pooling": self.cfg.proxy.label_pooling,
                    **self.limits.model_dump(), "batch_chars": self.budget}
        texts = self._texts(await self._body(request))
        results = []
        for piece in pieces(texts, self.budget):  # a cancelled request stops here
            if len(piece) == 1 and len(piece[0]) > self.budget:
                results += await self._answer_long(piece[0])
            else:
                results += await self.short_lane(piece)
        return {"results": results}

    def _authorize(self, header: str) -> None:
        if self.token_sha256 is None:
            return
        scheme, _, given = header.partition(" ")
        digest = hashlib.sha256(given.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(digest, self.token_sha256):
            raise Reject(401, "missing or wrong token: send `Authorization: Bearer TOKEN`",
                         {"WWW-Authenticate": "Bearer"})

    async def _body(self, request) -> bytes:
        """The body, read no further than the limit (a chunked body has no length to check first)."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limits.max_request_bytes:
            raise Reject(413, f"body is {declared} bytes; this server takes at most {self.limits.max_request_bytes} (--max-request-bytes)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.limits.max_request_bytes:
                raise Reject(413, f"body exceeds {self.limits.max_request_bytes} bytes (--max-request-bytes)")
        return bytes(body)

    def _texts(self, body: bytes) -> list[str]:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, huge ints, deep nesting
            raise Reject(400, f"body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise Reject(422, f'body is a JSON {type(data).__name__}; expected an object {{"texts": ["...", ...]}}')
        try:
            texts = MineRequest.model_validate(data).texts
        except ValidationError as e:
            problems = [f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:5]]
            raise Reject(422, '; '.join(problems) + ' (expected {"texts": ["...", ...]})') from None
        if len(texts) > self.limits.max_batch:
            raise Reject(413, f"{len(texts)} texts; this server takes at most {self.limits.max_batch} per request (--max-batch)")
        longest = max(range(len(texts)), key=lambda i: len(texts[i]))
        if len(texts[longest]) > self.limits.max_doc_chars:
            raise Reject(413, f"texts[{longest}] has {len(texts[longest]):,} characters; this server takes at most "
                              f"{self.limits.max_doc_chars:,} per text (--max-doc-chars)")
        total = sum(map(len, texts))
        if total > self.limits.max_request_chars:
            raise Reject(413, f"the texts have {total:,} characters in all; this server takes at most "
                              f"{self.limits.max_request_chars:,} per request (--max-request-chars)")
        return texts


def pieces(texts: list[str], budget: int) -> list[list[str]]:
    """Consecutive runs of `texts` of at most `budget` characters (a longer text alone)."""
    out: list[list[str]] = []
    size = budget + 1
    for text in texts:
        if size + len(text) > budget:
            out.append([])
            size = 0
        out[-1].append(text)
        size += len(text)
    return out


def token_from_env(name: str) -> str:
    """The bearer token, from the environment only: never a flag (shell history, `ps`) or a file."""
    token = os.environ.get(name, "")
    if not token.strip():
        raise ServeError(f"--token-env {name}: the environment variable {name} is not set or is empty")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ServeError(f"--token-env {name}: the token must be printable ASCII without spaces (it goes in an HTTP header)")
    return token


def start(run: RunDir, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, limits: Limits | None = None,
          token: str | None = None, access_log: bool = True, allowed_hosts: tuple[str, ...] = ()) -> str:
    """Deploy the run's plan and proxy on Ray Serve and return the base URL.

    Off loopback a token is required: anyone who can reach the address could use it.
    Serve's HTTP options are fixed for the life of a Serve instance, so this refuses
    to join one that is already running (its address could differ from the one asked).
    """
    limits = limits or Limits()
    if token is None and not is_loopback(host):
        raise ServeError(f"listening on {host} needs a token: pass --token-env NAME (anyone who can reach "
                         "the address could use the server otherwise)")
    plan = Plan.load(run.require(run.plan, "plan"))
    proxy_dir = run.require(run.proxy / "proxy.json", "train").parent
    cfg = RunConfig.load(run.path) if run.config.exists() else RunConfig()
    try:  # a taken port fails here in a line, not deep in Serve's proxy actor
        socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET).close()
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    init_ray()
    from ray import serve

    cfg, _ = choose_runtime(run, plan, with_gpus(cfg))  # the same answers online as mining gives
    if serve.status().proxies:
        raise ServeError("Ray Serve is already running on this Ray cluster; stop it first (`serve shutdown`)")
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": limits.request_timeout_s})
    deployment = serve.deployment(
        MineServer, name="MineServer", num_replicas=replicas, max_ongoing_requests=64,
        max_queued_requests=limits.max_queued,
        ray_actor_options={"num_cpus": cfg.mine.cpus_per_actor, "num_gpus": cfg.mine.gpus_per_actor})
    token_sha256 = hashlib.sha256(token.encode()).hexdigest() if token else None
    hosts = hosts_allowed(host, tuple(h.lower() for h in allowed_hosts))
    try:
        serve.run(deployment.bind(str(proxy_dir), plan.model_dump_json(by_alias=True), cfg.model_dump_json(),
                                  limits.model_dump_json(), token_sha256, sorted(hosts) if hosts is not None else None),
                  name=APP_NAME, route_prefix="/", logging_config={"enable_access_log": access_log})
    except Exception as e:  # e.g. a replica cannot load the proxy: Serve retries, then gives up
        serve.shutdown()
        raise ServeError(f"the deployment failed to start ({str(e).strip().splitlines()[-1]}); "
                         "the replica's error is in the log above") from e
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def stop() -> None:
    """Shut down the Serve instance `start` made (HTTP proxy, controller, replicas)."""
    from ray import serve

    serve.shutdown()


def serve_until_interrupted() -> None:
    """Block until Ctrl-C or SIGTERM, then stop Serve and leave Ray."""
    import ray

    def interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        ray.shutdown()
