"""How the C allocator (glibc malloc) keeps the memory a server process freed.

argon2id allocates its 19 MiB block per verification and frees it. glibc serves a block that large with
``mmap`` and unmaps it on ``free``, but after the first such ``free`` it raises its mmap threshold to the
freed size (the "dynamic threshold"), so every later block comes from a heap arena and stays mapped; each
thread that ever verified a password can keep its own arena of that size. A fixed threshold ends the
adjustment: argon2's blocks are mapped and returned on every verification, and the process keeps only what
Python itself holds. The arenas are limited to two as well (one per core here; more arenas only keep more
freed memory around). Both are set with ``mallopt`` before the threads start; elsewhere than glibc nothing
is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 1024 * 1024
"""Blocks of 1 MiB and more are mapped and unmapped: argon2's, never the interpreter's small objects."""
ARENA_MAX = 2

log = logging.getLogger(__name__)


def return_large_blocks() -> bool:
    """Tune glibc for this process; returns whether it took (False on another C library)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    took = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
    if not took:
        log.info("mallopt refused the allocator settings; memory per worker may be higher")
    return took
