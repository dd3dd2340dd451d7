"""LLM teachers: who annotates the sample the proxy learns from.

`make_teacher` is the single place that knows which backends exist, so the CLI,
planner and pipeline can take a backend name from configuration: `embedded`
(llama.cpp in-process), `openai` (any OpenAI-compatible endpoint, through Ray
Data LLM's HTTP processor) and `vllm` (vLLM engines through Ray Data LLM).
`teacher_from_config` builds one from a `TeacherConfig` (`falconer_ray.config.teacher`).
Each backend's module, and its library (llama.cpp, aiohttp, vLLM), is imported only
when that backend is built.
"""

from __future__ import annotations

from typing import Any, Callable

from falconer_ray.teacher.base import ProgressFn, Teacher, TeacherStats
from falconer_ray.teacher.prompts import PROMPT_VERSION, clip_document

__all__ = [
    "PROMPT_VERSION",
    "KINDS",
    "EmbeddedTeacher",
    "ProgressFn",
    "Teacher",
    "TeacherStats",
    "clip_document",
    "make_teacher",
    "teacher_from_config",
    "resolve_gguf",
]


def _embedded(model: str | None, **kw: Any) -> Teacher:
    from falconer_ray.teacher.embedded import EmbeddedTeacher

    return EmbeddedTeacher(model=model, **kw)


def _openai(model: str | None, **kw: Any) -> Teacher:
    from falconer_ray.teacher.batched.openai import OpenAITeacher

    return OpenAITeacher(model=model or "", **kw)


def _vllm(model: str | None, **kw: Any) -> Teacher:
    from falconer_ray.teacher.batched.vllm import VLLMTeacher

    return VLLMTeacher(model=model or "", **kw)


KINDS: dict[str, Callable[..., Teacher]] = {"embedded": _embedded, "openai": _openai, "vllm": _vllm}

def make_teacher(kind: str = "embedded", model: str | None = None, **kw: Any) -> Teacher:
    """Build a teacher backend by name; `model=None` means the backend's default."""
    try:
        factory = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown teacher kind {kind!r}; known kinds: {sorted(KINDS)}") from None
    return factory(model, **kw)


def teacher_from_config(cfg: Any) -> Teacher:
    """Build the teacher a `TeacherConfig` describes (one of `falconer_ray.config.teacher`'s classes)."""
    return make_teacher(cfg.kind, model=cfg.model, **cfg.backend_kwargs())


def __getattr__(name: str) -> Any:
    # Lazy: importing falconer_ray.teacher must not import llama_cpp / numpy.
    if name in ("EmbeddedTeacher", "resolve_gguf"):
        from falconer_ray.teacher import embedded

        return getattr(embedded, name)
    raise AttributeError(name)
