"""Giving freed memory back to the operating system, so peak RSS follows what a step holds, not what it once held.

glibc keeps freed blocks below its mmap threshold in the heap, and that threshold rises (up to 32 MB) each time a
large mapped block is freed: after the first weight matrices come and go, 2-10 MB tensors (a BERT layer's
weights, a batch's activations) land on the heap and stay in the process's RSS after they are freed. The INT8
search builds and drops a graph per trial; trimming after each keeps the next one from stacking on top. A no-op
where glibc is absent (macOS, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def release_freed_memory() -> None:
    """Collect garbage, then return the heap's free pages to the OS (after a graph, a session or a model is
    dropped)."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
