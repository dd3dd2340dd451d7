"""Shared core of the teachers that answer many documents at once through a
Ray Data LLM processor (OpenAI-compatible endpoints, vLLM engines).

A backend only says how to build its processor; this class turns documents
into rows, runs the processor as a Ray Dataset, and folds the result rows
(one per document, or per vote) back into labels, spans, `Failed` answers and
`TeacherStats`. Result rows are flat and JSON-encoded so Arrow never has to
guess a schema for them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict

from falconer_ray.ray_env import init_ray
from falconer_ray.teacher import prompts
from falconer_ray.teacher.base import Failed, LabelResult, ProgressFn, SpanResult, TeacherStats
from falconer_ray.teacher.batched import answers

RESULT_KEYS = ("i", "value", "error", "detail", "prompt_tokens", "completion_tokens", "rejected")


def result_row(row: dict, value, rejected: dict[str, int], tokens: tuple[int, int]) -> dict:
    """The one row shape every postprocess function returns."""
    failed = value if isinstance(value, Failed) else None
    return {
        "i": int(row["i"]),
        "value": "" if failed else json.dumps(value),
        "error": failed.reason if failed else "",
        "detail": failed.detail if failed else "",
        "prompt_tokens": int(tokens[0]),
        "completion_tokens": int(tokens[1]),
        "rejected": json.dumps(rejected),
    }


def combine_votes(got: list[dict]) -> LabelResult:
    """One document's label from its result rows: the one score, or with
    self-consistency the share of yes among the votes that parsed (majority
    = share > 0.5). Failed only when no vote gave an answer."""
    votes = [json.loads(r["value"]) for r in got if not r["error"]]
    if votes:
        return sum(votes) / len(votes)
    return Failed(got[0]["error"], got[0]["detail"]) if got else Failed("no_answer")


def parse_response(resp: dict, row: dict, op: str, span_format: str) -> dict:
    """OpenAI-shaped response -> result row (the shared postprocess core).

    Runs inside Ray workers: a response no parser foresaw must become that
    document's error, not an exception that fails the dataset.
    """
    try:
        if op == "complete":
            value, rejected = answers.response_error(resp) or answers.choice_text(resp["choices"][0]), {}
        elif op == "label":
            value, rejected = answers.parse_label(resp)
        else:
            value, rejected = answers.parse_spans(resp, row["doc"], span_format)
        tokens = answers.usage(resp)
    except Exception as e:  # noqa: BLE001 - any malformed answer costs one document only
        value, rejected, tokens = Failed("bad_response", f"{type(e).__name__}: {e}"), {"bad_response": 1}, (0, 0)
    return result_row(row, value, rejected, tokens)


class BatchTeacher:
    """Teacher protocol on top of `processor(op, instruction)`; see subclasses."""

    name: str
    max_doc_chars: int
    # The annotation stage sends all uncached documents in one call: each call is a Ray
    # Data pipeline, and per-document failures already come back as `Failed` answers.
    call_chunk: int | None = None

    def __init__(self, *, api: str = "chat", label_mode: str = "logprobs", span_format: str = "json_schema",
                 votes: int = 1, vote_temperature: float = 0.7, max_span_tokens: int = 256,
                 max_doc_chars: int = prompts.DEFAULT_MAX_DOC_CHARS):
        if api == "completions" and span_format != "text":
            raise ValueError("structured span answers (json_schema/json_object) need api='chat'")
        self.api, self.label_mode, self.span_format = api, label_mode, span_format
        self.votes = votes if label_mode == "generate" else 1
        self.vote_temperature = vote_temperature
        self.max_span_tokens = max_span_tokens
        self.max_doc_chars = max_doc_chars
        self.stats = TeacherStats()

    def prompting(self) -> str:
        """The part of `name` that says how the model is asked."""
        votes = f":votes{self.votes}" if self.votes > 1 else ""
        return f"{self.api}:{self.label_mode}{votes}:{self.span_format}"

    def processor(self, op: str, instruction: str, **extra):
        """A Ray Data LLM processor: rows {i, v, doc} -> rows with RESULT_KEYS."""
        raise NotImplementedError

    # ------------------------------------------------------------ Teacher API

    def label(self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None) -> list[LabelResult]:
        rows = [{"i": i, "v": v, "doc": t} for i, t in enumerate(texts) for v in range(self.votes)]
        return [combine_votes(got) for got in self._run("label", instruction, rows, len(texts), on_progress)]

    def extract(self, texts: list[str], instruction: str, on_progress: ProgressFn | None = None) -> list[SpanResult]:
        rows = [{"i": i, "v": 0, "doc": t} for i, t in enumerate(texts)]
        out: list[SpanResult] = []
        for got in self._run("span", instruction, rows, len(texts), on_progress):
            r = got[0] if got else None
            if r is None:
                out.append(Failed("no_answer"))
            else:
                out.append(Failed(r["error"], r["detail"]) if r["error"] else json.loads(r["value"]))
        return out

    # -------------------------------------------------------------- internals

    def _run(self, op: str, instruction: str, rows: list[dict], n_docs: int,
             on_progress: ProgressFn | None, **extra) -> list[list[dict]]:
        """Result rows grouped per document, in input order."""
        if not rows:
            return []
        import ray

        init_ray()
        t0 = time.perf_counter()
        per_doc = len(rows) // n_docs
        got: dict[int, list[dict]] = defaultdict(list)
        done = 0
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // 16, 64)))
        for r in self.processor(op, instruction, **extra)(ds).iter_rows():
            r = {k: r.get(k) for k in RESULT_KEYS}
            got[int(r["i"])].append(r)
            self._account(r)
            if len(got[int(r["i"])]) == per_doc:
                done += 1
                if on_progress:
                    on_progress(done)
        self.stats.seconds += time.perf_counter() - t0
        return [got.get(i, []) for i in range(n_docs)]

    def _account(self, r: dict) -> None:
        self.stats.calls += 1
        self.stats.prompt_tokens += int(r["prompt_tokens"] or 0)
        self.stats.completion_tokens += int(r["completion_tokens"] or 0)
        for reason, n in json.loads(r["rejected"] or "{}").items():
            self.stats.reject(reason, n)
        if r["error"]:
            self.stats.error(r["error"])
