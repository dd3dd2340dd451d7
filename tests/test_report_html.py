"""report.html: rendered from a run directory, checked in a real headless Chromium.

The run directory is written in the exact on-disk format the stages produce (plan,
annotations, stats, Parquet outputs via mine's own schema and splitter), so no model
runs and the test takes seconds; the slow end-to-end test checks a real run's page.
"""

import json
import re
import shutil
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from falconer_ray.config import RunConfig
from falconer_ray.mine import output_schema, split_outputs
from falconer_ray.plan import Plan
from falconer_ray.report import build_report
from falconer_ray.report_html import highlight, sample_scores, write_report_html
from falconer_ray.rundir import RunDir, write_json

HOSTILE = 'Great <script>document.body.dataset.pwned="1"</script> film <img src=x onerror="document.body.dataset.pwned=2"> by Ann Lee.'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_run(tmp_path, n=400) -> RunDir:
    run = RunDir(tmp_path / "run").create()
    plan = Plan.model_validate({"instruction": "People praised in positive reviews", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
        {"id": "people", "op": "get_span", "instruction": "Names of people praised."}], "keep": "positive"})
    plan.save(run.plan)
    cfg = RunConfig(instruction=plan.instruction, corpus=str(tmp_path / "corpus"), mine={"keep_text": True})
    cfg.save(run.path)
    start = HOSTILE.index("Ann Lee")
    run.annotations_dir.mkdir()
    with run.annotations.open("w") as f:
        f.write(json.dumps({"doc_id": "d0", "text": HOSTILE, "split": "heldout", "labels": {"positive": 0.9},
                            "spans": {"people": [{"start": start, "end": start + 7, "text": "Ann Lee", "score": 1.0}]}}) + "\n")
        f.write(json.dumps({"doc_id": "d1", "text": "Dull.", "split": "train", "labels": {"positive": 0.1},
                            "spans": {"people": []}}) + "\n")
    write_json(run.annotation_stats, {"teacher": {"model": "embedded:test", "calls": 4, "seconds": 8.0, "docs_per_s": 0.5},
                                      "docs": 2, "cached": {"label": 0, "span": 0}, "rejected_spans": {}})
    write_json(run.train_metrics, {"wall_s": 30.0, "agreement": {
        "label": 0.75, "span_f1": 0.5, "heldout_docs": 8,
        "steps": {"positive": {"op": "get_label", "accuracy": 0.75, "confusion": {"tp": 3, "fp": 1, "fn": 1, "tn": 3}},
                  "people": {"op": "get_span", "f1": 0.5}}}})
    rows = {"doc_id": [], "status": [], "error": [], "label_positive": [], "span_people": [], "text": []}
    for i in range(n):
        error = "empty_text" if i % 50 == 0 else ("malformed_json: line 3" if i % 77 == 0 else None)
        score = None if error else (i % 100) / 100
        kept = score is not None and score >= 0.5
        text = HOSTILE if kept else None
        rows["doc_id"].append(f"doc{i}")
        rows["status"].append("error" if error else ("kept" if kept else "filtered"))
        rows["error"].append(error)
        rows["label_positive"].append(score)
        rows["span_people"].append([{"start": start, "end": start + 7, "text": "Ann Lee", "score": 0.8}] if kept else None)
        rows["text"].append(text)
    run.rows.mkdir()
    table = pa.table(rows, schema=output_schema(plan, keep_text=True))
    # the bookkeeping columns mining adds: unit, row in the unit, windows per document
    table = (table.append_column("_unit", pa.array(["u0000000-0"] * n))
             .append_column("_row", pa.array(range(n), pa.int64()))
             .append_column("_windows", pa.array([1] * n, pa.int32())))
    pq.write_table(table.slice(0, n // 2), run.rows / "a.parquet")
    pq.write_table(table.slice(n // 2), run.rows / "b.parquet")
    counts = split_outputs(plan, cfg, run, shards=[])
    write_json(run.mine_stats, {**counts, "accounted": True, "mine_s": 4.0, "actors": [2, 2], "proxy_docs_per_s": n / 4.0})
    build_report(run, plan, wall_s=50.0, agreement=json.loads(run.train_metrics.read_text())["agreement"])
    return run


def test_highlight_escapes_text_and_marks_spans():
    start = HOSTILE.index("Ann Lee")
    html = str(highlight(HOSTILE, {"people": [{"start": start, "end": start + 7}]}, ["people"]))
    assert "<script>" not in html and "&lt;script&gt;" in html and "<img" not in html
    assert '<mark class="c0" title="people">Ann Lee</mark>' in html
    overlapping = str(highlight("abcdef", {"x": [{"start": 0, "end": 4}], "y": [{"start": 2, "end": 6}]}, ["x", "y"]))
    assert overlapping == ('<mark class="c0" title="x">ab</mark><mark class="c0" title="x, y">cd</mark>'
                           '<mark class="c1" title="y">ef</mark>')
    assert str(highlight("abc", {"x": [{"start": 2, "end": 99}]}, ["x"])) == "abc"  # out of range: ignored


def test_score_sample_is_bounded_and_proportional(tmp_path):
    run = make_run(tmp_path, n=400)
    report = json.loads(run.report.read_text())
    every = sample_scores(run, "label_positive", report["docs_kept"], report["docs_filtered"], limit=10_000)
    assert len(every) == report["docs_kept"] + report["docs_filtered"]
    few = sample_scores(run, "label_positive", report["docs_kept"], report["docs_filtered"], limit=40)
    high = sum(s >= 0.5 for s in few)
    assert 38 <= len(few) <= 44 and abs(high / len(few) - report["docs_kept"] / len(every)) < 0.1


def test_report_html_content(tmp_path):
    run = make_run(tmp_path)
    html = write_report_html(run).read_text()
    assert "<script" not in html.lower()  # the page runs no code; the document's is escaped
    assert "&lt;script&gt;document.body.dataset.pwned" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)|url\((?!#)|@import""", html)  # nothing to fetch
    assert html.count("<svg") == 4  # one histogram, throughput, time, dollars
    for link in ("plan.json", "results/", "errors/", "annotations/annotations.jsonl"):
        assert f'href="{link}"' in html
    # 8 s teacher + 30 s training + 4 s mining vs 400 docs / 0.5 docs/s, all at the default $0.10/h
    assert f"${42 * 0.1 / 3600:.4g} / ${800 * 0.1 / 3600:.4g}" in html
    assert re.search(r"<code>empty_text</code></td><td class=\"num\">8<", html)
    assert re.search(r"<code>malformed_json</code></td><td class=\"num\">[1-9]", html)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium(tmp_path):
    run = make_run(tmp_path)
    page = write_report_html(run)
    # A test-only copy measures the rendered charts and writes the sizes into the DOM.
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
      const sizes = [...document.querySelectorAll("svg")].map(e => e.getBoundingClientRect())
                      .map(r => [Math.round(r.width), Math.round(r.height)]);
      document.body.setAttribute("data-svg-sizes", JSON.stringify(sizes));
    </script></body>"""))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    sizes = json.loads(re.search(r'data-svg-sizes="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert len(sizes) == 4 and all(w > 100 and h > 50 for w, h in sizes), sizes
    assert "data-pwned" not in dom  # neither the <script> nor the onerror of the document ran
    assert "&lt;script&gt;" in dom and "Is this movie review positive?" in dom
    assert '<code id="keep">positive</code>' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_falconer_report_rewrites_both_reports_with_the_quote(tmp_path):
    from typer.testing import CliRunner

    from falconer_ray.cli import app

    run = make_run(tmp_path, n=100)
    write_json(run.path / "quote.json", {"corpus": {"docs": 100}, "falconer": {
        "teacher_calls": 4, "seconds": {"annotate": 16.0, "train": 30.0, "mine": 2.0}},
        "measured": {"teacher": {"label": {"s_per_call": 1.5}, "span": {"s_per_call": 2.5}}}})
    stats = json.loads(run.annotation_stats.read_text())  # as after a rerun served from the cache
    stats["teacher"].update(calls=0, seconds=0.0, docs_per_s=None)
    write_json(run.annotation_stats, stats)
    result = CliRunner().invoke(app, ["report", str(run.path)])
    assert result.exit_code == 0, result.output
    report = json.loads(run.report.read_text())
    rows = {r["what"]: r for r in report["quote_vs_actual"]["rows"]}
    assert rows["annotation seconds"]["actual_over_quoted"] == 0.0 and rows["mining seconds"]["actual_over_quoted"] == 2.0
    assert report["wall_s"] == 50.0  # the measured wall time survives a rewrite
    html = (run.path / "report.html").read_text()
    assert 'id="quote"' in html and "<td>annotation seconds</td>" in html
    assert "measured by the quote&#39;s pilot" in html  # 1 / (1.5 s + 2.5 s) per document
    assert re.search(r"teacher over all 100 documents.*?<td class=\"num\">400 s<", html, re.S)
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "falconer plan" in missing.output


def test_findings_name_the_runs_that_mislead():
    from falconer_ray.report_findings import findings, wilson
    from falconer_ray.report_html import agreement_rows, quote_comparison

    lo, hi = wilson(3, 4)
    assert 0.25 < lo < 0.35 and 0.9 < hi < 0.97 and wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    plan = Plan.model_validate({"instruction": "x", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Positive?"},
        {"id": "people", "op": "get_span", "instruction": "People?"}], "keep": "positive"})
    # a run that kept nothing, whose proxy always says no, judged on 4 documents without a teacher span
    agreement = agreement_rows(plan, {"label": 0.75, "span_f1": 1.0, "heldout_docs": 4, "steps": {
        "positive": {"accuracy": 0.75, "confusion": {"tp": 0, "fp": 0, "fn": 1, "tn": 3}}, "people": {"f1": 1.0}}},
        {"spans": {"people": 0}})
    bad = findings({"docs_in": 300, "docs_kept": 0, "docs_error": 0, "invariant_ok": True}, agreement,
                   {"spans": {"people": 0}}, 0.5, has_filter=True)
    text = " ".join(f["text"] for f in bad)
    assert [f["level"] for f in bad][:2] == ["bad", "bad"] and "No document was kept" in text
    assert "said no on every held-out document" in text and "30% to 95%" in text and "says nothing" in text
    # a sound run gets one OK line with its interval
    agreement = agreement_rows(plan, {"label": 0.95, "heldout_docs": 60, "steps": {
        "positive": {"accuracy": 0.95, "confusion": {"tp": 27, "fp": 2, "fn": 1, "tn": 30}}}}, {"spans": {"people": 9}})
    good = findings({"docs_in": 300, "docs_kept": 140, "docs_error": 0, "invariant_ok": True}, agreement,
                    {"spans": {"people": 9}}, 0.5, has_filter=True)
    assert [f["level"] for f in good] == ["ok"] and "57 of 60" in good[0]["text"]
    # quote vs actual: cached annotations are left out of the verdict
    rows = [{"what": "teacher calls", "quoted": 40, "actual": 0}, {"what": "annotation seconds", "quoted": 380, "actual": 0},
            {"what": "training seconds", "quoted": 600, "actual": 150}, {"what": "mining seconds", "quoted": 600, "actual": 450},
            {"what": "total seconds (annotate + train + mine)", "quoted": 1580, "actual": 600, "actual_over_quoted": 0.38}]
    got = quote_comparison({"quote_vs_actual": {"rows": rows}}, {"falconer": {"total_usd": 0.05}}, {"falconer": 0.02})
    assert got["verdict"] == "Training and mining took 10.0 min against 20.0 min quoted: the quote over-estimated by 2.0x."
    assert got["rows"][-1] == {"what": "dollars", "quoted": 0.05, "actual": 0.02, "dollars": True, "actual_over_quoted": 0.4}
    # spans the proxy never matches are flagged, with how many teacher spans that rests on
    agreement = agreement_rows(plan, {"label": 1.0, "span_f1": 0.0, "heldout_docs": 60, "steps": {
        "positive": {"accuracy": 1.0, "confusion": {"tp": 30, "fp": 0, "fn": 0, "tn": 30}}, "people": {"f1": 0.0}}},
        {"spans": {"people": 5}})
    spans = findings({"docs_in": 300, "docs_kept": 140, "docs_error": 0, "invariant_ok": True}, agreement,
                     {"spans": {"people": 5}}, 0.5, has_filter=True)
    assert [f["level"] for f in spans] == ["bad"] and "the teacher's 5 spans" in spans[0]["text"]


def test_speed_takeaway_gives_the_break_even_corpus_size():
    from falconer_ray.report_html import time_takeaway

    stages = {"annotate (teacher)": 100.0, "train proxy": 200.0, "mine (proxy)": 50.0}
    got = time_takeaway(stages, 2000.0, 0.5, 1000)
    assert "(5.7x faster)" in got and "saves 1.9 s" in got and "from about 154 documents on" in got
    # cached annotations: counted at the teacher's speed (40 docs / 0.5 docs/s = 80 s) for the break-even
    cached = time_takeaway({**stages, "annotate (teacher)": 0.0}, 2000.0, 0.5, 1000, annotated=40)
    assert "this run's came from the cache" in cached and "from about 144 documents on" in cached
    slow = time_takeaway(stages, 100.0, 0.5, 50)
    assert "slower: the corpus is too small" in slow


def test_report_html_explains_the_cascade(tmp_path):
    run = make_run(tmp_path, n=100)
    report = json.loads(run.report.read_text())
    report["cascade"] = {"target_agreement": 0.9, "delta": 0.05, "threshold": 0.83, "heldout_docs": 120,
                         "heldout_agreement": 0.93, "heldout_to_teacher": 30, "proxy_only_agreement": 0.81,
                         "docs_to_teacher": 25, "fraction_to_teacher": 0.25}
    html = write_report_html(run, report).read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))
    assert "below 0.83 went to the teacher: 25 of 100 (25.0%)" in text
    assert "at least 0.9 of documents, with probability at least 0.95; there they agreed on 0.930 (the proxy alone: 0.810)" in text


def test_findings_flag_a_proxy_that_always_says_yes():
    from falconer_ray.report_findings import findings
    from falconer_ray.report_html import agreement_rows

    plan = Plan.model_validate({"instruction": "x", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Positive?"}], "keep": "positive"})
    agreement = agreement_rows(plan, {"label": 0.6, "heldout_docs": 40, "steps": {
        "positive": {"accuracy": 0.6, "confusion": {"tp": 24, "fp": 16, "fn": 0, "tn": 0}}}})
    got = findings({"docs_in": 300, "docs_kept": 300, "docs_error": 0, "invariant_ok": True}, agreement, {}, 0.5, True)
    assert [f["level"] for f in got] == ["bad", "warn"]  # worst first
    assert "said yes on every held-out document" in got[0]["text"] and "filter dropped nothing" in got[1]["text"]
