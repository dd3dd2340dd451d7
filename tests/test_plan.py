import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falconer_ray.plan import Plan, PlanError, condition_text
from falconer_ray.planner import plan_from_text


def plan(**kw):
    base = {"instruction": "x", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Is the review positive?"},
        {"id": "laptop", "op": "get_label", "instruction": "Is it about a laptop?"},
        {"id": "price", "op": "get_span", "instruction": "Extract the prices."}]}
    base.update(kw)
    return Plan.from_json(json.dumps(base))


def test_round_trip_and_render():
    p = plan(keep={"all": ["positive", {"not": "laptop"}]})
    again = Plan.from_json(p.to_json())
    assert again == p
    assert "NOT laptop" in p.render() and "price" in p.render()


@pytest.mark.parametrize("keep,answers,expected", [
    ("positive", {"positive": True, "laptop": False}, True),
    ({"not": "positive"}, {"positive": True, "laptop": False}, False),
    ({"all": ["positive", "laptop"]}, {"positive": True, "laptop": False}, False),
    ({"any": ["positive", "laptop"]}, {"positive": False, "laptop": True}, True),
    ({"any": [{"all": ["positive", "laptop"]}, {"not": "laptop"}]}, {"positive": False, "laptop": False}, True),
    (None, {"positive": False, "laptop": False}, True),
])
def test_keep_semantics(keep, answers, expected):
    assert plan(keep=keep).keeps(answers) is expected


@pytest.mark.parametrize("mutation,message", [
    ({"keep": "price"}, "not a get_label step"),
    ({"keep": "nothing"}, "not a get_label step"),
    ({"steps": []}, "at least 1"),
    ({"steps": [{"id": "a", "op": "get_label", "instruction": "abc"}] * 2}, "unique"),
    ({"steps": [{"id": "Bad Id", "op": "get_label", "instruction": "abc"}]}, "pattern"),
    ({"steps": [{"id": "a", "op": "run_python", "instruction": "abc"}]}, "get_label"),
    ({"steps": [{"id": "a", "op": "get_span", "instruction": "abc"}], "keep": "a"}, "get_label"),
    ({"extra": 1}, "Extra inputs"),
])
def test_invalid_plans_say_what_is_wrong(mutation, message):
    with pytest.raises(PlanError, match=message):
        plan(**mutation)


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(PlanError, match="not valid JSON"):
        Plan.from_json("{nope")
    with pytest.raises(PlanError, match="not found"):
        Plan.load(tmp_path / "missing.json")


def test_planner_output_parses_to_plan():
    p = plan_from_text("Extract prices from positive laptop reviews",
                       " Is the review positive? AND NOT Is it refurbished? OR Is it spam?\n"
                       "Extract: price: What prices are mentioned? ; brand: Which brands?\n")
    assert [s.op for s in p.steps] == ["get_label"] * 3 + ["get_span"] * 2
    assert condition_text(p.keep) == "((review_positive AND NOT refurbished) OR spam)"
    assert p.keeps({"review_positive": True, "refurbished": False, "spam": False})
    assert not p.keeps({"review_positive": True, "refurbished": True, "spam": False})


def test_planner_extraction_only_and_filter_only():
    assert plan_from_text("x", " none\nExtract: person: Which people?\n").keep is None
    only = plan_from_text("x", " Is it spam?\nExtract: none\n")
    assert [s.op for s in only.steps] == ["get_label"] and only.keep == only.steps[0].id
    with pytest.raises(PlanError):
        plan_from_text("x", " none\nExtract: none\n")


@given(st.text(max_size=300))
def test_planner_parser_never_crashes_unexpectedly(text):
    try:
        p = plan_from_text("x", text)
    except (PlanError, ValueError):
        return
    assert p.steps
