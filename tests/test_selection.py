"""Annotation selection (`falconer eval --selection`) and two tasks in a row (`falconer bench sequence`)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.eval.evaluate import load_task, pool_split, split
from falconer_ray.eval.selection import first_round, least_confident


def test_least_confident_picks_the_lowest_and_breaks_ties_by_position():
    assert least_confident([0.9, 0.2, 0.7, 0.2, 0.5], 3) == [1, 3, 4]
    assert least_confident(np.array([0.6, 0.6, 0.6]), 2) == [0, 1]
    assert least_confident([0.3], 0) == []
    rng = np.random.default_rng(0)
    c = rng.random(200)
    picked = least_confident(c, 50)
    assert len(set(picked)) == 50 and c[picked].max() < np.delete(c, picked).min()
    for bad, k in (([0.1, 0.2], 3), ([0.1, 0.2], -1), ([0.1, float("nan")], 1), ([[0.1]], 1)):
        with pytest.raises(ValueError):
            least_confident(bad, k)


def test_first_round_is_half_the_budget():
    assert [first_round(n) for n in (2, 5, 64, 257)] == [1, 2, 32, 128]
    with pytest.raises(ValueError, match="at least 2"):
        first_round(1)


def test_pool_split_shares_the_random_split_and_stays_off_the_test_slice():
    train, test = split(1000, 64, 100, seed=5)
    first, pool, test_u = pool_split(1000, 64, 100, seed=5)
    assert test_u == test and first == train[:32]
    assert len(pool) == 4 * 64 and set(train[32:]) <= set(pool)  # random's second half competes too
    assert not (set(first) | set(pool)) & set(test) and not set(first) & set(pool)
    # Bounded by the dataset: everything not in the test slice or the first round.
    first, pool, _ = pool_split(200, 64, 100, seed=5)
    assert len(pool) == 200 - 100 - 32
    assert len(pool_split(1000, 64, 100, seed=5, pool_factor=1)[1]) == 64
    with pytest.raises(ValueError, match="exceeds"):
        pool_split(100, 64, 50, seed=0)


@pytest.mark.parametrize("args,message", [
    (["eval", "rotten-tomatoes", "--selection", "smart"], "random, uncertainty"),
    (["bench", "sequence", "--first", "wnut16", "--second", "wnut16"], "same task"),
    (["bench", "sequence", "--second", "tweets"], "unknown dataset"),
    (["bench", "sequence", "--train-source", "oracle"], "gold or teacher"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_uncertainty_eval_buys_the_least_confident_pool_documents(ray_local, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("FALCONER_CACHE", cache_dir)
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "rotten-tomatoes", "--n-train", "8", "--n-test", "8", "--epochs", "1",
                                      "--selection", "uncertainty", "--pool-factor", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    first, pool, test = pool_split(8530, 8, 8, seed=0, pool_factor=2)
    assert r["selection"] == "uncertainty" and r["n_train"] == 8 and r["pool"] == len(pool) == 16
    assert r["train_indices"][:4] == first and set(r["train_indices"][4:]) <= set(pool)
    assert len(set(r["train_indices"])) == 8 and [p["index"] for p in r["predictions"]] == test
    (one, two) = r["rounds"]
    assert one["docs"] == 4 and one["picked"] == 4 and two["docs"] == 8
    # The 4 least confident of 16 lie at or below the pool's median.
    assert one["picked_confidence"]["max"] <= one["pool_confidence"]["median"]
    assert 0.5 <= one["pool_confidence"]["min"] <= one["pool_confidence"]["max"] <= 1.0
    assert r["teacher_docs"] == 8 and r["seconds"]["train"] >= one["train_s"] + two["train_s"] - 0.01
    assert 0.0 <= r["proxy_vs_gold"] <= 1.0 and 0.0 <= r["train_positive_share"] <= 1.0


@pytest.mark.slow
def test_sequence_scores_both_tasks_before_and_after(ray_local, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("FALCONER_CACHE", cache_dir)
    out = tmp_path / "sequence.json"
    result = CliRunner().invoke(app, ["bench", "sequence", "--first", "rotten-tomatoes", "--second", "wnut16",
                                      "--n-train", "4", "--n-test", "8", "--epochs", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["first"]["dataset"] == "rotten-tomatoes" and r["second"]["dataset"] == "wnut16-person"
    for key in ("first_fresh", "second_after_first", "second_fresh", "first_after_second"):
        assert 0.0 <= r[key] <= 1.0
    assert r["first_degradation"] == pytest.approx(100 * (r["first_fresh"] - r["first_after_second"]), abs=0.02)
    assert r["second_transfer"] == pytest.approx(100 * (r["second_after_first"] - r["second_fresh"]), abs=0.02)
    assert r["teacher_calls"] == 0 and set(r["final_loss"]) == {"first", "sequence", "second"}
    assert set(r["answers_given"]) == {"first_fresh", "second_after_first", "first_after_second", "second_fresh"}
    rt, wnut = load_task("rotten-tomatoes"), load_task("wnut16")
    rt_test, wnut_test = split(len(rt.docs), 4, 8, 0)[1], split(len(wnut.docs), 4, 8, 0)[1]
    assert r["gold_answers"] == {"first": sum(rt.docs[i]["gold"] for i in rt_test),
                                 "second": sum(len(wnut.docs[i]["gold"]) for i in wnut_test)}
    assert all(0 <= r["answers_given"][k] <= 8 for k in ("first_fresh", "first_after_second"))
    assert all(r["seconds"][f"train_{k}"] > 0 for k in ("first", "sequence", "second"))

