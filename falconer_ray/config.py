"""One typed configuration for a run, settable from a YAML file and CLI flags.

It is saved as `config.json` in the run directory so that every stage, run alone
later, sees the same settings. Secrets never live here: API keys come from the
environment only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class PriceConfig(BaseModel):
    """What teacher and proxy work costs, to put a dollar figure on a run."""

    model_config = ConfigDict(extra="forbid")
    prompt_per_1m: float = Field(0.0, ge=0, description="Dollars per million prompt tokens (hosted endpoint).")
    completion_per_1m: float = Field(0.0, ge=0, description="Dollars per million completion tokens (hosted endpoint).")
    gpu_hour: float = Field(0.0, ge=0, description="Dollars per hour of one device running a local teacher (embedded, vLLM) or the proxy.")

from falconer_ray.quote import QuoteConfig


class TeacherConfig(BaseModel):
    """Which LLM answers, and how: the same prompts, parsing and validation for every backend."""

    # A key pasted where a variable NAME belongs must not be echoed back in errors.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    kind: Literal["embedded", "openai", "vllm"] = Field("embedded", description="Teacher backend: embedded llama.cpp on CPU, any OpenAI-compatible endpoint, or vLLM engines on GPUs.")
    model: Optional[str] = Field(None, description="embedded: gemma3-270m (default), smollm2-135m or a .gguf path; openai: the served model name; vllm: a hub id or path.")
    max_doc_chars: int = Field(1500, ge=200, le=100_000, description="Characters of a document the teacher sees.")
    url: Optional[str] = Field(None, description="openai: base URL of the API, e.g. http://127.0.0.1:8080/v1.")
    api_key_env: Optional[str] = Field(None, description="openai: environment variable holding the API key (the key itself is never stored).")
    api: Literal["chat", "completions"] = Field("chat", description="openai/vllm: chat messages or a few-shot completion prompt.")
    label_mode: Literal["logprobs", "generate"] = Field("logprobs", description="Score yes/no from token logprobs, or parse a generated answer.")
    span_format: Literal["json_schema", "json_object", "text"] = Field("json_schema", description="Span answers as structured JSON (OpenAI json_schema, or llama.cpp-style json_object with a schema), or as parsed ' | ' text.")
    votes: int = Field(1, ge=1, le=32, description="Self-consistency: samples per label when label_mode=generate; the label is the share of yes votes.")
    vote_temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature of the votes.")
    max_span_tokens: int = Field(256, ge=16, le=4096, description="Token budget of one span answer.")
    qps: Optional[int] = Field(None, ge=1, le=100_000, description="openai: most requests per second per worker.")
    max_retries: int = Field(3, ge=0, le=20, description="openai: retries of a failed request (timeouts, connection errors, 429 and 5xx).")
    retry_wait_s: float = Field(1.0, ge=0, le=600, description="openai: first backoff wait; doubles each retry (Retry-After wins when longer).")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="openai: limit of one request.")
    batch_size: int = Field(16, ge=1, le=65_536, description="Documents per batch sent to a worker or engine.")
    concurrency: int = Field(1, ge=1, le=10_000, description="openai: parallel HTTP workers; vllm: engine replicas.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="vllm: GPUs per engine replica.")
    max_model_len: Optional[int] = Field(None, ge=256, le=1_000_000, description="vllm: context length of the engine.")
    engine_kwargs: dict = Field(default_factory=dict, description="vllm: further vLLM engine arguments.")
    retries: int = Field(1, ge=0, le=10, description="Extra tries of a teacher call that raised, timed out or answered malformed output, before its document is set aside with the reason.")
    price: PriceConfig = PriceConfig()

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "").isalnum():
            raise ValueError("api_key_env must be the NAME of an environment variable (letters, digits, _), not the key itself")
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> "TeacherConfig":
        if self.kind == "openai" and not self.url:
            raise ValueError("teacher kind 'openai' needs a url (--teacher-url http://HOST:PORT/v1)")
        if self.kind in ("openai", "vllm") and not self.model:
            raise ValueError(f"teacher kind {self.kind!r} needs a model name (--teacher-model)")
        if self.api == "completions" and self.span_format != "text":
            raise ValueError("span_format json_schema/json_object needs api=chat; use span_format=text with completions")
        return self

    def model_name(self) -> str:
        return self.model or "gemma3-270m"


class ProxyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base: str = Field("minilm", description="What to fine-tune: 'minilm' (embedded), an encoder (path or hub id), or a saved proxy folder, whose heads are kept.")
    max_length: int = Field(256, ge=64, le=4096, description="Tokens per window (instruction + text).")
    stride: int = Field(64, ge=0, le=1024, description="Tokens of overlap between windows of a long document.")
    label_pooling: Literal["mean", "max"] = Field("mean", description="How window label scores combine per document.")
    runtime: Literal["torch", "onnx-int8"] = Field("torch", description="What runs the proxy while mining and serving: torch, or onnx-int8 on CPUs (the `onnx` extra), two to three times faster, used only when its answers differ from torch's on at most int8_max_disagreement of the annotated documents.")
    int8_max_disagreement: float = Field(0.02, ge=0, le=1, description="onnx-int8: largest share of checked documents whose answer may change; above it, mining uses torch.")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = Field(5, ge=1, le=100)
    lr: float = Field(1e-4, gt=0, le=1e-2)
    batch_size: int = Field(8, ge=1, le=1024, description="Examples per worker per step.")
    num_workers: int = Field(2, ge=1, le=1024, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="One GPU per Ray Train worker.")
    balance: bool = Field(False, description="Up-weight the rarer label class; off keeps the teacher's prior, which agreement rewards.")
    heldout: float = Field(0.2, ge=0.05, le=0.5, description="Fraction of annotated documents held out for agreement.")
    label_targets: Literal["hard", "soft"] = Field("soft", description="What a label example teaches: the teacher's P(yes) (soft: measured to give the cascade better-calibrated confidence, fewer documents sent to the teacher) or its yes/no (hard).")


class MineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int | None = Field(None, ge=1, le=65_536, description="Documents per map_batches call (default 2048 on CPUs, 8192 on GPUs: larger calls sort more documents by length, so batches pad less, and keep a GPU busier; cut for a small corpus so that every actor gets at least 4 calls).")
    forward_batch: int | None = Field(None, ge=1, le=4096, description="Windows per forward pass (default: 32 on CPU, 256 on GPU).")
    actors: int | None = Field(None, ge=1, le=10_000, description="Max proxy actors (default: one per CPU, or per GPU).")
    min_actors: int | None = Field(None, ge=1, le=10_000, description="Autoscaling floor of the actor pool (default: the max).")
    block_bytes: int = Field(512 * 1024, ge=16 * 1024, le=1 << 30, description="Target Ray Data block size: smaller blocks spread a few large files over more actors.")
    cpus_per_actor: float = Field(1.0, gt=0, le=64)
    gpus_per_actor: float = Field(0.0, ge=0, le=8)
    label_threshold: float = Field(0.5, ge=0, le=1)
    span_threshold: float = Field(0.5, ge=0, le=1)
    target_agreement: float | None = Field(None, gt=0, lt=1, description="Cascade: send documents the proxy is unsure of to the teacher, so that answers agree with the teacher's on at least this fraction of documents (calibrated on the held-out annotations).")
    delta: float = Field(0.05, gt=0, lt=1, description="Cascade: allowed probability that the target agreement is missed.")
    keep_text: bool = Field(False, description="Copy document text into results.")
    jsonl: bool = Field(False, description="Also write results as JSONL.")
    unit_rows: int = Field(4096, ge=1, le=10_000_000, description="Rows of one corpus file committed together; a resumed run redoes at most the units in flight.")
    actor_restarts: int = Field(-1, ge=-1, le=10_000, description="Times Ray restarts a proxy actor whose process died (-1: no limit).")
    task_retries: int = Field(3, ge=-1, le=10_000, description="Times a batch is retried after its actor died: a batch that keeps killing its actor fails the run instead of looping (-1: no limit).")

    def docs_per_call(self) -> int:
        """2,048 on CPUs: on short reviews a call of 512 padded 6.3% more tokens than
        its real ones and one of 2,048 1.8%, and 12,000 documents mined 1.07x faster.
        Its windows take about 12 MB per actor on IMDB-length reviews (offsets included).
        8,192 on GPUs: each call leaves the GPU idle while its first batch is tokenized
        and its last decoded, a fixed cost that larger calls spread thinner (against a
        simulated device at an H100's rate, `benchmarks/gpu_proxy.py --host-only
        --device-us 174`, see docs/RESULTS.md)."""
        return self.batch_size or (8192 if self.gpus_per_actor else 2048)

    def windows_per_forward(self) -> int:
        return self.forward_batch or (256 if self.gpus_per_actor else 32)


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    instruction: str = ""
    corpus: str = ""
    text_field: str = "text"
    id_field: str | None = None
    text_unit: Literal["file", "line"] = Field("file", description="For .txt files: one document per file or per line.")
    limit: int | None = Field(None, ge=1, description="Use only the first N documents of the corpus.")
    n_annotate: int = Field(300, ge=10, le=1_000_000, description="Documents the teacher annotates.")
    seed: int = 0
    cache_dir: str = Field(default_factory=lambda: os.environ.get("FALCONER_CACHE", str(Path.home() / ".cache" / "falconer_ray")))
    teacher: TeacherConfig = TeacherConfig()
    proxy: ProxyConfig = ProxyConfig()
    train: TrainConfig = TrainConfig()
    mine: MineConfig = MineConfig()
    quote: QuoteConfig = QuoteConfig()

    def save(self, run_dir: Path) -> None:
        (run_dir / "config.json").write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig:
        return cls.model_validate(json.loads((run_dir / "config.json").read_text()))

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}".replace("\n", " ")) from None
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a mapping of settings (e.g. `n_annotate: 100`), not a {type(data).__name__}")
        return cls.model_validate(data)


def merge(base: RunConfig, overrides: dict) -> RunConfig:
    """Apply dotted overrides ({"train.epochs": 3}) that the user actually set."""
    data = base.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return RunConfig.model_validate(data)
