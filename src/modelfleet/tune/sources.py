"""Where `recommend`'s options come from: a measured profile.json beside a model version, or a
declared profiles YAML; prices from the declared types first, then the planner's catalogue.

Problems that make a profile doubtful (another machine, another model version) are warnings; the
CLI turns them into errors with --strict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.machine import version_digest
from modelfleet.tune.recommend import Basis, CurvePoint, Option
from modelfleet.tune.schema import (
    PROFILE_FILENAME,
    PROFILE_SCHEMA_VERSION,
    DeclaredProfiles,
    Machine,
    Measurement,
    Profile,
)

if TYPE_CHECKING:
    from modelfleet.planner.catalog import Catalog

M = TypeVar("M", bound=BaseModel)
_VERSION = re.compile(r"^\d+$")


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "document"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def _read(path: Path, kind: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TuneInputError(f"{kind} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TuneInputError(f"cannot read {kind} {path}: {exc}") from None


def _validate(raw: object, path: Path, model: type[M], kind: str) -> M:
    if not isinstance(raw, dict):
        raise TuneInputError(f"{kind} {path} must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise TuneInputError(f"{kind} {path} is malformed: {_validation_message(exc)}") from None


def load_profile(path: Path) -> Profile:
    text = _read(path, "profile")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TuneInputError(f"profile {path} is not valid JSON (line {exc.lineno})") from None
    if isinstance(raw, dict) and raw.get("schema_version") not in (None, 1, PROFILE_SCHEMA_VERSION):
        raise TuneInputError(
            f"profile {path} has schema_version {raw.get('schema_version')!r}; this modelfleet reads "
            f"1 to {PROFILE_SCHEMA_VERSION}"
        )
    return _validate(raw, path, Profile, "profile")


def load_declared(path: Path) -> DeclaredProfiles:
    text = _read(path, "profiles file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TuneInputError(f"profiles file {path} is not valid YAML{where}") from None
    return _validate(raw, path, DeclaredProfiles, "profiles file")


# ---------------------------------------------------------------------------- finding a profile


def versions(model_dir: Path) -> list[str]:
    """The version folders of a model, highest first."""
    return sorted((p.name for p in model_dir.iterdir() if p.is_dir() and _VERSION.match(p.name)), key=int)[
        ::-1
    ]


def model_folder(repo: Path, model: str) -> Path:
    """REPO/MODEL, or TuneInputError naming the models there are."""
    if not repo.is_dir():
        raise TuneInputError(f"repository {repo} is not a folder")
    folder = repo / model
    if "/" in model or model in (".", "..") or not folder.is_dir() or not versions(folder):
        known = sorted(p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
        shown = ", ".join(known[:20]) + (", …" if len(known) > 20 else "")
        raise TuneInputError(f"unknown model '{model}' in {repo} (models there: {shown or 'none'})")
    return folder


@dataclass
class Found:
    path: Path
    profile: Profile
    warnings: list[str] = field(default_factory=list)


def find_profile(repo: Path, model: str, version: str | None, here: Machine) -> Found:
    """The profile of the served version (the highest, or `version`), or an older version's with a
    warning; warnings too for another machine or changed model files."""
    folder = model_folder(repo, model)
    available = versions(folder)
    served = version or available[0]
    if served not in available:
        raise TuneInputError(f"model '{model}' has no version {served} (versions: {', '.join(available)})")
    candidates = [served] + [v for v in available if int(v) < int(served)]
    path = next(
        (folder / v / PROFILE_FILENAME for v in candidates if (folder / v / PROFILE_FILENAME).is_file()), None
    )
    if path is None:
        raise TuneInputError(
            f"model '{model}' version {served} has no {PROFILE_FILENAME}: measure it with "
            f"`modelfleet profile {repo} {model}`, or give declared figures with --profiles FILE"
        )
    found = Found(path, load_profile(path))
    profile = found.profile
    if profile.model != model:
        found.warnings.append(f"{path} is a profile of model '{profile.model}', not '{model}'")
    if path.parent.name != served or profile.version != served:
        found.warnings.append(
            f"the profile was measured on version {profile.version}, but version {served} is served"
        )
    elif profile.model_digest != version_digest(path.parent):
        found.warnings.append(
            f"the files of {model}/{served} changed since the profile was measured ({profile.created_at})"
        )
    if not profile.machine.same_hardware(here):
        found.warnings.append(
            f"the profile was measured on another machine ({profile.machine.line}); this one: {here.line}"
        )
    if profile.interrupted:
        found.warnings.append("the profile was interrupted (Ctrl-C): some configurations were not measured")
    return found


# ---------------------------------------------------------------------------- prices and options


def prices(catalog: Catalog, declared: list[DeclaredProfiles]) -> dict[str, float]:
    """USD per hour by instance type: the catalogue's, overridden by the profiles' own types."""
    table = {t.name: t.usd_per_hour for t in catalog.types if t.usd_per_hour is not None}
    for doc in declared:
        for item in doc.instance_types:
            table[item.name] = item.usd_per_hour
    return table


def _price(table: dict[str, float], instance_type: str, where: str) -> float:
    try:
        return table[instance_type]
    except KeyError:
        raise TuneInputError(
            f"instance type '{instance_type}' ({where}) is in neither the catalogue nor the file's "
            "instance_types: add it with its price (name, usd_per_hour)"
        ) from None


def declared_options(
    doc: DeclaredProfiles, path: Path, table: dict[str, float], seq_len: int | None
) -> list[Option]:
    rows = [r for r in doc.rows if seq_len is None or r.seq_len in (None, seq_len)]
    return [
        Option(
            config=row.config,
            instance_type=row.instance_type,
            capacity_per_s=row.capacity_per_s,
            latency_ms=row.latency_ms,
            usd_per_hour=_price(table, row.instance_type, str(path)),
            settings=row.settings,
            seq_len=row.seq_len,
            batch_size=row.batch_size,
            source=str(path),
            model=doc.model,
        )
        for row in rows
    ]


def default_instance_type(catalog: Catalog, machine: Machine) -> str | None:
    """The cheapest catalogue type without accelerators and with as many vCPUs as the profile's machine."""
    fits = [
        t
        for t in catalog.types
        if t.accelerators is None and t.vcpus == machine.nproc and t.usd_per_hour is not None
    ]
    return min(fits, key=lambda t: (t.usd_per_hour, t.name)).name if fits else None


