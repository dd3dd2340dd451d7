"""ProxyModel, training loop and Proxy inference on the real MiniLM (offline)."""

from __future__ import annotations

import os
import random
import socket

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from falconer_ray.proxy import (  # noqa: E402
    Proxy,
    ProxyModel,
    Stopped,
    collate,
    label_examples,
    run_epoch,
    span_examples,
)
from falconer_ray.spans import span_f1  # noqa: E402

INSTR = "extract the colour"
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
NOUNS = ["car", "house", "bird", "shirt", "boat", "door", "cup", "kite"]
OPENERS = ["I saw a", "My friend bought a", "There is a", "Yesterday we painted the"]


def colour_data(n: int, seed: int) -> tuple[list[str], list[list[tuple[int, int]]]]:
    rng = random.Random(seed)
    texts, spans = [], []
    for _ in range(n):
        c = rng.choice(COLOURS)
        t = f"{rng.choice(OPENERS)} {c} {rng.choice(NOUNS)} near the {rng.choice(NOUNS)}."
        s = t.index(f" {c} ") + 1
        texts.append(t)
        spans.append([(s, s + len(c))])
    return texts, spans


@pytest.fixture(scope="module")
def minilm():
    torch.manual_seed(0)
    return ProxyModel.from_base("minilm").eval()


@pytest.fixture(scope="module")
def tiny_roberta_dir(tmp_path_factory):
    """A random 2-layer RoBERTa with a byte-level BPE tokenizer, saved like a hub model."""
    from tokenizers import ByteLevelBPETokenizer, Tokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    corpus = [INSTR, *colour_data(20, 9)[0]]
    bpe = ByteLevelBPETokenizer(trim_offsets=True)
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")), trim_offsets=True
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(bpe.to_str()), bos_token="<s>", eos_token="</s>",
        cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
        model_input_names=["input_ids", "attention_mask"],
    )
    d = tmp_path_factory.mktemp("tiny-roberta")
    tok.save_pretrained(d)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=130, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    RobertaModel(cfg).save_pretrained(d)
    return str(d)


