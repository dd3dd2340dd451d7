"""Checking the plan before paying for it: a wrong step is the most expensive mistake a
run can make, so `falconer mine` and `falconer demo` show the plan and, in a terminal,
ask whether to go on, edit it (in $EDITOR) or stop, before the teacher annotates anything."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click
import typer

from falconer_ray.plan.schema import Plan, PlanError
from falconer_ray.progress import note
from falconer_ray.rundir import RunDir

CHOICES = {"g": "go on", "e": "edit", "s": "stop"}


def in_terminal() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def plan_review(yes: bool, terminal: Callable[[], bool] = in_terminal) -> Callable[[Plan, RunDir], Plan]:
    """What `run_stages` calls with the shown plan: the plan to annotate for (the same one,
    or the edited one); stopping exits with the command that goes on later."""

    def review(plan: Plan, run: RunDir) -> Plan:
        if yes:
            return plan
        if not terminal():
            note("no terminal to ask in: going on with the plan above (pass --yes to say so and skip this check)")
            return plan
        while True:
            answer = click.prompt("go on with this plan, edit it, or stop? [g/e/s]", type=click.Choice(list(CHOICES)),
                                  default="g", show_choices=False, err=True)
            if answer == "g":
                return plan
            if answer == "s":
                typer.echo(f"stopped before annotating; the plan is in {run.plan}. Go on with `falconer annotate "
                           f"{run.path}` (then train and run), or rerun with `--plan {run.plan}`.", err=True)
                raise typer.Exit(0)
            plan = edited(plan, run)

    return review


def edited(plan: Plan, run: RunDir) -> Plan:
    """The plan after the user's $EDITOR; an invalid edit says why and keeps the last good plan."""
    from falconer_ray.pipeline import show_plan  # the stages (pyarrow): only once a plan was edited

    click.edit(filename=str(run.plan))
    try:
        changed = Plan.load(run.plan)
    except (PlanError, ValueError) as e:
        rejected = run.path / "plan.rejected.json"
        rejected.write_text(run.plan.read_text())
        plan.save(run.plan)
        typer.secho(f"the edited plan cannot run: {e}. It is kept in {rejected}; {run.plan} holds the plan above "
                    "again (edit again to fix it).", fg="red", err=True)
        return plan
    show_plan(changed, run)
    return changed
