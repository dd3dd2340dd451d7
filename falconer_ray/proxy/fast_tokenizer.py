"""What windowing needs of a tokenizer, in `tokenizers` terms.

The Rust `tokenizers.Tokenizer` behind a transformers fast tokenizer does all the
work; transformers adds the Python that turns its encodings into lists, and its
import. Windowing talks to that backend directly, so the same code runs whether
the tokenizer came from transformers (training) or straight from a saved folder's
tokenizer.json (an int8 mining actor, which then never imports transformers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True)
class FastTokenizer:
    """A `tokenizers` backend, its pad id, and whether the model reads token_type_ids
    (BERT-style models do, RoBERTa-style ones do not)."""

    backend: Tokenizer
    pad_id: int
    types: bool

    def count(self, text: str) -> int:
        """Tokens in `text` alone, without special tokens, truncation or padding."""
        self.backend.encode_special_tokens = True  # "[SEP]" in a document is text, not a separator
        self.backend.no_truncation()
        self.backend.no_padding()
        return len(self.backend.encode(text, add_special_tokens=False).ids)

    def specials(self, pair: bool = True) -> int:
        return self.backend.num_special_tokens_to_add(pair)

    def pairs(self, first: str, seconds: list[str], max_length: int, stride: int) -> list[list[Encoding]]:
        """Per second text, the encodings of (first, second) cut into windows of
        `max_length` tokens: the second text overflows into the next window, which
        repeats its last `stride` tokens. Unpadded. Special-token text inside either
        text ("[SEP]", "</s>") is read as plain text, so a document cannot forge the
        structure the proxy was trained on."""
        self.backend.encode_special_tokens = True
        self.backend.enable_truncation(max_length, stride=stride, strategy="only_second", direction="right")
        self.backend.no_padding()
        encodings = self.backend.encode_batch([(first, s) for s in seconds])
        return [[e, *e.overflowing] for e in encodings]


def as_fast(tokenizer: Any) -> FastTokenizer:
    """`tokenizer` as a FastTokenizer: itself, or a transformers fast tokenizer's backend."""
    if isinstance(tokenizer, FastTokenizer):
        return tokenizer
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError("windowing needs a fast tokenizer (character offset mapping)")
    pad = tokenizer.pad_token_id
    return FastTokenizer(tokenizer.backend_tokenizer, pad if pad is not None else 0,
                         "token_type_ids" in tokenizer.model_input_names)
