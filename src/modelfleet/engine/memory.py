"""Memory readings for the budget: the machine's (or container's) memory, this process's RSS.

Model footprints are measured as the change in *anonymous* resident memory across a load: weight
blobs are memory-mapped files (their pages are shared and reclaimable) and are accounted for by
their size instead, once, however many models use them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


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


def machine_memory_bytes() -> int:
    """Physical memory, or the cgroup (container) limit when that is lower."""
    physical = _PAGE * os.sysconf("SC_PHYS_PAGES")
    limits = [physical]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text != "max":
                limits.append(int(text))
    return min(limits)


def parse_budget(value: str | int | float, machine_bytes: int | None = None) -> int:
    """Bytes from '12GiB', '800MB', 1234567 or a fraction of the machine's memory ('0.6', 0.6)."""
    if isinstance(value, int):
        return value
    if isinstance(value, float) or (isinstance(value, str) and "." in value and value.strip()[-1].isdigit()):
        fraction = float(value)
        if not 0 < fraction <= 1:
            raise ValueError(f"a memory fraction must lie in (0, 1], got {value}")
        return int(fraction * (machine_bytes if machine_bytes is not None else machine_memory_bytes()))
    match = _SIZE.fullmatch(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"cannot read '{value}' as a memory size (e.g. 8GiB, 500MB, 0.6 of the machine)")
    return int(float(match.group(1)) * _UNITS[unit])


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
