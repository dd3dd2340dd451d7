"""The `falconer` Typer app and its global flags; the commands register on it from
`cli.main` (a run, stage by stage) and `cli.extras` (around a run)."""

from __future__ import annotations

from typing import Annotated

import typer

from falconer_ray.cli.options import widen_help_off_terminal

widen_help_off_terminal()
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich")


@app.callback()
def _global(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the commands' own output.")] = False,
    log_json: Annotated[bool, typer.Option("--log-json", help="Progress and status as one JSON object per line on stderr, for job logs.")] = False,
):
    """Mine structured knowledge from huge corpora: an LLM plans and annotates a sample,
    a small proxy model trained with Ray Train does the rest with Ray Data.

    Example: falconer mine "Extract the names of people praised in positive reviews" reviews/ --out runs/people
    """
    from falconer_ray.progress import set_mode

    if quiet and log_json:
        raise typer.BadParameter("choose one of --quiet and --log-json")
    set_mode("json" if log_json else "quiet" if quiet else "auto")
