"""Memory readings for the budget: the machine's (or container's) memory, this process's RSS."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path

from modelfleet.config import machine_memory_bytes as machine_memory_bytes  # re-exported
from modelfleet.config import parse_budget as parse_budget  # re-exported

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class Rss:
    total: int  # resident bytes
    anonymous: int  # resident bytes not backed by files (heap, arenas, session copies of weights)


def process_rss() -> Rss:
    """This process's resident memory (Linux /proc; zeros where it is not available)."""
    try:
        fields = Path("/proc/self/statm").read_text().split()
    except OSError:
        return Rss(0, 0)
    resident, shared = int(fields[1]) * _PAGE, int(fields[2]) * _PAGE
    return Rss(resident, resident - shared)


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


_libc = None
with contextlib.suppress(OSError, TypeError):
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_free_memory() -> None:
    """Ask glibc to return freed heap pages to the system after a model is unloaded."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def tune_allocator() -> bool:
    """Give every allocation of 1 MiB or more (weights, arenas) its own mapping (glibc only).

    glibc otherwise raises its mmap threshold as large blocks are freed and serves later ones from
    the heap, where freed weights are reused by the next model instead of returning to the system:
    resident memory then creeps up under load/evict churn, and the footprint a load measures
    understates what the model holds. Returns whether the setting took effect.
    """
    mallopt = getattr(_libc, "mallopt", None)
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1)
