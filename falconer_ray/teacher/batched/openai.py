"""A teacher behind any OpenAI-compatible endpoint (OpenAI, vLLM or SGLang
servers, llama.cpp's server, gateways).

Annotation at scale goes through Ray Data LLM's `HttpRequestProcessorConfig`
(rate limit per worker, parallel workers, batches); retries, backoff and
timeouts live in `ResilientSession` so a failing document becomes a `Failed`
answer instead of failing the dataset. Planning is one plain request.

The API key is read from an environment variable when the teacher is built; it
travels to the HTTP workers inside the request headers and is never written to
the run directory.
"""

from __future__ import annotations

import functools
import os
import time

from falconer_ray.teacher.batched import answers, requests
from falconer_ray.teacher.batched.base import BatchTeacher, parse_response, result_row
from falconer_ray.teacher.batched.http import ResilientSession, RetryPolicy, post_json, unwrap


def endpoint(url: str, api: str) -> str:
    """Base URL (…/v1) -> the endpoint of `api`; a full endpoint URL is kept as is."""
    url = url.rstrip("/")
    if url.endswith("/completions"):
        return url
    return f"{url}/chat/completions" if api == "chat" else f"{url}/completions"


def api_key(env_name: str | None) -> str | None:
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise ValueError(f"the teacher API key variable {env_name} is not set in the environment")
    return key


def openai_payload(row: dict, *, op: str, instruction: str, model: str, api: str, label_mode: str,
                   span_format: str, max_span_tokens: int, votes: int, vote_temperature: float) -> dict:
    """Preprocess: one row ({i, v, doc}) -> the `payload` the HTTP stage posts."""
    req = requests.step_request(row, op, instruction, api=api, label_mode=label_mode, span_format=span_format,
                                max_span_tokens=max_span_tokens, votes=votes, vote_temperature=vote_temperature)
    return {"payload": requests.to_openai(req, model, span_format)}


def openai_result(row: dict, *, op: str, span_format: str) -> dict:
    """Postprocess: the HTTP stage's `http_response` -> a flat result row."""
    return parse_response(unwrap(row.get("http_response")), row, op, span_format)


class OpenAITeacher(BatchTeacher):
    def __init__(self, model: str, url: str, api_key_env: str | None = None, *, qps: int | None = None,
                 max_retries: int = 3, retry_wait_s: float = 1.0, timeout_s: float = 60.0,
                 batch_size: int = 16, concurrency: int = 1, **prompting):
        super().__init__(**prompting)
        if not model:
            raise ValueError("the openai teacher needs a model name (--teacher-model)")
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError(f"the openai teacher needs an http(s) URL (--teacher-url), not {url!r}")
        self.model, self.url = model, url
        self.name = f"openai:{model}:{self.prompting()}"
        self.cache_id = f"{self.name}@{url}"  # one model name, served by two endpoints, may be two models
        key = api_key(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.policy = RetryPolicy(max_retries=max_retries, base_wait_s=retry_wait_s, timeout_s=timeout_s)
        self.qps, self.batch_size, self.concurrency = qps, batch_size, concurrency

    def processor_config(self):
        from ray.data.llm import HttpRequestProcessorConfig

        return HttpRequestProcessorConfig(
            url=endpoint(self.url, self.api),
            headers=self._headers,
            qps=self.qps,
            max_retries=0,  # ResilientSession retries; the stage would raise after its last one
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            session_factory=functools.partial(ResilientSession, self.policy),
        )

    def processor(self, op: str, instruction: str):
        from ray.data.llm import build_processor

        pre = functools.partial(
            openai_payload, op=op, instruction=instruction, model=self.model, api=self.api,
            label_mode=self.label_mode, span_format=self.span_format, max_span_tokens=self.max_span_tokens,
            votes=self.votes, vote_temperature=self.vote_temperature)
        post = functools.partial(openai_result, op=op, span_format=self.span_format)
        return build_processor(self.processor_config(), preprocess=pre, postprocess=post)

    def complete(self, prompt: str, max_tokens: int, stop: list[str] | None = None, grammar: str | None = None) -> str:
        """One plain request (the planner). GBNF grammars are not part of the
        OpenAI API, so `grammar` is not sent: the caller validates the text."""
        t0 = time.perf_counter()
        body = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.0}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if stop:
            body["stop"] = stop[:4]  # the OpenAI API takes at most four
        resp = post_json(endpoint(self.url, self.api), body, self._headers, self.policy)
        failed = answers.response_error(resp)
        row = result_row({"i": 0}, failed or "", {}, answers.usage(resp))
        self._account(row)
        self.stats.seconds += time.perf_counter() - t0
        if failed:
            raise ValueError(f"the teacher at {self.url} gave no answer: {failed.reason} {failed.detail}".strip())
        return answers.choice_text(resp["choices"][0])
