"""Embedded models from part packages: joined once, checked by size and SHA-256 before any
load, refused with the command that fixes them when a part is missing or damaged."""

from __future__ import annotations

import hashlib
import sys

import pytest

from falconer_ray.teacher import gguf_models
from falconer_ray.teacher.gguf_models import PARTED, QWEN_0_5B, ModelCheckFailed, PartedModel, assemble_parts


@pytest.fixture
def parts(tmp_path, monkeypatch):
    """Three tiny part packages (`fakemodelpartN/data/partNN.bin`) on sys.path, and the
    model they make; a double of the real parts, which the slow test below joins."""
    blobs = [bytes([i]) * (1000 + i) for i in range(1, 4)]
    for i, blob in enumerate(blobs, start=1):
        package = tmp_path / "site" / f"fakemodelpart{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "data" / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("FALCONER_CACHE", str(tmp_path / "cache"))
    whole = b"".join(blobs)
    return PartedModel("fake.gguf", "fakemodelpart", 3, "1.0", len(whole), hashlib.sha256(whole).hexdigest()), whole


def test_parts_join_once_and_a_check_is_remembered(parts, monkeypatch):
    model, whole = parts
    path = assemble_parts("fake", model)
    assert path.read_bytes() == whole and path.parent.name == "models"
    hashed = []
    monkeypatch.setattr(gguf_models, "_sha256", lambda p: hashed.append(p) or model.sha256)
    assert assemble_parts("fake", model) == path and hashed == []  # the record of the check stands
    path.write_bytes(whole[:-1] + b"\x00")  # same size, other bytes, new mtime: hashed again
    assert assemble_parts("fake", model) == path and hashed == [path]


def test_a_damaged_or_missing_part_is_never_loaded(parts, tmp_path):
    model, whole = parts
    wrong = PartedModel(model.file_name, model.package_prefix, 3, "1.0", model.size, "0" * 64)
    with pytest.raises(ModelCheckFailed, match="reinstall them .pip install fakemodelpart1==1.0"):
        assemble_parts("fake", wrong)
    assert not list((tmp_path / "cache" / "models").iterdir())  # no half or wrong file left behind
    (tmp_path / "site" / "fakemodelpart2" / "data" / "part02.bin").unlink()
    with pytest.raises(ModuleNotFoundError, match=r"fake needs 1 more of its 3 part packages \(fakemodelpart2\)"):
        assemble_parts("fake", model)
    sys.modules.pop("fakemodelpart2", None)


def test_a_cached_file_of_the_right_size_but_wrong_bytes_is_replaced(parts):
    model, whole = parts
    path = assemble_parts("fake", model)
    gguf_models._record(path).unlink()
    path.write_bytes(b"\x00" * len(whole))
    assert assemble_parts("fake", model).read_bytes() == whole


@pytest.mark.slow
def test_the_small_qwen_joins_from_pypi_and_answers_in_its_chat_template(cache_dir):
    from falconer_ray.teacher.embedded import EmbeddedTeacher

    path = gguf_models.resolve_gguf("qwen2.5-coder-0.5b")  # an alias
    assert path.stat().st_size == PARTED[QWEN_0_5B].size
    assert gguf_models._sha256(path) == PARTED[QWEN_0_5B].sha256
    teacher = EmbeddedTeacher(QWEN_0_5B)
    assert teacher.name == "embedded:qwen2.5-0.5b:chat"
    good, bad = teacher.label(["A wonderful, moving film. I loved every minute.",
                               "Dreadful. Boring, badly acted, a waste of two hours."], "Is this movie review positive?")
    assert 0 <= bad < good <= 1
