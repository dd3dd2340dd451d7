"""Instruction -> Plan with the teacher LLM: constrained, validated, repaired once.

Small embedded teachers cannot write JSON plans reliably, so the teacher fills three
slots in a fixed text format, and a GBNF grammar bounds what it may write (how many
questions, how long each is; the bounds sit well inside the Plan model's limits):

    Filter: yes/no questions joined by AND / OR, each may start with NOT; or none
    Classify: name: yes/no question ; ...   (label steps that do not filter); or none
    Extract: field: question ; ...          (span steps); or none

We parse that text into a Plan and validate it (types, unique ids, `keep` refers only
to label steps). An invalid answer goes back to the teacher once with the reason; a
second failure is a PlanError that shows the raw output and how to write the plan by
hand. The model never writes code, nor JSON that we trust as-is.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from falconer_ray.plan.fit import fit_to_request
from falconer_ray.plan.schema import All, AnyOf, Not, Plan, PlanError, Step

MAX_FILTER_CLAUSES = 4
MAX_ITEMS = 5  # per Classify / Extract line
MAX_QUESTION_CHARS = 150  # Step.instruction allows 400; tiny models ramble long before that
MAX_NAME_CHARS = 24
MAX_TOKENS = 256
REPAIR_ROUNDS = 1

# Demonstrations for base models (they continue a pattern far better than they follow
# instructions). Deliberately about other topics than the planning benchmark's cases
# (falconer_ray/bench/plan_cases.jsonl); a test keeps them apart.
DEMOS: list[tuple[str, str, str, str]] = [
    ("Pull out the phone models from reviews that praise the camera.",
     "Does the review praise the camera?", "none", "phone: Which phone models are named?"),
    ("Sort the support chats by language: English, Spanish or German.",
     "none", "english: Is the chat in English? ; spanish: Is the chat in Spanish? ; german: Is the chat in German?",
     "none"),
    ("Get the names and the ages of the patients in case reports.",
     "none", "none", "name: What are the patient names? ; age: What are the patient ages?"),
    ("Find the movie reviews that are not written in English.",
     "NOT Is the review written in English?", "none", "none"),
    ("Keep the podcast episodes that discuss climate change.",
     "Does the episode discuss climate change?", "none", "none"),
    ("Extract the bands from concert reviews that are enthusiastic and about a festival.",
     "Is the review enthusiastic? AND Is the concert a festival?", "none", "band: Which bands are named?"),
    ("Mark each essay as formal or informal.",
     "none", "formal: Is the essay formal? ; informal: Is the essay informal?", "none"),
    ("Which forum posts are about cats or about dogs?",
     "Is the post about cats? OR Is the post about dogs?", "none", "none"),
    ("Which city hosts which event, according to these announcements?",
     "Does the text announce an event?", "none", "event: Which events are announced? ; city: Which cities host the events?"),
    ("Extract the opening hours of shops.",
     "none", "none", "hours: What opening hours are given?"),
    ("List the bug numbers in commit messages that are not about tests.",
     "NOT Is the commit about tests?", "none", "bug: Which bug numbers are given?"),
    ("Find the letters that are written by a lawyer and mention a deadline.",
     "Is the letter written by a lawyer? AND Does the letter mention a deadline?", "none", "none"),
    ("Who wrote which song, in these music articles?",
     "none", "none", "writer: Who wrote the songs? ; song: Which songs were written?"),
    ("From news about earthquakes, get the magnitude and the region.",
     "Is the news about an earthquake?", "none", "magnitude: What magnitude is given? ; region: Which regions were hit?"),
    ("Tag each recipe review as praise, complaint or question.",
     "none", "praise: Does the review praise the recipe? ; complaint: Is the review a complaint? ; "
     "question: Does the review ask a question?", "none"),
    ("Extract the phone numbers from messages that are urgent or angry.",
     "Is the message urgent? OR Is the message angry?", "none", "phone: Which phone numbers are given?"),
]

PROMPT_HEADER = """Turn each request into a plan.
Filter: yes/no questions that select the texts, joined by AND or OR; a question may start with NOT; or none.
Classify: name: yes/no question, one per class to tag every text with, separated by " ; "; or none.
Extract: field_name: question, separated by " ; "; or none.

