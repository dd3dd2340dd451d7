"""Bad input never stops a run and is never lost: every bad record or file is an error
row with a reason, counted by reason in report.json and shown by the CLI; bad
arguments, settings and plan files end with one line that says what to fix."""

from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.config import RunConfig
from falconer_ray.corpus.read import corpus_shards, iter_corpus, read_file
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir

PLAN = {"instruction": "people praised in reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Extract the names of people who are praised."}],
    "keep": "positive"}
LONG = " ".join(f"Sentence {i} says the actor Tom Hanks was wonderful in this film." for i in range(300))


def rows(corpus, **kw):
    return pa.concat_tables(list(iter_corpus(corpus, **kw))).to_pylist()


def bad_corpus(root):
    """One of every kind of bad input, next to good documents."""
    root.mkdir()
    good = [{"id": f"g{i}", "text": f"A fine film number {i}, and Meryl Streep shines in it."} for i in range(6)]
    lines = [json.dumps(r) for r in good[:4]] + [
        "{not json",                                   # malformed JSON
        json.dumps({"id": "nt", "body": "no text"}),   # missing text field
        json.dumps({"id": "em", "text": ""}),          # empty
        json.dumps({"id": "ws", "text": " \t\n "}),    # whitespace only
        json.dumps({"id": "long", "text": LONG}),      # far longer than one proxy window
        json.dumps({"id": "g0", "text": "the same id again, later in the file"}),  # duplicate id
    ]
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    (root / "b.jsonl").write_bytes(json.dumps(good[4]).encode() + b'\n{"id": "u8", "text": "bad \xff byte"}\n'
                                   + json.dumps({"id": "g1", "text": "g1 once more"}).encode() + b"\n")
    with gzip.open(root / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps(good[5]) + "\n")
    (root / "d.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not gzip data")          # corrupt .gz
    (root / "e.parquet").write_bytes(b"PAR1 definitely not parquet")                       # bad parquet
    os.symlink(root / "nowhere.jsonl", root / "f.jsonl")                                   # broken link
    (root / "g.jsonl").mkdir()                                                             # a directory named like a file
    (root / "g.jsonl" / "inner.jsonl").write_text(json.dumps({"id": "in", "text": "inside a folder"}) + "\n")
    return root


def test_unreadable_files_are_error_rows_and_folders_are_walked(tmp_path):
    out = {r["doc_id"]: r for r in rows(bad_corpus(tmp_path / "c"), id_field="id")}
    for name in ("d.jsonl.gz", "e.parquet", "f.jsonl"):
        assert out[f"{name}:unreadable"]["error"].startswith("unreadable_file"), name
    assert out["in"]["text"] == "inside a folder"
    assert out["b.jsonl:1"]["error"].startswith("invalid_utf8")  # the id is in the bad line too
    assert out["ws"]["error"] == out["em"]["error"] == "empty_text"
    assert out["nt"]["error"].startswith("missing_text_field")


def test_limit_is_the_first_rows_in_file_order(tmp_path):
    for k in range(3):
        (tmp_path / f"p{k}.jsonl").write_text("".join(json.dumps({"text": f"{k}-{i}"}) + "\n" for i in range(4)))
    assert [r["text"] for r in rows(tmp_path, limit=6)] == ["0-0", "0-1", "0-2", "0-3", "1-0", "1-1"]
    assert [s.max_rows for s in corpus_shards(tmp_path, limit=6)] == [6, 2]


def test_units_cut_a_file_into_blocks_and_skip_committed_ones(tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(10)) + "{bad\n")
    shard = corpus_shards(tmp_path)[0]
    tables = list(read_file(shard, "text", None, "file", unit_rows=4))
    got = pa.concat_tables(tables).to_pylist()
    assert [r["_row"] for r in got] == list(range(11))
    ends = [(r["_unit"], r["_unit_rows"], r["_last"]) for r in got if r["_unit_rows"] is not None]
    assert ends == [(shard.unit(0), 4, False), (shard.unit(1), 4, False), (shard.unit(2), 3, True)]
    skipped = pa.concat_tables(list(read_file(shard, "text", None, "file", unit_rows=4, skip=frozenset({shard.unit(1)}))))
    assert skipped.column("_row").to_pylist() == [0, 1, 2, 3, 8, 9, 10]


