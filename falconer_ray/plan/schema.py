"""The Plan: what the proxy must do, as validated data (never code).

A plan is a set of `get_label` steps whose yes/no answers combine through a `keep`
condition (AND / OR / NOT over label step ids), and `get_span` steps (extraction
fields) that run only on documents the condition keeps. JSON form:

    {"instruction": "...",
     "steps": [{"id": "positive", "op": "get_label", "instruction": "Is the review positive?"},
               {"id": "price", "op": "get_span", "instruction": "Extract the laptop prices."}],
     "keep": {"all": ["positive", {"not": "refurbished"}]}}

`keep` may be a step id, {"all": [...]}, {"any": [...]}, {"not": ...}, or null
(keep every document). With no label step, `keep` must be null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from falconer_ray.files import write_text

MAX_DEPTH = 6
StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: StepId = Field(description="Short snake_case name; label ids are referenced by `keep`, span ids name output fields.")
    op: Literal["get_label", "get_span"]
    instruction: str = Field(min_length=3, max_length=400, description="What the proxy is asked, in plain words.")

    @property
    def column(self) -> str:
        """The step's output column: `label_<id>` (a P(yes) score) or `span_<id>` (spans)."""
        return f"{'label' if self.op == 'get_label' else 'span'}_{self.id}"


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    not_: Condition = Field(alias="not")


class All(BaseModel):
    model_config = ConfigDict(extra="forbid")
    all: list[Condition] = Field(min_length=1, max_length=16)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Condition] = Field(min_length=1, max_length=16)


Condition = Union[StepId, Not, All, AnyOf]
for _model in (Not, All, AnyOf):
    _model.model_rebuild()