def measured_options(
    found: Found,
    instance_type: str,
    usd_per_hour: float,
    slo_p90_ms: float | None,
    seq_len: int | None,
    label_model: bool = False,
    margin: float | None = None,
) -> list[Option]:
    """One option per measured configuration: capacity within `margin` x `slo_p90_ms` (the
    profile's own margin and SLO when None: `Slo.bound_ms`), at one sequence length (`seq_len`, or
    the longest measured: the conservative one); `label_model` names configurations `model:config`
    (several models, e.g. precision variants)."""
    profile = found.profile
    lengths = sorted({m.seq_len for m in profile.measurements})
    if not lengths:
        raise TuneInputError(f"{found.path} holds no measurement")
    chosen = lengths[-1] if seq_len is None else seq_len
    if chosen not in lengths:
        raise TuneInputError(
            f"{found.path} has no measurement at sequence length {chosen} (measured: {lengths})"
        )
    objective = slo_p90_ms if slo_p90_ms is not None else profile.slo.p90_ms
    share = margin if margin is not None else profile.slo.margin
    if not 0 < share <= 1:
        raise TuneInputError(f"--slo-margin must be in (0, 1], got {share:g}")
    slo = objective * share
    options = []
    for m in profile.measurements:
        if m.seq_len != chosen:
            continue
        best = m.capacity(slo, profile.slo.max_error_rate)
        if best is None or best.p90_ms is None:
            continue
        curve = tuple(
            CurvePoint(s.throughput_per_s, s.p90_ms)
            for s in sorted(m.steps, key=lambda s: s.throughput_per_s)
            if s.within(slo, profile.slo.max_error_rate) and s.p90_ms is not None
        )
        options.append(
            Option(
                config=f"{profile.model}:{m.config}" if label_model else m.config,
                instance_type=instance_type,
                capacity_per_s=best.throughput_per_s,
                latency_ms=best.p90_ms,
                usd_per_hour=usd_per_hour,
                settings=m.settings,
                seq_len=m.seq_len,
                curve=curve,
                concurrency=best.concurrency,
                source=str(found.path),
                model=profile.model,
                basis=basis(m, best.concurrency),
            )
        )
    if not options:
        measured = [m for m in profile.measurements if m.seq_len == chosen and m.steps]
        fastest = min((s.p90_ms for m in measured for s in m.steps if s.p90_ms is not None), default=None)
        reach = f"; the lowest P90 measured is {fastest:g} ms" if fastest is not None else ""
        bound = f"{slo:g} ms" if share == 1 else f"{slo:g} ms ({share:g} x {objective:g})"
        raise TuneInputError(
            f"no configuration in {found.path} stays within P90 {bound} at sequence length {chosen}{reach}"
        )
    return options


def basis(measurement: Measurement, concurrency: int) -> Basis:
    """What the step at `concurrency` stands on: its final step, a confirmation, or one window."""
    if concurrency in measurement.final:
        return "final"
    return "confirmed" if concurrency in measurement.confirmed else "window"
