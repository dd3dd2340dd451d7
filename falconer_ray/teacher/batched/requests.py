"""What a generative teacher is asked, as plain data, before any backend sees it.

One neutral request per (document, operation) is built from the shared prompts,
then rendered for an OpenAI-compatible API (`to_openai`) or for vLLM sampling
params (`to_vllm`). Keeping this backend-free is what makes "same prompts,
whichever model answers" true.
"""

from __future__ import annotations

from falconer_ray.teacher import prompts

TOP_LOGPROBS = 10
LABEL_GEN_TOKENS = 3
SPAN_TEXT_TOKENS = 64


def label_request(
    doc: str, instruction: str, *, api: str, label_mode: str, temperature: float = 0.0, seed: int | None = None
) -> dict:
    """A yes/no question: one token with its top alternatives, or a short answer to parse."""
    req: dict = _prompt(api, prompts.label_prompt, prompts.label_messages, instruction, doc)
    scored = label_mode == "logprobs"
    req.update(max_tokens=1 if scored else LABEL_GEN_TOKENS, temperature=temperature,
               top_logprobs=TOP_LOGPROBS if scored else 0, stop=None if scored else ["\n"], json_schema=None)
    if seed is not None:
        req["seed"] = seed
    return req


def span_request(doc: str, instruction: str, *, api: str, span_format: str, max_span_tokens: int) -> dict:
    """Span answer: ' | ' text (stopped at the line end) or schema-bounded JSON."""
    if span_format == "text":
        req = _prompt(api, prompts.span_prompt, prompts.span_messages, instruction, doc)
        req.update(max_tokens=min(SPAN_TEXT_TOKENS, max_span_tokens), stop=["\n"], json_schema=None)
    else:
        req = {"messages": prompts.span_json_messages(instruction, doc)}
        req.update(max_tokens=max_span_tokens, stop=None, json_schema=prompts.span_json_schema())
    req.update(temperature=0.0, top_logprobs=0)
    return req


def step_request(row: dict, op: str, instruction: str, *, api: str, label_mode: str, span_format: str,
                 max_span_tokens: int, votes: int, vote_temperature: float) -> dict:
    """One batch row ({i, v, doc}) -> the neutral request of a label or span step; votes
    sample with the row's vote number as seed, a single answer is greedy."""
    if op == "label":
        sampled = votes > 1
        return label_request(row["doc"], instruction, api=api, label_mode=label_mode,
                             temperature=vote_temperature if sampled else 0.0,
                             seed=int(row["v"]) if sampled else None)
    return span_request(row["doc"], instruction, api=api, span_format=span_format, max_span_tokens=max_span_tokens)


def _prompt(api: str, fewshot_fn, chat_fn, instruction: str, doc: str) -> dict:
    if api == "completions":
        return {"prompt": fewshot_fn(instruction, doc)}
    return {"messages": chat_fn(instruction, doc)}


def to_openai(req: dict, model: str, span_format: str) -> dict:
    """The JSON body for /v1/completions (`prompt`) or /v1/chat/completions (`messages`)."""
    body: dict = {"model": model, "max_tokens": req["max_tokens"], "temperature": req["temperature"]}
    chat = "messages" in req
    body["messages" if chat else "prompt"] = req["messages" if chat else "prompt"]
    if req.get("stop"):
        body["stop"] = req["stop"]
    if req.get("seed") is not None:
        body["seed"] = req["seed"]
    if req.get("top_logprobs"):
        body.update({"logprobs": True, "top_logprobs": req["top_logprobs"]} if chat else {"logprobs": req["top_logprobs"]})
    schema = req.get("json_schema")
    if schema is not None:
        if span_format == "json_object":  # llama.cpp-server dialect
            body["response_format"] = {"type": "json_object", "schema": schema}
        else:  # OpenAI structured outputs (also vLLM, SGLang)
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "spans", "schema": schema, "strict": True}}
    return body


def to_vllm(req: dict) -> dict:
    """A row for Ray Data LLM's vLLM engine stage: prompt or messages + sampling params."""
    params: dict = {"max_tokens": req["max_tokens"], "temperature": req["temperature"]}
    if req.get("stop"):
        params["stop"] = req["stop"]
    if req.get("seed") is not None:
        params["seed"] = req["seed"]
    if req.get("top_logprobs"):
        params["logprobs"] = req["top_logprobs"]
    if req.get("json_schema") is not None:
        params["structured_outputs"] = {"json": req["json_schema"]}  # guided JSON decoding
    row = {"messages": req["messages"]} if "messages" in req else {"prompt": req["prompt"]}
    row["sampling_params"] = params
    return row
