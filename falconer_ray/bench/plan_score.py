"""Scores for the planning benchmark: is a predicted plan the expected one?

Two numbers, both blind to step ids and to exact wording, because a plan is right
when it asks the right *kinds* of questions combined the right way:

* `exact_match(pred, exp)`: True iff
  1. the multisets of step kinds are equal (same number of get_label and of
     get_span steps), and
  2. the `keep` conditions have the same shape: `keep_shape` replaces every step
     reference by "L", flattens nested AND-in-AND / OR-in-OR, unwraps one-child
     AND / OR, cancels double NOT, and sorts the children of AND / OR, so
     `all[a, not b]` and `all[not c, d]` are equal and `any[a, b]` and `all[a, b]`
     are not. No `keep` has its own shape ("*").
* `step_f1(pred, exp)`: steps are matched one-to-one, a pair only when both have the
  same kind and `text_similarity` of their texts (id words + instruction) is at
  least `MATCH_THRESHOLD`. The matching maximises the number of pairs, then the
  summed similarity (Hungarian algorithm). precision = pairs / predicted steps,
  recall = pairs / expected steps, F1 their harmonic mean.

`text_similarity` is the F1 of the two sets of content words (lower-cased, stop words
and question words removed, plurals made singular), so "Which hotels are named?" /
id `hotel` and "Extract the hotel names" / id `hotel_name` match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from falconer_ray.plan.fit import singular
from falconer_ray.plan.schema import All, AnyOf, Condition, Not, Plan, Step

MATCH_THRESHOLD = 0.5

STOPWORDS = frozenset(
    "a an the of about in on at to for from by with and or not no is are was were be been does do did has have "
    "had it its this that these those there which what who whom whose when where how any each every all some "
    "text texts document mentioned mention mentions named name names given extract get list find say whether "
    "than then into as".split()
)


def keep_shape(cond: Condition | None) -> str:
    """Canonical, id-free shape of a keep condition (see module docstring)."""
    if cond is None:
        return "*"
    return _shape(cond)


def _shape(cond: Condition) -> str:
    if isinstance(cond, str):
        return "L"
    if isinstance(cond, Not):
        inner = _unwrap(cond.not_)
        return _shape(inner.not_) if isinstance(inner, Not) else f"not({_shape(inner)})"  # NOT NOT x == x
    cond = _unwrap(cond)
    if not isinstance(cond, (All, AnyOf)):
        return _shape(cond)
    op = "all" if isinstance(cond, All) else "any"
    return f"{op}({','.join(sorted(_shape(c) for c in _flat(cond, type(cond))))})"


def _children(cond: All | AnyOf) -> list[Condition]:
    return cond.all if isinstance(cond, All) else cond.any


def _unwrap(cond: Condition) -> Condition:
    """A one-child AND / OR is its child."""
    while isinstance(cond, (All, AnyOf)) and len(_children(cond)) == 1:
        cond = _children(cond)[0]
    return cond


def _flat(cond: All | AnyOf, cls: type) -> list[Condition]:
    """Children of `cond`, with nested conditions of the same operator spliced in."""
    out: list[Condition] = []
    for child in map(_unwrap, _children(cond)):
        out.extend(_flat(child, cls) if isinstance(child, cls) else [child])
    return out


def kinds(plan: Plan) -> tuple[int, int]:
    """(number of get_label steps, number of get_span steps)."""
    return len(plan.label_steps), len(plan.span_steps)


def exact_match(pred: Plan, exp: Plan) -> bool:
    return kinds(pred) == kinds(exp) and keep_shape(pred.keep) == keep_shape(exp.keep)


def content_words(text: str) -> set[str]:
    words = set()
    for w in re.findall(r"[a-z0-9]+", text.lower().replace("_", " ")):
        if w in STOPWORDS:
            continue
        words.add(singular(w))
    return words


def text_similarity(a: Step, b: Step) -> float:
    """F1 of the content-word sets of `id + instruction` of two steps."""
    wa, wb = content_words(f"{a.id} {a.instruction}"), content_words(f"{b.id} {b.instruction}")
    common = len(wa & wb)
    if not common:
        return 0.0
    p, r = common / len(wa), common / len(wb)
    return 2 * p * r / (p + r)


@dataclass
class StepMatch:
    pairs: list[tuple[int, int, float]]  # (predicted index, expected index, similarity)
    n_pred: int
    n_exp: int

    @property
    def precision(self) -> float:
        return len(self.pairs) / self.n_pred if self.n_pred else 0.0

    @property
    def recall(self) -> float:
        return len(self.pairs) / self.n_exp if self.n_exp else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_steps(pred: Plan, exp: Plan, threshold: float = MATCH_THRESHOLD) -> StepMatch:
    """One-to-one matching of predicted to expected steps (see module docstring)."""
    P, E = pred.steps, exp.steps
    sim = np.zeros((len(P), len(E)))
    for i, p in enumerate(P):
        for j, e in enumerate(E):
            if p.op == e.op:
                s = text_similarity(p, e)
                sim[i, j] = s if s >= threshold else 0.0
    # Weight = big constant per eligible pair + similarity: most pairs first, then best.
    weight = np.where(sim > 0, len(P) + len(E) + 1 + sim, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    pairs = [(int(i), int(j), float(sim[i, j])) for i, j in zip(rows, cols) if sim[i, j] > 0]
    return StepMatch(pairs, len(P), len(E))


def step_f1(pred: Plan, exp: Plan, threshold: float = MATCH_THRESHOLD) -> float:
    return match_steps(pred, exp, threshold).f1
