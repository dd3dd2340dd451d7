"""A parsed plan is trimmed to what its request asks for (falconer_ray/plan/fit.py)."""

import pytest

from falconer_ray.plan.fit import asks_negation, fit_to_request
from falconer_ray.plan.planner import plan_from_text


def fitted(request: str, completion: str):
    return fit_to_request(plan_from_text(request, completion), request)


@pytest.mark.parametrize("request_text, expected", [
    ("Find the reviews that are not in English.", True), ("Posts without a photo", True),
    ("Emails that aren't spam", True), ("Everything except ads", True), ("Recipes with no meat", True),
    ("Extract the hotel names from negative travel reviews.", False), ("Notes on nothing", False),
])
def test_negation_is_read_from_the_request(request_text, expected):
    assert asks_negation(request_text) is expected


def test_a_not_the_request_never_states_is_removed():
    plan, notes = fitted("Extract the hotel names from negative travel reviews.",
                         " NOT Is the review negative?\nClassify: none\nExtract: hotel: Which hotels are named?\n")
    assert plan.keep == "review_negative" and len(notes) == 1 and "NOT" in notes[0]
    plan, _ = fitted("Keep emails that are spam and long.",
                     " NOT Is the email spam? AND NOT Is it long?\nClassify: none\nExtract: none\n")
    assert plan.model_dump(by_alias=True)["keep"] == {"all": ["email_spam", "long"]}


def test_a_negation_the_request_states_stays():
    request = "Get the symptoms from patient notes that mention fever but not cough."
    completion = " Does the note mention fever? AND NOT Does the note mention cough?\nExtract: symptom: Which symptoms?\n"
    assert fitted(request, completion) == (plan_from_text(request, completion), [])


@pytest.mark.parametrize("request_text, completion, dropped", [
    ("List the ingredients in recipes that are vegetarian.",
     " Is the recipe vegetarian?\nExtract: ingredient: Which ingredients are listed? ; recipe: Which recipes are vegetarian?\n",
     "recipe"),
    ("Keep the scientific abstracts that report a clinical trial.",
     " Is the abstract about a clinical trial?\nExtract: abstract: Which abstracts are about clinical trials?\n", "abstract"),
    ("List the people mentioned in these articles.",
     " none\nExtract: person: Who is mentioned? ; article: Which articles are mentioned?\n", "article"),
    ("Pull out the player names from match reports about football.",
     " Does the report cover football?\nExtract: player: Which players? ; match: Which match reports are about football?\n",
     "match"),
])
def test_a_field_that_picks_documents_is_removed(request_text, completion, dropped):
    plan, notes = fitted(request_text, completion)
    assert dropped not in [s.id for s in plan.steps] and len(notes) == 1 and repr(dropped) in notes[0]
    assert plan.span_steps or plan.label_steps


@pytest.mark.parametrize("request_text, completion", [
    ("Get the article titles from these articles.", " none\nExtract: title: Which article titles are given?\n"),
    ("Which emails are spam?", " Is the email spam?\nExtract: sender: Which senders are named?\n"),
    ("Extract all the names and each company from the emails.",
     " none\nExtract: name: Which names are given? ; company: Which companies are named?\n"),
    # the only step stays: a plan needs one, and the review shows it to the user
    ("Select the job ads that require a degree.", " none\nClassify: none\nExtract: ad: Which ads require a degree?\n"),
])
def test_fields_that_extract_stay(request_text, completion):
    assert fitted(request_text, completion)[1] == []


def test_a_field_named_none_is_the_slot_word_not_a_field():
    plan = plan_from_text("x", " Is it news?\nClassify: none\nExtract: dish: Which dishes? ; none: Which hours are given?\n")
    assert [s.id for s in plan.span_steps] == ["dish"]
