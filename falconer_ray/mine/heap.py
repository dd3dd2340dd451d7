"""Hand the C heap's freed memory back to the operating system between mining calls.

glibc keeps freed memory in its arenas for reuse. A long-lived mining actor allocates
and frees hundreds of MB per call in buffers of ever-different sizes (tokens, windows,
logits, Arrow columns), so what it holds creeps up call after call although what it
uses does not; a trim after each call holds it level for a small fraction of the call's
time (docs/RESULTS.md, "Memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # no C library by that name, or not glibc (macOS, musl)
        return None


def trim_heap() -> bool:
    """Return freed heap memory to the OS; False where the C library cannot (not glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
