"""A run's outputs as DataFrames and Ray Datasets; the plan as an editable object."""

import pytest

from falconer_ray import load_plan, load_report, load_results, results_dataset
from falconer_ray.plan.schema import PlanError
from test_report_html import make_run


def test_outputs_as_dataframes(tmp_path):
    run = make_run(tmp_path, n=200)
    report = load_report(run.path)
    kept = load_results(run.path)
    assert len(kept) == report["docs_kept"] and (kept["label_positive"] >= 0.5).all()
    assert all([s["text"] for s in spans] == ["Ann Lee"] for spans in kept["span_people"])
    filtered = load_results(run.path, "filtered", columns=["doc_id", "label_positive"])
    assert list(filtered.columns) == ["doc_id", "label_positive"] and len(filtered) == report["docs_filtered"]
    errors = load_results(run.path, "errors", limit=3)
    assert len(errors) == 3 and errors["error"].notna().all()
    with pytest.raises(ValueError, match="which must be one of"):
        load_results(run.path, "everything")
    with pytest.raises(FileNotFoundError, match="mine the run first"):
        load_results(tmp_path / "nowhere")


def test_outputs_as_a_ray_dataset(ray_local, tmp_path):
    run = make_run(tmp_path, n=200)
    ds = results_dataset(run.path)
    assert ds.count() == load_report(run.path)["docs_kept"]
    assert ds.filter(lambda r: r["label_positive"] >= 0.9).count() == sum(
        1 for s in load_results(run.path)["label_positive"] if s >= 0.9)


def test_plan_edits_are_validated(tmp_path):
    run = make_run(tmp_path, n=20)
    plan = load_plan(run.path)
    edited = (plan.update_step("positive", instruction="Does the reviewer like the film?")
                  .add_step("funny", "get_label", "Is the review funny?")
                  .with_keep({"all": ["positive", "funny"]}))
    assert [s.id for s in edited.steps] == ["positive", "people", "funny"]
    assert edited.keeps({"positive": True, "funny": True}) and not edited.keeps({"positive": True, "funny": False})
    assert plan.steps[0].instruction == "Is this movie review positive?"  # the original is unchanged
    edited.save(run.plan)
    assert load_plan(run.path) == edited
    with pytest.raises(PlanError, match="`keep` needs at least one get_label step"):
        plan.remove_step("positive")
    with pytest.raises(PlanError, match="no step 'nope'"):
        plan.update_step("nope", instruction="abc")
    with pytest.raises(PlanError, match="unique"):
        plan.add_step("people", "get_span", "Names again.")
    assert plan.with_keep(None).remove_step("positive").label_steps == []
