"""Reading labels and spans out of a remote teacher's response.

Every generative backend (OpenAI-compatible endpoints, vLLM engines) is turned
into the same OpenAI-shaped response first, so one parser decides what a label
or a span answer is, whichever model wrote it. Anything unusable becomes a
`Failed` (with a reason) or a counted rejection, never an exception.
"""

from __future__ import annotations

import json
import math
from collections import Counter

from falconer_ray.teacher import prompts
from falconer_ray.teacher.base import Failed
from falconer_ray.teacher.validate import MAX_ITEMS, parse_span_answer

YES = {w.lower() for w in prompts.YES_WORDS}
NO = {w.lower() for w in prompts.NO_WORDS}
ERROR_KEY = "falconer_error"


def response_error(resp: dict) -> Failed | None:
    """The failure a response stands for: transport errors, API error bodies, no choices."""
    if not isinstance(resp, dict):
        return Failed("bad_response", f"not a JSON object: {str(resp)[:200]}")
    if ERROR_KEY in resp:
        return Failed(str(resp[ERROR_KEY]), str(resp.get("detail", ""))[:500])
    if resp.get("error"):
        err = resp["error"]
        msg = err.get("message", err) if isinstance(err, dict) else err
        return Failed("api_error", str(msg)[:500])
    if not resp.get("choices"):
        return Failed("no_choices", json.dumps(resp)[:200])
    return None


def usage(resp: dict) -> tuple[int, int]:
    u = resp.get("usage") if isinstance(resp, dict) else None
    if not isinstance(u, dict):
        return 0, 0
    return int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)


def choice_text(choice: dict) -> str:
    msg = choice.get("message")
    if isinstance(msg, dict):
        return msg.get("content") or ""
    return choice.get("text") or ""


def first_token_logprobs(choice: dict) -> dict[str, float] | None:
    """Top alternatives of the first generated token: chat or completions layout."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    content = lp.get("content")
    if content:  # chat: [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]
        first = content[0]
        top = {e["token"]: float(e["logprob"]) for e in first.get("top_logprobs") or []
               if e.get("token") is not None and e.get("logprob") is not None}
        if first.get("token") is not None and first.get("logprob") is not None:
            top.setdefault(first["token"], float(first["logprob"]))
        return top
    tops = lp.get("top_logprobs")  # completions: [{token: logprob}]
    if tops and isinstance(tops[0], dict):
        return {k: float(v) for k, v in tops[0].items() if v is not None}
    return None


def label_from_logprobs(top: dict[str, float]) -> float | None:
    """P(yes) normalised over the yes/no spellings among the top tokens."""
    p_yes = sum(math.exp(v) for k, v in top.items() if k.strip().lower() in YES)
    p_no = sum(math.exp(v) for k, v in top.items() if k.strip().lower() in NO)
    if p_yes + p_no <= 0:
        return None
    return p_yes / (p_yes + p_no)


def label_from_text(text: str) -> float | None:
    word = text.strip().split(maxsplit=1)[0].strip(".,!:;\"'*").lower() if text.strip() else ""
    return 1.0 if word in YES else 0.0 if word in NO else None


def parse_label(resp: dict) -> tuple[float | Failed, dict[str, int]]:
    """One label answer: logprobs when the server sent them, else the generated word."""
    failed = response_error(resp)
    if failed:
        return failed, {}
    choice = resp["choices"][0]
    top = first_token_logprobs(choice)
    if top:
        p = label_from_logprobs(top)
        if p is not None:
            return p, {}
    p = label_from_text(choice_text(choice))
    if p is None:
        return Failed("label_unparsed", choice_text(choice)[:200]), {"label_unparsed": 1}
    return p, {}


def parse_spans(resp: dict, doc: str, span_format: str) -> tuple[list[str] | Failed, dict[str, int]]:
    """Raw span strings from a ' | ' text answer or a {"spans": [...]} JSON answer."""
    failed = response_error(resp)
    if failed:
        return failed, {}
    choice = resp["choices"][0]
    text = choice_text(choice)
    truncated = choice.get("finish_reason") == "length"
    rejected: Counter[str] = Counter()
    if span_format == "text":
        items = parse_span_answer(text)
        if truncated and items:
            items.pop()  # cut mid-phrase
            rejected["truncated"] += 1
    else:
        try:
            obj = json.loads(text)
        except ValueError:
            reason = "truncated_json" if truncated else "invalid_json"
            return Failed(reason, text[:200]), {reason: 1}
        raw = obj.get("spans") if isinstance(obj, dict) else obj
        if not isinstance(raw, list):
            return Failed("invalid_json", text[:200]), {"invalid_json": 1}
        items = [x for x in raw if isinstance(x, str)]
        rejected["not_a_string"] += len(raw) - len(items)
        rejected["too_many_items"] += max(len(items) - MAX_ITEMS, 0)
        items = items[:MAX_ITEMS]
    return [prompts.unflatten(doc, s) for s in items], {k: v for k, v in rejected.items() if v}
