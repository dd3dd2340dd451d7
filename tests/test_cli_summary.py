"""What a run tells its user: the plan before the teacher works on it, and a summary
whose dollars are report.html's and report.json's, from one price table."""

import json
import re

from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.config import RunConfig
from falconer_ray.rundir import write_json
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import set_mode
from falconer_ray.rundir import RunDir
from test_report_html import make_run

PLAN = Plan.model_validate({"instruction": "People praised in positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Names of people praised."}], "keep": "positive"})


def test_the_plan_is_shown_with_how_to_change_it_in_each_mode(tmp_path, capsys):
    from falconer_ray.pipeline import show_plan

    run = RunDir(tmp_path / "run")
    try:
        set_mode("auto")
        show_plan(PLAN, run)
        shown = " ".join(capsys.readouterr().err.replace("│", " ").split())
        assert "Plan: People praised in positive reviews" in shown
        assert "label positive Is this movie review positive?" in shown and "keep positive" in shown
        assert "extract people Names of people praised." in shown
        assert f"edit {run.plan}, and rerun with `--plan {run.plan}`" in shown and f"falconer annotate {run.path}" in shown
        set_mode("json")
        show_plan(PLAN, run)
        events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [e["event"] for e in events] == ["plan"]
        assert events[0]["path"] == str(run.plan) and Plan.model_validate(events[0]["plan"]) == PLAN
        set_mode("quiet")
        show_plan(PLAN, run)
        assert capsys.readouterr() == ("", "")
    finally:
        set_mode("auto")


def summary(run) -> str:
    result = CliRunner().invoke(app, ["report", str(run.path)])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def html_dollars(run) -> tuple[str, str]:
    html = (run.path / "report.html").read_text()
    got = re.search(r"cost: this run / all-teacher \(estimated\)</td><td class=\"num\">\$([0-9.e+-]+) / \$([0-9.e+-]+)<",
                    html)
    assert got, "report.html has no cost row"
    return got.group(1), got.group(2)


def test_summary_dollars_are_the_report_pages(tmp_path):
    run = make_run(tmp_path, n=100)
    write_json(run.path / "quote.json", {"corpus": {"docs": 100}, "falconer": {
        "teacher_calls": 4, "seconds": {"annotate": 16.0, "train": 30.0, "mine": 2.0}, "total_usd": 0.6065}})
    text = summary(run)
    ours, all_teacher = html_dollars(run)
    assert f"${ours} this run, ${all_teacher} for the teacher on every document (estimated)" in text
    assert "at the config's `prices:`, as in report.html and report.json" in text
    assert "$0.6065 estimated before the run (quote.json" in text
    assert float(ours) == float(f"{json.loads(run.report.read_text())['cost']['usd']:.4g}")

    cfg = RunConfig.load(run.path)  # dearer hardware: every figure moves together
    RunConfig.model_validate({**cfg.model_dump(), "prices": {**cfg.prices.model_dump(), "hardware": {
        "cpu-node": {"usd_per_hour": 3.6}, "gpu-node": {"usd_per_hour": 2.5}}}}).save(run.path)
    priced = summary(run)
    usd = json.loads(run.report.read_text())["cost"]["usd"]
    assert usd > 36 * float(ours) - 1e-3
    assert f"${html_dollars(run)[0]} this run" in priced and float(html_dollars(run)[0]) == float(f"{usd:.4g}")
