"""Which documents the teacher annotates: at random, or where the proxy is least sure.

Uncertainty sampling spends half the annotation budget on a random sample, trains
the proxy on it, and spends the other half on the candidates the proxy is least
confident about: those are the answers it cannot yet give itself. The proxy is then
trained again from its base on every answer, so the two choices cost the same
teacher answers and differ only in which documents they buy.
"""

from __future__ import annotations

import numpy as np

SELECTIONS = ("random", "uncertainty")


def check_selection(name: str) -> str:
    if name not in SELECTIONS:
        raise ValueError(f"--selection must be one of {', '.join(SELECTIONS)}, not {name!r}")
    return name


def first_round(budget: int) -> int:
    """Answers bought at random before the proxy can say what it is unsure of."""
    if budget < 2:
        raise ValueError(f"uncertainty selection needs a budget of at least 2 documents (got {budget})")
    return budget // 2


def least_confident(confidence, k: int) -> list[int]:
    """Positions of the k lowest confidences; ties go to the earlier position, so
    the choice is a function of the scores alone."""
    c = np.asarray(confidence, dtype=np.float64)
    if c.ndim != 1 or np.isnan(c).any():
        raise ValueError("confidence must be a 1-d array without NaN")
    if not 0 <= k <= c.size:
        raise ValueError(f"cannot pick {k} of {c.size} candidates")
    return [int(i) for i in np.argsort(c, kind="stable")[:k]]
