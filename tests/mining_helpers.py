"""Shared by the tests that mine with an untrained proxy and compare runs."""

import numpy as np

PLAN = {"instruction": "people praised in positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Extract the names of people who are praised."}],
    "keep": "positive"}


def split_point(values) -> float:
    """A threshold in the widest gap of the middle half: both sides get values, and
    float noise between two batchings cannot move a value across it."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    lo, hi = len(v) // 4, max(len(v) // 4 + 1, 3 * len(v) // 4)
    k = lo + int(np.argmax(np.diff(v[lo:hi + 1])))
    return float((v[k] + v[k + 1]) / 2)
