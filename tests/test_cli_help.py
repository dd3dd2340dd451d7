"""Every command's --help carries a runnable-looking example."""

import typer
from typer.testing import CliRunner

from falconer_ray.cli.main import app


def commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):  # a group (typer may bundle its own click)
            yield from commands(cmd, (*prefix, name))


def test_every_command_help_has_an_example():
    runner = CliRunner()
    paths = [()] + list(commands(typer.main.get_command(app)))
    assert len(paths) >= 14  # top level, 10 commands, the bench group and its 3 benchmarks
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        assert "Example: falconer" in result.output or "Example: FALCONER_TOKEN" in result.output, path


def test_help_in_a_pipe_is_wide_enough_to_read(tmp_path):
    """Help captured by a pipe or a log (no terminal, no COLUMNS) is not squeezed into
    80 columns: flag names are whole and descriptions sit on long lines."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    for command in ("mine", "demo", "quote"):
        out = subprocess.run([sys.executable, "-m", "falconer_ray", command, "--help"], capture_output=True, text=True,
                             env=env, timeout=120, check=True).stdout
        assert "…" not in out, command
        assert "--teacher-api-key-env" in out and max(len(line) for line in out.splitlines()) > 100, command
        if command != "demo":
            flat = " ".join(out.replace("│", " ").split())
            assert "--text-field <str> Field holding the document text (default: text" in flat, command
    narrow = subprocess.run([sys.executable, "-m", "falconer_ray", "mine", "--help"], capture_output=True, text=True,
                            env={**env, "COLUMNS": "90"}, timeout=120, check=True).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 90  # an explicit width still decides
