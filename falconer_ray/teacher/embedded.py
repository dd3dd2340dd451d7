"""A teacher that runs a small GGUF model in-process with llama.cpp.

No server, no network, no GPU: the models come from PyPI packages, so
annotation works anywhere the package installs. Labels are *scored* (logits of
yes vs no for the first answer token), never generated, and span answers are
generated greedily under a bounded GBNF grammar: tiny models loop otherwise.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import time

import numpy as np

from falconer_ray.teacher import prompts
from falconer_ray.teacher.base import ProgressFn, TeacherStats
from falconer_ray.config.teacher import default_embedded_model
from falconer_ray.teacher.gguf_models import ALIASES, GEMMA, QWEN_0_5B, QWEN_1_5B, SMOLLM2, content_digest, resolve_gguf
from falconer_ray.teacher.validate import parse_span_answer

# Style that measured best per known model; unknown files get few-shot, which
# works for base and instruct models alike.
AUTO_STYLE = {GEMMA: "fewshot", SMOLLM2: "fewshot", QWEN_1_5B: "chat", QWEN_0_5B: "chat"}
SPAN_MAX_TOKENS = 64
DOC_SLOT = "\x00document\x00"  # stands for the document while a chat prompt is cut around it


def default_threads() -> int:
    """The cores this process was given: a Ray worker's CPU share (Ray sets
    OMP_NUM_THREADS to it), else every usable core, as when the driver annotates.

    llama.cpp threads spin-wait on each other, so a teacher that shares its cores with
    busy Ray workers or the proxy must not take more than its share (all of them was
    measured 10-20x slower than one); alone, two threads label 1.65x faster than one
    (docs/RESULTS.md)."""
    allotted = os.environ.get("OMP_NUM_THREADS", "")
    if allotted.isdigit() and int(allotted) > 0:
        return int(allotted)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class EmbeddedTeacher:
    """Teacher on llama-cpp-python; deterministic (greedy / scored), CPU-only.

    One instance owns one llama.cpp context: not thread-safe; give each Ray
    worker its own. Documents are processed one at a time in input order so
    consecutive prompts share the few-shot prefix in the KV cache.
    """

    call_chunk = 16  # documents per call: a few seconds of work between progress updates and cache writes

    def __init__(
        self,
        model: str | None = None,
        n_threads: int | None = None,
        n_ctx: int = 2048,
        max_doc_chars: int = prompts.DEFAULT_MAX_DOC_CHARS,
        prompt_style: str = "auto",
        seed: int = 0,
        verbose: bool = False,
    ):
        from llama_cpp import Llama  # deferred: importing the package must not need it

        if prompt_style not in ("auto", "fewshot", "chat"):
            raise ValueError(f"prompt_style must be auto, fewshot or chat, not {prompt_style!r}")
        model = model or default_embedded_model()
        self.path = resolve_gguf(model)
        self.model_id = ALIASES.get(str(model).lower(), self.path.stem)
        self.style = AUTO_STYLE.get(self.model_id, "fewshot") if prompt_style == "auto" else prompt_style
        self.max_doc_chars = max_doc_chars
        self.stats = TeacherStats()
        self.name = f"embedded:{self.model_id}:{self.style}"
        self.cache_id = f"{self.name}#{content_digest(self.path)[:16]}"  # two files of one name are two models
        self.llm = _load(
            Llama,
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=n_threads or default_threads(),
            n_threads_batch=n_threads or default_threads(),
            seed=seed,
            swa_full=True,  # Gemma 3 sliding-window cache must be full for prefix reuse
            logits_all=False,
            verbose=verbose,
        )
        self._n_ctx = self.llm.n_ctx()
        self._formatter = self._chat_formatter() if self.style == "chat" else None
        self._yes, self._no = self._answer_token_ids()

    # ------------------------------------------------------------ Teacher API

    def label(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[float]:
        out: list[float] = []
        for i, text in enumerate(texts, 1):
            t0 = time.perf_counter()
            tokens = self._fit(prompts.label_prompt, prompts.label_messages, instruction, text, 1, prompts.label_view)
            logits = self._prefill(tokens)
            # P(yes) normalised over the two answers only.
            margin = _logsumexp(logits[self._yes]) - _logsumexp(logits[self._no])
            out.append(1.0 / (1.0 + math.exp(-max(min(margin, 50.0), -50.0))))
            self._account(len(tokens), 0, t0)
            if on_progress:
                on_progress(i)
        return out

    def extract(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[list[str]]:
        out: list[list[str]] = []
        for i, text in enumerate(texts, 1):
            t0 = time.perf_counter()
            shown = prompts.clip_document(text, self.max_doc_chars)
            tokens = self._fit(
                prompts.span_prompt, prompts.span_messages, instruction, shown, SPAN_MAX_TOKENS
            )
            answer, n_out, finished = self._generate(tokens, SPAN_MAX_TOKENS, ["\n"], prompts.SPAN_GRAMMAR)
            items = parse_span_answer(answer)
            if not finished and items:
                items.pop()  # hit max_tokens: the last phrase may be cut mid-way
                self.stats.reject("truncated")
            out.append([_unflatten(shown, s) for s in items])
            self._account(len(tokens), n_out, t0)
            if on_progress:
                on_progress(i)
        return out

    def complete(
        self,
        prompt: str,
        max_tokens: int,
        stop: list[str] | None = None,
        grammar: str | None = None,
    ) -> str:
        t0 = time.perf_counter()
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        if len(tokens) + max_tokens > self._n_ctx:
            raise ValueError(f"prompt of {len(tokens)} tokens + {max_tokens} exceeds n_ctx={self._n_ctx}")
        text, n_out, _ = self._generate(tokens, max_tokens, stop or [], grammar)
        self._account(len(tokens), n_out, t0)
        return text

    # -------------------------------------------------------------- internals

    def _account(self, prompt_tokens: int, completion_tokens: int, t0: float) -> None:
        self.stats.calls += 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.seconds += time.perf_counter() - t0

    def _tokens(self, fewshot_fn, chat_fn, instruction: str, doc: str) -> list[int]:
        if self._formatter is None:
            prompt = fewshot_fn(instruction, doc)
            return self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=False)
        res = self._formatter(messages=chat_fn(instruction, doc))
        whole = self.llm.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True)
        if not self._holds_special_text(doc):
            return whole
        # The template's own markers are special tokens, but "<|im_end|>" typed into a
        # document is text: otherwise a document could end its turn and answer itself.
        pre, post = self._formatter(messages=chat_fn(instruction, DOC_SLOT)).prompt.split(DOC_SLOT)
        return (self.llm.tokenize(pre.encode("utf-8"), add_bos=not res.added_special, special=True)
                + self.llm.tokenize(prompts.flatten(doc).encode("utf-8"), add_bos=False, special=False)
                + self.llm.tokenize(post.encode("utf-8"), add_bos=False, special=True))

    def _holds_special_text(self, doc: str) -> bool:
        data = doc.encode("utf-8")
        return self.llm.tokenize(data, add_bos=False, special=True) != self.llm.tokenize(data, add_bos=False, special=False)

    def _fit(self, fewshot_fn, chat_fn, instruction: str, text: str, room: int,
             clip=prompts.clip_document) -> list[int]:
        """Prompt tokens for `text`, clipped to max_doc_chars and, if the
        tokenizer is unkind (emoji, rare scripts), further until it fits n_ctx."""
        limit = self.max_doc_chars
        doc = clip(text, limit)
        tokens = self._tokens(fewshot_fn, chat_fn, instruction, doc)
        while len(tokens) + room > self._n_ctx and doc:
            self.stats.reject("doc_overflow")
            limit = len(doc) // 2
            doc = clip(text, limit) if limit > 0 else ""
            tokens = self._tokens(fewshot_fn, chat_fn, instruction, doc)
        if len(tokens) + room > self._n_ctx:
            raise ValueError(f"instruction alone exceeds n_ctx={self._n_ctx}; raise n_ctx")
        return tokens

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        """Evaluate `tokens`, reusing the cached common prefix; last-token logits."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens]
        keep = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(tokens) - 1)  # always decode >= 1 token for fresh logits
        if keep > 0 and llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            llm.n_tokens = keep
        else:
            llm.reset()
            keep = 0
        llm.eval(tokens[keep:])
        return self._last_logits()

    def _generate(
        self, tokens: list[int], max_tokens: int, stop: list[str], gbnf: str | None
    ) -> tuple[str, int, bool]:
        """Greedy decoding, optionally under a GBNF grammar: (text, n_tokens, finished).

        llama-cpp-python's sampler chain runs the grammar over the whole
        vocabulary (262k tokens for Gemma) at every step, which made span
        answers ~4x slower. Here the grammar only judges the top few
        candidates and falls back to the full vocabulary when none is
        allowed; the chosen token is the same (the best allowed one).
        """
        import llama_cpp as lc

        llm = self.llm
        vocab = llm._model.vocab
        sampler = None
        if gbnf:
            sampler = lc.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
            if not sampler:
                raise ValueError("invalid GBNF grammar")
        out: list[int] = []
        stops = [x.encode("utf-8") for x in stop if x]
        n = 0
        try:
            logits = self._prefill(tokens)
            while n < max_tokens:
                tok = self._pick(logits, sampler)
                if tok is None or lc.llama_vocab_is_eog(vocab, tok):
                    return _decode(llm.detokenize(out)), n, True
                n += 1
                if sampler is not None:
                    lc.llama_sampler_accept(sampler, tok)
                out.append(tok)
                text = llm.detokenize(out)  # whole-sequence: keeps spaces and UTF-8 intact
                cut = min((i for i in (text.find(x) for x in stops) if i >= 0), default=-1)
                if cut >= 0:
                    return _decode(text[:cut]), n, True
                if n < max_tokens:
                    llm.eval([tok])
                    logits = self._last_logits()
            return _decode(llm.detokenize(out)), n, False
        finally:
            if sampler is not None:
                lc.llama_sampler_free(sampler)

    def _pick(self, logits: np.ndarray, sampler, k: int = 16) -> int | None:
        """Highest-logit token the grammar allows (plain argmax without one)."""
        if sampler is None:
            return int(np.argmax(logits))
        top = np.argpartition(-logits, k)[:k]
        top = top[np.argsort(-logits[top])]
        for cand in (top, None):  # top-k first, then the whole vocabulary
            ids = np.arange(len(logits), dtype=np.intc) if cand is None else cand.astype(np.intc)
            allowed = _grammar_filter(sampler, ids, logits[ids])
            if allowed.size:
                return int(ids[allowed[np.argmax(logits[ids][allowed])]])
        return None

    def _last_logits(self) -> np.ndarray:
        llm = self.llm
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)

    def _chat_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ValueError(f"{self.path.name} has no chat template; use prompt_style='fewshot'")
        vocab = self.llm
        return Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace"),
            bos_token=vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace"),
            add_generation_prompt=True,
        )

    def _answer_token_ids(self) -> tuple[list[int], list[int]]:
        """First-token ids of yes/no spellings (with and without a leading space)."""

        def firsts(words: tuple[str, ...]) -> set[int]:
            ids = set()
            for w in words:
                for s in (w, " " + w):
                    toks = self.llm.tokenize(s.encode(), add_bos=False, special=False)
                    if toks:
                        ids.add(toks[0])
            return ids

        yes, no = firsts(prompts.YES_WORDS), firsts(prompts.NO_WORDS)
        shared = yes & no  # e.g. a bare-space token: carries no answer
        return sorted(yes - shared), sorted(no - shared)


