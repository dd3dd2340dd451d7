"""Self-supervised pretraining: instances read off raw text, and a real Ray Train pretrain."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from falconer_ray.cli.main import app
from falconer_ray.train.pretrain import (
    NUMBER_WORDS,
    build_instances,
    check_out,
    next_words,
    occurrences,
    pattern_spans,
    to_examples,
)

TEXT = ('Yesterday I met Tom Hanks in Paris. The film was good. Mr. Smith said "Great fun" and gave it '
        '7/10 stars, unlike the 1990s remakes. Then Tom Hanks left the room.')
TOPICS = ["the harbour", "a mountain village", "the old library", "a night train", "the summer market"]
NAMES = ["Anna Berg", "Carlos Ruiz", "Mei Lin", "Oskar Holm", "Priya Nair", "Jonas Weber"]


def corpus_texts(n: int) -> list[str]:
    out = []
    for i in range(n):
        a, b, topic = NAMES[i % len(NAMES)], NAMES[(i * 5 + 1) % len(NAMES)], TOPICS[i % len(TOPICS)]
        out.append(f'On day {i + 3}, {a} walked to {topic} with {b}. "It was quiet," said {a}. '
                   f"They stayed for {i % 7 + 2} hours and watched the boats of {topic} before dinner.")
    return out


def quoted(instruction: str) -> str:
    return re.search(r"['\"](.+)['\"]", instruction).group(1)


def test_answers_of_each_task_on_a_known_text():
    assert [TEXT[s:e] for s, e in next_words(TEXT, "Tom", 1)] == ["Hanks", "Hanks"]
    assert [TEXT[s:e] for s, e in next_words(TEXT, "Then Tom", 2)] == ["Hanks left"]
    assert next_words(TEXT, "room", 1) is None  # nothing follows
    assert next_words(TEXT, "Paris", 1) is None  # a full stop comes first
    assert [TEXT[s:e] for s, e in occurrences(TEXT, "Tom Hanks")] == ["Tom Hanks", "Tom Hanks"]
    assert occurrences(TEXT, "Tom Hank") == []  # whole words only
    # Sentence-initial single words are not names; "Smith" after "Mr." still is.
    assert [TEXT[s:e] for s, e in pattern_spans("names", TEXT)] == ["Tom Hanks", "Paris", "Smith", "Tom Hanks"]
    assert [TEXT[s:e] for s, e in pattern_spans("numbers", TEXT)] == ["7/10"]
    assert [TEXT[s:e] for s, e in pattern_spans("quotes", TEXT)] == ["Great fun"]


def test_every_instance_answer_is_an_exact_substring_where_the_instruction_says():
    texts = corpus_texts(40)
    instances = build_instances(texts, 400, seed=3)
    tasks = {i.task for i in instances}
    assert {"next", "occurs", "names", "numbers", "quotes", "mention"} <= tasks
    words_of = {v: k for k, v in NUMBER_WORDS.items()}
    for inst in instances:
        assert inst.text and len(inst.text) <= 700
        for s, e in inst.spans:
            assert 0 <= s < e <= len(inst.text)
        assert list(inst.spans) == sorted(set(inst.spans))
        if inst.task == "next":
            cue = quoted(inst.instruction)
            n = words_of[re.search(r"(?:next|the) (word|two words|three words)\b",
                                   re.sub(r"['\"].+['\"]", "", inst.instruction)).group(1)]
            for s, e in inst.spans:
                assert inst.text[:s].rstrip().endswith(cue)
                assert inst.text[:s][len(inst.text[:s].rstrip()):].isspace()
                assert len(inst.text[s:e].split()) == n
            if not inst.spans:
                assert cue.lower() not in inst.text.lower()
        elif inst.task == "occurs":
            phrase = quoted(inst.instruction)
            assert all(inst.text[s:e] == phrase for s, e in inst.spans)
            assert inst.spans or phrase.lower() not in inst.text.lower()
        elif inst.task == "names":
            assert all(re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)*", inst.text[s:e]) for s, e in inst.spans)
        elif inst.task == "numbers":
            assert all(re.fullmatch(r"\d+", inst.text[s:e]) for s, e in inst.spans)
        elif inst.task == "quotes":
            assert all(inst.text[s - 1] == '"' == inst.text[e] for s, e in inst.spans)
        elif inst.task == "mention":
            phrase = quoted(inst.instruction)
            assert (phrase in inst.text) if inst.label else (phrase.lower() not in inst.text.lower())
        elif inst.task == "has_numbers":
            assert bool(re.search(r"\d", inst.text)) == inst.label


def test_labels_are_balanced_and_the_mix_is_mostly_spans():
    instances = build_instances(corpus_texts(30), 300, seed=0)
    labels = [i.label for i in instances if i.kind == "label"]
    assert 0.2 * len(instances) < len(labels) < 0.6 * len(instances)
    assert abs(sum(labels) - (len(labels) - sum(labels))) <= 1
    assert sum(bool(i.spans) for i in instances) > 0.4 * len(instances)


def test_instances_are_a_function_of_texts_and_seed():
    texts = corpus_texts(20)
    assert build_instances(texts, 120, seed=7) == build_instances(texts, 120, seed=7)
    assert build_instances(texts, 120, seed=7) != build_instances(texts, 120, seed=8)


def test_tags_of_the_tokenized_examples_cover_exactly_the_answers():
    from transformers import AutoTokenizer

    from falconer_ray.proxy import encode_windows, resolve_base
    from falconer_ray.proxy.encoding import B, I, IGNORE

    tokenizer = AutoTokenizer.from_pretrained(resolve_base("minilm"))
    instances = build_instances(corpus_texts(20), 80, seed=1)
    examples = to_examples(instances, tokenizer)
    assert len(examples) == len(instances)  # one window each: passages are short
    for inst, ex in zip(instances, examples):
        if inst.kind == "label":
            assert ex["kind"] == 0 and ex["label"] == float(inst.label) and set(ex["tags"]) == {IGNORE}
            continue
        (window,) = encode_windows(tokenizer, inst.instruction, [inst.text])
        tagged = {c for off, t in zip(window.offsets, ex["tags"]) if t in (B, I) for c in range(*off)}
        wanted = {c for s, e in inst.spans for c in range(s, e) if not inst.text[c].isspace()}
        assert ex["kind"] == 1 and tagged == wanted
        assert sum(t == B for t in ex["tags"]) == len(inst.spans)


def test_bad_input_says_what_to_fix(tmp_path):
    with pytest.raises(ValueError, match="at least 2 documents"):
        build_instances(["too short", "a b c d e f g h i j"], 10)
    with pytest.raises(ValueError, match="at least 2 pretraining instances"):
        build_instances(corpus_texts(5), 1)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a proxy folder"):
        check_out(tmp_path / "notes")

    runner = CliRunner()

    def error_of(*args):
        result = runner.invoke(app, ["pretrain", *map(str, args)])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        return " ".join(result.output.split())

    assert "corpus not found" in error_of(tmp_path / "nope.jsonl", "--out", tmp_path / "p")
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n{"title": "x"}\n')
    assert "no readable documents" in error_of(tmp_path / "empty.jsonl", "--out", tmp_path / "p")
    assert "empty_text: 1" in error_of(tmp_path / "empty.jsonl", "--out", tmp_path / "p")
    assert "not a proxy folder" in error_of(tmp_path / "empty.jsonl", "--out", tmp_path / "notes")
    assert "is a file" in error_of(tmp_path / "empty.jsonl", "--out", tmp_path / "notes" / "keep.txt")
    assert "does not exist" in error_of(tmp_path / "empty.jsonl", "--out", tmp_path / "p", "--proxy-base", tmp_path / "x")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_pretrain_cli_writes_a_proxy_that_fine_tuning_starts_from(ray_local, tmp_path):
    from falconer_ray.proxy import Proxy, ProxyModel

    corpus = tmp_path / "raw.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus_texts(36)))
    out = tmp_path / "pretrained"
    result = CliRunner().invoke(app, ["pretrain", str(corpus), "--out", str(out), "--instances", "48",
                                      "--epochs", "1", "--workers", "1", "--seed", "5", "--passage-chars", "150"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "pretrain.json").read_text())
    assert metrics["instances"] == 48 and metrics["docs"] == 36 and metrics["epochs"] == 1
    assert metrics["passage_chars"] == 150 and metrics["seed"] == 5
    assert metrics["examples"] >= 48 and metrics["final_loss"] > 0
    assert metrics["label_yes"] + metrics["label_no"] > 0 and abs(metrics["label_yes"] - metrics["label_no"]) <= 1
    assert not (tmp_path / "pretrained.train").exists() and not (tmp_path / "pretrained.tmp").exists()

    model = ProxyModel.from_base(str(out))  # the whole proxy, heads included
    saved = ProxyModel.load(out)
    for (name, a), (_, b) in zip(model.state_dict().items(), saved.state_dict().items()):
        assert a.equal(b), name
    proxy = Proxy.load(out)
    scores = proxy.label_scores(["Anna Berg walked to the harbour."], "Does this text mention 'harbour'?")
    assert 0.0 <= float(scores[0]) <= 1.0
    found = proxy.extract(["Anna Berg walked to the harbour."], "Extract the capitalised names.", threshold=0.0)
    assert all("Anna Berg walked to the harbour."[s.start:s.end] == s.text for s in found[0])


def test_passages_are_cut_at_spaces_to_the_asked_length():
    texts = corpus_texts(10)
    instances = build_instances(texts, 60, seed=2, max_chars=120)
    assert all(len(i.text) <= 120 for i in instances)
    assert all(any(i.text in t for t in texts) for i in instances)  # a piece of one document, never a mix
    assert any(len(i.text) < len(t) for i in instances for t in texts if i.text in t)
