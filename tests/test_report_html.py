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
from falconer_ray.mine.outputs import split_outputs
from falconer_ray.plan.execute import output_schema
from falconer_ray.plan.schema import Plan
from falconer_ray.report.build import build_report
from falconer_ray.report.html import highlight, sample_scores, write_report_html
from falconer_ray.rundir import RunDir, write_json

HOSTILE = 'Great <script>document.body.dataset.pwned="1"</script> film <img src=x onerror="document.body.dataset.pwned=2"> by Ann Lee.'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_run(tmp_path, n=400, confusion=None, teacher_scores=(), teacher_stats=None, windowed_every=0) -> RunDir:
    """A run directory as the stages write it. `confusion`: the proxy-vs-teacher held-out
    counts; `teacher_scores`: more annotated documents with these teacher P(yes), each with
    one span; `teacher_stats`: added to annotations/stats.json; `windowed_every`: every
    k-th mined document was read in two windows."""
    run = RunDir(tmp_path / "run").create()
    plan = Plan.model_validate({"instruction": "People praised in positive reviews", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
        {"id": "people", "op": "get_span", "instruction": "Names of people praised."}], "keep": "positive"})
    plan.save(run.plan)
    cfg = RunConfig(instruction=plan.instruction, corpus=str(tmp_path / "corpus"), mine={"keep_text": True})
    cfg.save(run.path)
    start = HOSTILE.index("Ann Lee")
    ann_lee = {"start": start, "end": start + 7, "text": "Ann Lee", "score": 1.0}
    run.annotations_dir.mkdir()
    with run.annotations.open("w") as f:
        f.write(json.dumps({"doc_id": "d0", "text": HOSTILE, "split": "heldout", "labels": {"positive": 0.9},
                            "spans": {"people": [ann_lee]}}) + "\n")
        f.write(json.dumps({"doc_id": "d1", "text": "Dull.", "split": "train", "labels": {"positive": 0.1},
                            "spans": {"people": []}}) + "\n")
        for i, p in enumerate(teacher_scores):
            f.write(json.dumps({"doc_id": f"t{i}", "text": HOSTILE, "split": "train", "labels": {"positive": p},
                                "spans": {"people": [ann_lee]}}) + "\n")
    per_op = {op: {"s_per_call": 1.0, "input_tokens_per_call": 100, "output_tokens_per_call": 5} for op in ("label", "span")}
    write_json(run.annotation_stats, {"teacher": {"model": "embedded:test", "calls": 4, "seconds": 8.0, "docs_per_s": 0.5,
                                                  "per_op": per_op, "stats": {"calls": 4, "seconds": 8.0}},
                                      "docs": 2 + len(teacher_scores), "keep_fraction": 0.5, "cached": {"label": 0, "span": 0},
                                      "rejected_spans": {}, **(teacher_stats or {})})
    cells = confusion or {"tp": 3, "fp": 1, "fn": 1, "tn": 3}
    accuracy = round((cells["tp"] + cells["tn"]) / sum(cells.values()), 4)
    write_json(run.train_metrics, {"wall_s": 30.0, "agreement": {
        "label": accuracy, "span_f1": 0.5, "heldout_docs": sum(cells.values()),
        "steps": {"positive": {"op": "get_label", "accuracy": accuracy, "confusion": cells},
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
             .append_column("_windows", pa.array([1 + (windowed_every > 0 and i % windowed_every == 0)
                                                  for i in range(n)], pa.int32())))
    pq.write_table(table.slice(0, n // 2), run.rows / "a.parquet")
    pq.write_table(table.slice(n // 2), run.rows / "b.parquet")
    counts = split_outputs(plan, cfg, run, shards=[])
    write_json(run.mine_stats, {**counts, "accounted": True, "mine_s": 4.0, "actors": [2, 2], "proxy_docs_per_s": n / 4.0,
                                 "start_s": 1.5, "steady_docs_per_s": n / 2.5})
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
    assert html.count("<svg") == 5  # proxy and teacher label histograms, throughput, time, dollars
    for link in ("plan.json", "results/", "errors/", "annotations/annotations.jsonl"):
        assert f'href="{link}"' in html
    # 8 s teacher + 30 s training + 4 s mining vs the teacher alone (1 s per call): the label step on
    # 400 documents, the span step on the half it keeps, all at the default $0.10/h
    assert f"${42 * 0.1 / 3600:.4g} / ${600 * 0.1 / 3600:.4g}" in html
    assert re.search(r"<code>empty_text</code></td><td class=\"num\">8<", html)
    assert re.search(r"the seconds mining took beyond its steady rate.*</td><td class=\"num\">2 s; 160 docs/s<", html)
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
    assert len(sizes) == 5 and all(w > 100 and h > 50 for w, h in sizes), sizes
    assert "data-pwned" not in dom  # neither the <script> nor the onerror of the document ran
    assert "&lt;script&gt;" in dom and "Is this movie review positive?" in dom
    assert '<code id="keep">positive</code>' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_falconer_report_rewrites_both_reports_with_the_quote(tmp_path):
    from typer.testing import CliRunner

    from falconer_ray.cli.main import app

    run = make_run(tmp_path, n=100)
    write_json(run.path / "quote.json", {"corpus": {"docs": 100}, "falconer": {
        "teacher_calls": 4, "seconds": {"annotate": 16.0, "train": 30.0, "mine": 2.0}},
        "all_teacher": {"teacher_calls": 150, "total_s": 275.0},
        "measured": {"teacher": {"label": {"s_per_call": 1.5}, "span": {"s_per_call": 2.5}}}})
    stats = json.loads(run.annotation_stats.read_text())  # as after a rerun served from the cache
    stats["teacher"].update(calls=0, seconds=0.0, docs_per_s=None, per_op={})
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
    # teacher alone: the label step on all 100, the span step on the half its labels kept in annotation
    assert re.search(r"teacher over all 100 documents \(estimated: 150 calls.*?<td class=\"num\">275 s<", html, re.S)
    assert "<td>teacher-alone calls (estimated)</td>" in html
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "falconer plan" in missing.output


def test_findings_name_the_runs_that_mislead():
    from falconer_ray.report.findings import findings, wilson
    from falconer_ray.report.html import agreement_rows, quote_comparison

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
    from falconer_ray.report.html import time_takeaway

    stages = {"annotate (teacher)": 100.0, "train proxy": 200.0, "mine (proxy)": 50.0}
    got = time_takeaway(stages, 2000.0, 0.5, 1000)
    assert "falconer was 5.7x faster than the teacher alone" in got and "saves 1.9 s" in got
    assert "from about 154 documents on" in got and "wall time" not in got
    # cached annotations: counted at the teacher's speed (40 docs / 0.5 docs/s = 80 s) for the break-even
    cached = time_takeaway({**stages, "annotate (teacher)": 0.0}, 2000.0, 0.5, 1000, annotated=40)
    assert "this run's came from the cache" in cached and "from about 144 documents on" in cached
    slow = time_takeaway(stages, 100.0, 0.5, 50, wall_s=400.0)
    assert "the teacher alone would have been 3.5x faster than falconer: the corpus is too small" in slow
    # the stage time and the summary's wall time are both named, each with what it covers
    assert slow.startswith("Annotating, training and mining took 5.8 min in this run (6.7 min wall time at the top "
                           "also counts planning, pricing and start-up)")


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
    from falconer_ray.report.findings import findings
    from falconer_ray.report.html import agreement_rows

    plan = Plan.model_validate({"instruction": "x", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Positive?"}], "keep": "positive"})
    agreement = agreement_rows(plan, {"label": 0.6, "heldout_docs": 40, "steps": {
        "positive": {"accuracy": 0.6, "confusion": {"tp": 24, "fp": 16, "fn": 0, "tn": 0}}}})
    got = findings({"docs_in": 300, "docs_kept": 300, "docs_error": 0, "invariant_ok": True}, agreement, {}, 0.5, True)
    assert [f["level"] for f in got] == ["bad", "warn"]  # worst first
    assert "said yes on every held-out document" in got[0]["text"] and "filter dropped nothing" in got[1]["text"]


def plain(fragment: str) -> str:
    """HTML as the reader sees it: cells and paragraphs apart, inline tags dropped, entities decoded."""
    import html as html_lib

    spaced = re.sub(r"</?(td|th|tr|li|p|div|table|figure|ul)\b[^>]*>", " ", fragment)
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", "", spaced))).strip()


def page_text(html: str, section: str) -> str:
    """One section of the page as plain text."""
    return plain(re.search(rf'<section id="{section}">(.*?)</section>', html, re.S).group(1))


def finding_lines(html: str) -> list[str]:
    """The "Read this first" box, one plain-text line per finding ("Problem: ...")."""
    box = re.search(r'<section id="findings">(.*?)</section>', html, re.S).group(1)
    return [plain(li) for li in re.findall(r"<li.*?</li>", box, re.S)]


def test_agreement_no_better_than_the_majority_answer_is_a_problem(tmp_path):
    # as in the demo: always answering "no" (35 of 47) beats the proxy (33 of 47)
    run = make_run(tmp_path, n=100, confusion={"tp": 1, "fp": 3, "fn": 11, "tn": 32})
    html = write_report_html(run).read_text()
    lines = [f for f in finding_lines(html) if "majority" in f]
    assert len(lines) == 1 and lines[0].startswith("Problem: Step positive: label agreement 0.702 (33 of 47")
    assert 'always answering "no"' in lines[0] and "0.745 (35 of 47)" in lines[0]
    assert "not better than always answering the majority" in lines[0]
    assert ("always answering “no” (the teacher's majority): 0.745 (35 of 47; the proxy is not better)"
            in page_text(html, "agreement"))
    # a proxy that beats the majority answer: the baseline is shown, no finding
    sound = write_report_html(make_run(tmp_path / "sound", n=100)).read_text()
    assert not any("majority" in f for f in finding_lines(sound))
    assert "always answering “no” (the teacher's majority): 0.500 (4 of 8; the proxy does better)" in page_text(
        sound, "agreement")


def test_findings_agreement_equal_to_the_majority_and_a_one_sided_teacher():
    from falconer_ray.report.findings import findings
    from falconer_ray.report.html import agreement_rows

    plan = Plan.model_validate({"instruction": "x", "steps": [
        {"id": "positive", "op": "get_label", "instruction": "Positive?"}], "keep": "positive"})
    report = {"docs_in": 3000, "docs_kept": 300, "docs_error": 0, "invariant_ok": True}
    tie = agreement_rows(plan, {"heldout_docs": 47, "steps": {"positive": {"confusion": {"tp": 3, "fp": 3, "fn": 9, "tn": 32}}}})
    got = findings(report, tie, {}, 0.5, True)
    assert got[0]["level"] == "bad" and "0.745 (35 of 47)" in got[0]["text"]  # at the baseline counts too
    one = agreement_rows(plan, {"heldout_docs": 40, "steps": {"positive": {"confusion": {"tp": 0, "fp": 2, "fn": 0, "tn": 38}}}})
    got = findings(report, one, {}, 0.5, True)
    assert got[0]["level"] == "bad" and "the teacher answered no on all 40 held-out documents" in got[0]["text"]


def test_teacher_section_and_findings_on_a_weak_teacher(tmp_path):
    import numpy as np

    squeezed = [0.35 + 0.12 * i / 39 for i in range(40)]  # a teacher unsure of every document
    stats = {"rejected": {"not_in_document": 231, "truncated": 12}, "clipped_docs": 7}
    run = make_run(tmp_path, n=100, teacher_scores=squeezed, teacher_stats=stats, windowed_every=10)
    html = write_report_html(run).read_text()
    teacher = page_text(html, "teacher")
    # 2 + 40 documents x 1 span step; 41 spans kept (one per document but d1) and 243 rejected
    assert "42 span answers asked for (42 documents × 1 span step: people). They held 284 span texts: 41 kept" in teacher
    assert "243 rejected (86%), left out of training" in teacher
    assert re.search(r"not_in_document 231 not an exact piece.*truncated 12 cut off", teacher)
    assert "7 of 42 annotated documents were longer than the 1,500 characters the teacher reads" in teacher
    assert "10 of 100 mined documents were longer than the proxy's 256-token window" in teacher
    scores = [0.9, 0.1] + squeezed
    q = np.quantile(scores, [0.1, 0.25, 0.5, 0.75, 0.9])
    row = " ".join(f"{v:.2f}" for v in q) + f" {q[3] - q[1]:.2f} 1 (2%)"
    assert f"positive 42 {row}" in teacher
    assert html.count("<svg") == 5  # the teacher's histogram beside the proxy's
    lines = finding_lines(html)
    rejected = next(f for f in lines if "were rejected" in f)
    assert rejected.startswith("Problem: Of the 284 span texts the teacher gave in its 42 span answers, 243 (86%)")
    assert "231 not in document, 12 truncated" in rejected
    band = next(f for f in lines if "barely differ" in f)
    assert band.startswith("Problem: Step positive:") and f"interquartile range {q[3] - q[1]:.2f}" in band
    for line in (rejected, band):  # the teacher is blamed, not the sample size
        assert "cannot do" in line and "--teacher openai" in line and "plan.json" in line
        assert "--n-annotate" not in line and "will not help" in line
    assert "<code>--teacher openai</code>" in html  # commands in findings are set as code
    # the proxy's own span finding points at the teacher rather than at more annotations
    assert not any("Annotate more documents with spans" in f for f in lines)


def test_teacher_findings_stay_quiet_on_a_confident_teacher_and_flag_a_one_sided_one(tmp_path):
    confident = write_report_html(make_run(tmp_path / "a", n=100, teacher_scores=[0.03, 0.97] * 20,
                                           teacher_stats={"rejected": {"not_in_document": 5}})).read_text()
    lines = finding_lines(confident)
    assert not any("barely differ" in f or "were rejected" in f or "said no to" in f for f in lines), lines
    assert "5 rejected (11%)" in page_text(confident, "teacher")
    one_sided = write_report_html(make_run(tmp_path / "b", n=100, teacher_scores=[0.02] * 40)).read_text()
    warn = [f for f in finding_lines(one_sided) if "said no to" in f]
    assert warn == [next(f for f in warn if f.startswith("Check: Step positive: the teacher said no to 41 of 42 "
                                                         "annotated documents (98%)"))]
    assert "--teacher openai" in warn[0] and "--n-annotate" not in warn[0]


def test_heldout_advice_depends_on_what_the_corpus_has_left(tmp_path):
    from falconer_ray.report.findings import heldout_advice

    # every document of a 40-document corpus annotated: no setting gives more held-out documents
    small = write_report_html(make_run(tmp_path / "a", n=40, teacher_scores=[0.2, 0.8] * 19)).read_text()
    few = next(f for f in finding_lines(small) if "Agreement is measured on only" in f)
    assert few.startswith("Check: Agreement is measured on only 8 held-out documents (positive 6/8")
    assert "All 40 documents of the corpus were annotated already" in few and "too small to measure" in few
    assert "about 20% of the annotated documents are held out, picked by a hash of each id (here 8 of 40)" in few
    assert "--n-annotate" not in few and "Hold out more" not in few
    # a corpus with documents left, but fewer than 30 / 20% = 150
    assert "even annotating all 100 documents (`--n-annotate 100`) would hold out only about 20" in heldout_advice(
        8, 40, 100, 0.2)
    # a large corpus: the flag to raise, and the held-out share as "about"
    big = write_report_html(make_run(tmp_path / "b", n=400)).read_text()
    few = next(f for f in finding_lines(big) if "Agreement is measured on only" in f)
    assert "Hold out more: about 20% of the annotated documents are held out" in few and "(here 8 of 2)" in few
    assert "--n-annotate 150 would hold out about 30" in few


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_mined_results_sit_under_their_headers_in_chromium(tmp_path):
    """With --keep-text each result's text row widens the table; every value must still
    be drawn under its own column header, not under a neighbour's."""
    page = write_report_html(make_run(tmp_path)).with_name("report.html")
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", """<script>
      const box = el => { const r = document.createRange(); r.selectNodeContents(el); return r.getBoundingClientRect(); };
      const table = document.querySelector("#results table");
      const heads = [...table.rows[0].cells].map(box);
      const cells = [];
      for (const row of [...table.rows].slice(1)) {
        if (row.cells.length !== heads.length) continue;  // the text rows span every column
        [...row.cells].forEach((cell, i) => {
          if (!cell.textContent.trim()) return;
          const r = box(cell);
          const overlap = heads.map(h => Math.min(h.right, r.right) - Math.max(h.left, r.left));
          cells.push([i, overlap.indexOf(Math.max(...overlap)), Math.max(...overlap)]);
        });
      }
      document.body.setAttribute("data-cells", JSON.stringify(cells));
    </script></body>"""))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,3000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    cells = json.loads(re.search(r'data-cells="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert len(cells) >= 20 and {c[0] for c in cells} == {0, 1, 2}, cells  # doc_id, positive, people
    assert all(col == under and overlap > 0 for col, under, overlap in cells), cells
    # the highlight colours are explained above the texts
    assert re.search(r'class="legend[^"]*">Highlighted spans, by step:\s*<mark class="c0">people</mark>', dom)


def test_chart_labels_do_not_collide():
    import matplotlib.pyplot as plt

    from falconer_ray.report.plots import STYLE, bars_figure, stacked_time_figure

    with plt.rc_context(STYLE):
        for values, log in (([2.778, 6.136], True), ([0.521, 9.023], True), ([0.5, 9023.0], True),
                            ([0.0006, 0.001644], False)):
            fig = bars_figure(["teacher (annotation)", "proxy (mining)"], values, "t", "docs/s", log=log)
            fig.canvas.draw()
            renderer, ax = fig.canvas.get_renderer(), fig.axes[0]
            ticks = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_text()]
            texts = [t.get_text() for t in ticks]
            assert len(ticks) >= 3 and all(re.fullmatch(r"[0-9][0-9.,]*", t) for t in texts), texts  # no 3x10^0
            extents = sorted((t.get_window_extent(renderer) for t in ticks), key=lambda b: b.x0)
            assert all(a.x1 < b.x0 for a, b in zip(extents, extents[1:])), texts
            plt.close(fig)
        fig = stacked_time_figure({"all-teacher (estimated)": {"annotate (teacher)": 21.6}, "falconer (measured)": {
            "annotate (teacher)": 14.0, "train proxy": 35.4, "mine (proxy)": 9.8}}, "time for 60 documents")
        fig.canvas.draw()
        renderer, ax = fig.canvas.get_renderer(), fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        drawn = [p for p in ax.patches if p.get_width() > 0] + ax.texts  # the bars and their "59.2 s" totals
        assert len(drawn) == 6 and not any(legend.overlaps(a.get_window_extent(renderer)) for a in drawn)
        plt.close(fig)