@pytest.mark.slow
def test_bad_input_is_counted_by_reason_in_the_report_and_on_the_cli(ray_local, tmp_path, cache_dir):
    from falconer_ray.bench.throughput import fresh_proxy

    corpus = bad_corpus(tmp_path / "corpus")
    run = RunDir(tmp_path / "run").create()
    cfg = RunConfig(corpus=str(corpus), id_field="id", cache_dir=cache_dir, mine={"label_threshold": 0.0})
    fresh_proxy(cfg, run.proxy)
    Plan.model_validate(PLAN).save(run.plan)
    cfg.save(run.path)
    result = CliRunner().invoke(app, ["run", str(run.path)])
    assert result.exit_code == 0, result.output
    assert "errors by reason" in result.output and "duplicate_id: 2" in result.output

    report = json.loads(run.report.read_text())
    assert report["errors_by_reason"] == {"malformed_json": 1, "missing_text_field": 1, "empty_text": 2,
                                          "invalid_utf8": 1, "unreadable_file": 3, "duplicate_id": 2}
    assert report["docs_in"] == 18 and report["invariant_ok"] and report["accounted"]
    assert report["docs_windowed"] == 1  # the long document, read in several windows, not cut
    out = {}
    for folder in ("results", "filtered", "errors"):
        for r in pads.dataset(getattr(run, folder)).to_table().to_pylist():
            assert r["doc_id"] not in out, f"{r['doc_id']} twice"
            out[r["doc_id"]] = {**r, "folder": folder}
    assert out["g0"]["folder"] == "results" and out["g1"]["folder"] == "results"  # the first of each id wins
    assert out["g0#a.jsonl:9"]["error"] == "duplicate_id: 'g0' at a.jsonl:9 was first seen at a.jsonl:0"
    assert out["g1#b.jsonl:2"]["error"].startswith("duplicate_id: 'g1' at b.jsonl:2")
    assert out["long"]["folder"] == "results"


def test_errors_are_counted_by_reason_across_files_and_batches(tmp_path):
    import pyarrow.parquet as pq

    from falconer_ray.mine.outputs import error_reasons

    for f, errors in enumerate([["empty_text: row 1", "malformed_json: line 3: bad"] * 3, [], ["timeout"]]):
        pq.write_table(pa.table({"doc_id": [str(i) for i in range(len(errors))], "error": pa.array(errors, pa.string())}),
                       tmp_path / f"part-{f}.parquet", row_group_size=2)
    counted = error_reasons(pads.dataset(str(tmp_path), format="parquet"))
    assert counted == {"empty_text": 3, "malformed_json": 3, "timeout": 1}


