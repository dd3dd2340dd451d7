"""Progress output in each mode: log lines without carriage returns, JSON lines, silence."""

import json
import re
import subprocess
import sys
import textwrap
import time

import pytest

from falconer_ray import progress as prog


@pytest.fixture(autouse=True)
def restore_mode():
    yield
    prog.set_mode("auto")


def drive(total=20, sleep=0.0):
    with prog.progress("teacher get_label 'x'", total) as advance:
        for _ in range(total):
            time.sleep(sleep)
            advance()


def test_log_file_lines_have_counts_and_eta_and_no_carriage_returns(capsys):
    prog.set_mode("auto")  # stderr is captured, so not a TTY: the log-file form
    drive()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err
    lines = err.strip().splitlines()
    assert 10 <= len(lines) <= 11, lines
    assert re.fullmatch(r"\d\d:\d\d:\d\d teacher get_label 'x': 20/20 docs \(100%\), [\d.e+]+ docs/s, "
                        r"elapsed \d+s, eta 0s", lines[-1]), lines[-1]
    assert "eta" in lines[0] and "2/20 docs (10%)" in lines[0]


def test_json_mode_emits_one_object_per_line(capsys):
    prog.set_mode("json")
    prog.note("[bold]training[/] the proxy")
    drive()
    events = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert events[0] == {"ts": events[0]["ts"], "event": "note", "message": "training the proxy"}
    assert events[1]["event"] == "start" and events[1]["total"] == 20
    steps = [e for e in events if e["event"] == "progress"]
    assert [e["done"] for e in steps] == list(range(1, 21))  # every 5% of 20
    assert steps[-1]["eta_s"] == 0 and all(e["elapsed_s"] >= 0 for e in steps)
    assert events[-1]["event"] == "end" and events[-1]["done"] == 20


def test_quiet_mode_prints_nothing(capsys):
    prog.set_mode("quiet")
    prog.note("hidden")
    drive()
    prog.console.print("a rich table would go here")
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""


def test_watch_polls_work_done_elsewhere(capsys):
    prog.set_mode("json")
    done = {"n": 0}
    with prog.watch("proxy mining", 100, lambda: done["n"], interval=0.05):
        for n in (10, 40, 100):
            done["n"] = n
            time.sleep(0.2)
    events = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    seen = [e["done"] for e in events if e["event"] == "progress"]
    assert seen[-1] == 100 and seen == sorted(seen) and len(seen) >= 3
    with pytest.raises(ValueError, match="mode must be one of"):
        prog.set_mode("loud")


def test_training_steps_reach_the_driver_from_a_ray_worker(ray_local):
    import ray

    from falconer_ray.train.fit import StepsReported

    # 2 workers share 21 examples: 11 each, in batches of 4 -> 3 steps per epoch
    assert StepsReported.total(21, workers=2, batch_size=4, epochs=2) == 6
    steps = StepsReported()

    @ray.remote(num_cpus=0)
    def worker(queue, n):
        on_batch = StepsReported.reporter(queue, every_s=0.0)
        for _ in range(n):
            on_batch()
        on_batch.flush()

    try:
        ray.get(worker.remote(steps.queue, 5))
        assert steps() == 5 and steps() == 5  # polling again keeps the count
    finally:
        steps.close()


def test_cli_global_flags_reach_the_commands(tmp_path):
    """`falconer --log-json plan --plan FILE` in a real process: stderr holds only JSON."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [{"id": "pos", "op": "get_label", "instruction": "Is it positive?"}]}))
    code = textwrap.dedent("""
        import sys
        from falconer_ray.cli.main import app
        sys.exit(app())
    """)
    args = [sys.executable, "-c", code, "--log-json", "plan", "positive reviews", "--plan", str(plan),
            "--out", str(tmp_path / "run")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Is it positive?" in done.stdout  # the command's own output (the plan table) stays on stdout
    events = [json.loads(line) for line in done.stderr.strip().splitlines()]
    assert events and events[-1]["event"] == "note" and events[-1]["message"].startswith("written:"), done.stderr
    both = subprocess.run([*args[:3], "--quiet", *args[3:]], capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "choose one of --quiet and --log-json" in both.stderr
