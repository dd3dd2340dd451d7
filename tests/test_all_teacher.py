"""The teacher-alone baseline: one definition for the quote and the report."""

import pytest

from falconer_ray.cost.baseline import estimate, seconds_per_document, teacher_per_op


def test_per_op_from_totals_leaves_out_kinds_without_calls():
    per_op = teacher_per_op({"label": 4, "span": 0}, {"label": 6.0, "span": 0.0}, {"label": 400}, {"label": 4})
    assert per_op == {"label": {"s_per_call": 1.5, "input_tokens_per_call": 100.0, "output_tokens_per_call": 1.0}}


def test_span_steps_run_on_the_kept_share_only_when_there_is_a_filter():
    per_op = {"label": {"s_per_call": 2.0, "input_tokens_per_call": 10, "output_tokens_per_call": 1},
              "span": {"s_per_call": 3.0, "input_tokens_per_call": 20, "output_tokens_per_call": 5}}
    got = estimate(per_op, 1000, n_label=2, n_span=1, keep=0.3)
    assert got["calls"] == {"label": 2000, "span": 300} and got["teacher_calls"] == 2300
    assert got["seconds"] == pytest.approx(2000 * 2.0 + 300 * 3.0)
    assert got["tokens"] == {"input": 2000 * 10 + 300 * 20, "output": 2000 + 300 * 5}
    no_filter = estimate(per_op, 1000, n_label=0, n_span=2, keep=0.3)  # nothing filters: spans on every document
    assert no_filter["calls"] == {"label": 0, "span": 2000}
    assert seconds_per_document(per_op, 2, 1) == 7.0 and seconds_per_document({}, 1, 1) == 0.0
