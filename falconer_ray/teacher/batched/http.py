"""HTTP to an OpenAI-compatible endpoint: timeouts, retries with exponential
backoff, and a final failure that is an answer, not an exception.

Ray Data LLM's HTTP stage retries by itself, but after its last retry it raises,
which fails the whole dataset. A teacher must instead lose only that document:
so the stage gets `ResilientSession` as its `session_factory` (and
`max_retries=0`), and every request ends in a JSON body, either the server's
answer or `{"falconer_error": reason, "detail": ...}`.

The stage's answers pass through Arrow, which unions dict keys across rows
(every distinct logprob token would become a column). So the session hands
the stage one fixed shape, `{"raw": json_text, "falconer_error", "detail"}`,
and `unwrap` turns it back into the server's JSON where it is parsed.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from falconer_ray.teacher.batched.answers import ERROR_KEY

# Worth another try: rate limits, timeouts, overloaded or restarting servers.
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_wait_s: float = 1.0
    timeout_s: float = 60.0
    max_wait_s: float = 120.0

    def wait(self, attempt: int, retry_after: str | None = None) -> float:
        """Backoff before retry `attempt` (0-based); a server's Retry-After wins when longer."""
        wait = self.base_wait_s * (2**attempt)
        try:
            wait = max(wait, float(retry_after)) if retry_after else wait
        except ValueError:  # an HTTP date: keep our own backoff
            pass
        return min(wait, self.max_wait_s)


def error_body(reason: str, detail: str = "") -> dict:
    return {ERROR_KEY: reason, "detail": detail[:500]}


def unwrap(answer: dict | None) -> dict:
    """A `ResilientSession` answer -> the server's JSON body, or an error body."""
    if not answer:
        return error_body("no_answer")
    if answer.get(ERROR_KEY):
        return error_body(answer[ERROR_KEY], answer.get("detail") or "")
    return json.loads(answer["raw"])


def _decode(status: int, text: str) -> tuple[dict | None, str, bool]:
    """(body, failure reason, retryable) of one HTTP answer."""
    if status >= 300:
        return None, f"http_{status}", status in RETRY_STATUS
    try:
        body = json.loads(text)
    except ValueError:
        return None, "bad_response", False
    if not isinstance(body, dict) or not body:
        return None, "bad_response", False
    return body, "", False


class _Answer:
    """What Ray's HTTP stage reads from a response: status, reason, json()."""

    status = 200
    reason = "OK"

    def __init__(self, body: dict):
        self._body = body

    async def json(self) -> dict:
        return self._body

    async def __aenter__(self) -> "_Answer":
        return self

    async def __aexit__(self, *exc: object) -> bool:
        return False


class ResilientSession:
    """Drop-in for `aiohttp.ClientSession` as Ray Data LLM's `session_factory`.

    `post()` starts the request at once (the stage creates all requests of a
    batch, paced by `qps`, before awaiting any), so a batch is in flight
    concurrently; awaiting it yields an `_Answer` that always holds JSON.
    """

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self._session = None

    async def __aenter__(self) -> "ResilientSession":
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    def post(self, url: str, headers: dict | None = None, data=None, **_: object):
        return asyncio.ensure_future(self._post(url, headers, data))

    async def _post(self, url: str, headers: dict | None, data) -> _Answer:
        import aiohttp

        reason, detail = "", ""
        for attempt in range(self.policy.max_retries + 1):
            retry_after = None
            try:
                # Not following redirects keeps the API key on the host it was meant for.
                async with self._session.post(url, headers=headers, data=data, allow_redirects=False) as r:
                    text = await r.text()
                    body, reason, retry = _decode(r.status, text)
                    if body is not None:
                        return _Answer({"raw": text, ERROR_KEY: "", "detail": ""})
                    detail = text[:300]
                    if 300 <= r.status < 400:
                        detail = f"the server redirects to {r.headers.get('Location')}: give that address as the URL"
                    retry_after = r.headers.get("Retry-After")
            except asyncio.TimeoutError:
                reason, detail, retry = "timeout", f"no answer within {self.policy.timeout_s}s", True
            except aiohttp.ClientError as e:
                reason, detail, retry = "connection_error", f"{type(e).__name__}: {e}", True
            if not retry:
                break
            if attempt < self.policy.max_retries:
                await asyncio.sleep(self.policy.wait(attempt, retry_after))
        return _Answer({"raw": "", **error_body(reason, f"{detail} (attempts: {attempt + 1})")})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, not followed: urllib would send the Authorization
    header on to whatever host the redirect names (and turn the POST into a GET)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: dict, headers: dict, policy: RetryPolicy) -> dict:
    """One blocking request with the same policy (for single calls such as planning)."""
    data = json.dumps(body).encode("utf-8")
    reason, detail = "", ""
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
        try:
            with _OPENER.open(req, timeout=policy.timeout_s) as r:
                parsed, reason, retry = _decode(r.status, r.read().decode("utf-8", "replace"))
                if parsed is not None:
                    return parsed
        except urllib.error.HTTPError as e:
            text = e.read().decode("utf-8", "replace")
            parsed, reason, retry = _decode(e.code, text)
            detail, retry_after = text[:300], e.headers.get("Retry-After")
            if 300 <= e.code < 400:
                detail = f"the server redirects to {e.headers.get('Location')}: give that address as the URL"
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as e:
            timed_out = isinstance(e, TimeoutError) or "timed out" in str(e)
            reason, detail, retry = ("timeout" if timed_out else "connection_error"), str(e), True
        if not retry:
            break
        if attempt < policy.max_retries:
            time.sleep(policy.wait(attempt, retry_after))
    return error_body(reason, f"{detail} (attempts: {attempt + 1})")
