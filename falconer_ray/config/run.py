"""One typed configuration for a run, settable from a YAML file and CLI flags.

It is saved as `config.json` in the run directory so that every stage, run alone
later, sees the same settings. Secrets never live here: API keys come from the
environment only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from falconer_ray.config.prices import Prices, migrate
from falconer_ray.config.teacher import BACKENDS, EmbeddedTeacherConfig, TeacherConfig, drop_foreign_defaults
from falconer_ray.files import write_text


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
    use_gpu: bool | None = Field(None, description="One GPU per Ray Train worker (unset: when the cluster has GPUs or its autoscaler config declares some, see `ray_env.with_gpus`).")
    balance: bool = Field(False, description="Up-weight the rarer label class; off keeps the teacher's prior, which agreement rewards.")
    heldout: float = Field(0.2, ge=0.05, le=0.5, description="Fraction of annotated documents held out for agreement.")
    label_targets: Literal["hard", "soft"] = Field("soft", description="What a label example teaches: the teacher's P(yes) (soft: measured to give the cascade better-calibrated confidence, fewer documents sent to the teacher) or its yes/no (hard).")


class MineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int | None = Field(None, ge=1, le=65_536, description="Documents per map_batches call (default 2048 on CPUs, 8192 on GPUs: larger calls sort more documents by length, so batches pad less, and keep a GPU busier; cut for a small corpus so that every actor gets at least 4 calls).")
    forward_batch: int | None = Field(None, ge=1, le=4096, description="Windows per forward pass (default: 32 on CPU, 256 on GPU).")
    actors: int | None = Field(None, ge=1, le=10_000, description="Max proxy actors, whatever is up when the job starts: on an autoscaling cluster the actors waiting for room make it add nodes (default: one per CPU, or per GPU, of the nodes up).")
    min_actors: int | None = Field(None, ge=1, le=10_000, description="Floor of the proxy actor pool (default: as many as fit the nodes up, at least one).")
    teacher_actors: int = Field(1, ge=1, le=1_000, description="Cascade: max teacher actors (each loads the teacher); the pool grows from one while documents wait for the teacher.")
    teacher_resources: dict[str, float] = Field(default_factory=dict, description="Cascade: custom Ray resources each teacher actor asks for, e.g. {llm: 1} with nodes started with that resource, so the teacher runs only where it can (its model, its GPUs).")
    block_bytes: int = Field(512 * 1024, ge=16 * 1024, le=1 << 30, description="Target Ray Data block size: smaller blocks spread a few large files over more actors.")
    cpus_per_actor: float = Field(1.0, gt=0, le=64)
    gpus_per_actor: float | None = Field(None, ge=0, le=8, description="GPUs per proxy actor (unset: 1 when the cluster has GPUs or its autoscaler config declares some, else 0).")
    label_threshold: float = Field(0.5, ge=0, le=1)
    span_threshold: float = Field(0.5, ge=0, le=1)
    target_agreement: float | None = Field(None, gt=0, lt=1, description="Cascade: send documents the proxy is unsure of to the teacher, so that answers agree with the teacher's on at least this fraction of documents (calibrated on the held-out annotations).")
    delta: float = Field(0.05, gt=0, lt=1, description="Cascade: allowed probability that the target agreement is missed.")
    keep_text: bool = Field(False, description="Copy document text into results.")
    jsonl: bool = Field(False, description="Also write results as JSONL.")
    unit_rows: int = Field(4096, ge=1, le=10_000_000, description="Rows of one corpus file committed together; a resumed run redoes at most the units in flight.")
    actor_restarts: int = Field(-1, ge=-1, le=10_000, description="Times Ray restarts a proxy actor whose process died (-1: no limit).")
    task_retries: int = Field(3, ge=-1, le=10_000, description="Times a batch is retried after its actor died: a batch that keeps killing its actor fails the run instead of looping (-1: no limit).")
    stream_retries: int = Field(3, ge=0, le=100, description="Times mining starts again from the committed units after Ray lost a node, an actor or a block it could not rebuild.")

    def docs_per_call(self) -> int:
        """Larger calls sort more documents by length, so batches pad less, and on a GPU
        spread thinner the idle time of a call's first and last batch (figures in
        docs/RESULTS.md, "Why the defaults are what they are")."""
        return self.batch_size or (8192 if self.gpus_per_actor else 2048)

    def windows_per_forward(self) -> int:
        return self.forward_batch or (256 if self.gpus_per_actor else 32)


class QuoteConfig(BaseModel):
    """How `falconer quote` measures its pilot; prices come from `prices:`."""

    model_config = ConfigDict(extra="forbid")
    train_overhead_s: float = Field(30.0, ge=0, description="Fixed cost of a Ray Train run (worker start, model load, checkpoint).")
    mine_overhead_s: float = Field(20.0, ge=0, description="Fixed cost of mining: Ray Data starting the proxy actors, each "
                                   "loading the proxy, the last call running alone (timed in the actors on 2 cores: torch 7-11 s, "
                                   "int8 2-5 s; more for larger models and cold cluster nodes).")
    pilot_docs: int = Field(6, ge=2, le=200, description="Documents the teacher answers in the pilot, per step.")
    pilot_batches: int = Field(2, ge=1, le=100, description="Proxy forward batches timed in the pilot.")
    count_bytes: int = Field(2 << 30, ge=1 << 20, description="Bytes read to count documents exactly; beyond them the count is extrapolated.")


MAX_DOC_CHARS = 1_000_000


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    instruction: str = ""
    corpus: str = ""
    text_field: str = "text"
    id_field: str | None = None
    text_unit: Literal["file", "line"] = Field("file", description="For .txt files: one document per file or per line.")
    limit: int | None = Field(None, ge=1, description="Use only the first N documents of the corpus.")
    max_doc_chars: int = Field(MAX_DOC_CHARS, ge=1000, description="A longer document becomes an error row "
                               "(too_large) instead of one huge row that holds up its batch and the memory.")
    n_annotate: int = Field(300, ge=10, le=1_000_000, description="Documents the teacher annotates.")
    min_span_docs: int = Field(100, ge=0, le=1_000_000, description="Span steps are annotated on the documents the "
                               "teacher's labels keep, as mining extracts only from kept ones; when fewer are kept, "
                               "others are added up to this many, so the proxy's span head has examples to learn from.")
    seed: int = 0
    cache_dir: str = Field(default_factory=lambda: os.environ.get("FALCONER_CACHE", str(Path.home() / ".cache" / "falconer_ray")))
    teacher: TeacherConfig = EmbeddedTeacherConfig()
    proxy: ProxyConfig = ProxyConfig()
    train: TrainConfig = TrainConfig()
    mine: MineConfig = MineConfig()
    quote: QuoteConfig = QuoteConfig()
    prices: Prices = Prices()

    @model_validator(mode="before")
    @classmethod
    def _older_layouts(cls, data):
        data = migrate(data)
        if isinstance(data, dict) and isinstance(data.get("teacher"), dict):
            data = {**data, "teacher": drop_foreign_defaults(data["teacher"])}
        return data

    def read_options(self) -> dict:
        """How the corpus readers turn rows into documents (`corpus.read` keywords)."""
        return {"text_field": self.text_field, "id_field": self.id_field, "text_unit": self.text_unit,
                "max_doc_chars": self.max_doc_chars}

    def save(self, run_dir: Path) -> None:
        write_text(run_dir / "config.json", self.model_dump_json(indent=2) + "\n")

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
    """Apply dotted overrides ({"train.epochs": 3}) that the user actually set. A new
    `teacher.kind` starts that backend's settings afresh: the old backend's (its model
    among them) do not apply to it."""
    data = base.model_dump()
    kind = overrides.get("teacher.kind")
    if kind is not None and kind != base.teacher.kind and kind in BACKENDS:
        data["teacher"] = {k: v for k, v in data["teacher"].items() if k in BACKENDS[kind].model_fields and k != "model"}
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return RunConfig.model_validate(data)
