"""Windowing, BIO tags and span stitching, on the real MiniLM tokenizer (offline)."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from falconer_ray.proxy import (  # noqa: E402
    Window,
    bio_tags,
    decode_spans,
    encode_windows,
    merge_spans,
    resolve_base,
)
from falconer_ray.spans import Span  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu, nu xi; omicron pi rho sigma tau.".split()


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base("minilm"))


def roberta_style_tokenizer():
    """A byte-level BPE tokenizer with RoBERTa's specials and no token_type_ids."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    corpus = [" ".join(WORDS), "extract the colour", "The red car is fast."] * 10
    bpe = ByteLevelBPETokenizer(trim_offsets=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1, special_tokens=specials)
    bpe.post_processor = RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")), trim_offsets=True
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(bpe.to_str()), bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )


def long_doc(n_words: int, seed: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """A document of random words plus word-aligned gold spans of 1..40 words."""
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n_words)]
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    text = " ".join(words)
    spans, i = [], rng.randint(0, 5)
    while i < n_words:
        length = rng.choice([1, 2, 3, 7, 40])
        j = min(i + length, n_words) - 1
        spans.append((starts[i], starts[j] + len(words[j].rstrip(",;."))))
        i = j + 1 + rng.randint(1, 30)
    return text, spans


def one_hot(tags: list[int]) -> np.ndarray:
    probs = np.zeros((len(tags), 3), dtype=np.float32)
    for i, t in enumerate(tags):
        probs[i, max(t, 0)] = 1.0
    return probs


def roundtrip(windows: list[Window], text: str, spans) -> list[tuple[int, int]]:
    found = []
    for w in windows:
        found.extend(decode_spans(w, one_hot(bio_tags(w, spans)), text))
    merged = merge_spans(found)
    assert all(s.text == text[s.start : s.end] for s in merged)
    return [(s.start, s.end) for s in merged]


def test_long_document_is_fully_covered(tok):
    text, _ = long_doc(2000)
    windows = encode_windows(tok, "find the greek letters", [text], max_length=64, stride=16)
    assert len(windows) > 10
    assert all(w.doc_index == 0 and len(w) <= 64 for w in windows)
    covered = np.zeros(len(text), dtype=bool)
    for w in windows:
        for off in w.offset_list():
            if off is not None:
                covered[off[0] : off[1]] = True
    missing = [i for i, c in enumerate(text) if not c.isspace() and not covered[i]]
    assert missing == []


def test_windows_take_a_few_bytes_per_token(tok):
    """A mining call holds every window of up to 2,048 documents: as Python lists of
    ints and offset tuples they took about 160 bytes per token, arrays take ~15."""
    import tracemalloc

    texts = [long_doc(600, seed)[0] for seed in range(30)]
    tracemalloc.start()
    try:
        windows = encode_windows(tok, "find the greek letters", texts)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    tokens = sum(map(len, windows))
    assert len(windows) > len(texts) and held / tokens < 30, f"{held / tokens:.0f} bytes per token"


def test_windows_overlap_by_stride(tok):
    text, _ = long_doc(600)
    stride = 16
    windows = encode_windows(tok, "find it", [text], max_length=64, stride=stride)
    for a, b in zip(windows, windows[1:]):
        a_text = [o for o in a.offset_list() if o is not None]
        b_text = [o for o in b.offset_list() if o is not None]
        assert a_text[-stride:] == b_text[:stride]


def test_batch_short_and_empty_texts(tok):
    texts = ["short one", "", "another short text"]
    windows = encode_windows(tok, "find it", texts, max_length=64, stride=16)
    assert [w.doc_index for w in windows] == [0, 1, 2]
    assert all(o is None for o in windows[1].offset_list())
    assert windows[0].token_type_ids is not None
    assert bio_tags(windows[1], []) == [-100] * len(windows[1])


def test_instruction_too_long_raises(tok):
    with pytest.raises(ValueError, match="instruction is too long"):
        encode_windows(tok, "word " * 40, ["some text"], max_length=64, stride=8)


def test_bio_tags_values(tok):
    text = "The red car and the dark blue bird."
    (w,) = encode_windows(tok, "extract the colour", [text])
    tags = bio_tags(w, [(4, 7), (20, 29)])
    text_tags = [t for t in tags if t != -100]
    words = [text[o[0] : o[1]] for o in w.offset_list() if o is not None]
    assert list(zip(words, text_tags)) == [
        ("The", 0), ("red", 1), ("car", 0), ("and", 0), ("the", 0),
        ("dark", 1), ("blue", 2), ("bird", 0), (".", 0),
    ]
    assert tags[0] == -100  # [CLS]