"""


def _demo(request: str, filt: str, classify: str, extract: str) -> str:
    return f"Request: {request}\nFilter: {filt}\nClassify: {classify}\nExtract: {extract}\n\n"


# Words that signal a plan's structure (negation, and / or, classes, relations) are
# kept when demonstrations are compared with a request; filler words are not.
_FILLER = frozenset("a an the of in on at to for from by with is are be it its this these those that".split())


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in _FILLER}


NEAREST_DEMOS = 2


def nearest_demos(instruction: str, k: int = NEAREST_DEMOS) -> list[tuple[str, str, str, str]]:
    """The `k` demonstrations most like `instruction`, the nearest last.

    Tiny models copy the structure of the example just before the question, so the
    nearest ones (word-set Jaccard, structure words included) are repeated there.
    The full list stays first, unchanged, so llama.cpp reuses its cached tokens and
    only the repeated examples are read anew. Ties keep DEMOS order: deterministic.
    """
    words = _words(instruction)

    def similarity(demo: tuple[str, str, str, str]) -> float:
        other = _words(demo[0])
        return len(words & other) / len(words | other) if words | other else 0.0

    return sorted(DEMOS, key=similarity)[-k:] if k > 0 else []


def planner_prompt(instruction: str, rejected: tuple[str, str] | None = None) -> str:
    """Few-shot completion prompt ending in "Filter:"; `rejected` = (raw, reason) of a failed try."""
    prompt = PROMPT_HEADER + "".join(_demo(*d) for d in DEMOS + nearest_demos(instruction))
    if rejected is not None:
        raw, reason = rejected
        prompt += (f"Request: {instruction}\nFilter:{raw.rstrip()}\n"
                   f"That plan was rejected: {_one_line(reason)}. Write a corrected plan.\n\n")
    return prompt + f"Request: {instruction}\nFilter:"


def planner_grammar(max_clauses: int = MAX_FILTER_CLAUSES, max_items: int = MAX_ITEMS,
                    max_question: int = MAX_QUESTION_CHARS, max_name: int = MAX_NAME_CHARS) -> str:
    """GBNF for the three slots; every length and count is bounded, and at least one
    slot is not "none" (a plan needs a step).

    Allowing an all-"none" answer and repairing it instead was measured worse: the
    tiny teachers answered "none" again on repair (SmolLM2 then failed 14 of 37
    benchmark instructions instead of 0).
    """
    return "\n".join([
        'root     ::= " " ( some "\\nClassify: " items "\\nExtract: " items'
        ' | "none\\nClassify: " ( itemsome "\\nExtract: " items | "none\\nExtract: " itemsome ) ) "\\n"',
        f"some     ::= clause (joiner clause){{0,{max_clauses - 1}}}",
        'clause   ::= ("NOT ")? question',
        'joiner   ::= " AND " | " OR "',
        # "Is ...", "Does ...": a capital then lower case (tiny models otherwise drift into capitals);
        # no ":" (a question holding "Extract: none : ..." is the model writing its prompt again)
        f'question ::= [A-Z] [a-z] [^?\\n;|:]{{1,{max_question - 3}}} "?"',
        'items    ::= "none" | itemsome',
        f'itemsome ::= item (" ; " item){{0,{max_items - 1}}}',
        f'item     ::= [a-z] [a-z0-9_]{{0,{max_name - 1}}} ": " question',
        "",
    ])


PLANNER_GRAMMAR = planner_grammar()

STOPWORDS = {"is", "are", "does", "do", "did", "the", "a", "an", "of", "about", "this", "that", "what",
             "which", "who", "it", "in", "on", "to", "be", "any", "there", "mentioned", "text", "by"}

EXAMPLE_PLAN = {
    "instruction": "Extract the product names from reviews that are not positive",
    "steps": [{"id": "positive", "op": "get_label", "instruction": "Is the review positive?"},
              {"id": "product", "op": "get_span", "instruction": "Which products are named?"}],
    "keep": {"not": "positive"},
}


def plan_from_text(instruction: str, completion: str) -> Plan:
    """Parse the teacher's filled slots (" <filter>\\nClassify: ...\\nExtract: ...") into a Plan.

    The Classify line is optional (older two-slot answers parse too). A question asked
    twice becomes one step (small models repeat themselves), and a yes/no question is
    never a field: an exact substring cannot answer it (models list the filter's
    question again under Extract).
    """
    text = completion.strip()
    if text.startswith("Filter:"):
        text = text[len("Filter:"):]
    filter_part, sep, rest = text.partition("\nExtract:")
    if not sep:
        raise PlanError(f"planner output lacks an 'Extract:' line:\n{completion}")
    filter_part, _, classify_part = filter_part.partition("\nClassify:")
    extract_part = rest.strip().splitlines()[0].strip() if rest.strip() else "none"

    steps: list[Step] = []
    taken: set[str] = set()
    by_question: dict[str, str] = {}

    def label(question: str, name: str | None = None) -> str:
        if question in by_question:  # one step per distinct question
            return by_question[question]
        step = Step(id=_step_id(name or question, taken), op="get_label", instruction=question)
        steps.append(step)
        by_question.setdefault(question, step.id)
        return step.id

    keep = _parse_filter(filter_part.strip(), label)
    for name, question in _parse_items(classify_part.strip()):
        label(question, name)
    asked = set(by_question)
    for name, question in _parse_items(extract_part):
        if question not in asked and not is_yes_no(question):
            asked.add(question)
            steps.append(Step(id=_step_id(name, taken), op="get_span", instruction=question))
    if not steps:
        raise PlanError("the plan has no step: give a filter, a class or a field to extract")
    return Plan(instruction=instruction, steps=steps, keep=keep)


YES_NO = re.compile(r"^(is|are|am|was|were|does|do|did|has|have|had|can|could|will|would|should|shall|may|must)\b",
                    re.IGNORECASE)


def is_yes_no(question: str) -> bool:
    """Whether a question is answered yes or no ("Is the review positive?"), not by a piece of text."""
    return bool(YES_NO.match(question.strip()))


def _parse_filter(text: str, label) -> object:
    if not text or text.lower() == "none":
        return None
    alternatives = []
    for group in re.split(r"\s+OR\s+", text):
        conjuncts = []
        for clause in re.split(r"\s+AND\s+", group):
            clause = clause.strip()
            negated = clause.startswith("NOT ")
            question = clause[4:].strip() if negated else clause
            ref = label(question)
            conjuncts.append(Not(**{"not": ref}) if negated else ref)
        conjuncts = _unique(conjuncts)  # "x AND x" is x
        alternatives.append(conjuncts[0] if len(conjuncts) == 1 else All(all=conjuncts))
    alternatives = _unique(alternatives)
    return alternatives[0] if len(alternatives) == 1 else AnyOf(any=alternatives)


def _unique(conditions: list) -> list:
    seen, out = set(), []
    for c in conditions:
        key = c if isinstance(c, str) else c.model_dump_json(by_alias=True)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _parse_items(text: str) -> list[tuple[str, str]]:
    if not text or text.lower() == "none":
        return []
    items = []
    for item in text.split(" ; "):
        name, sep, question = item.partition(":")
        if not sep or not question.strip():
            raise PlanError(f"item '{item}' is not 'name: question'")
        if name.strip().lower() != "none":  # the slot's own "nothing" word used as a name
            items.append((name, question.strip()))
    return items


def _step_id(words: str, taken: set[str]) -> str:
    tokens = [t for t in re.findall(r"[a-z0-9]+", words.lower()) if t not in STOPWORDS] or ["step"]
    base = "_".join(tokens[:3])[:36]
    base = base if base[0].isalpha() else f"s_{base}"
    ident, n = base, 2
    while ident in taken:
        ident, n = f"{base}_{n}", n + 1
    taken.add(ident)
    return ident


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _reason(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'plan'}: {err['msg']}" for err in e.errors())
    return str(e)


class PlanningFailed(PlanError):
    """No teacher answer validated; `attempts` holds (raw output, reason) per try."""

    def __init__(self, message: str, attempts: list[tuple[str, str]]):
        super().__init__(message)
        self.attempts = attempts


def plan_with_trace(instruction: str, teacher, repair_rounds: int = REPAIR_ROUNDS,
                    on_note=None) -> tuple[Plan, list[tuple[str, str]]]:
    """Like `make_plan`, also returning the rejected tries (raw output, reason) before the plan."""
    instruction = " ".join(instruction.split())
    if not instruction:
        raise PlanError("the instruction is empty; say what to find or extract")
    attempts: list[tuple[str, str]] = []
    for _ in range(1 + max(repair_rounds, 0)):
        prompt = planner_prompt(instruction, attempts[-1] if attempts else None)
        raw = teacher.complete(prompt, max_tokens=MAX_TOKENS, stop=["\nRequest:", "\n\n"], grammar=PLANNER_GRAMMAR)
        try:
            plan = plan_from_text(instruction, raw)
        except (PlanError, ValueError) as e:  # ValidationError is a ValueError
            attempts.append((raw, _reason(e)))
            continue
        plan, notes = fit_to_request(plan, instruction)
        for line in notes:
            (on_note or (lambda _: None))(line)
        return plan, attempts
    tries = "\n".join(f"--- attempt {i} (rejected: {_one_line(reason)})\nFilter:{raw}"
                      for i, (raw, reason) in enumerate(attempts, 1))
    raise PlanningFailed(
        f"the teacher ({teacher.name}) did not produce a valid plan for {instruction!r}.\n{tries}\n"
        "Write the plan yourself and pass it with --plan FILE (`falconer plan --schema` prints the "
        f"format). A minimal plan:\n{json.dumps(EXAMPLE_PLAN, indent=2)}",
        attempts,
    )


def make_plan(instruction: str, teacher, repair_rounds: int = REPAIR_ROUNDS, on_note=None) -> Plan:
    """Ask the teacher for a plan; an invalid answer is sent back once with the reason,
    and a valid one is trimmed to what the request asks for (`on_note` hears each cut).

    Raises PlanError (PlanningFailed) with every raw answer and a hand-written example
    plan when no answer validates.
    """
    return plan_with_trace(instruction, teacher, repair_rounds, on_note)[0]
