"""The units and small values settings are written in: memory sizes, worker counts, NeuronCore
groups, model names, and the object-store endpoint check (no cloud metadata or link-local address)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A model's name: letters, digits and `._-`, at most 128 characters (repository/names.py checks with it)."""
_PAGE = os.sysconf("SC_PAGE_SIZE")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}  # fmt: skip
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*")


def is_model_name(name: str) -> bool:
    return bool(MODEL_NAME.fullmatch(name)) and ".." not in name


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


def parse_workers(value: str) -> int | None:
    """The setting: a count, or None for auto (ValueError otherwise)."""
    text = value.strip().lower()
    if text == "auto":
        return None
    if not text.isdigit() or int(text) > 256:
        raise ValueError(f"workers must be 'auto' or a number from 0 to 256, got {value!r}")
    return int(text)


_MAX_CORE_ID = 1023


def parse_core_groups(value: str) -> list[tuple[int, ...]]:
    """NeuronCore groups from the setting: '0-1,2-3' -> [(0, 1), (2, 3)], '4' -> [(4,)], '' -> [].
    Each group is one core or a contiguous range (what NEURON_RT_VISIBLE_CORES takes); a core may
    be in one group only (the Neuron runtime gives a core to one process). ValueError otherwise."""
    if not value.strip():
        return []
    groups: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for part in (p.strip() for p in value.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"neuron core group '{part[:32]}' is not a core (4) or a range of cores (0-1)")
        first, last = int(low), int(high) if dash else int(low)
        if first > last or last > _MAX_CORE_ID:
            raise ValueError(f"neuron core group '{part}' must run upwards, within cores 0-{_MAX_CORE_ID}")
        group = tuple(range(first, last + 1))
        twice = sorted(seen.intersection(group))
        if twice:
            raise ValueError(f"neuron core {twice[0]} is in two groups; a core belongs to one worker")
        seen.update(group)
        groups.append(group)
    return groups


_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_METADATA_ADDRESSES = (ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200"))
_METADATA_HOSTS = frozenset({"metadata.google.internal"})


def check_endpoint_url(url: str) -> str:
    """The URL itself, or ValueError: http(s) only, no credentials, no link-local / metadata host.

    Only the URL's text is looked at here (no lookup, no connection); names are checked again
    after resolution when a session starts.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the endpoint URL must start with http:// or https://, got '{parts.scheme}:'")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the endpoint URL may not hold credentials; use the standard AWS environment")
    if parts.query or parts.fragment or not parts.hostname:
        raise ValueError("the endpoint URL needs a host and may not hold a query or fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError("the endpoint URL has an invalid port") from None
    if is_forbidden_host(parts.hostname):
        raise ValueError(
            f"the endpoint host '{parts.hostname}' is a link-local or cloud metadata address; refused"
        )
    return url


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host name spells, also in the legacy forms inet_aton reads (2852039166, 0xa9.…)."""
    host = host.strip("[]").split("%", 1)[0]  # the zone of fe80::1%eth0 does not change the address
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA_ADDRESSES:
        return True
    return any(address.version == net.version and address in net for net in _LINK_LOCAL)


def is_forbidden_host(host: str) -> bool:
    if host.rstrip(".").lower() in _METADATA_HOSTS:
        return True
    address = literal_address(host)
    return address is not None and is_forbidden_address(address)
