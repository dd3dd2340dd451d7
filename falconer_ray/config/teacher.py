"""Teacher settings: one config class per backend, told apart by `kind`.

Each class holds only the fields its backend takes, and says what the rest of the
code needs to know of it (`backend_kwargs`, `model_name`, `endpoint`), so no caller
asks which backend it has. `falconer_ray.teacher` maps each class to its builder.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_EMBEDDED_MODEL = "qwen2.5-1.5b"
MODEL_ENV = "FALCONER_TEACHER_MODEL"


def default_embedded_model() -> str:
    """The embedded teacher's model when a run names none: $FALCONER_TEACHER_MODEL (a
    house default for a cluster image, or a smaller model for a test session), else the
    packaged default."""
    return os.environ.get(MODEL_ENV) or DEFAULT_EMBEDDED_MODEL


class _Teacher(BaseModel):
    # A key pasted where a variable NAME belongs must not be echoed back in errors.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    model: Optional[str] = Field(None, description="The model: a name the backend knows, or a path.")
    max_doc_chars: int = Field(1500, ge=200, le=100_000, description="Characters of a document the teacher sees.")
    retries: int = Field(1, ge=0, le=10, description="Extra tries of a teacher call that raised, timed out or answered "
                         "malformed output, before its document is set aside with the reason.")

    BACKEND_FIELDS: ClassVar[tuple[str, ...]] = ("max_doc_chars",)  # passed to the backend's constructor

    def backend_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in self.BACKEND_FIELDS}

    def model_name(self) -> str:
        return self.model or ""

    def endpoint(self) -> str | None:
        """Where the model answers from, when that is not the model itself (a URL)."""
        return None


class EmbeddedTeacherConfig(_Teacher):
    """A GGUF model run in-process by llama.cpp on CPUs: offline, no server."""

    kind: Literal["embedded"] = "embedded"
    model: Optional[str] = Field(None, description=f"{DEFAULT_EMBEDDED_MODEL} (default, or ${MODEL_ENV}), "
                                 "qwen2.5-1.5b, qwen2.5-0.5b, gemma3-270m, smollm2-135m, or a .gguf path.")

    prompt_style: Literal["auto", "fewshot", "chat"] = Field("auto", description="How the model is prompted: "
                                                             "auto (the style measured best for a known model, "
                                                             "few-shot for a .gguf file), fewshot, or chat (its "
                                                             "own chat template).")

    BACKEND_FIELDS: ClassVar[tuple[str, ...]] = ("max_doc_chars", "prompt_style")

    def model_name(self) -> str:
        return self.model or default_embedded_model()


class _Prompted(_Teacher):
    """Backends that take the prompt options of a served model."""

    api: Literal["chat", "completions"] = Field("chat", description="Chat messages or a few-shot completion prompt.")
    label_mode: Literal["logprobs", "generate"] = Field("logprobs", description="Score yes/no from token logprobs, or parse a generated answer.")
    span_format: Literal["json_schema", "json_object", "text"] = Field("json_schema", description="Span answers as structured JSON (OpenAI json_schema, or llama.cpp-style json_object with a schema), or as parsed ' | ' text.")
    votes: int = Field(1, ge=1, le=32, description="Self-consistency: samples per label when label_mode=generate; the label is the share of yes votes.")
    vote_temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the votes.")
    max_span_tokens: int = Field(256, ge=16, le=4096, description="Token budget of one span answer.")
    batch_size: int = Field(16, ge=1, le=65_536, description="Documents per batch sent to a worker or engine.")
    concurrency: int = Field(1, ge=1, le=10_000, description="Parallel HTTP workers, or engine replicas.")

    BACKEND_FIELDS: ClassVar[tuple[str, ...]] = ("api", "label_mode", "span_format", "votes", "vote_temperature",
                                                 "max_span_tokens", "max_doc_chars", "batch_size", "concurrency")

    def missing(self) -> list[str]:
        """What the backend cannot run without, in the words of the flags that set it."""
        return [] if self.model else ["a model name (--teacher-model)"]

    @model_validator(mode="after")
    def _prompt_fields(self):
        if self.missing():
            raise ValueError(f"teacher kind {self.kind!r} needs {' and '.join(self.missing())}")
        if self.api == "completions" and self.span_format != "text":
            raise ValueError("span_format json_schema/json_object needs api=chat; use span_format=text with completions")
        return self


class OpenAITeacherConfig(_Prompted):
    """Any OpenAI-compatible endpoint, through Ray Data LLM's HTTP processor."""

    kind: Literal["openai"] = "openai"
    model: Optional[str] = Field(None, description="The served model name.")
    url: Optional[str] = Field(None, description="Base URL of the API, e.g. http://127.0.0.1:8080/v1.")
    api_key_env: Optional[str] = Field(None, description="Environment variable holding the API key (the key itself is never stored).")
    qps: Optional[int] = Field(None, ge=1, le=100_000, description="Most requests per second per worker.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries of a failed request (timeouts, connection errors, 429 and 5xx).")
    retry_wait_s: float = Field(1.0, ge=0, le=600, description="First backoff wait; doubles each retry (Retry-After wins when longer).")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Limit of one request.")

    BACKEND_FIELDS: ClassVar[tuple[str, ...]] = _Prompted.BACKEND_FIELDS + (
        "url", "api_key_env", "qps", "max_retries", "retry_wait_s", "timeout_s")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not is_env_name(v):
            # The value is never repeated: it may be the key itself.
            raise ValueError("api_key_env must be the NAME of an environment variable (like OPENAI_API_KEY), "
                             "not the key itself; the value given is not shown")
        return v

    def missing(self) -> list[str]:
        return (["a url (--teacher-url http://HOST:PORT/v1)"] if not self.url else []) + super().missing()

    def endpoint(self) -> str | None:
        return self.url


