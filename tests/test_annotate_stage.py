"""Span steps are annotated where mining extracts: on the documents the teacher's labels
keep, topped up to `min_span_docs` so the span head always has examples."""

from __future__ import annotations

from falconer_ray.annotate.stage import annotate_documents, load_annotations, span_documents
from falconer_ray.config import RunConfig
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir
from test_teacher import FakeTeacher

PLAN = Plan.model_validate({"instruction": "People in good reviews", "steps": [
    {"id": "good", "op": "get_label", "instruction": "Is it good?"},
    {"id": "people", "op": "get_span", "instruction": "Names of people."}], "keep": "good"})


def test_span_documents_are_the_kept_ones_then_others_in_order():
    labels = {"good": [0.9, 0.1, 0.8, 0.2, 0.7, 0.3]}
    assert span_documents(PLAN, labels, {}, 6, least=2) == [0, 2, 4]
    assert span_documents(PLAN, labels, {}, 6, least=5) == [0, 1, 2, 3, 4]  # topped up in sample order
    assert span_documents(PLAN, labels, {2: {}, 1: {}}, 6, least=4) == [0, 3, 4, 5]  # never a failed one
    spans_only = Plan.model_validate({"steps": [{"id": "people", "op": "get_span", "instruction": "Names."}]})
    assert span_documents(spans_only, {}, {1: {}}, 3, least=0) == [0, 2]
    no_filter = PLAN.with_keep(None)
    assert span_documents(no_filter, labels, {}, 6, least=0) == list(range(6))


def test_the_teacher_is_asked_for_spans_only_where_its_labels_keep(tmp_path):
    docs = [{"doc_id": f"d{i}", "text": f"{'good' if i % 3 == 0 else 'bad'} film with Ann Lee {i}"} for i in range(9)]
    teacher = FakeTeacher()
    cfg = RunConfig(cache_dir=str(tmp_path / "cache"), min_span_docs=2)
    stats = annotate_documents(docs, PLAN, teacher, cfg, RunDir(tmp_path / "run").create())
    assert teacher.seen.count(docs[1]["text"]) == 1 and teacher.seen.count(docs[3]["text"]) == 2  # label only; both
    assert stats["span_docs"] == 3 and stats["teacher"]["calls_by_op"] == {"label": 9, "span": 3}
    rows = load_annotations(RunDir(tmp_path / "run"))
    assert [sorted(r["spans"]) for r in rows] == [["people"] if i % 3 == 0 else [] for i in range(9)]
    assert rows[0]["spans"]["people"][0]["text"] == "Ann"  # validated against the document, "invented" dropped
