"""The demo's corpus (a seeded, label-stratified IMDB sample with gold labels) and the
check of a run's kept/filtered decisions against those labels."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.eval.datasets import movie_reviews, read_gold, write_imdb_corpus
from falconer_ray.eval.gold_check import gold_check, gold_summary, record_gold_check
from falconer_ray.rundir import RunDir, write_json


def corpus_rows(path):
    return [json.loads(line) for f in sorted(path.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_demo_corpus_is_a_seeded_sample_of_both_labels(tmp_path):
    imdb = movie_reviews("imdb")
    share = sum(r["label"] for r in imdb) / len(imdb)
    assert [r["label"] for r in imdb[:2000]] == [0] * 2000  # why the first N reviews cannot be the demo

    rows = corpus_rows(write_imdb_corpus(tmp_path / "a", 301, shards=3))
    assert len(rows) == 301 and len({r["id"] for r in rows}) == 301
    assert abs(sum(r["gold_positive"] for r in rows) - 301 * share) <= 1  # the dataset's proportions
    for r in rows:  # ids point back at the package's rows, and the gold label is that row's
        assert imdb[int(r["id"].removeprefix("imdb-"))]["text"] == r["text"]
        assert imdb[int(r["id"].removeprefix("imdb-"))]["label"] == r["gold_positive"]
    labels = [r["gold_positive"] for r in rows]
    assert 0 < sum(labels[:50]) < 50  # shuffled, not one label after the other
    assert sorted((tmp_path / "a").glob("*.jsonl")) == [tmp_path / "a" / f"imdb-{k:02d}.jsonl" for k in range(3)]

    again = corpus_rows(write_imdb_corpus(tmp_path / "b", 301, shards=3))
    other = corpus_rows(write_imdb_corpus(tmp_path / "c", 301, shards=3, seed=1))
    assert again == rows and [r["id"] for r in other] != [r["id"] for r in rows]
    assert read_gold(tmp_path / "a") == {r["id"]: r["gold_positive"] for r in rows}
    with pytest.raises(ValueError, match="at least one review"):
        write_imdb_corpus(tmp_path / "d", 0)


def mined_run(tmp_path, kept: list[str], filtered: list[str]) -> RunDir:
    """results/ and filtered/ as mining writes them (Parquet with a doc_id column)."""
    run = RunDir(tmp_path / "run").create()
    for folder, ids in ((run.results, kept), (run.filtered, filtered)):
        folder.mkdir()
        pq.write_table(pa.table({"doc_id": pa.array(ids, pa.string()),
                                 "label_positive": pa.array([0.5] * len(ids))}), folder / "part-0.parquet")
    return run


def test_gold_check_scores_kept_against_positive(tmp_path):
    gold = {"p1": 1, "p2": 1, "p3": 1, "n1": 0, "n2": 0, "n3": 0, "n4": 0}
    run = mined_run(tmp_path, kept=["p1", "p2", "n1"], filtered=["p3", "n2", "n3", "n4", "unknown"])
    check = gold_check(run, gold)
    assert check["kept_positive"] == 2 and check["kept_negative"] == 1
    assert check["filtered_positive"] == 1 and check["filtered_negative"] == 3
    assert check["docs_scored"] == 7 and check["docs_without_gold"] == 1
    assert check["accuracy"] == round(5 / 7, 4) and check["kept_really_positive"] == round(2 / 3, 4)
    assert check["positives_kept"] == round(2 / 3, 4) and check["gold_positive_share"] == round(3 / 7, 4)
    line = gold_summary(check)
    assert "accuracy 71.4%" in line and "kept really positive 66.7% (2 of 3)" in line

    nothing_kept = gold_check(mined_run(tmp_path / "b", kept=[], filtered=["n1", "p1"]), gold)
    assert nothing_kept["kept_really_positive"] is None and nothing_kept["accuracy"] == 0.5
    assert "kept really positive n/a (0 of 0)" in gold_summary(nothing_kept)


def test_gold_check_is_kept_in_report_json_through_falconer_report(tmp_path):
    from test_report_html import make_run

    run = make_run(tmp_path, n=100)  # a mined run: ids doc0..doc99, kept when score >= 0.5
    gold = {f"doc{i}": int(i % 2 == 0) for i in range(100)}
    report = json.loads(run.report.read_text())
    check = record_gold_check(run, report, gold)
    assert json.loads(run.report.read_text())["demo_gold_check"] == check == json.loads(run.gold_check.read_text())
    assert check["docs_scored"] == report["docs_kept"] + report["docs_filtered"]

    result = CliRunner().invoke(app, ["report", str(run.path)])  # rebuilds report.json from the run's files
    assert result.exit_code == 0, result.output
    assert json.loads(run.report.read_text())["demo_gold_check"] == check
    assert "gold check" in result.output and "kept really positive" in result.output


def test_a_wrong_text_field_fails_before_the_run_folder_is_touched(tmp_path):
    from falconer_ray.config import RunConfig
    from falconer_ray.pipeline import mine_all

    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "no text field here"}) + "\n")
    with pytest.raises(ValueError, match="text field 'text'"):
        mine_all(RunConfig(instruction="x", corpus=str(tmp_path / "c.jsonl")), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_demo_resume_keeps_the_corpus_it_was_mining(tmp_path):
    from falconer_ray.eval.datasets import read_gold, write_imdb_corpus

    corpus = write_imdb_corpus(tmp_path / "demo" / "corpus", 12)
    before = {f.name: f.stat().st_mtime_ns for f in corpus.iterdir()}
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--docs", "20", "--resume"])
    assert result.exit_code == 2 and "holds 12 reviews, not --docs 20" in result.output, result.output
    assert {f.name: f.stat().st_mtime_ns for f in corpus.iterdir()} == before and len(read_gold(corpus)) == 12