@contextlib.contextmanager
def no_extra_buffers():
    """Models loaded inside this block get `use_extra_bufts=False`.

    The default CPU build repacks weights into AMX/extra buffer types, and that
    path segfaults on the first decode on some CPUs. llama-cpp-python does not
    expose the flag (unknown kwargs are silently swallowed), so the model
    params default is patched for the duration of the block.
    """
    import llama_cpp.llama as llama_mod

    lib = llama_mod.llama_cpp
    original = lib.llama_model_default_params

    def patched():
        params = original()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = patched
    try:
        yield
    finally:
        lib.llama_model_default_params = original


def _load(cls, **kw):
    """Construct Llama without extra weight buffers (see `no_extra_buffers`)."""
    with no_extra_buffers():
        return cls(**kw)


_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


def _grammar_filter(sampler, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Indices (into `ids`) of the tokens the grammar sampler allows next."""
    import llama_cpp as lc

    data = np.zeros(len(ids), dtype=_TOKEN_DATA)
    data["id"] = ids
    data["logit"] = 0.0
    arr = lc.llama_token_data_array(
        data=data.ctypes.data_as(lc.llama_token_data_p), size=len(ids), selected=-1, sorted=False
    )
    lc.llama_sampler_apply(sampler, ctypes.byref(arr))
    # The grammar sets rejected logits to -inf and never reorders or resizes.
    return np.flatnonzero(np.isfinite(data["logit"][: arr.size]))


def _decode(b: bytes | bytearray) -> str:
    return bytes(b).decode("utf-8", errors="ignore")


def _logsumexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    return m + math.log(float(np.sum(np.exp(x - m))))


_unflatten = prompts.unflatten