KEY_PREFIXES = ("sk-", "sk_", "gsk_", "hf_", "akia", "asia", "ghp_", "gho_", "github_pat_", "glpat-", "xox",
                "aiza", "ya29.")


def is_env_name(value: str) -> bool:
    """A plausible environment variable name, and not an API key pasted in its place:
    keys have well-known prefixes, or are long runs of mixed case and digits where
    variable names are words in capitals."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value) or value.lower().startswith(KEY_PREFIXES):
        return False
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return not (mixed and len(value) >= 20)


class VLLMTeacherConfig(_Prompted):
    """vLLM engines on GPUs, through Ray Data LLM."""

    kind: Literal["vllm"] = "vllm"
    model: Optional[str] = Field(None, description="A hub id or path.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs per engine replica.")
    max_model_len: Optional[int] = Field(None, ge=256, le=1_000_000, description="Context length of the engine.")
    engine_kwargs: dict = Field(default_factory=dict, description="Further vLLM engine arguments.")
    accelerator_type: Optional[str] = Field(None, description="Run engines only on nodes with this GPU type (Ray's accelerator_type, e.g. A100 for cluster.yaml's llm_workers), so an engine never lands on a GPU node without vLLM.")

    BACKEND_FIELDS: ClassVar[tuple[str, ...]] = _Prompted.BACKEND_FIELDS + (
        "tensor_parallel_size", "max_model_len", "engine_kwargs", "accelerator_type")


TeacherConfig = Annotated[Union[EmbeddedTeacherConfig, OpenAITeacherConfig, VLLMTeacherConfig], Field(discriminator="kind")]
BACKENDS = {c.model_fields["kind"].default: c for c in (EmbeddedTeacherConfig, OpenAITeacherConfig, VLLMTeacherConfig)}


def drop_foreign_defaults(data: dict) -> dict:
    """Fields of other backends left at their defaults are dropped, so a config saved
    flat (every backend's fields in one object) or a `merge` that changes `kind` still
    validates; a foreign field that was set stays, and is refused by name."""
    if not isinstance(data, dict):
        return data
    data = {"kind": "embedded", **data}  # the default backend, as before kinds had classes
    target = BACKENDS.get(data["kind"])
    if target is None:
        return data
    out = {}
    for key, value in data.items():
        if key in target.model_fields:
            out[key] = value
            continue
        defaults = [c.model_fields[key].get_default(call_default_factory=True)
                    for c in BACKENDS.values() if key in c.model_fields]
        if value is not None and not any(value == d for d in defaults):
            out[key] = value
    return out
