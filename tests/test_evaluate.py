"""`falconer eval`: datasets, splits, metrics checked against seqeval, and tiny real runs."""

import json
import random

import numpy as np
import pytest
from seqeval.metrics import f1_score
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.eval.datasets import wnut16
from falconer_ray.eval.evaluate import load_task, split
from falconer_ray.spans import span_f1


def test_wnut16_spans_are_the_tagged_tokens():
    docs = wnut16("person")
    assert len(docs) == 2394
    assert sum(len(d["spans"]) for d in docs) == 449  # B-person tags in the file
    for d in docs:
        for s, e in d["spans"]:
            piece = d["text"][s:e]
            assert piece and piece == piece.strip() and d["text"][s - 1 : s] in ("", " ")
    assert sum(len(d["spans"]) for d in wnut16("geo-loc")) == 276
    with pytest.raises(ValueError, match="unknown entity"):
        wnut16("planet")


def _chunks_to_tags(n_tokens, chunks):
    tags = ["O"] * n_tokens
    for a, b in chunks:
        tags[a] = "B-X"
        for k in range(a + 1, b):
            tags[k] = "I-X"
    return tags


def _random_chunks(rng, n_tokens):
    chunks, k = [], 0
    while k < n_tokens:
        if rng.random() < 0.2:
            length = min(rng.randint(1, 3), n_tokens - k)
            chunks.append((k, k + length))
            k += length + (rng.random() < 0.5)  # sometimes two chunks touch
        else:
            k += 1
    return chunks


def test_span_f1_matches_seqeval():
    """Our exact-match F1 over character spans equals seqeval's over BIO tags."""
    rng = random.Random(0)
    for _ in range(30):
        gold_tags, pred_tags, gold_spans, pred_spans = [], [], [], []
        for _ in range(rng.randint(1, 8)):
            tokens = [rng.choice(["a", "bb", "ccc"]) for _ in range(rng.randint(1, 12))]
            starts = np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]])
            gold = _random_chunks(rng, len(tokens))
            pred = [c for c in gold if rng.random() < 0.7] + _random_chunks(rng, len(tokens))[:1]
            pred = sorted(set(pred))
            pred = [c for i, c in enumerate(pred) if i == 0 or c[0] >= pred[i - 1][1]]  # no overlaps
            gold_tags.append(_chunks_to_tags(len(tokens), gold))
            pred_tags.append(_chunks_to_tags(len(tokens), pred))
            char = lambda cs: [(int(starts[a]), int(starts[b - 1] + len(tokens[b - 1]))) for a, b in cs]  # noqa: E731
            gold_spans.append(char(gold))
            pred_spans.append(char(pred))
        if not any(gold_spans) and not any(pred_spans):
            continue
        assert span_f1(pred_spans, gold_spans) == pytest.approx(f1_score(gold_tags, pred_tags))


def test_split_is_disjoint_and_seeded():
    train, test = split(1000, 100, 50, seed=3)
    assert len(train) == 100 and len(test) == 50 and not set(train) & set(test)
    assert split(1000, 100, 50, seed=3) == (train, test)
    assert split(1000, 100, 50, seed=4) != (train, test)
    # A larger train set keeps the same test slice (its teacher answers stay cached).
    assert split(1000, 500, 50, seed=3)[1] == test
    with pytest.raises(ValueError, match="exceeds"):
        split(100, 90, 20, seed=0)


@pytest.mark.parametrize("args,message", [
    (["imdbx"], "unknown dataset"),
    (["wnut16", "--entity", "planet"], "unknown entity"),
    (["rotten-tomatoes", "--n-train", "9000"], "exceeds"),
    (["rotten-tomatoes", "--train-source", "oracle"], "gold or teacher"),
])
def test_bad_eval_arguments_are_one_line_errors(args, message):
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_review_tasks_load_gold_labels():
    task = load_task("rotten-tomatoes")
    assert task.kind == "label" and len(task.docs) == 8530
    assert sum(d["gold"] for d in task.docs) == 4265


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["rotten-tomatoes", "wnut16"])
def test_eval_writes_consistent_metrics(ray_local, tmp_path, cache_dir, monkeypatch, dataset):
    monkeypatch.setenv("FALCONER_CACHE", cache_dir)
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", dataset, "--n-train", "16", "--n-test", "16", "--epochs", "1",
                                      "--train-source", "teacher", "--target-agreement", "0.9",
                                      "--splits", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["n_train"] == 16 and r["n_test"] == 16 and len(r["predictions"]) == 16
    for key in ("proxy_vs_gold", "teacher_vs_gold", "proxy_vs_teacher"):
        assert 0.0 <= r[key] <= 1.0
    assert 0 < r["teacher_calls"] <= 32 and all(v >= 0 for v in r["seconds"].values())
    assert 0 <= r["cascade"]["met_fraction"] <= 1 and r["cascade"]["splits"] == 5
    preds = r["predictions"]
    assert len({p["index"] for p in preds}) == 16
    assert all(0.0 <= p["confidence"] <= 1.0 for p in preds)
    task = load_task(dataset)
    if dataset == "wnut16":
        gold = [[tuple(s) for s in task.docs[p["index"]]["gold"]] for p in preds]
        assert [[tuple(s) for s in p["gold"]] for p in preds] == gold
        recompute = lambda a, b: span_f1([[tuple(s) for s in p[a]] for p in preds],  # noqa: E731
                                         [[tuple(s) for s in p[b]] for p in preds])
        for p in preds:  # spans are real, non-empty character ranges of the tweet
            text = task.docs[p["index"]]["text"]
            assert all(0 <= s < e <= len(text) for s, e in p["proxy"] + p["teacher"])
    else:
        assert [p["gold"] for p in preds] == [task.docs[p["index"]]["gold"] for p in preds]
        recompute = lambda a, b: float(np.mean([p[a] == p[b] for p in preds]))  # noqa: E731
    assert r["proxy_vs_gold"] == pytest.approx(recompute("proxy", "gold"))
    assert r["teacher_vs_gold"] == pytest.approx(recompute("teacher", "gold"))
    assert r["proxy_vs_teacher"] == pytest.approx(recompute("proxy", "teacher"))
