"""A teacher on in-process vLLM engines on GPUs, through Ray Data LLM.

`vLLMEngineProcessorConfig` + `build_processor`: Ray Data streams the sample
through `concurrency` engine replicas of `tensor_parallel_size` GPUs each, in
batches of `batch_size`; spans use guided JSON decoding (vLLM structured
outputs) with the bounded span schema. Requests and parsing are the same
plain functions as for an OpenAI endpoint (see `requests` and `answers`), so
the answers mean the same thing. Needs the `[vllm]` extra and GPUs.
"""

from __future__ import annotations

import functools
import json

from falconer_ray.teacher.base import Failed
from falconer_ray.teacher.batched import requests
from falconer_ray.teacher.batched.base import BatchTeacher, parse_response, result_row


def vllm_request(row: dict, *, op: str, instruction: str, api: str, label_mode: str, span_format: str,
                 max_span_tokens: int, votes: int, vote_temperature: float,
                 max_tokens: int = 0, stop: list[str] | None = None) -> dict:
    """Preprocess: one row ({i, v, doc}) -> `prompt`/`messages` + `sampling_params`.

    op "complete" sends `doc` as a plain prompt (planning)."""
    if op == "complete":
        req = {"prompt": row["doc"]} if api == "completions" else {"messages": [{"role": "user", "content": row["doc"]}]}
        req.update(max_tokens=max_tokens, temperature=0.0, stop=stop, top_logprobs=0, json_schema=None)
    else:
        req = requests.step_request(row, op, instruction, api=api, label_mode=label_mode, span_format=span_format,
                                    max_span_tokens=max_span_tokens, votes=votes, vote_temperature=vote_temperature)
    out = requests.to_vllm(req)
    out["max_tokens"] = req["max_tokens"]  # carried to postprocess: finish_reason is not
    return out


def as_openai_response(row: dict) -> dict:
    """A vLLM stage output row in the OpenAI completions shape the parsers read.

    Ray's stage keeps, per generated token, {token_id: {logprob, rank,
    decoded_token}}; vLLM's finish reason is not kept, so "length" is inferred
    from the token budget.
    """
    choice: dict = {"text": row.get("generated_text") or ""}
    steps = row.get("logprobs") or []
    if steps and steps[0]:
        first = {}
        for entry in steps[0].values():
            if entry and entry.get("decoded_token") is not None and entry.get("logprob") is not None:
                first[entry["decoded_token"]] = float(entry["logprob"])
        choice["logprobs"] = {"top_logprobs": [first]}
    n_out = int(row.get("num_generated_tokens") or 0)
    choice["finish_reason"] = "length" if n_out >= int(row.get("max_tokens") or 0) > 0 else "stop"
    return {"choices": [choice],
            "usage": {"prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": n_out}}


def vllm_result(row: dict, *, op: str, span_format: str) -> dict:
    """Postprocess: engine output row -> a flat result row."""
    return parse_response(as_openai_response(row), row, op, span_format)


def engine_error_row(row: dict) -> dict:
    """A row the engine failed on (`should_continue_on_error`) -> a result row."""
    return result_row(row, Failed("engine_error", str(row.get("__inference_error__"))[:500]), {}, (0, 0))


class VLLMTeacher(BatchTeacher):
    def __init__(self, model: str, *, batch_size: int = 16, concurrency: int = 1, tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, engine_kwargs: dict | None = None,
                 accelerator_type: str | None = None, **prompting):
        super().__init__(**prompting)
        if not model:
            raise ValueError("the vllm teacher needs a model (a hub id or a local path, --teacher-model)")
        self.model = model
        self.name = f"vllm:{model}:{self.prompting()}"
        self.batch_size, self.concurrency = batch_size, concurrency
        self.tensor_parallel_size, self.max_model_len = tensor_parallel_size, max_model_len
        self.engine_kwargs = dict(engine_kwargs or {})
        self.accelerator_type = accelerator_type

    def processor_config(self):
        from ray.data.llm import vLLMEngineProcessorConfig

        engine = {"tensor_parallel_size": self.tensor_parallel_size,
                  "enable_prefix_caching": True,  # every prompt starts with the same demonstrations
                  "max_logprobs": requests.TOP_LOGPROBS}
        if self.max_model_len:
            engine["max_model_len"] = self.max_model_len
        engine.update(self.engine_kwargs)
        chat = self.api == "chat"
        return vLLMEngineProcessorConfig(
            model_source=self.model,
            engine_kwargs=engine,
            batch_size=self.batch_size,
            concurrency=self.concurrency,
            accelerator_type=self.accelerator_type,
            chat_template_stage=chat,
            tokenize_stage=True,
            detokenize_stage=True,
            should_continue_on_error=True,  # a failing prompt is one document's error
        )

    def processor(self, op: str, instruction: str, **extra):
        from ray.data.llm import build_processor

        pre = functools.partial(
            vllm_request, op=op, instruction=instruction, api=self.api, label_mode=self.label_mode,
            span_format=self.span_format, max_span_tokens=self.max_span_tokens, votes=self.votes,
            vote_temperature=self.vote_temperature, **extra)
        post = functools.partial(vllm_result, op=op, span_format=self.span_format)
        proc = build_processor(self.processor_config(), preprocess=pre, postprocess=post)
        return lambda ds: proc(ds).map(_result_or_engine_error)

    def complete(self, prompt: str, max_tokens: int, stop: list[str] | None = None, grammar: str | None = None) -> str:
        """A one-row batch through the same engines (the planner). GBNF is not
        passed on: the caller validates the text."""
        (got,) = self._run("complete", "", [{"i": 0, "v": 0, "doc": prompt}], 1, None,
                           max_tokens=max_tokens, stop=list(stop or []))
        if not got or got[0]["error"]:
            reason = f"{got[0]['error']} {got[0]['detail']}".strip() if got else "no answer"
            raise ValueError(f"the vllm teacher ({self.model}) gave no answer: {reason}")
        return json.loads(got[0]["value"])


def _result_or_engine_error(row: dict) -> dict:
    """Engine-error rows skip postprocess and keep their raw columns; unify them."""
    if row.get("__inference_error__"):
        return engine_error_row(row)
    return {k: row[k] for k in ("i", "value", "error", "detail", "prompt_tokens", "completion_tokens", "rejected")}
