"""On-disk memo of teacher answers, so a rerun never pays for the same call twice.

The key is a sha256 over everything that could change an answer: teacher name
(model + prompt style), PROMPT_VERSION, the operation, the instruction and the
exact text the teacher was shown. Values are small JSON blobs (a probability,
or the raw answer strings; validation is cheap and re-run on read).

sqlite3 in WAL mode: safe for one process with many readers; Ray workers that
annotate in parallel should each get their own file or go through one actor.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from falconer_ray.teacher.prompts import PROMPT_VERSION

OPS = ("label", "span")


def cache_key(
    teacher: str, op: str, instruction: str, text: str, prompt_version: str = PROMPT_VERSION
) -> str:
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
    # JSON encoding makes the field boundaries unambiguous.
    blob = json.dumps([teacher, prompt_version, op, instruction, text], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnnotationCache:
    """Key -> JSON value store in one sqlite file (`":memory:"` for tests)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS annotations ("
            "key TEXT PRIMARY KEY, op TEXT NOT NULL, value TEXT NOT NULL)"
        )
        self._db.commit()

    key = staticmethod(cache_key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values for the keys that are present; missing keys are simply absent."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Any] = {}
        for i in range(0, len(keys), 500):  # stay under sqlite's variable limit
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, value FROM annotations WHERE key IN ({marks})", chunk
            )
            out.update((k, json.loads(v)) for k, v in rows)
        return out

    def put_many(self, items: dict[str, Any], op: str = "") -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO annotations(key, op, value) VALUES (?, ?, ?)",
                [(k, op, json.dumps(v, ensure_ascii=False)) for k, v in items.items()],
            )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "AnnotationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
