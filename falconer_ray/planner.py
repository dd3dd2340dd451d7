"""Instruction -> Plan with the teacher LLM.

Small embedded teachers cannot write JSON plans reliably, so the teacher fills two
slots in a fixed, grammar-constrained format (yes/no questions joined by AND / OR /
NOT, and `field: question` extraction items); we parse that text into a Plan and
validate it. The model never writes code or JSON that we trust as-is.
"""

from __future__ import annotations

import re

from falconer_ray.plan import All, AnyOf, Not, Plan, PlanError, Step

PLANNER_PROMPT = """Turn each request into a filter and the fields to extract.
Filter: yes/no questions about one text, joined by AND or OR; a question may start with NOT; or none.
Extract: field_name: question, items separated by " ; "; or none.

Request: Extract all laptop prices from positive Amazon reviews.
Filter: Is the review positive? AND Is the review about a laptop?
Extract: price: What laptop prices are mentioned?

Request: Find tweets that complain about delayed flights.
Filter: Does the tweet complain about a delayed flight?
Extract: none

Request: List the companies and the people who lead them in these news articles.
Filter: none
Extract: company: Which companies are mentioned? ; leader: Which people lead a company?

Request: Get the symptoms from patient notes that are not about children.
Filter: NOT Is the note about a child?
Extract: symptom: What symptoms are mentioned?

Request: Which emails are spam or phishing?
Filter: Is the email spam? OR Is the email phishing?
Extract: none

Request: Find the dishes that diners praise in positive restaurant reviews.
Filter: Is the review positive?
Extract: dish: Which dishes are praised?

Request: Pull out the cities mentioned in travel blog posts written in a negative tone.
Filter: Is the post about travel? AND Is the tone negative?
Extract: city: Which cities are mentioned?

Request: {instruction}
Filter:"""

PLANNER_GRAMMAR = r"""
root     ::= " " filter "\nExtract: " extract "\n"
filter   ::= "none" | clause (joiner clause){0,3}
clause   ::= ("NOT ")? question
joiner   ::= " AND " | " OR "
question ::= [A-Z] [^?\n]+ "?"
extract  ::= "none" | field (" ; " field){0,4}
field    ::= [a-z] [a-z_]* ": " question
"""

STOPWORDS = {"is", "are", "does", "do", "did", "the", "a", "an", "of", "about", "this", "that", "what",
             "which", "who", "it", "in", "on", "to", "be", "any", "there", "mentioned", "text", "by"}


def plan_from_text(instruction: str, completion: str) -> Plan:
    """Parse the teacher's filled slots ("<filter>\\nExtract: <fields>") into a Plan."""
    text = completion.strip()
    if "\nExtract:" not in "\n" + text.replace("Filter:", "", 1).lstrip():
        raise PlanError(f"planner output lacks an 'Extract:' line:\n{completion}")
    filter_part, _, extract_part = text.partition("Extract:")
    filter_part = filter_part.replace("Filter:", "", 1).strip()
    extract_part = extract_part.strip().splitlines()[0].strip() if extract_part.strip() else "none"

    steps: list[Step] = []
    taken: set[str] = set()
    keep = None
    if filter_part.lower() != "none" and filter_part:
        alternatives = []
        for group in re.split(r"\s+OR\s+", filter_part):
            conjuncts = []
            for clause in re.split(r"\s+AND\s+", group):
                negated = clause.startswith("NOT ")
                question = clause[4:].strip() if negated else clause.strip()
                step = Step(id=_step_id(question, taken), op="get_label", instruction=question)
                steps.append(step)
                conjuncts.append(Not(**{"not": step.id}) if negated else step.id)
            alternatives.append(conjuncts[0] if len(conjuncts) == 1 else All(all=conjuncts))
        keep = alternatives[0] if len(alternatives) == 1 else AnyOf(any=alternatives)
    if extract_part.lower() != "none":
        for item in extract_part.split(" ; "):
            name, sep, question = item.partition(":")
            if not sep or not question.strip():
                raise PlanError(f"extraction item '{item}' is not 'field: question'")
            steps.append(Step(id=_step_id(name, taken), op="get_span", instruction=question.strip()))
    if not steps:
        raise PlanError("the plan has neither a filter nor a field to extract")
    return Plan(instruction=instruction, steps=steps, keep=keep)


def _step_id(words: str, taken: set[str]) -> str:
    tokens = [t for t in re.findall(r"[a-z0-9]+", words.lower()) if t not in STOPWORDS] or ["step"]
    base = "_".join(tokens[:3])[:36]
    base = base if base[0].isalpha() else f"s_{base}"
    ident, n = base, 2
    while ident in taken:
        ident, n = f"{base}_{n}", n + 1
    taken.add(ident)
    return ident


def make_plan(instruction: str, teacher) -> Plan:
    """Ask the teacher for a plan; a clear error (with its raw output) when it fails."""
    instruction = " ".join(instruction.split())
    if not instruction:
        raise PlanError("the instruction is empty; say what to find or extract")
    prompt = PLANNER_PROMPT.replace("{instruction}", instruction)
    raw = teacher.complete(prompt, max_tokens=160, stop=["\nRequest:", "\n\n"], grammar=PLANNER_GRAMMAR)
    try:
        return plan_from_text(instruction, raw)
    except (PlanError, ValueError) as e:
        raise PlanError(
            f"the teacher ({teacher.name}) did not produce a usable plan: {e}\n"
            f"raw output:\n{raw}\n"
            "Write the plan yourself (see `falconer plan --help` for the format) and pass it with --plan FILE."
        ) from None