def test_forward_and_loss_mixed_batch(minilm):
    texts, spans = colour_data(4, 0)
    tok = minilm.tokenizer
    ex = label_examples(tok, "is it red?", texts[:2], [True, False]) + span_examples(tok, INSTR, texts[2:], spans[2:])
    batch = collate(ex)
    assert batch["tags"][:2].eq(-100).all() and batch["kind"].tolist() == [0, 0, 1, 1]
    label_logits, tag_logits = minilm(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert label_logits.shape == (4,) and tag_logits.shape == (*batch["input_ids"].shape, 3)
    loss = minilm.loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0
    weighted = minilm.loss(batch, pos_weight=5.0)
    assert weighted.item() != pytest.approx(loss.item())


def test_label_targets_hard_or_soft(minilm):
    """Soft targets carry the teacher's P(yes) into the loss; hard ones its yes/no."""
    from falconer_ray.config import RunConfig
    from falconer_ray.plan.schema import Plan
    from falconer_ray.train.fit import build_examples

    plan = Plan.model_validate({"instruction": "x", "steps": [{"id": "red", "op": "get_label", "instruction": "is it red?"}]})
    texts, _ = colour_data(3, 2)
    rows = [{"text": t, "labels": {"red": p}, "spans": {}} for t, p in zip(texts, (0.9, 0.3, 0.5))]
    targets = {}
    for mode in ("hard", "soft"):
        cfg = RunConfig.model_validate({"train": {"label_targets": mode}})
        examples, _ = build_examples(plan, rows, minilm.tokenizer, cfg)
        targets[mode] = [ex["label"] for ex in examples]
    assert targets == {"hard": [1.0, 0.0, 1.0], "soft": [0.9, 0.3, 0.5]}
    soft, hard = (minilm.loss(collate(label_examples(minilm.tokenizer, "is it red?", texts, t))) for t in (targets["soft"], targets["hard"]))
    assert soft.item() != pytest.approx(hard.item())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        label_examples(minilm.tokenizer, "is it red?", texts[:1], [1.5])


def test_every_parameter_gets_a_gradient_from_one_kind_batches(minilm):
    """Both heads stay in the graph even when a batch has only one kind (DDP needs it)."""
    texts, spans = colour_data(2, 1)
    for ex in (label_examples(minilm.tokenizer, "is it red?", texts, [True, False]),
               span_examples(minilm.tokenizer, INSTR, texts, spans)):
        minilm.zero_grad(set_to_none=True)
        minilm.loss(collate(ex)).backward()
        missing = [n for n, p in minilm.named_parameters() if p.grad is None]
        assert missing == []
    minilm.zero_grad(set_to_none=True)


def test_save_load_roundtrip_identical_outputs(minilm, tmp_path):
    minilm.max_length, minilm.stride = 48, 12
    minilm.save(tmp_path / "proxy")
    minilm.max_length, minilm.stride = 256, 64
    assert {"proxy.json", "proxy.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(tmp_path / "proxy"))
    loaded = Proxy.load(tmp_path / "proxy", device="cpu", batch_size=3)
    assert (loaded.max_length, loaded.stride) == (48, 12)
    original = Proxy(minilm, device="cpu", batch_size=5, max_length=48, stride=12)
    docs = [" ".join(colour_data(15, 2)[0]), "A red car.", ""]
    (one,) = original._chunks(docs, INSTR)  # on a CPU a call is one chunk
    (two,) = loaded._chunks(docs, INSTR)
    assert len(one.windows) == len(two.windows) > 5
    np.testing.assert_allclose(one.logits, two.logits, atol=1e-5)
    np.testing.assert_allclose(one.lowest, two.lowest, atol=1e-5)
    assert [p is None for p in one.tag_probs] == [p is None for p in two.tag_probs]
    for a, b in zip(one.tag_probs, two.tag_probs):
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-5)
    (labels,) = loaded._chunks(docs, INSTR, tags=False)  # label path: no offsets, no tag probabilities
    assert [w.input_ids.tolist() for w in labels.windows] == [w.input_ids.tolist() for w in two.windows]
    assert all(w.offsets is None for w in labels.windows)
    np.testing.assert_allclose(labels.logits, two.logits, atol=1e-5)
    assert labels.lowest is None and all(t is None for t in labels.tag_probs)
    mean = loaded.label_scores(docs, INSTR)
    mx = loaded.label_scores(docs, INSTR, pooling="max")
    assert mean.shape == (3,) and ((0 <= mean) & (mean <= 1)).all() and (mx >= mean - 1e-6).all()


def test_a_saved_proxy_as_base_keeps_its_heads(minilm, tmp_path):
    """Starting from a metamodel (pretrained or trained on another task) must keep its
    label and tag heads, not put fresh ones on its encoder."""
    import torch

    with torch.no_grad():
        minilm.label_head.bias.fill_(3.0)
    minilm.save(tmp_path / "meta")
    started = ProxyModel.from_base(str(tmp_path / "meta"), max_length=96, stride=16)
    assert started.base == str(tmp_path / "meta") and (started.max_length, started.stride) == (96, 16)
    for name, value in minilm.state_dict().items():
        assert torch.equal(value, started.state_dict()[name]), name
    fresh = ProxyModel.from_base(None)
    assert not torch.equal(fresh.label_head.bias, started.label_head.bias)


def test_roberta_style_base_without_token_type_ids(tiny_roberta_dir, tmp_path):
    model = ProxyModel.from_base(tiny_roberta_dir, max_length=64, stride=8)
    assert model.encoder.config.model_type == "roberta"
    texts, spans = colour_data(6, 3)
    batch = collate(span_examples(model.tokenizer, INSTR, texts, spans, max_length=48, stride=8))
    assert "token_type_ids" not in batch
    assert torch.isfinite(model.loss(batch))
    model.save(tmp_path / "rob")
    proxy = Proxy.load(tmp_path / "rob", device="cpu")
    docs = [" ".join(texts * 5)]
    for doc, found in zip(docs, proxy.extract(docs, INSTR, threshold=0.0)):
        assert all(s.text == doc[s.start : s.end] for s in found)
    assert proxy.label_scores(docs, INSTR).shape == (1,)


def test_run_epoch_under_ddp(tiny_roberta_dir):
    """One-process gloo DDP: forward through the wrapper, loss outside it, one-kind batches."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(ProxyModel.from_base(tiny_roberta_dir, max_length=64))
        tok = model.module.tokenizer
        texts, spans = colour_data(8, 4)
        loader = [collate(label_examples(tok, "is it red?", texts[:4], [True, False, True, False])),
                  collate(span_examples(tok, INSTR, texts[4:], spans[4:])),
                  collate(label_examples(tok, "is it red?", texts[4:], [False, True, False, True]))]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses = [run_epoch(model, loader, opt) for _ in range(2)]
        assert all(np.isfinite(losses))
    finally:
        dist.destroy_process_group()


def test_learns_to_extract_colours():
    torch.manual_seed(0)
    model = ProxyModel.from_base("minilm")
    for p in model.encoder.embeddings.parameters():  # speed only: halves optimizer work
        p.requires_grad_(False)
    texts, spans = colour_data(40, 5)
    examples = span_examples(model.tokenizer, INSTR, texts, spans, max_length=64, stride=16)
    loader = DataLoader(examples, batch_size=10, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    losses = [run_epoch(model, loader, opt) for _ in range(3)]
    assert losses[-1] < 0.3 * losses[0], losses

    test_texts, test_spans = colour_data(10, 6)
    found = Proxy(model, device="cpu").extract(test_texts, INSTR)
    for doc, doc_spans in zip(test_texts, found):
        assert all(s.text == doc[s.start : s.end] for s in doc_spans)
    assert span_f1([[(s.start, s.end) for s in f] for f in found], test_spans) > 0.8


def mixed_texts(seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(COLOURS + NOUNS) for _ in range(rng.choice([1, 5, 30, 120]))) for _ in range(18)]
    texts[4], texts[11] = "", "a " + "purple kite " * 200  # empty, and several windows
    return texts


@pytest.mark.parametrize("queued", [False, True], ids=["one-chunk", "gpu-style-chunks"])
def test_answers_come_back_in_input_order_whatever_the_lengths(minilm, queued):
    """Texts are processed longest first, in one chunk or (as on a GPU) in chunks of
    four batches: every answer must still land on its own document, the same as when
    that document is asked alone."""
    texts = mixed_texts()
    proxy = Proxy(minilm, device="cpu", batch_size=2, max_length=64, stride=16)
    proxy.forward.queued = queued  # the real model, scheduled as on a GPU: chunks of 8 texts
    scores = proxy.label_scores(texts, INSTR)
    windows = list(proxy.last_windows)
    spans, confidence = proxy.extract_with_confidence(texts, INSTR, threshold=0.0)
    for i, text in enumerate(texts):
        alone = proxy.label_scores([text], INSTR)
        assert scores[i] == pytest.approx(alone[0], abs=1e-4), i
        assert windows[i] == proxy.last_windows[0], i
        alone_spans, alone_conf = proxy.extract_with_confidence([text], INSTR, threshold=0.0)
        assert [(s.start, s.end) for s in spans[i]] == [(s.start, s.end) for s in alone_spans[0]], i
        assert all(s.text == text[s.start:s.end] for s in spans[i])
        assert confidence[i] == pytest.approx(alone_conf[0], abs=1e-4), i
    assert windows[11] > 1 and windows[4] == 1


def test_queued_calls_read_each_chunk_while_the_next_one_runs(minilm, monkeypatch):
    """On a GPU a chunk is one batch of texts. Its answers are read and its spans
    decoded only once the next chunk is queued, and before the chunk after that is
    tokenized: the device has work whenever the CPU tokenizes or decodes."""
    import falconer_ray.proxy.predict as predict

    texts = [t for t in mixed_texts() if t][:12]
    proxy = Proxy(minilm, device="cpu", batch_size=3, max_length=64, stride=16)
    forward, events, chunk = proxy.forward, [], []

    class Recording:  # the real forward pass, scheduled as on a GPU
        queued = True

        def __call__(self, ids, mask, types=None):
            events.append(("queue", chunk[-1]))
            return chunk[-1], forward(ids, mask, types)

        def fetch(self, out, tags):
            events.append(("read", out[0]))
            return forward.fetch(out[1], tags)

    def tokenize(*args, **kwargs):
        chunk.append(len(chunk))
        events.append(("tokenize", chunk[-1]))
        return predict.encode_windows.__wrapped__(*args, **kwargs)

    def decode(window, probs, text):
        events.append(("decode", next(k for kind, k in reversed(events) if kind == "read")))
        return predict.decode_spans.__wrapped__(window, probs, text)

    tokenize.__wrapped__, decode.__wrapped__ = predict.encode_windows, predict.decode_spans
    monkeypatch.setattr(predict, "encode_windows", tokenize)
    monkeypatch.setattr(predict, "decode_spans", decode)
    proxy.forward = Recording()
    spans = proxy.extract(texts, INSTR, threshold=0.0)
    assert len(chunk) == 4 and sum(map(len, spans)) > 0
    first = {}
    for at, (kind, k) in enumerate(events):
        first.setdefault((kind, k), at)
    for k in range(4):
        reads = [at for at, e in enumerate(events) if e == ("read", k)]
        assert reads, k
        if k < 3:
            assert first[("queue", k + 1)] < reads[0], k  # the next chunk is queued before this one is read
        if k < 2:
            assert reads[-1] < first[("tokenize", k + 2)], k  # ...and read before the one after is tokenized
    decoded = [k for kind, k in events if kind == "decode"]
    assert decoded == sorted(decoded) and len(set(decoded)) > 1
    assert all(at < first[("tokenize", k + 2)] for at, (kind, k) in enumerate(events) if kind == "decode" and k < 2)
    monkeypatch.undo()
    proxy.forward = forward
    assert [[(s.start, s.end) for s in d] for d in proxy.extract(texts, INSTR, threshold=0.0)] == \
        [[(s.start, s.end) for s in d] for d in spans]


def test_a_cpu_call_batches_every_window_by_its_token_count(minilm):
    """Off a GPU nothing overlaps the forward passes, so a call's windows are batched
    across the whole call: it pads no more tokens than sorting them all would, and
    fewer than GPU-style chunks, whose edges follow character counts."""
    from falconer_ray.proxy import encode_windows

    texts = mixed_texts(5) + ["!!!! ?? .. " * 9, "antidisestablishmentarianism " * 3]  # few or many characters per token
    proxy = Proxy(minilm, device="cpu", batch_size=2, max_length=64, stride=16)
    forward = proxy.forward

    def padded_tokens(queued: bool) -> int:
        shapes = []

        class Recording:  # the real forward pass, its batch shapes noted
            def __call__(self, ids, mask, types=None):
                shapes.append(ids.shape)
                return forward(ids, mask, types)

            def __getattr__(self, name):
                return getattr(forward, name)

        proxy.forward = Recording()
        forward.queued = queued
        proxy.label_scores(texts, INSTR)
        return sum(rows * length for rows, length in shapes)

    windows = encode_windows(proxy.tokenizer, INSTR, texts, 64, 16, with_offsets=False)
    tightest = sum(ids.size for _, ids, _, _ in proxy.padded_batches(windows))
    assert padded_tokens(queued=False) == tightest
    assert padded_tokens(queued=True) > tightest


def test_stop_when_gives_up_a_call_between_forward_batches(minilm):
    """`stop_when` is asked before each forward batch: once it says True the call stops
    with `Stopped` and no further batch runs; while it says False nothing changes."""
    texts, _ = colour_data(12, seed=3)
    proxy = Proxy(minilm, device="cpu", batch_size=2, max_length=64, stride=16)
    want = proxy.label_scores(texts, INSTR)
    asked = []
    proxy.stop_when = lambda: asked.append(1) is None and False
    assert np.array_equal(proxy.label_scores(texts, INSTR), want)
    assert len(asked) == 6  # 12 texts, one window each, two to a batch
    asked.clear()
    proxy.stop_when = lambda: asked.append(1) is None and len(asked) > 2
    with pytest.raises(Stopped):
        proxy.label_scores(texts, INSTR)
    assert len(asked) == 3  # gave up at the third batch, before running it
