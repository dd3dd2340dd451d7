"""Mining in committed units, so a run killed midway resumes where it stopped.

A unit is a block of up to `mine.unit_rows` rows of one corpus file. The driver
gathers a unit's mined rows as they stream out of the proxy actors and, once the
reader's own count for that unit is reached, writes them to one Parquet file (temp
name, then os.replace) and appends a line to the manifest. Only a complete unit is
ever named as done, so a resume skips the manifest's units and mines the rest.

A fingerprint of the corpus files (sizes, mtimes), the settings that change the
output, the plan and the proxy checkpoint guards the resume: if any changed, the
committed units answer a different question and resuming is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from falconer_ray.corpus.read import Shard, read_file
from falconer_ray.files import write_text, written_atomically
from falconer_ray.rundir import write_json
from falconer_ray.teacher.gguf_models import content_digest, resolve_gguf

MANIFEST = "_manifest.jsonl"
FINGERPRINT = "_fingerprint.json"
KEPT_META = ["_unit", "_row"]  # kept in unit files: corpus order, for duplicate ids
READER_META = ["_unit_rows", "_last"]  # only needed until a unit is complete
OUTPUT_FIELDS = ("corpus", "text_field", "id_field", "text_unit", "max_doc_chars", "limit", "proxy",
                 "mine.label_threshold", "mine.span_threshold", "mine.keep_text", "mine.unit_rows",
                 "mine.target_agreement", "mine.delta")


class ResumeError(ValueError):
    """A resume that would mix answers to different questions; the message says why."""


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_stat(path: Path) -> list:
    """What a resume compares of one file: a symlink is its target's (where it points,
    its size and mtime), so a target that grew is noticed; a broken link is the link's."""
    try:
        st = path.stat()
    except FileNotFoundError:
        st = path.lstat()
        return [st.st_size, st.st_mtime_ns]
    return [st.st_size, st.st_mtime_ns] + ([str(path.resolve())] if path.is_symlink() else [])


def fingerprint(shards: list[Shard], plan, cfg, proxy_dir: Path, threshold: float | None = None,
                teacher_id: str | None = None) -> dict[str, str]:
    """One short hash per thing a resume must not see change, so a refusal can say which.
    With a cascade, the calibrated threshold and the teacher (its endpoint or weights)
    answer part of the documents, so they are part of it."""
    settings = cfg.model_dump()
    picked = {}
    for key in OUTPUT_FIELDS:
        node = settings
        for part in key.split("."):
            node = node[part]
        picked[key] = node
    derived = ("metrics.json", "proxy.int8.onnx", "proxy.int8.json", "int8_check.json")  # written beside the weights, not part of them
    proxy_files = sorted(p for p in Path(proxy_dir).resolve().glob("*") if p.is_file() and p.name not in derived)
    return {
        "corpus": digest([[s.rel, s.max_rows, *file_stat(s.path)] for s in shards]),
        "settings": digest(picked),
        "plan": digest(plan.model_dump(by_alias=True)),
        "proxy": digest([[p.name, *file_stat(p)] for p in proxy_files]),
        **({"cascade": digest([threshold, teacher_id])} if threshold is not None else {}),
    }


def teacher_identity(cfg) -> str:
    """The cascade's teacher as a resume must see it: its settings (endpoint, model) and,
    for a model file, the file's content."""
    teacher = cfg.teacher
    ident = teacher.model_dump(mode="json")
    if teacher.kind == "embedded":
        ident["sha256"] = content_digest(resolve_gguf(teacher.model_name()))
    return json.dumps(ident, sort_keys=True)


