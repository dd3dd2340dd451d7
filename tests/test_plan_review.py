"""The plan is checked before the teacher is paid: in a real terminal the run asks to go
on, edit the plan in $EDITOR, or stop; without one it goes on and says so."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

from falconer_ray.cli.review import plan_review
from falconer_ray.plan.schema import Plan
from falconer_ray.progress import set_mode
from falconer_ray.rundir import RunDir

PLAN = {"instruction": "People praised in positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Names of people praised."}], "keep": "positive"}
# $EDITOR: renames the span step's question in the file it is given
EDITOR = ("import json, sys; p = json.load(open(sys.argv[1])); p['steps'][1]['instruction'] = 'Names of actors praised.'; "
          "json.dump(p, open(sys.argv[1], 'w'))")


def test_without_a_terminal_the_run_goes_on_and_says_so(tmp_path, capsys):
    plan = Plan.model_validate(PLAN)
    try:
        set_mode("auto")
        assert plan_review(False, terminal=lambda: False)(plan, RunDir(tmp_path)) is plan
        assert "no terminal to ask in: going on with the plan above" in capsys.readouterr().err
        assert plan_review(True, terminal=lambda: True)(plan, RunDir(tmp_path)) is plan  # --yes asks nothing
        assert capsys.readouterr() == ("", "")
    finally:
        set_mode("auto")


def read_until(fd: int, wanted: str, seen: str, limit_s: float = 120) -> str:
    """Terminal output up to `wanted` (bounded by `limit_s`)."""
    deadline = time.monotonic() + limit_s
    while wanted not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                seen += os.read(fd, 4096).decode(errors="replace")
            except OSError:  # the child closed the terminal
                break
    assert wanted in seen, seen[-2000:]
    return seen


def test_in_a_terminal_the_plan_is_edited_then_the_run_stops_before_annotating(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Review {i}: a fine film."}) + "\n" for i in range(5)))
    (tmp_path / "plan.json").write_text(json.dumps(PLAN))
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR)
    out = tmp_path / "run"
    main, child = pty.openpty()
    env = {**os.environ, "EDITOR": f"{sys.executable} {editor}", "COLUMNS": "200", "FALCONER_CACHE": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "falconer_ray", "mine", PLAN["instruction"], str(corpus),
                             "--out", str(out), "--plan", str(tmp_path / "plan.json")],
                            stdin=child, stdout=child, stderr=child, env=env, close_fds=True)
    os.close(child)
    try:
        seen = read_until(main, "go on with this plan, edit it, or stop?", "")
        assert "Names of people praised." in seen
        os.write(main, b"e\n")
        seen = read_until(main, "go on with this plan, edit it, or stop?", seen.split("or stop?")[-1])
        assert "Names of actors praised." in seen  # the edited plan is shown before going on
        os.write(main, b"s\n")
        seen = read_until(main, "stopped before annotating", seen)
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(main)
    assert Plan.load(out / "plan.json").steps[1].instruction == "Names of actors praised."
    assert not (out / "annotations").exists()  # nothing was paid for


def test_an_invalid_edit_is_kept_aside_and_the_last_good_plan_stays(tmp_path, monkeypatch):
    from falconer_ray.cli.review import edited

    run = RunDir(tmp_path / "run").create()
    plan = Plan.model_validate(PLAN)
    plan.save(run.plan)
    editor = tmp_path / "editor.py"
    editor.write_text("import sys; open(sys.argv[1], 'w').write('{\"steps\": []}')")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    assert edited(plan, run) == plan
    assert Plan.load(run.plan) == plan
    assert (run.path / "plan.rejected.json").read_text() == '{"steps": []}'
