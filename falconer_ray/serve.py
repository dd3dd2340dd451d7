"""`falconer serve`: a run's trained pipeline online, as one Ray Serve deployment.

POST /v1/mine {"texts": [...]} answers each text exactly as `falconer run` would:
both paths call `plan.execute.apply_plan`. Concurrent requests are pooled by `serve.batch`,
so the proxy sees batches as large as a mining actor's. Everything a client sends
is checked before it reaches the model (body size, JSON, schema, limits, token),
and every refusal is a 4xx with a JSON `error`, never a traceback.

Routes: POST /v1/mine; GET /v1/plan (the plan and thresholds the answers follow);
GET /healthz (no token, for load balancers).

Ray is imported inside functions only: a private local Ray binds to loopback only
if it is configured before Ray's first import (see `ray_env.init_ray`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import time

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from falconer_ray.config import RunConfig
from falconer_ray.mine.runtime_choice import choose_runtime
from falconer_ray.plan.execute import ProxyAnswers, apply_plan
from falconer_ray.plan.schema import Plan
from falconer_ray.proxy import Proxy
from falconer_ray.ray_env import init_ray
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

    def __init__(self, proxy_dir: str, plan_json: str, cfg_json: str, max_batch: int,
                 max_request_bytes: int, token_sha256: str | None):
        from ray import serve

        self.cfg = RunConfig.model_validate_json(cfg_json)
        self.plan = Plan.model_validate_json(plan_json)
        self.proxy = Proxy.load(proxy_dir, batch_size=self.cfg.mine.windows_per_forward(),
                                runtime=self.cfg.proxy.runtime, threads=max(1, int(self.cfg.mine.cpus_per_actor)))
        self.answers = ProxyAnswers(self.proxy, self.cfg)
        self.max_batch, self.max_bytes, self.token_sha256 = max_batch, max_request_bytes, token_sha256
        self.answer = serve.batch(max_batch_size=max(max_batch, self.cfg.mine.docs_per_call()),
                                  batch_wait_timeout_s=0.01, batch_size_fn=lambda reqs: sum(map(len, reqs)))(self._answer)

    async def _answer(self, requests: list[list[str]]) -> list[list[dict]]:
        """One apply_plan call for the texts of all pooled requests, off the event loop."""
        texts = [t for texts in requests for t in texts]
        answers = await asyncio.to_thread(apply_plan, self.answers, self.plan, texts)
        out, at = [], 0
        for texts in requests:
            out.append([a.to_dict() for a in answers[at: at + len(texts)]])
            at += len(texts)
        return out

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
        if path == "/healthz":
            return {"status": "ok"}
        self._authorize(request.headers.get("authorization", ""))
        if path == "/v1/plan":
            return {"plan": json.loads(self.plan.to_json()), "label_threshold": self.cfg.mine.label_threshold,
                    "span_threshold": self.cfg.mine.span_threshold, "label_pooling": self.cfg.proxy.label_pooling,
                    "max_batch": self.max_batch, "max_request_bytes": self.max_bytes}
        texts = self._texts(await self._body(request))
        return {"results": await self.answer(texts)}

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
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise Reject(413, f"body is {declared} bytes; this server takes at most {self.max_bytes} (--max-request-bytes)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_bytes:
                raise Reject(413, f"body exceeds {self.max_bytes} bytes (--max-request-bytes)")
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
        if len(texts) > self.max_batch:
            raise Reject(413, f"{len(texts)} texts; this server takes at most {self.max_batch} per request (--max-batch)")
        return texts


def token_from_env(name: str) -> str:
    """The bearer token, from the environment only: never a flag (shell history, `ps`) or a file."""
    token = os.environ.get(name, "")
    if not token.strip():
        raise ServeError(f"--token-env {name}: the environment variable {name} is not set or is empty")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ServeError(f"--token-env {name}: the token must be printable ASCII without spaces (it goes in an HTTP header)")
    return token


def start(run: RunDir, host: str = "127.0.0.1", port: int = 8000, replicas: int = 1, max_batch: int = 64,
          max_request_bytes: int = 1 << 20, token: str | None = None, access_log: bool = True) -> str:
    """Deploy the run's plan and proxy on Ray Serve and return the base URL.

    Serve's HTTP options are fixed for the life of a Serve instance, so this refuses
    to join one that is already running (its address could differ from the one asked).
    """
    plan = Plan.load(run.require(run.plan, "plan"))
    proxy_dir = run.require(run.proxy / "proxy.json", "train").parent
    cfg = RunConfig.load(run.path) if run.config.exists() else RunConfig()
    try:  # a taken port fails here in a line, not deep in Serve's proxy actor
        socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET).close()
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    init_ray()
    from ray import serve

    cfg, _ = choose_runtime(run, plan, cfg)  # the same answers online as mining gives
    if serve.status().proxies:
        raise ServeError("Ray Serve is already running on this Ray cluster; stop it first (`serve shutdown`)")
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(
        MineServer, name="MineServer", num_replicas=replicas, max_ongoing_requests=64,
        ray_actor_options={"num_cpus": cfg.mine.cpus_per_actor, "num_gpus": cfg.mine.gpus_per_actor})
    token_sha256 = hashlib.sha256(token.encode()).hexdigest() if token else None
    try:
        serve.run(deployment.bind(str(proxy_dir), plan.model_dump_json(by_alias=True), cfg.model_dump_json(),
                                  max_batch, max_request_bytes, token_sha256), name=APP_NAME, route_prefix="/",
                  logging_config={"enable_access_log": access_log})
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
