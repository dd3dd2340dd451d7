"""Trim a parsed plan to what its request asks for.

Small teachers copy the shape of their demonstrations rather than read the request,
and two of their habits cost a run without showing in the plan's validity:

- a NOT the request never states ("negative travel reviews" planned as NOT "Is the
  review negative?"): the run keeps exactly the documents the user did not want;
- a field that picks documents instead of extracting from them ("Which recipes are
  vegetarian?" beside the filter "Is the recipe vegetarian?"): no substring answers
  it, so the teacher's answers are noise and the proxy learns an empty field.

Both are corrected here, after parsing and validation, and every correction is named
so the user sees it when the plan is shown for review.
"""

from __future__ import annotations

import re

from falconer_ray.plan.schema import All, AnyOf, Not, Plan

NEGATION = re.compile(
    r"\b(not|no|non|nor|neither|never|none|without|except|excluding|exclude|excludes|unless|other than|"
    r"apart from|lack|lacks|lacking|free of)\b|n't\b",
    re.IGNORECASE,
)
# "Is the review ...", "Does the abstract ...": the noun a label question is about is
# the document; so is "these X" in the request, and "for each X" ("all X", "each X"
# alone often name what to extract: "all the names", "each company").
LABEL_SUBJECT = re.compile(r"^(?:is|are|does|do|did|was|were|has|have)\s+(?:the|this|a|an)\s+([a-z]+)", re.IGNORECASE)
REQUEST_DOCUMENTS = re.compile(r"\b(?:these|those|(?:in|from|of|for)\s+each)\s+([a-z]+)", re.IGNORECASE)
WHICH = re.compile(r"^(?:which|what)\s+", re.IGNORECASE)
# After the noun a question is about, a predicate follows ("recipes ARE vegetarian",
# "notes MENTION fever"); after a modifier, the real noun does ("article TITLES").
PREDICATE_STARTS = frozenset(
    "are is was were do does did have has can could will would should about that with from in on of for by to "
    "mention mentions discuss discusses describe describes report reports contain contains require requires "
    "say says talk talks praise praises criticize criticizes include includes".split())


def asks_negation(request: str) -> bool:
    """Whether the request words a negation at all ("not", "without", "isn't", ...)."""
    return bool(NEGATION.search(request))


def singular(word: str) -> str:
    """Crude English singular of a lower-case word: addresses -> address, cities -> city."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith("ss"):
        return word
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("ies"):
        return word[:-3] + "y"
    return word[:-1]


def document_nouns(plan: Plan, request: str) -> set[str]:
    """What the documents are called: label questions' subjects, the request's "these X"."""
    nouns = {singular(m.group(1).lower()) for s in plan.label_steps if (m := LABEL_SUBJECT.match(s.instruction))}
    nouns |= {singular(m.group(1).lower()) for m in REQUEST_DOCUMENTS.finditer(request)}
    return nouns - {"text", "one", "thing"}


def selects_documents(question: str, nouns: set[str]) -> bool:
    """"Which recipes are vegetarian?" when the documents are recipes: a filter, not a field."""
    m = WHICH.match(question.strip())
    if not m:
        return False
    words = re.findall(r"[a-z]+", question[m.end():].lower())
    for i, word in enumerate(words[:3]):
        following = words[i + 1] if i + 1 < len(words) else None
        if singular(word) in nouns and (following is None or following in PREDICATE_STARTS):
            return True
    return False


def drop_negations(cond):
    """`cond` with every NOT removed (the positive question stays)."""
    if isinstance(cond, Not):
        return drop_negations(cond.not_)
    if isinstance(cond, All):
        return All(all=[drop_negations(c) for c in cond.all])
    if isinstance(cond, AnyOf):
        return AnyOf(any=[drop_negations(c) for c in cond.any])
    return cond


def fit_to_request(plan: Plan, request: str) -> tuple[Plan, list[str]]:
    """The plan without what `request` does not ask for, and one line per change."""
    notes: list[str] = []
    positive = drop_negations(plan.keep)
    if positive != plan.keep and not asks_negation(request):
        plan = plan.with_keep(positive if isinstance(positive, str) else positive.model_dump(by_alias=True))
        notes.append("removed a NOT from the filter: the request states no negation")
    nouns = document_nouns(plan, request)
    pickers = [s for s in plan.span_steps if selects_documents(s.instruction, nouns)]
    if pickers and len(pickers) < len(plan.steps):
        for step in pickers:
            plan = plan.remove_step(step.id)
            notes.append(f"removed field '{step.id}' ({step.instruction!r}): it selects documents, "
                         "which a filter does; a field extracts text from them")
    return plan, notes
