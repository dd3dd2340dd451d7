import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falconer_ray.plan.schema import Plan, PlanError, condition_text
from falconer_ray.plan.planner import plan_from_text


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


def test_planner_classify_line_makes_label_columns_that_do_not_filter():
    p = plan_from_text("Label reviews", " none\nClassify: pos: Is it positive? ; neg: Is it negative?\nExtract: none\n")
    assert [(s.id, s.op) for s in p.steps] == [("pos", "get_label"), ("neg", "get_label")] and p.keep is None
    both = plan_from_text("x", " Is it news?\nClassify: sport: Is it about sport?\nExtract: who: Which people?\n")
    assert both.keep == "news" and [s.op for s in both.steps] == ["get_label", "get_label", "get_span"]


def test_planner_reuses_a_question_asked_twice():
    p = plan_from_text("x", " Is it spam? OR NOT Is it spam? AND Is it long?\nExtract: none\n")
    assert [s.instruction for s in p.label_steps] == ["Is it spam?", "Is it long?"]
    assert condition_text(p.keep) == "(spam OR (NOT spam AND long))"


def test_plan_error_example_is_a_valid_plan():
    from falconer_ray.plan.planner import EXAMPLE_PLAN

    assert Plan.model_validate(EXAMPLE_PLAN).keeps({"positive": False})


def test_plan_command_prints_a_table_and_writes_json(tmp_path):
    from typer.testing import CliRunner

    from falconer_ray.cli.main import app

    src = tmp_path / "mine.json"
    plan(keep={"all": ["positive", {"not": "laptop"}]}).save(src)
    out = tmp_path / "copy.json"
    r = CliRunner().invoke(app, ["plan", "Prices [bold]of[/] laptops", "--plan", str(src), "--out",
                                 str(tmp_path / "run"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "(positive AND NOT laptop)" in r.output and "extract" in r.output and "price" in r.output
    assert Plan.load(out) == Plan.load(tmp_path / "run" / "plan.json") == Plan.load(src)
    r = CliRunner().invoke(app, ["plan", "x", "--plan", str(tmp_path / "none.json"), "--out", str(tmp_path / "r2")])
    assert r.exit_code == 2 and "plan file not found" in r.output


# ------------------------------------------------------- the real embedded teacher


@pytest.fixture(scope="module")
def gemma():
    from falconer_ray.teacher import make_teacher

    return make_teacher("embedded", model="gemma3-270m")


class Corrupting:
    """Passes calls to the real teacher; replaces its first `n_bad` answers with a
    truncated copy (as if max_tokens cut it before the Extract line)."""

    def __init__(self, teacher, n_bad):
        self.teacher, self.n_bad, self.name, self.prompts = teacher, n_bad, teacher.name, []

    def complete(self, prompt, max_tokens, stop=None, grammar=None):
        self.prompts.append(prompt)
        raw = self.teacher.complete(prompt, max_tokens, stop, grammar)
        if len(self.prompts) <= self.n_bad:
            return raw.split("\n")[0][:12]
        return raw


@pytest.mark.slow
def test_real_teacher_plans_within_the_grammar(gemma):
    from falconer_ray.plan.planner import MAX_QUESTION_CHARS, plan_with_trace

    p, rejected = plan_with_trace("Extract the song titles from reviews of jazz albums.", gemma)
    assert len(rejected) <= 1 and p.steps and p.instruction.startswith("Extract the song titles")
    assert all(len(s.instruction) <= MAX_QUESTION_CHARS for s in p.steps)


@pytest.mark.slow
def test_invalid_answer_is_repaired_by_the_real_teacher(gemma):
    from falconer_ray.plan.planner import plan_with_trace

    wrapped = Corrupting(gemma, n_bad=1)
    p, rejected = plan_with_trace("Extract the song titles from reviews of jazz albums.", wrapped)
    assert len(wrapped.prompts) == 2 and len(rejected) == 1 and p.steps
    raw, reason = rejected[0]
    assert "lacks an 'Extract:' line" in reason
    assert f"Filter:{raw}\nThat plan was rejected: planner output lacks" in wrapped.prompts[1]


@pytest.mark.slow
def test_unrepairable_answer_is_a_plan_error_with_raw_output_and_help(gemma):
    from falconer_ray.plan.planner import PlanningFailed, make_plan

    wrapped = Corrupting(gemma, n_bad=5)
    with pytest.raises(PlanningFailed) as info:
        make_plan("Extract the song titles from reviews of jazz albums.", wrapped)
    msg = str(info.value)
    assert len(wrapped.prompts) == 2 and len(info.value.attempts) == 2  # one repair round, bounded
    for raw, _ in info.value.attempts:
        assert f"Filter:{raw}" in msg
    assert "--plan FILE" in msg and '"keep": {' in msg


def test_planner_drops_repeated_conditions():
    p = plan_from_text("x", " Is it spam? OR Is it spam?\nExtract: none\n")
    assert p.keep == "spam"
    p = plan_from_text("x", " Is it spam? AND Is it spam? AND NOT Is it long? AND NOT Is it long?\nExtract: none\n")
    assert condition_text(p.keep) == "(spam AND NOT long)"


def test_nearest_demos_are_repeated_just_before_the_request():
    from falconer_ray.plan.planner import DEMOS, PROMPT_HEADER, _demo, nearest_demos, planner_prompt

    for demo in DEMOS:
        assert nearest_demos(demo[0])[-1] == demo
    fixed = PROMPT_HEADER + "".join(_demo(*d) for d in DEMOS)
    a, b = planner_prompt("Find posts that are not about cats."), planner_prompt("Tag each song as sad or happy.")
    assert a.startswith(fixed) and b.startswith(fixed)  # a shared prefix the KV cache reuses
    assert a.endswith(_demo(*nearest_demos("Find posts that are not about cats.")[-1])
                      + "Request: Find posts that are not about cats.\nFilter:")
    assert a == planner_prompt("Find posts that are not about cats.")  # deterministic


def test_a_yes_no_question_is_never_a_field():
    plan = plan_from_text("People praised in positive reviews", " Is the review positive?\nClassify: none\nExtract: "
                          "name: Who is praised? ; positive: Is the review positive? ; rain: Does it rain?\n")
    assert [(s.op, s.instruction) for s in plan.steps] == [("get_label", "Is the review positive?"),
                                                          ("get_span", "Who is praised?")]
    with pytest.raises(PlanError, match="no step"):  # sent back to the teacher with the reason
        plan_from_text("x", " none\nClassify: none\nExtract: positive: Is the review positive?\n")
