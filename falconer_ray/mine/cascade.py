"""Proxy-or-teacher routing with a stated guarantee on agreement with the teacher.

Inside a run: after training, `calibrate_run` turns the held-out annotations into a
threshold (cascade.json); while mining, rows below it go to `mine.actors.TeacherStage`.

Every document gets a proxy confidence. Documents at or above a threshold keep the
proxy's answer; the rest go to the teacher, whose answer agrees with itself. The
combined answers agree with the teacher on a document unless the proxy answered it
and was wrong, so with R(t) = P(confidence >= t and proxy disagrees),

    agreement(t) = 1 - R(t),  and  agreement(t) >= target  <=>  R(t) <= 1 - target.

`calibrate` picks t from teacher answers on a held-out sample so that, with
probability at least 1 - delta over that sample, R(t) <= 1 - target on new documents
from the same distribution. It is the fixed-sequence procedure of Learn then Test
(Angelopoulos, Bates, Candes, Jordan, Lei 2021, arXiv:2110.01052), with exact binomial
p-values (the test behind the Clopper-Pearson bound): a fixed grid of thresholds is
tested from strict to lenient, H_t: R(t) > 1 - target is rejected when
P(Binomial(n, 1 - target) <= errors(t)) <= delta, and the walk stops at the first
threshold it cannot reject. Testing in a fixed order needs no union bound: the chance
of rejecting any true H_t is at most delta. R(t) only grows as t falls, so the last
rejected threshold is the most lenient one the data vouch for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom

from falconer_ray.config import RunConfig
from falconer_ray.plan.execute import ProxyAnswers, apply_plan, from_annotation
from falconer_ray.plan.schema import Plan
from falconer_ray.proxy import Proxy
from falconer_ray.rundir import RunDir, read_json, write_json

# Fixed before seeing data (the guarantee needs that): confidences live in [0, 1].
DEFAULT_GRID = np.round(np.linspace(1.0, 0.0, 401), 6)
ALL_TO_TEACHER = math.inf


@dataclass(frozen=True)
class Calibration:
    """A chosen threshold and what the held-out sample says about it."""

    threshold: float  # proxy answers when confidence >= threshold; inf: the teacher answers all
    target: float  # wanted agreement with the teacher
    delta: float  # allowed probability that the target is missed
    n: int  # held-out documents
    errors: int  # held-out documents the proxy would answer and get wrong
    to_teacher: float  # held-out fraction sent to the teacher
    agreement: float  # held-out agreement of the combined answers

    def to_dict(self) -> dict:
        d = asdict(self)
        d["threshold"] = None if math.isinf(self.threshold) else self.threshold
        return d


def _check(confidence, agree, target: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64)
    a = np.asarray(agree, dtype=bool)
    if c.shape != a.shape or c.ndim != 1:
        raise ValueError(f"confidence and agree must be 1-d and equally long (got {c.shape} and {a.shape})")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target agreement must be in (0, 1), not {target}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), not {delta}")
    if np.isnan(c).any():
        raise ValueError("confidence contains NaN")
    return c, a


def p_value(errors: int, n: int, risk: float) -> float:
    """P(Binomial(n, risk) <= errors): small when `errors` is too few for a true risk >= `risk`."""
    return float(binom.cdf(errors, n, risk))


def combined(confidence, agree, threshold: float) -> tuple[float, float]:
    """(agreement with the teacher, fraction sent to the teacher) at `threshold`."""
    c = np.asarray(confidence, dtype=np.float64)
    a = np.asarray(agree, dtype=bool)
    if c.size == 0:
        return 1.0, 0.0
    proxy = c >= threshold
    return float(1.0 - np.mean(proxy & ~a)), float(1.0 - np.mean(proxy))


def calibrate(confidence, agree, target: float, delta: float = 0.05, grid=None) -> Calibration:
    """The most lenient threshold of the fixed sequence whose risk bound holds.

    confidence: proxy confidence per held-out document; agree: whether the proxy's
    answer equals the teacher's there. With too few held-out documents even zero
    errors are no evidence ((target)^n > delta), and every document goes to the teacher.
    """
    c, a = _check(confidence, agree, target, delta)
    risk = 1.0 - target
    thresholds = DEFAULT_GRID if grid is None else np.sort(np.asarray(grid, dtype=np.float64))[::-1]
    # Errors at every threshold at once: documents with c >= t that disagree.
    c_sorted = np.sort(c)
    wrong_sorted = (~a)[np.argsort(c, kind="stable")]
    wrong_above = np.concatenate([np.cumsum(wrong_sorted[::-1])[::-1], [0]])  # wrong among c_sorted[i:]
    errors = wrong_above[np.searchsorted(c_sorted, thresholds, side="left")]
    rejected = binom.cdf(errors, c.size, risk) <= delta
    # Fixed sequence: keep the thresholds up to (not including) the first non-rejection.
    stop = int(np.argmin(rejected)) if not rejected.all() else len(thresholds)
    chosen = float(thresholds[stop - 1]) if stop else ALL_TO_TEACHER
    answered_mask = c >= chosen
    agreement, to_teacher = combined(c, a, chosen)
    return Calibration(chosen, target, delta, int(c.size), int(np.sum(answered_mask & ~a)), to_teacher, agreement)


def label_confidence(p_yes) -> np.ndarray:
    """Confidence of a yes/no answer from P(yes): the probability of the side chosen."""
    p = np.asarray(p_yes, dtype=np.float64)
    return np.maximum(p, 1.0 - p)


def repeated_splits(confidence, agree, target: float, delta: float = 0.05, splits: int = 100,
                    calibrate_fraction: float = 0.5, seed: int = 0) -> dict:
    """Calibrate on a random part of a labelled sample, measure on the rest, many times.

    What a user of `calibrate` sees in practice: how often the measured agreement on
    unseen documents meets the target, and what share went to the teacher.
    """
    c, a = _check(confidence, agree, target, delta)
    if splits < 1:
        raise ValueError(f"splits must be >= 1, not {splits}")
    n_cal = int(round(c.size * calibrate_fraction))
    if not 0 < n_cal < c.size:
        raise ValueError(f"need documents on both sides of the split (n={c.size}, fraction={calibrate_fraction})")
    rng = np.random.default_rng(seed)
    met, agreements, to_teacher, thresholds = 0, [], [], []
    for _ in range(splits):
        perm = rng.permutation(c.size)
        cal, test = perm[:n_cal], perm[n_cal:]
        chosen = calibrate(c[cal], a[cal], target, delta).threshold
        agreement, sent = combined(c[test], a[test], chosen)
        met += agreement >= target
        agreements.append(agreement)
        to_teacher.append(sent)
        thresholds.append(None if math.isinf(chosen) else chosen)
    proxy_only, _ = combined(c, a, -math.inf)
    return {
        "target": target, "delta": delta, "splits": splits, "calibrate_docs": n_cal, "test_docs": int(c.size - n_cal),
        "met_fraction": met / splits,
        "mean_agreement": float(np.mean(agreements)), "min_agreement": float(np.min(agreements)),
        "mean_to_teacher": float(np.mean(to_teacher)),
        "all_to_teacher_fraction": sum(t is None for t in thresholds) / splits,
        "proxy_only_agreement": proxy_only,
    }


def calibrate_run(plan: Plan, rows: list[dict], run: RunDir, cfg: RunConfig) -> dict:
    """Choose the run's threshold on its held-out annotations: the proxy answers them,
    the teacher already has; writes cascade.json."""
    held = [r for r in rows if r["split"] == "heldout"]
    if not held:
        raise ValueError("no held-out annotated documents to calibrate the cascade on: annotate more (--n-annotate)")
    answers = apply_plan(ProxyAnswers(Proxy.load(run.proxy), cfg), plan, [r["text"] for r in held])
    agree = [not a.differs(from_annotation(plan, r), plan) for a, r in zip(answers, held)]
    cal = calibrate([a.confidence for a in answers], agree, cfg.mine.target_agreement, cfg.mine.delta)
    out = cal.to_dict() | {"proxy_only_agreement": round(sum(agree) / len(agree), 4)}
    write_json(cascade_file(run), out)
    return out


def cascade_file(run: RunDir) -> Path:
    return run.path / "cascade.json"


def load_threshold(run: RunDir, cfg: RunConfig) -> float | None:
    """The calibrated threshold when the run asks for a cascade (None: proxy only)."""
    if cfg.mine.target_agreement is None:
        return None
    data = read_json(run.require(cascade_file(run), "train"))
    if data.get("target") != cfg.mine.target_agreement or data.get("delta") != cfg.mine.delta:
        raise ValueError(f"{cascade_file(run)} was calibrated for target {data.get('target')}, delta {data.get('delta')}: "
                         "run `falconer train` again with the new target")
    return math.inf if data["threshold"] is None else float(data["threshold"])
