"""The one price table: what each stage's hardware and the teacher's tokens cost.

The quote, report.json's `cost` block, report.html and the CLI summary all price a run
from this table, so they agree. Every figure is an assumption to edit (the `prices:`
section of a run config); zero prices give zero dollars, never a guess.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Hardware(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd_per_hour: float = Field(ge=0, description="Price of one unit (a node or an accelerator) per hour.")
    speed: float = Field(1.0, gt=0, description="Throughput of one unit relative to the machine a quote's pilot ran on.")
    note: str = ""


class StageHardware(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hardware: str = Field("cpu-node", description="A key of `hardware`.")
    units: int = Field(1, ge=1, le=100_000, description="Units working at once (teacher replicas, training or mining nodes).")


def default_hardware() -> dict[str, Hardware]:
    return {
        "cpu-node": Hardware(usd_per_hour=0.10, note="a 2-vCPU cloud VM, like the machine the pilot ran on"),
        "gpu-node": Hardware(usd_per_hour=2.50, speed=40.0, note="one data-center GPU; speed is a guess: measure it"),
    }


class Prices(BaseModel):
    """Hardware per stage and token prices; the only place a run's dollars come from."""

    model_config = ConfigDict(extra="forbid")
    hardware: dict[str, Hardware] = Field(default_factory=default_hardware)
    teacher: StageHardware = StageHardware()
    train: StageHardware = StageHardware()
    mine: StageHardware = StageHardware()
    prompt_per_1m: float = Field(0.0, ge=0, description="Hosted teachers: dollars per million prompt tokens.")
    completion_per_1m: float = Field(0.0, ge=0, description="Hosted teachers: dollars per million completion tokens.")

    @field_validator("hardware", mode="before")
    @classmethod
    def _beside_the_defaults(cls, value):
        """Hardware a config names is added to the default table (or replaces an entry of
        the same name), so pricing one stage on a GPU does not unprice the others."""
        if not isinstance(value, dict):
            return value
        return {**{k: v.model_dump() for k, v in default_hardware().items()}, **value}

    @model_validator(mode="after")
    def _stages_name_known_hardware(self):
        for stage in ("teacher", "train", "mine"):
            self.of(stage)  # a typo fails when the config is read, before any work
        return self

    def of(self, stage: str) -> Hardware:
        """The hardware a stage ("teacher", "train", "mine") runs on."""
        name = getattr(self, stage).hardware
        if name not in self.hardware:
            raise ValueError(f"prices: hardware '{name}' of stage {stage} is not in the table ({', '.join(self.hardware)})")
        return self.hardware[name]

    def per_second(self, stage: str) -> float:
        """Dollars per second of a stage's hardware, all its units together."""
        return self.of(stage).usd_per_hour * getattr(self, stage).units / 3600

    def tokens_usd(self, prompt: float, completion: float) -> float:
        return (prompt * self.prompt_per_1m + completion * self.completion_per_1m) / 1e6

    def describe(self) -> str:
        parts = [f"{what} on {getattr(self, stage).units} x {getattr(self, stage).hardware} at "
                 f"${self.of(stage).usd_per_hour:g}/h"
                 for stage, what in (("teacher", "teacher"), ("train", "training"), ("mine", "mining"))]
        return ", ".join(parts) + f", tokens ${self.prompt_per_1m:g} / ${self.completion_per_1m:g} per million in / out"


def migrate(data: dict) -> dict:
    """Run configs saved before the one table: `teacher.price` and the hardware of `quote:`
    move into `prices:`, so older run directories still load and resume."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    prices = dict(data.get("prices") or {})
    quote = data.get("quote")
    if isinstance(quote, dict):
        quote = dict(quote)
        for old, new in (("hardware", "hardware"), ("teacher", "teacher"), ("train", "train"), ("mine", "mine"),
                         ("teacher_usd_per_m_input_tokens", "prompt_per_1m"),
                         ("teacher_usd_per_m_output_tokens", "completion_per_1m")):
            if old in quote:
                prices[new] = quote.pop(old)
        data["quote"] = quote
    teacher = data.get("teacher")
    if isinstance(teacher, dict) and isinstance(teacher.get("price"), dict):
        teacher = dict(teacher)
        old = teacher.pop("price")
        for key in ("prompt_per_1m", "completion_per_1m"):
            if old.get(key):
                prices[key] = old[key]
        if old.get("gpu_hour"):  # a local teacher's device hour: its own hardware line
            hardware = dict(prices.get("hardware") or default_hardware())
            hardware["teacher-device"] = {"usd_per_hour": old["gpu_hour"], "note": "from teacher.price.gpu_hour"}
            devices = teacher.get("tensor_parallel_size", 1) * teacher.get("concurrency", 1) if teacher.get("kind") == "vllm" else 1
            prices["hardware"], prices["teacher"] = hardware, {"hardware": "teacher-device", "units": devices}
        data["teacher"] = teacher
    if prices:
        data["prices"] = prices
    return data
