"""Keep freed memory for reuse during a long inference loop (glibc only).

glibc's ``malloc`` serves each large block (above 128 KiB to 32 MiB, adjusted at run time)
with its own ``mmap`` and unmaps it on ``free``. A forward pass allocates every activation
afresh, so each batch maps, zero-fills page by page and unmaps hundreds of megabytes: on
SqueezeNet at batch 16 that is about 50,000 page faults and a third of the pass's time.
Runtimes such as OpenCV's DNN avoid it by allocating their blobs once.

:func:`reuse_freed_memory` does the same for any torch code: while it is active, large
blocks come from the heap (``M_MMAP_MAX = 0``) and freed memory stays there
(``M_TRIM_THRESHOLD`` raised), so the next batch reuses pages that are already mapped. On
exit the unused pages are returned to the system (``malloc_trim``) and glibc's defaults
are restored. Elsewhere (macOS, Windows, musl) it does nothing.

The peak can be somewhat higher: glibc serves torch's aligned blocks from fresh heap until
freed ones coalesce (SqueezeNet at batch 64 added 0.73-0.84 GB instead of 0.64 GB, still
under OpenCV's 0.89 GB). In a training loop, whose allocations vary more, the heap grew
with the number of steps, so only extraction (``ModelHandler.extract``) uses it.

Set ``REPURPOSE_REUSE_MEMORY=0`` to turn it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults (malloc/malloc.c)
_DEFAULT_MMAP_MAX = 65536
_KEEP = 2**31 - 1  # the largest value mallopt takes: no trimming while active

_lock = threading.Lock()
_depth = 0


@cache
def _glibc() -> Any:
    """The C library when it is glibc with ``mallopt`` and ``malloc_trim``, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def _enabled() -> bool:
    return os.environ.get("REPURPOSE_REUSE_MEMORY", "1").strip().lower() not in (
        "0", "false", "no", "off")


@contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Within the block, memory freed by one batch is reused by the next.

    Yields whether it took effect (glibc and not turned off). Nested and concurrent uses
    share one setting; the last to leave restores glibc's defaults and trims.
    """
    global _depth
    libc = _glibc() if _enabled() else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