def test_bad_arguments_settings_and_plans_say_what_to_fix(tmp_path):
    runner = CliRunner()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "hello"}\n')

    def error_of(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        return result.output

    (tmp_path / "broken.yaml").write_text("train: [\n")
    assert "broken.yaml is not valid YAML" in error_of("mine", "x", corpus, "--config", tmp_path / "broken.yaml")
    (tmp_path / "typo.yaml").write_text("trian:\n  epochs: 2\n")
    assert "trian: unknown setting" in error_of("mine", "x", corpus, "--config", tmp_path / "typo.yaml")
    (tmp_path / "key.yaml").write_text("teacher:\n  api_key: sk-do-not-store\n")  # keys never go in a config
    assert "teacher.api_key: unknown setting" in error_of("mine", "x", corpus, "--config", tmp_path / "key.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert "must hold a mapping" in error_of("mine", "x", corpus, "--config", tmp_path / "list.yaml")
    assert "limit: Input should be greater than or equal to 1 (got 0)" in error_of("mine", "x", corpus, "--limit", 0)
    assert "instruction is empty" in error_of("mine", "  ", corpus, "--out", tmp_path / "o")
    (tmp_path / "p.json").write_text("not json")
    assert "p.json is not valid JSON" in error_of("mine", "x", corpus, "--plan", tmp_path / "p.json", "--out", tmp_path / "o")
    (tmp_path / "p2.json").write_text('{"steps": [{"id": "a", "op": "get_label", "instruction": "Is it?"}], "keep": "b"}')
    assert "not a valid plan" in error_of("mine", "x", corpus, "--plan", tmp_path / "p2.json", "--out", tmp_path / "o")
    assert "plan file not found" in error_of("mine", "x", corpus, "--plan", tmp_path / "nope.json", "--out", tmp_path / "o")
    assert "falconer plan" in error_of("run", tmp_path / "no-run", "--resume")


def write_reviews(path, rows):
    """One corpus file of `rows` in the format its suffix names."""
    import csv

    import pyarrow.parquet as pq

    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_wrong_text_or_id_field_fails_at_once_naming_the_fields(tmp_path, suffix):
    import time

    reviews = [{"review_id": f"r{i}", "body": f"A fine film number {i}.", "stars": i % 5} for i in range(30)]
    corpus = write_reviews(tmp_path / f"reviews{suffix}", reviews)
    out = tmp_path / "run"
    started = time.monotonic()
    result = CliRunner().invoke(app, ["mine", "Extract praised people", str(corpus), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 20  # no teacher was loaded or asked
    msg = " ".join(result.output.split())
    assert "text field 'text'" in msg and "'review_id', 'body', 'stars'" in msg and "--text-field" in msg
    assert not out.exists()  # nothing written for a run that cannot read its corpus

    wrong_id = CliRunner().invoke(app, ["mine", "x", str(corpus), "--out", str(out), "--text-field", "body",
                                        "--id-field", "id"])
    assert wrong_id.exit_code == 2 and "id field 'id'" in wrong_id.output and "--id-field" in wrong_id.output
    quote = CliRunner().invoke(app, ["quote", "x", str(corpus), "--text-field", "review"])
    assert quote.exit_code == 2 and "text field 'review'" in quote.output


def test_rows_without_the_field_in_a_corpus_that_has_it_stay_error_rows(tmp_path):
    from falconer_ray.corpus.read import CorpusError, check_fields

    # The first file lacks the field altogether: the check reads on into the next files.
    write_reviews(tmp_path / "a.jsonl", [{"id": f"a{i}", "body": "no text"} for i in range(60)])
    write_reviews(tmp_path / "b.jsonl", [{"id": "b0", "text": "A fine film."}, {"id": "b1", "body": "none"}])
    check_fields(tmp_path, "text", "id")
    got = {r["doc_id"]: r["error"] for r in rows(tmp_path, id_field="id")}
    assert got["b0"] == "" and got["b1"].startswith("missing_text_field") and got["a0"].startswith("missing_text_field")
    with pytest.raises(CorpusError, match="text field 'body2'"):
        check_fields(tmp_path, "body2")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "notes.txt").write_text("one document\n")
    with pytest.raises(CorpusError, match="drop --text-field"):  # a .txt file only has 'text'
        check_fields(tmp_path / "t", "body")


def test_a_folder_that_is_not_a_run_is_named_before_stage_hints(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["run", str(tmp_path / "runs" / "nope")])
    assert missing.exit_code == 2 and f"no run directory at {tmp_path / 'runs' / 'nope'}" in missing.output
    assert "plan.json is missing" not in missing.output
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    for command in ("report", "run", "annotate", "train", "serve"):
        foreign = runner.invoke(app, [command, str(tmp_path / "photos")])
        text = " ".join(foreign.output.split())
        assert foreign.exit_code == 2 and "is not a falconer run directory" in text, (command, foreign.output)
        assert "none of plan.json, config.json" in text
    started = RunDir(tmp_path / "started").create()  # a run folder whose plan is missing: the stage hint
    RunConfig().save(started.path)
    half = runner.invoke(app, ["run", str(started.path)])
    assert half.exit_code == 2 and "plan.json is missing: run `falconer plan`" in half.output
