"""The run directory: one folder holds everything a run made, so any stage can be
run alone, inspected, or resumed from it."""

from __future__ import annotations

import json
from pathlib import Path

from falconer_ray.files import write_json  # noqa: F401 - the run's JSON files are written whole


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()

    plan = property(lambda self: self.path / "plan.json")
    config = property(lambda self: self.path / "config.json")
    annotations_dir = property(lambda self: self.path / "annotations")
    annotations = property(lambda self: self.path / "annotations" / "annotations.jsonl")
    annotation_stats = property(lambda self: self.path / "annotations" / "stats.json")
    annotation_errors = property(lambda self: self.path / "annotations" / "errors.jsonl")
    plan_stats = property(lambda self: self.path / "plan_stats.json")
    proxy = property(lambda self: self.path / "proxy")
    train_metrics = property(lambda self: self.path / "proxy" / "metrics.json")
    rows = property(lambda self: self.path / "_rows")
    results = property(lambda self: self.path / "results")
    filtered = property(lambda self: self.path / "filtered")
    errors = property(lambda self: self.path / "errors")
    mine_stats = property(lambda self: self.path / "mine_stats.json")
    report = property(lambda self: self.path / "report.json")
    gold_check = property(lambda self: self.path / "gold_check.json")

    # What any stage leaves behind: a folder with none of these is not a run.
    MARKERS = ("plan.json", "config.json", "quote.json", "plan_stats.json", "annotations", "proxy", "mine_stats.json",
               "report.json", "results")

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def check_is_run(self) -> RunDir:
        """Fail on a folder that is not a run at all (a mistyped path, most likely)
        before any stage names the one file it misses."""
        if not self.path.exists():
            raise FileNotFoundError(f"no run directory at {self.path}: check the path (runs are made by "
                                    "`falconer mine --out DIR`, `falconer plan --out DIR` or `falconer demo`)")
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} is a file, not a falconer run directory")
        if not any((self.path / name).exists() for name in self.MARKERS):
            raise FileNotFoundError(f"{self.path} is not a falconer run directory: it has none of "
                                    f"{', '.join(self.MARKERS)}; check the path")
        return self

    def require(self, what: Path, stage: str) -> Path:
        if not what.exists():
            self.check_is_run()
            raise FileNotFoundError(f"{what} is missing: run `falconer {stage}` on {self.path} first")
        return what


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}
