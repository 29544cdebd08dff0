"""The machine the server or a measurement runs on, as reports name it (one reading for every tool)."""

from __future__ import annotations

import platform


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo), else what the platform says, else None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
