"""Every command's --help carries a runnable-looking example."""

import typer
from typer.testing import CliRunner

from falconer_ray.cli import app


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
