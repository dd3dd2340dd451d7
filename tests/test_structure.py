"""The package's shape: stages in layers with no import running back up or round in a
loop (import-linter, counting imports made inside functions), short modules, and
packages a newcomer can read at a glance."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "falconer_ray"
MAX_LINES = 400
MAX_MODULES = 12


def lint_imports(where: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the contracts of pyproject.toml, over the package found in `where`."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=where, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_hold():
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Stages are layered KEPT" in out.stdout and "No import cycles, at any depth KEPT" in out.stdout


def test_the_contracts_catch_an_import_hidden_in_a_function(tmp_path):
    """The contracts are not vacuous: one upward import inside a function of the lowest
    layer breaks both (config -> mine runs up the layers and closes a loop)."""
    shutil.copytree(PACKAGE, tmp_path / "falconer_ray", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    run = tmp_path / "falconer_ray" / "config" / "run.py"
    run.write_text(run.read_text() + "\n\ndef _sneaky():\n    from falconer_ray.mine import driver\n\n    return driver\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0
    assert "Stages are layered BROKEN" in out.stdout and "No import cycles, at any depth BROKEN" in out.stdout
    assert "falconer_ray.config.run -> falconer_ray.mine.driver" in out.stdout


def test_modules_are_short_and_packages_small():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not long, f"modules of {MAX_LINES} lines or more: {long}"
    for package in [PACKAGE, *(p.parent for p in PACKAGE.rglob("__init__.py"))]:
        modules = sorted(p.name for p in package.glob("*.py"))
        assert len(modules) <= MAX_MODULES, f"{package.relative_to(ROOT)} holds {len(modules)} modules: {modules}"
