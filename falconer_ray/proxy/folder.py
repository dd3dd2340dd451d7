"""A saved proxy folder's files, read without torch or transformers.

A mining actor on the int8 runtime needs only proxy.json, the tokenizer and the
quantized graph; importing torch and transformers to read them would cost it most of
its start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from falconer_ray.proxy.fast_tokenizer import FastTokenizer

FORMAT_VERSION = 1
CONFIG_NAME = "proxy.json"
WEIGHTS_NAME = "proxy.safetensors"
TOKENIZER_NAME = "tokenizer.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"


def is_proxy_dir(path: str | os.PathLike) -> bool:
    """A folder written by ProxyModel.save (encoder and heads), not a bare encoder."""
    return (Path(path) / CONFIG_NAME).is_file()


def read_meta(directory: str | os.PathLike) -> dict:
    """A saved proxy's proxy.json (base, max_length, stride, ...), format checked."""
    d = Path(directory)
    meta = json.loads((d / CONFIG_NAME).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{d}: unsupported proxy format {meta.get('format_version')}")
    return meta


def read_tokenizer(directory: str | os.PathLike, types: bool) -> FastTokenizer:
    """The folder's fast tokenizer from tokenizer.json, its pad token from
    tokenizer_config.json (both written by transformers' save_pretrained). `types`:
    whether the model reads token_type_ids, which these files do not say."""
    from tokenizers import Tokenizer

    d = Path(directory)
    if not (d / TOKENIZER_NAME).is_file():
        raise FileNotFoundError(f"{d}: no {TOKENIZER_NAME}; the proxy needs a fast tokenizer saved with it")
    backend = Tokenizer.from_file(str(d / TOKENIZER_NAME))
    config = d / TOKENIZER_CONFIG_NAME
    pad = json.loads(config.read_text()).get("pad_token") if config.is_file() else None
    if isinstance(pad, dict):  # an AddedToken written out whole
        pad = pad.get("content")
    pad_id = backend.token_to_id(pad) if isinstance(pad, str) else None
    return FastTokenizer(backend, pad_id if pad_id is not None else 0, types)