def test_roundtrip_single_window(tok):
    text = "The red car and the dark blue bird, then GREEN-ish grass."
    spans = [(text.find(w), text.find(w) + len(w)) for w in ("red", "dark blue", "GREEN-ish")]
    (w,) = encode_windows(tok, "extract the colour", [text])
    assert roundtrip([w], text, spans) == spans


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roundtrip_across_window_boundaries(tok, seed):
    text, spans = long_doc(1500, seed)
    windows = encode_windows(tok, "find them", [text], max_length=48, stride=12)
    assert len(windows) > 20
    assert roundtrip(windows, text, spans) == spans


def test_decode_i_after_o_starts_span_and_scores(tok):
    text = "red car"
    (w,) = encode_windows(tok, "colour", [text])
    probs = np.zeros((len(w), 3), dtype=np.float32)
    probs[:, 0] = 1.0
    red = next(i for i, o in enumerate(w.offset_list()) if o == (0, 3))
    probs[red] = [0.1, 0.3, 0.6]  # I without a preceding B
    (span,) = decode_spans(w, probs, text)
    assert (span.start, span.end, span.text) == (0, 3, "red")
    assert span.score == pytest.approx(0.6)


def test_merge_spans():
    a = Span(0, 3, "abc", 0.4)
    a2 = Span(0, 3, "abc", 0.9)
    b = Span(10, 15, "klmno", 0.5)
    b_tail = Span(12, 18, "mnopqr", 0.7)
    c = Span(18, 20, "st", 0.2)  # touches b's union: stays separate
    d = Span(11, 13, "lm", 0.95)  # inside b
    merged = merge_spans([c, b_tail, a, d, b, a2])
    assert merged == [Span(0, 3, "abc", 0.9), Span(10, 18, "klmnopqr", 0.95), c]
    assert merge_spans([]) == []


def test_roberta_style_tokenizer_without_token_type_ids():
    rt = roberta_style_tokenizer()
    text, spans = long_doc(400, seed=3)
    windows = encode_windows(rt, "find them", [text, "The red car is fast."], max_length=48, stride=12)
    assert all(w.token_type_ids is None for w in windows)
    assert windows[0].input_ids[0] == rt.cls_token_id
    doc0 = [w for w in windows if w.doc_index == 0]
    assert len(doc0) > 3
    assert roundtrip(doc0, text, spans) == spans


def window_tuples(windows: list[Window]) -> list[tuple]:
    return [(w.doc_index, *w.lists(), w.offset_list()) for w in windows]


@pytest.mark.parametrize("style", ["minilm", "roberta"])
def test_a_saved_folder_windows_like_transformers_without_it(style, tok, tmp_path):
    """An int8 mining actor reads tokenizer.json itself (transformers is never imported
    there): same windows, pad id and token types as the transformers tokenizer saved."""
    from falconer_ray.proxy.fast_tokenizer import as_fast
    from falconer_ray.proxy.folder import read_tokenizer

    hf = tok if style == "minilm" else roberta_style_tokenizer()
    hf.save_pretrained(tmp_path)
    ours, theirs = read_tokenizer(tmp_path, types=style == "minilm"), as_fast(hf)
    assert ours.pad_id == hf.pad_token_id and (style == "roberta") == (ours.pad_id != 0)
    texts = [long_doc(300, seed=5)[0], "The red car is fast.", "", "naïve café 東京 😀 " * 20]
    windows = encode_windows(ours, "find them", texts, max_length=48, stride=12)
    assert window_tuples(windows) == window_tuples(encode_windows(hf, "find them", texts, max_length=48, stride=12))
    enc = hf(["find them"] * len(texts), texts, truncation="only_second", max_length=48, stride=12,
             return_overflowing_tokens=True, padding=False)
    assert [w.input_ids.tolist() for w in windows] == enc["input_ids"]
    assert theirs.types == ours.types == ("token_type_ids" in enc)


def test_a_folder_without_a_fast_tokenizer_is_refused(tmp_path):
    from falconer_ray.proxy.folder import read_tokenizer

    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        read_tokenizer(tmp_path, types=True)
    with pytest.raises(ValueError, match="fast tokenizer"):
        encode_windows(object(), "find them", ["text"])


@pytest.mark.parametrize("style", ["minilm", "roberta"])
def test_special_token_text_in_a_document_is_plain_text(style, tok):
    """A document holding "[SEP]" or "</s>" cannot forge the (instruction, text) layout:
    only the tokenizer's own separators are special ids, and offsets still point at the text."""
    hf = tok if style == "minilm" else roberta_style_tokenizer()
    text = f"before {hf.sep_token} after {hf.cls_token} end"
    (w,) = encode_windows(hf, "find them", [text], max_length=64, stride=8)
    (plain,) = encode_windows(hf, "find them", ["before after end"], max_length=64, stride=8)
    specials = {hf.sep_token_id, hf.cls_token_id}

    def structure(window):
        return [i for i in window.input_ids.tolist() if i in specials]

    assert structure(w) == structure(plain)
    covered = "".join(text[a:b] for a, b in (o for o in w.offset_list() if o is not None))
    assert hf.sep_token.strip("[]<>/").lower() in covered.lower()