class PlanError(ValueError):
    """A plan that cannot run; the message says what to fix."""


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    instruction: str = Field(default="", max_length=2000, description="The user's request this plan answers.")
    steps: list[Step] = Field(min_length=1, max_length=32)
    keep: Condition | None = None

    @model_validator(mode="after")
    def _check_references(self) -> Plan:
        ids = [s.id for s in self.steps]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique; repeated: {', '.join(dupes)}")
        labels = {s.id for s in self.steps if s.op == "get_label"}
        if self.keep is None:
            return self
        if not labels:
            raise ValueError("`keep` needs at least one get_label step to refer to")
        for ref in referenced_ids(self.keep):
            if ref not in labels:
                known = ", ".join(sorted(labels)) or "none"
                raise ValueError(f"`keep` refers to '{ref}', which is not a get_label step (label steps: {known})")
        if depth(self.keep) > MAX_DEPTH:
            raise ValueError(f"`keep` is nested deeper than {MAX_DEPTH} levels")
        return self

    @property
    def label_steps(self) -> list[Step]:
        return [s for s in self.steps if s.op == "get_label"]

    @property
    def span_steps(self) -> list[Step]:
        return [s for s in self.steps if s.op == "get_span"]

    def keeps(self, answers: dict[str, bool]) -> bool:
        """Whether a document with these label answers goes on to extraction."""
        return True if self.keep is None else evaluate(self.keep, answers)

    # Editing: each returns a new, re-validated plan, so an edit can never leave a plan
    # whose `keep` refers to a missing step; save it and rerun the later stages.
    def add_step(self, id: str, op: str, instruction: str) -> Plan:
        """A copy with one more step (span steps become output fields)."""
        return self._rebuilt(steps=[*self._step_dicts(), {"id": id, "op": op, "instruction": instruction}])

    def update_step(self, id: str, **fields) -> Plan:
        """A copy with step `id` changed, e.g. update_step("positive", instruction="...")."""
        steps = self._step_dicts()
        if id not in [s["id"] for s in steps]:
            raise PlanError(f"no step '{id}' in the plan (steps: {', '.join(s['id'] for s in steps)})")
        return self._rebuilt(steps=[{**s, **fields} if s["id"] == id else s for s in steps])

    def remove_step(self, id: str) -> Plan:
        """A copy without step `id`; fails while `keep` still refers to it."""
        steps = self._step_dicts()
        if id not in [s["id"] for s in steps]:
            raise PlanError(f"no step '{id}' in the plan (steps: {', '.join(s['id'] for s in steps)})")
        return self._rebuilt(steps=[s for s in steps if s["id"] != id])

    def with_keep(self, keep) -> Plan:
        """A copy with a new `keep` condition: a step id, {"all"|"any": [...]}, {"not": ...} or None."""
        return self._rebuilt(keep=keep)

    def _step_dicts(self) -> list[dict]:
        return [s.model_dump() for s in self.steps]

    def _rebuilt(self, **changes) -> Plan:
        data = {**self.model_dump(by_alias=True), **changes}
        try:
            return Plan.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'plan'}: {err['msg']}" for err in e.errors())
            raise PlanError(f"the edited plan is not valid: {problems}") from None

    def render(self) -> str:
        """A human-readable outline of the plan."""
        lines = [f"Plan for: {self.instruction}" if self.instruction else "Plan"]
        for s in self.label_steps:
            lines.append(f"  label  {s.id:<20} {s.instruction}")
        lines.append(f"  keep   {condition_text(self.keep)}")
        for s in self.span_steps:
            lines.append(f"  span   {s.id:<20} {s.instruction}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True, exclude_none=False)

    def save(self, path: str | Path) -> None:
        write_text(Path(path), self.to_json() + "\n")

    @classmethod
    def from_json(cls, text: str, source: str = "plan") -> Plan:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, huge ints, deep nesting
            raise PlanError(f"{source} is not valid JSON: {e}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'plan'}: {err['msg']}" for err in e.errors())
            raise PlanError(f"{source} is not a valid plan: {problems}") from None

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        p = Path(path)
        if not p.is_file():
            raise PlanError(f"plan file not found: {p}")
        return cls.from_json(p.read_text(), source=str(p))


def referenced_ids(cond: Condition) -> list[str]:
    if isinstance(cond, str):
        return [cond]
    if isinstance(cond, Not):
        return referenced_ids(cond.not_)
    children = cond.all if isinstance(cond, All) else cond.any
    return [r for c in children for r in referenced_ids(c)]


def depth(cond: Condition) -> int:
    if isinstance(cond, str):
        return 1
    if isinstance(cond, Not):
        return 1 + depth(cond.not_)
    children = cond.all if isinstance(cond, All) else cond.any
    return 1 + max(depth(c) for c in children)


def evaluate(cond: Condition, answers: dict[str, bool]) -> bool:
    if isinstance(cond, str):
        return bool(answers[cond])
    if isinstance(cond, Not):
        return not evaluate(cond.not_, answers)
    if isinstance(cond, All):
        return all(evaluate(c, answers) for c in cond.all)
    return any(evaluate(c, answers) for c in cond.any)


def condition_text(cond: Condition | None) -> str:
    if cond is None:
        return "every document"
    if isinstance(cond, str):
        return cond
    if isinstance(cond, Not):
        return f"NOT {condition_text(cond.not_)}"
    joiner, children = (" AND ", cond.all) if isinstance(cond, All) else (" OR ", cond.any)
    parts = [condition_text(c) for c in children]
    return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"


def plan_table(plan: Plan):
    """A rich table of the plan: label steps, the keep condition, then extraction fields."""
    from rich.table import Table
    from rich.text import Text  # plain Text: user wording is never read as rich markup

    title = f"Plan: {plan.instruction}" if plan.instruction else "Plan"
    t = Table(title=Text(title), title_justify="left", min_width=min(len(title) + 2, 100))
    for col in ("step", "id", "asks"):
        t.add_column(col)
    for s in plan.label_steps:
        t.add_row("label", s.id, Text(s.instruction))
    t.add_row(Text("keep", style="bold"), "", Text(condition_text(plan.keep)), end_section=True)
    for s in plan.span_steps:
        t.add_row("extract", s.id, Text(s.instruction))
    return t


def plan_json_schema() -> dict:
    """JSON schema of a plan, for constrained decoding by capable teachers."""
    return Plan.model_json_schema(by_alias=True)
