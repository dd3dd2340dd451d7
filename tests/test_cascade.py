"""The cascade's statistics: threshold choice, its guarantee in simulation, edge cases."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from falconer_ray.mine.cascade import DEFAULT_GRID, calibrate, combined, label_confidence, p_value, repeated_splits


def population(rng, n):
    """Confidence ~ U(0, 1); the proxy agrees with the teacher with probability (1 + c) / 2.

    Then R(t) = P(c >= t, disagree) = (1 - t)^2 / 4 exactly, so the true agreement of
    any threshold is known without sampling.
    """
    c = rng.uniform(0.0, 1.0, n)
    agree = rng.uniform(0.0, 1.0, n) < (1.0 + c) / 2.0
    return c, agree


def true_agreement(t):
    return 1.0 if math.isinf(t) else 1.0 - (1.0 - min(max(t, 0.0), 1.0)) ** 2 / 4.0


def test_p_value_is_the_exact_binomial_tail():
    # P(Bin(n, r) <= k) equals scipy's one-sided exact binomial test ("less").
    for k, n, r in [(0, 60, 0.05), (3, 100, 0.05), (10, 200, 0.1), (50, 50, 0.2)]:
        assert p_value(k, n, r) == pytest.approx(binomtest(k, n, r, alternative="less").pvalue)
    assert p_value(0, 60, 0.05) == pytest.approx(0.95 ** 60)


def test_threshold_is_the_last_rejected_in_the_fixed_sequence():
    # 10 confident right answers, then confident wrong ones: the walk must stop before them.
    c = np.array([0.99] * 300 + [0.6] * 100)
    agree = np.array([True] * 300 + [False] * 100)
    cal = calibrate(c, agree, target=0.95, delta=0.05)
    assert 0.6 < cal.threshold <= 0.99
    assert cal.errors == 0 and cal.to_teacher == pytest.approx(0.25) and cal.agreement == 1.0
    # Every document right: the proxy may answer all of them.
    cal = calibrate(c, np.ones_like(agree), target=0.95, delta=0.05)
    assert cal.threshold == DEFAULT_GRID.min() and cal.to_teacher == 0.0


def test_too_few_documents_send_everything_to_the_teacher():
    # 0.95^50 = 0.077 > 0.05: even a perfect proxy on 50 documents proves nothing.
    cal = calibrate(np.ones(50), np.ones(50, dtype=bool), target=0.95, delta=0.05)
    assert math.isinf(cal.threshold) and cal.to_teacher == 1.0 and cal.agreement == 1.0
    assert cal.to_dict()["threshold"] is None
    # 0.95^60 = 0.046 < 0.05: now it can.
    assert calibrate(np.ones(60), np.ones(60, dtype=bool), 0.95, 0.05).to_teacher == 0.0


def test_combined_agreement_and_routing():
    c = np.array([0.9, 0.8, 0.3, 0.2])
    agree = np.array([True, False, False, True])
    assert combined(c, agree, 0.5) == (0.75, 0.5)  # one proxy error among four
    assert combined(c, agree, 0.1) == (0.5, 0.0)
    assert combined(c, agree, math.inf) == (1.0, 1.0)
    np.testing.assert_allclose(label_confidence([0.1, 0.5, 0.8]), [0.9, 0.5, 0.8])


@pytest.mark.parametrize("bad", [dict(target=1.0), dict(target=0.0), dict(delta=0.0), dict(delta=1.5)])
def test_bad_arguments_are_errors(bad):
    kw = dict(target=0.9, delta=0.05) | bad
    with pytest.raises(ValueError):
        calibrate([0.5, 0.6], [True, False], **kw)


def test_shape_and_nan_errors():
    with pytest.raises(ValueError, match="equally long"):
        calibrate([0.5, 0.6], [True], 0.9)
    with pytest.raises(ValueError, match="NaN"):
        calibrate([0.5, float("nan")], [True, False], 0.9)
    with pytest.raises(ValueError, match="both sides"):
        repeated_splits([0.5], [True], 0.9)


@pytest.mark.parametrize("target,delta", [(0.95, 0.05), (0.9, 0.1)])
def test_guarantee_holds_over_many_calibration_samples(target, delta):
    """Over many independent calibration samples the chosen threshold's true agreement
    is below the target in at most delta of them (plus Monte Carlo slack)."""
    rng = np.random.default_rng(1)
    trials, n = 1000, 400
    misses, teacher_share = 0, []
    for _ in range(trials):
        c, agree = population(rng, n)
        t = calibrate(c, agree, target, delta).threshold
        misses += true_agreement(t) < target
        teacher_share.append(min(1.0, 1.0 if math.isinf(t) else t))
    slack = 3 * math.sqrt(delta * (1 - delta) / trials)
    assert misses / trials <= delta + slack
    # Not vacuous: the oracle threshold sends 1 - 2 sqrt(1 - target) to the teacher, and
    # the calibrated one is not far above it.
    oracle = 1 - 2 * math.sqrt(1 - target)
    assert np.mean(teacher_share) < oracle + 0.2


def test_the_simulation_catches_a_threshold_without_a_bound():
    """Choosing the lowest threshold whose *observed* agreement meets the target misses
    it about half the time; the same check as above must see that."""
    rng = np.random.default_rng(2)
    trials, n, target, delta = 400, 400, 0.95, 0.05
    misses = 0
    for _ in range(trials):
        c, agree = population(rng, n)
        wrong = np.array([np.sum((c >= t) & ~agree) for t in DEFAULT_GRID[::8]])
        ok = DEFAULT_GRID[::8][1.0 - wrong / n >= target]
        naive = ok.min() if ok.size else math.inf
        misses += true_agreement(naive) < target
    assert misses / trials > delta + 3 * math.sqrt(delta * (1 - delta) / trials)


def test_repeated_splits_reports_how_often_the_target_is_met():
    rng = np.random.default_rng(3)
    c, agree = population(rng, 2000)
    out = repeated_splits(c, agree, 0.95, 0.05, splits=50, seed=0)
    assert out["calibrate_docs"] == 1000 and out["test_docs"] == 1000
    # Measured on a finite check half, whose own sampling error counts against it.
    assert out["met_fraction"] >= 0.8
    assert 0.0 < out["mean_to_teacher"] < 1.0
    assert out["proxy_only_agreement"] < 0.95 <= out["mean_agreement"] + 0.01
