"""Teacher faults at the annotation stage: a call that raises, times out, answers
malformed or truncated output, or names spans that are not in the document costs
that document (an error row with a reason, counted), never the job. A transient
failure is retried. The faults are injected around a real teacher (Gemma via
llama.cpp) in the slow test, and around the deterministic test double of
test_teacher.py in the fast one."""

from __future__ import annotations

import json

import pytest

from falconer_ray.annotate import AnnotationCache, cached_extract, cached_label
from falconer_ray.annotate.stage import annotate_documents
from falconer_ray.config import RunConfig
from falconer_ray.plan.schema import Plan
from falconer_ray.rundir import RunDir
from falconer_ray.teacher.base import Failed
from test_teacher import FakeTeacher, needs_llama

PLAN = Plan.model_validate({"instruction": "people in positive reviews", "steps": [
    {"id": "positive", "op": "get_label", "instruction": "Is this movie review positive?"},
    {"id": "people", "op": "get_span", "instruction": "Extract the names of people."}], "keep": "positive"})

DOCS = [
    ("good1", "Tom Hanks is wonderful in this moving film."),
    ("good2", "A dull, lifeless film; Meryl Streep cannot save it."),
    ("crash", "[crash] Emma Stone is great here."),
    ("hang", "[hang] Denzel Washington carries the film."),
    ("garble", "[garble] Cate Blanchett is superb."),
    ("truncate", "[truncate] Viola Davis gives a fine performance."),
    ("flaky", "[flaky] Ryan Gosling is charming."),
    ("invent", "[invent] Saoirse Ronan is brilliant."),
]


class FaultyTeacher:
    """A real teacher behind a faulty link: a marker in a document makes the call
    raise ([crash]), time out ([hang]), fail once then work ([flaky]), answer
    garbage ([garble]), answer one document short ([truncate]) or add a span that
    is not in the document ([invent])."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name + "+faults"  # its own cache keys
        self.max_doc_chars = inner.max_doc_chars
        self.call_chunk = inner.call_chunk
        self.stats = inner.stats
        self.flaked: set[str] = set()
        self.calls = 0

    def _link(self, texts):
        self.calls += 1
        for t in texts:
            if "[crash]" in t:
                raise RuntimeError("the backend process died")
            if "[hang]" in t:
                raise TimeoutError("no answer within 30 s")
            if "[flaky]" in t and t not in self.flaked:
                self.flaked.add(t)
                raise ConnectionError("connection reset by peer")

    def label(self, texts, instruction, on_progress=None):
        self._link(texts)
        out = [float("nan") if "[garble]" in t else p for t, p in zip(texts, self.inner.label(texts, instruction))]
        return out[:-1] if any("[truncate]" in t for t in texts) else out

    def extract(self, texts, instruction, on_progress=None):
        self._link(texts)
        out = self.inner.extract(texts, instruction)
        out = ["garbage" if "[garble]" in t else (a + ["Nobody Anywhere"] if "[invent]" in t else a)
               for t, a in zip(texts, out)]
        return out[:-1] if any("[truncate]" in t for t in texts) else out

    def complete(self, prompt, max_tokens, stop=None, grammar=None):
        return self.inner.complete(prompt, max_tokens, stop, grammar)


def check_faults(teacher, tmp_path, cache_dir: str) -> tuple[dict, list[dict], list[dict]]:
    """Annotate DOCS through the faulty link; every fault lands where it should."""
    run = RunDir(tmp_path / "run").create()
    cfg = RunConfig(cache_dir=cache_dir)
    docs = [{"doc_id": d, "text": t} for d, t in DOCS]
    stats = annotate_documents(docs, PLAN, FaultyTeacher(teacher), cfg, run)
    annotated = [json.loads(line) for line in run.annotations.open()]
    errors = [json.loads(line) for line in (run.annotations_dir / "errors.jsonl").open()]
    assert {e["doc_id"]: e["reason"] for e in errors} == {
        "crash": "teacher_error", "hang": "timeout", "garble": "malformed_output", "truncate": "malformed_output"}
    assert stats["errors_by_reason"] == {"teacher_error": 1, "timeout": 1, "malformed_output": 2}
    assert "RuntimeError: the backend process died" in next(e["detail"] for e in errors if e["doc_id"] == "crash")
    assert sorted(a["doc_id"] for a in annotated) == ["flaky", "good1", "good2", "invent"]
    assert stats["docs"] == 4
    assert stats["rejected_spans"].get("not_in_document", 0) >= 1  # "Nobody Anywhere"
    for a in annotated:
        assert 0.0 <= a["labels"]["positive"] <= 1.0
        assert all(a["text"][s["start"]:s["end"]] == s["text"] for s in a["spans"]["people"])
        assert all(s["text"] != "Nobody Anywhere" for s in a["spans"]["people"])
    return stats, annotated, errors


def test_faults_cost_one_document_each_with_the_test_double(tmp_path):
    check_faults(FakeTeacher(), tmp_path, str(tmp_path / "cache"))


def test_retries_are_bounded_and_answers_are_cached_as_they_come(tmp_path):
    teacher = FaultyTeacher(FakeTeacher())
    texts = [f"good doc {i}" for i in range(40)] + ["[crash] x"]
    with AnnotationCache(tmp_path / "c.sqlite") as cache:
        out = cached_label(teacher, cache, texts, "Good?", retries=2)
        assert out.errors == {40: Failed("teacher_error", "RuntimeError: the backend process died")}
        assert out.probs[:40] == [0.9] * 40 and out.probs[40] is None
        # chunks of 16: two clean chunks (1 call each), the last chunk of 9 fails 3 times,
        # then its 9 documents go alone (1 call each, the crashing one 3 times)
        assert teacher.calls == 2 + 3 + 8 + 3
        assert len(cache) == 40  # failures are not cached: a rerun asks again
        calls = teacher.calls
        again = cached_extract(teacher, cache, ["[flaky] Tom met Ann"], "Names?", retries=0)
        assert again.errors and again.errors[0].reason == "teacher_error" and teacher.calls == calls + 1


@pytest.mark.slow
@needs_llama
def test_faults_around_the_real_teacher(tmp_path, cache_dir):
    from falconer_ray.teacher import make_teacher

    gemma = make_teacher("embedded", model="gemma3-270m")
    _, annotated, _ = check_faults(gemma, tmp_path, cache_dir)
    # The documents that got through carry exactly what the real teacher says about them.
    got = {a["doc_id"]: a for a in annotated}
    texts = [t for d, t in DOCS if d in ("good1", "good2")]
    direct = gemma.label(texts, PLAN.steps[0].instruction)
    assert [got["good1"]["labels"]["positive"], got["good2"]["labels"]["positive"]] == pytest.approx(direct, abs=1e-6)
