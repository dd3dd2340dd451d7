"""Planning benchmark: the cases file, the scorer (exact_match, step_f1) and `falconer bench plan`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from falconer_ray.bench.plan import PlanCase, load_cases, score_cases
from falconer_ray.bench.plan_score import (
    MATCH_THRESHOLD,
    content_words,
    exact_match,
    keep_shape,
    match_steps,
    step_f1,
    text_similarity,
)
from falconer_ray.cli.main import app
from falconer_ray.plan.schema import Plan, PlanError, Step
from falconer_ray.plan.planner import DEMOS


def L(i, q=None):
    return {"id": i, "op": "get_label", "instruction": q or f"Is the text about {i}?"}


def S(i, q=None):
    return {"id": i, "op": "get_span", "instruction": q or f"Which {i} are named?"}


def P(steps, keep=None):
    return Plan.model_validate({"steps": steps, "keep": keep})


# ------------------------------------------------------------------ the cases file

CATEGORIES = {"filter_extract", "multiclass", "multi_field", "negation", "conjunction", "disjunction",
              "relation", "extract_only", "filter_only"}


def test_every_case_loads_and_scores_perfectly_against_itself():
    cases = load_cases()
    assert len(cases) >= 30
    assert {c.category for c in cases} == CATEGORIES
    for c in cases:
        assert c.plan.instruction == c.instruction  # each expected plan is a full, valid Plan
        assert Plan.from_json(c.plan.to_json()) == c.plan
    score = score_cases(cases, [c.plan for c in cases])
    assert score["exact_match"] == 1.0 and score["step_f1"] == 1.0 and score["failures"] == 0
    # the categories really have the structure their name promises
    for c in cases:
        shape, (n_label, n_span) = keep_shape(c.plan.keep), (len(c.plan.label_steps), len(c.plan.span_steps))
        expect = {
            "multiclass": shape == "*" and n_label >= 2 and n_span == 0,
            "multi_field": n_span >= 2,
            "negation": "not(" in shape,
            "conjunction": shape.startswith("all("),
            "disjunction": shape.startswith("any("),
            "extract_only": n_label == 0 and n_span >= 1,
            "filter_only": n_label >= 1 and n_span == 0 and shape != "*",
            "filter_extract": n_label >= 1 and n_span >= 1 and shape != "*",
            "relation": n_span >= 2,
        }[c.category]
        assert expect, c.id


def test_few_shot_demos_are_not_benchmark_cases():
    """The planner's demonstrations must not leak the benchmark's instructions."""
    for case in load_cases():
        for demo in DEMOS:
            a, b = content_words(case.instruction), content_words(demo[0])
            overlap = 2 * len(a & b) / (len(a) + len(b))
            assert overlap < 0.5, (case.id, demo[0])


def test_bad_cases_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "cases.jsonl"
    good = {"id": "a", "category": "x", "instruction": "Find spam.", "plan": {"steps": [L("spam")], "keep": "spam"}}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "plan": {"steps": [L("spam")], "keep": "ham"}}) + "\n")
    with pytest.raises(PlanError, match=r"cases.jsonl:2 .*not a get_label step"):
        load_cases(bad)
    bad.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(PlanError, match="unique"):
        load_cases(bad)
    with pytest.raises(FileNotFoundError):
        load_cases(tmp_path / "missing.jsonl")
    result = CliRunner().invoke(app, ["bench", "plan", "--cases", str(bad)])
    assert result.exit_code == 2 and "unique" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args,message", [
    (["--teacher", "nonesuch"], "unknown teacher kind"),
    (["--teacher-arg", "n_ctx"], "KEY=VALUE"),
    (["--teacher-arg", "9x=1"], "KEY=VALUE"),
])
def test_bad_bench_plan_arguments_are_clear_errors(args, message):
    result = CliRunner().invoke(app, ["bench", "plan", "--limit", "1", *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------ keep_shape / exact_match

@pytest.mark.parametrize("a,b,same", [
    ("x", "y", True),  # ids ignored
    ({"all": ["x", {"not": "y"}]}, {"all": [{"not": "x"}, "y"]}, True),  # child order ignored
    ({"all": ["x", "y"]}, {"any": ["x", "y"]}, False),  # AND is not OR
    ({"all": ["x", {"all": ["y", "z"]}]}, {"all": ["x", "y", "z"]}, True),  # nested AND flattens
    ({"any": ["x", {"all": ["y", "z"]}]}, {"any": ["x", "y", "z"]}, False),  # AND inside OR does not
    ({"all": ["x"]}, "x", True),  # one-child AND is its child
    ({"not": {"not": "x"}}, "x", True),  # double negation cancels
    ({"not": {"all": [{"not": "x"}]}}, "x", True),
    ({"not": "x"}, "x", False),
    (None, "x", False),  # no filter vs a filter
    (None, None, True),
    ({"all": ["x", {"any": [{"all": ["y", "z"]}]}]}, {"all": ["x", "y", "z"]}, True),  # through a 1-child OR
])
def test_keep_shape(a, b, same):
    ids = ["x", "y", "z"]
    pa, pb = P([L(i) for i in ids], a), P([L(i) for i in ids], b)
    assert (keep_shape(pa.keep) == keep_shape(pb.keep)) is same
    assert exact_match(pa, pb) is same


def test_exact_match_needs_the_same_step_kinds_but_not_ids_or_wording():
    exp = P([L("positive"), S("price")], "positive")
    assert exact_match(P([L("good", "Does the reviewer like it?"), S("cost", "How much?")], "good"), exp)
    assert not exact_match(P([L("positive"), S("price"), S("brand")], "positive"), exp)  # extra field
    assert not exact_match(P([L("positive"), L("laptop"), S("price")], "positive"), exp)  # extra label
    assert not exact_match(P([L("positive"), S("price")]), exp)  # label kept as a column, not a filter
    # the multiset of kinds, not their order
    assert exact_match(P([S("price"), L("positive")], "positive"), exp)


# ------------------------------------------------------------------ step_f1

def test_text_similarity_uses_id_and_content_words():
    a = Step(id="hotel", op="get_span", instruction="Which hotels are named?")
    b = Step(id="hotel_name", op="get_span", instruction="Extract the hotel names.")
    assert content_words("Which hotels are named?") == {"hotel"}
    assert text_similarity(a, b) == 1.0
    c = Step(id="city", op="get_span", instruction="Which cities are mentioned?")
    assert text_similarity(a, c) == 0.0
    d = Step(id="price", op="get_span", instruction="What laptop prices are mentioned?")
    e = Step(id="cost", op="get_span", instruction="What does the laptop cost?")
    # {price, laptop} vs {cost, laptop}: F1 = 0.5, exactly the threshold: a match
    assert text_similarity(d, e) == pytest.approx(0.5) and MATCH_THRESHOLD == 0.5
    assert match_steps(P([d.model_dump()]), P([e.model_dump()])).pairs


def test_step_f1_edge_cases():
    exp = P([L("positive", "Is the review positive?"), S("price", "What prices are mentioned?")], "positive")
    assert step_f1(exp, exp) == 1.0
    # same words, wrong kind: no match
    assert step_f1(P([S("positive", "Is the review positive?"), L("price", "What prices are mentioned?")],
                     "price"), exp) == 0.0
    # one right step of two predicted, of two expected: P = R = 0.5
    half = P([L("positive", "Is the review positive?"), S("city", "Which cities?")], "positive")
    assert step_f1(half, exp) == pytest.approx(0.5)
    # one-to-one: two copies of a step match one expected step once
    dup = P([S("price", "What prices are mentioned?"), S("price_2", "What prices are mentioned?")])
    m = match_steps(dup, P([S("price", "What prices are mentioned?")]))
    assert len(m.pairs) == 1 and m.precision == 0.5 and m.recall == 1.0
    assert step_f1(P([S("zebra")]), exp) == 0.0


def test_matching_maximises_pairs_where_greedy_would_not():
    # pred "red apple pie" is closest to exp "red apple pie" but also matches "apple pie crust";
    # pred "red apple" only matches "red apple pie". Greedy (best pair first) pairs the
    # identical steps and leaves one unmatched; the optimum pairs both.
    exp = P([S("red_apple_pie", "red apple pie"), S("apple_pie_crust", "apple pie crust")])
    pred = P([S("red_apple_pie", "red apple pie"), S("red_apple", "red apple")])
    sims = [[text_similarity(p, e) for e in exp.steps] for p in pred.steps]
    assert sims[0][0] == 1.0 and sims[0][1] >= MATCH_THRESHOLD and sims[1][0] >= MATCH_THRESHOLD
    assert sims[1][1] < MATCH_THRESHOLD
    m = match_steps(pred, exp)
    assert sorted((i, j) for i, j, _ in m.pairs) == [(0, 1), (1, 0)] and m.f1 == 1.0


def test_score_cases_counts_failures_and_micro_averages():
    c1 = PlanCase(id="1", category="a", instruction="Find spam.", plan=P([L("spam")], "spam"))
    c2 = PlanCase(id="2", category="b", instruction="x y z", plan=P([L("positive"), S("price"), S("brand")], "positive"))
    pred2 = P([L("positive"), S("price")], "positive")  # 2 of 3 steps, no extra
    s = score_cases([c1, c2], [None, pred2])
    assert s["failures"] == 1 and s["exact_match"] == 0.0
    # micro: 2 pairs, 2 predicted, 4 expected -> P 1, R 0.5, F1 2/3; macro: (0 + 0.8) / 2
    assert s["step_precision"] == 1.0 and s["step_recall"] == 0.5
    assert s["step_f1"] == pytest.approx(2 / 3, abs=1e-4)
    assert s["step_f1_macro"] == pytest.approx(0.4, abs=1e-4)
    assert s["by_category"]["b"] == {"n": 1, "exact_match": 0.0, "step_f1_macro": 0.8}


# ------------------------------------------------------------------ the real teacher

@pytest.mark.slow
def test_bench_plan_runs_with_the_embedded_teacher(tmp_path):
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["bench", "plan", "--teacher", "embedded", "--teacher-model", "gemma3-270m",
                                      "--limit", "3", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["instructions"] == 3 and len(data["cases"]) == 3 and data["teacher"].startswith("embedded:gemma3-270m")
    assert 0.0 <= data["exact_match"] <= 1.0 and 0.0 <= data["step_f1"] <= 1.0 and data["seconds"] > 0
    cases = load_cases()[:3]
    predicted = [Plan.model_validate(c["predicted"]) if c["predicted"] else None for c in data["cases"]]
    rescored = score_cases(cases, predicted)  # the written figures follow from the written plans
    for key in ("exact_match", "step_f1", "failures"):
        assert data[key] == rescored[key]
    for row in data["cases"]:
        assert row["expected"] and ("error" in row) == (row["predicted"] is None)


@pytest.mark.slow
def test_teacher_args_reach_the_backend_and_failures_are_counted(tmp_path):
    # n_ctx=512 leaves no room for the planner prompt: every case fails, none crashes.
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["bench", "plan", "--teacher-arg", "n_ctx=512", "--limit", "2",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["failures"] == 2 and data["exact_match"] == 0.0 and data["step_f1"] == 0.0
    assert all("n_ctx=512" in row["error"] and row["predicted"] is None for row in data["cases"])


def test_content_words_are_singular():
    assert content_words("addresses cities hotels boxes class bus") == {"address", "city", "hotel", "box", "class", "bus"}
