"""Kills at every point of a unit's commit, with repeated resumes: the committed units
come out identical to an undisturbed run's, every time.

The points: inside the Parquet write (before its rename), after the rename but before
the manifest line, and halfway through the manifest line. Each kill is followed by a
resume that goes on until the next kill or the end, so one run can be killed many times.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from falconer_ray.mine import units
from falconer_ray.mine.units import UnitStore

UNITS = [f"f0000000-b{i:07d}" for i in range(8)]
PHASES = ("parquet", "before_manifest", "mid_manifest")
FP = {"corpus": "c", "settings": "s"}


COMMITTED: set[str] = set()  # units whose manifest line was written whole, over all kills


class Killed(BaseException):
    """What the test throws where a kill would land (not an Exception: nothing may catch it)."""


def killed(*_):
    raise Killed()


def unit_rows(k: int) -> list[pa.Table]:
    n = 3 + k % 4
    return [pa.table({"doc_id": [f"d{k}-{i}" for i in range(n)], "status": [("kept", "filtered", "error")[i % 3] for i in range(n)],
                      "_unit": [UNITS[k]] * n, "_row": list(range(n)), "_unit_rows": [n] * n, "_last": [k == 7] * n})]


def mine(folder, resume: bool) -> None:
    store = UnitStore(folder)
    done = store.open(FP, resume)
    for k, unit in enumerate(UNITS):
        if unit not in done:
            store.commit(unit, unit_rows(k), k == len(UNITS) - 1)


def snapshot(folder) -> dict:
    store = UnitStore(folder)
    entries = store.open(FP, resume=True)
    return {u: (entries[u], pq.read_table(folder / f"{u}.parquet").to_pylist()) for u in sorted(entries)}


def kill_at(monkeypatch, unit: str, phase: str) -> None:
    real_write, real_append, real_commit = pq.write_table, UnitStore._append, UnitStore.commit
    state = {"unit": None}

    def commit(self, u, parts, last):
        state["unit"] = u
        if phase == "before_manifest" and u == unit:
            monkeypatch.setattr(UnitStore, "_append", killed)
        return real_commit(self, u, parts, last)

    def write_table(table, where, *a, **kw):
        if phase == "parquet" and state["unit"] == unit:
            real_write(table.slice(0, 1), where)  # half a file on disk, then the kill
            raise Killed()
        return real_write(table, where, *a, **kw)

    def append(self, line):
        if phase == "mid_manifest" and state["unit"] == unit:
            real_append(self, line[: len(line) // 2])
            raise Killed()
        real_append(self, line)
        COMMITTED.add(state["unit"])

    monkeypatch.setattr(UnitStore, "commit", commit)
    monkeypatch.setattr(units.pq, "write_table", write_table)
    monkeypatch.setattr(UnitStore, "_append", append)


@pytest.mark.parametrize("seed", range(3))
def test_kills_at_every_commit_point_leave_the_same_units(tmp_path, monkeypatch, seed):
    mine(tmp_path / "calm", resume=False)
    calm = snapshot(tmp_path / "calm")
    assert len(calm) == len(UNITS)
    points = [(u, p) for u in UNITS for p in PHASES]
    random.Random(seed).shuffle(points)
    folder = tmp_path / "killed"
    COMMITTED.clear()
    mine_started = False
    kills = 0
    for unit, phase in sorted(points[:8], key=lambda x: UNITS.index(x[0])):  # 8 kills per run, in mining order
        with monkeypatch.context() as m:
            kill_at(m, unit, phase)
            with pytest.raises(Killed):
                mine(folder, resume=mine_started)
        mine_started, kills = True, kills + 1
        # every unit named done so far stays visible: a torn line never hides the next one
        assert COMMITTED <= set(UnitStore(folder)._read_manifest())
    mine(folder, resume=True)
    assert kills == 8 and snapshot(folder) == calm
    assert not list(folder.glob(".*.tmp"))  # no half-written file is left behind