class UnitStore:
    """The folder of committed unit files and their manifest."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[str, dict] = {}

    def open(self, fp: dict[str, str], resume: bool) -> dict[str, dict]:
        """Start afresh, or (resume) check the fingerprint and load the committed units."""
        saved = self.folder / FINGERPRINT
        if resume and saved.exists():
            before = json.loads(saved.read_text())
            changed = sorted(k for k in fp if before.get(k) != fp[k])
            if changed:
                raise ResumeError(
                    f"cannot resume: the {', '.join(changed)} changed since the interrupted run "
                    f"({self.folder.parent}); rerun without --resume to mine everything again")
            self.entries = self._read_manifest()
            # Rewritten whole: a line torn by the kill would otherwise swallow the next entry.
            write_text(self.folder / MANIFEST, "".join(json.dumps(e) + "\n" for e in self.entries.values()))
            for stray in self.folder.glob(".*.tmp"):
                stray.unlink()
            return dict(self.entries)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        write_json(self.folder / FINGERPRINT, fp)  # atomic: a torn fingerprint would block every resume
        return {}

    def _read_manifest(self) -> dict[str, dict]:
        path = self.folder / MANIFEST
        entries = {}
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    e = json.loads(line)
                except ValueError:
                    continue  # a line torn by a kill: its unit is mined again
                if not isinstance(e, dict) or not {"unit", "rows"} <= e.keys():
                    continue
                if (self.folder / f"{e['unit']}.parquet").exists():
                    entries[e["unit"]] = e
        return entries

    def commit(self, unit: str, parts: list[pa.Table], last: bool) -> dict:
        table = pa.concat_tables(parts).sort_by("_row").drop_columns(READER_META)
        with written_atomically(self.folder / f"{unit}.parquet") as tmp:
            pq.write_table(table, tmp)
        status = table.column("status")
        entry = {"unit": unit, "rows": table.num_rows, "last": last,
                 **{s: int(pc.sum(pc.equal(status, s)).as_py() or 0) for s in ("kept", "filtered", "error")}}
        self._append(json.dumps(entry) + "\n")
        self.entries[unit] = entry
        return entry

    def _append(self, line: str) -> None:
        """Name a unit done: the line is on disk before the next unit is mined."""
        with open(self.folder / MANIFEST, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


class UnitCollector:
    """Gathers streamed rows per unit and commits each unit once all its rows are in."""

    def __init__(self, store: UnitStore):
        self.store = store
        self.parts: dict[str, list[pa.Table]] = defaultdict(list)
        self.seen: dict[str, int] = defaultdict(int)
        self.total: dict[str, tuple[int, bool]] = {}
        self.committed = 0
        self.rows = 0  # rows received so far, for progress
        self.seconds = 0.0  # driver time spent gathering and committing

    def add(self, block: pa.Table) -> None:
        started = time.perf_counter()
        try:
            self._add(block)
        finally:
            self.seconds += time.perf_counter() - started

    def _add(self, block: pa.Table) -> None:
        if block.num_rows == 0:
            return
        self.rows += block.num_rows
        units = block.column("_unit")
        for unit in pc.unique(units).to_pylist():
            part = block.filter(pc.equal(units, unit))
            self.parts[unit].append(part)
            self.seen[unit] += part.num_rows
            ends = part.filter(pc.is_valid(part.column("_unit_rows")))
            if ends.num_rows:
                self.total[unit] = (ends.column("_unit_rows")[0].as_py(), ends.column("_last")[0].as_py())
            if unit in self.total:
                rows, last = self.total[unit]
                if self.seen[unit] > rows:
                    raise RuntimeError(f"unit {unit}: {self.seen[unit]} rows mined but the reader read {rows}")
                if self.seen[unit] == rows:
                    self.store.commit(unit, self.parts.pop(unit), last)
                    del self.seen[unit], self.total[unit]
                    self.committed += 1

    def finish(self) -> None:
        if self.parts:
            missing = {u: self.seen[u] for u in self.parts}
            raise RuntimeError(f"units never completed (rows mined so far): {missing}: documents were lost")


def shard_done(shard: Shard, entries: dict[str, dict], unit_rows: int) -> bool:
    """Every unit of the file is committed: blocks 0..k, full but the last, the last marked."""
    k = 0
    while (e := entries.get(shard.unit(k))) is not None:
        if e["last"]:
            return True
        if e["rows"] != unit_rows:
            return False
        k += 1
    return False


def check_complete(shards: list[Shard], entries: dict[str, dict], unit_rows: int, read_args: dict) -> None:
    """Every corpus file is fully committed; a file with no units must really be empty."""
    for s in shards:
        if shard_done(s, entries, unit_rows):
            continue
        if any(e.startswith(f"f{s.index:07d}-") for e in entries) or any(t.num_rows for t in read_file(s, **read_args)):
            raise RuntimeError(f"{s.rel} was not mined completely: documents were lost")
