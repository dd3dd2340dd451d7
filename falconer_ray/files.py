"""Files that are whole or absent: what a kill, a full disk or a power cut leaves
behind is the old file or the new one, never half of one.

Every file a run keeps (settings, plan, reports, committed units, model checks) is
written to a temporary name beside it, flushed to disk, and renamed over the target;
the folder is flushed after the rename so the new name itself survives a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def written_atomically(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` to write; when the block succeeds it is
    flushed and replaces `target`, and it is removed either way."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if tmp.is_file():
            fsync_path(tmp)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(target: Path, text: str) -> None:
    with written_atomically(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(target: Path, data: dict) -> None:
    write_text(target, json.dumps(data, indent=2, default=str) + "\n")
