"""The scheduling settings of one configuration written into a model's config.yaml.

Only the tuned keys change (dynamic_batching, instances, onnxruntime.intra_op_threads, and
shape_buckets when the configuration names them); the result
is validated with the repository's own parser before anything is written. The file is re-emitted:
lists of scalars stay in flow style and the opening comment lines are kept, other comments are lost
(the diff shown first makes that visible).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelfleet.errors import ModelLoadError
from modelfleet.repository.config import CONFIG_FILENAME, parse_config
from modelfleet.tune.errors import TuneInputError
from modelfleet.tune.schema import Settings


class _Dumper(yaml.SafeDumper):
    """Lists of scalars stay on one line (`shape: [-1, 2]`), as people write them."""


def _sequence(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(item, (int, float, str, bool)) or item is None for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _sequence)


def _header(text: str) -> str:
    """The comment lines the file opens with, kept above the re-emitted mapping."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            break
        lines.append(line)
    return "".join(lines)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TuneInputError(f"{where} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _varies_on_axis_1(tensor: object) -> bool:
    shape = tensor.get("shape") if isinstance(tensor, dict) else None
    return isinstance(shape, list) and len(shape) >= 2 and shape[1] == -1


def shape_buckets(config: dict[str, Any], sizes: tuple[int, ...], model: str) -> dict[str, Any]:
    """A shape_buckets block padding axis 1 (after the batch) of every declared input that varies
    there with 0 (token ids and attention masks), cutting outputs that vary there back."""
    inputs, outputs = config.get("inputs") or [], config.get("outputs") or []
    pad = {t["name"]: 0 for t in inputs if _varies_on_axis_1(t)}
    if not pad:
        raise TuneInputError(
            f"shape buckets pad axis 1 of the inputs: declare {model}'s inputs in {CONFIG_FILENAME} "
            "with -1 there (e.g. shape: [-1, -1])"
        )
    block: dict[str, Any] = {"axis": 1, "sizes": list(sizes), "pad": pad}
    cut = {t["name"]: 1 for t in outputs if _varies_on_axis_1(t)}
    if cut:
        block["outputs"] = cut
    return block


def with_settings(text: str, settings: Settings, model: str) -> str:
    """config.yaml text with `settings` applied; TuneInputError if the result is not a valid config."""
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:
        raise TuneInputError(f"{model}/{CONFIG_FILENAME} is not valid YAML") from None
    config = _mapping(raw, f"{model}/{CONFIG_FILENAME}")
    batching = _mapping(config.get("dynamic_batching"), "dynamic_batching")
    if settings.max_batch_size > 1:
        batching["enabled"] = True
        batching["max_batch_size"] = settings.max_batch_size
        batching["max_queue_delay_us"] = settings.max_queue_delay_us
        preferred = [s for s in batching.get("preferred_batch_sizes") or [] if s <= settings.max_batch_size]
        if preferred:
            batching["preferred_batch_sizes"] = preferred
        else:
            batching.pop("preferred_batch_sizes", None)
    else:
        batching = {"enabled": False}
    config["dynamic_batching"] = batching
    config["instances"] = settings.instances
    if settings.intra_op_threads is not None:
        ort = _mapping(config.get("onnxruntime"), "onnxruntime")
        ort["intra_op_threads"] = settings.intra_op_threads
        config["onnxruntime"] = ort
    if settings.shape_buckets == ():
        config.pop("shape_buckets", None)
    elif settings.shape_buckets is not None:
        config["shape_buckets"] = shape_buckets(config, settings.shape_buckets, model)
    new = _header(text) + yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    try:
        parse_config(new, model)
    except ModelLoadError as exc:
        raise TuneInputError(f"the settings {settings.name} make an invalid config: {exc}") from None
    return new


@dataclass(frozen=True, slots=True)
class Change:
    path: Path
    old: str
    new: str

    @property
    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.old.splitlines(keepends=True),
                self.new.splitlines(keepends=True),
                f"{self.path} (now)",
                f"{self.path} (tuned)",
            )
        )


def planned(model_dir: Path, settings: Settings) -> Change:
    """What writing `settings` into MODEL/config.yaml would change (nothing written yet)."""
    path = model_dir / CONFIG_FILENAME
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    return Change(path, old, with_settings(old, settings, model_dir.name))


def write(change: Change) -> None:
    """Replace the file in one rename, so that a server polling the repository never reads half of it."""
    if change.new == change.old:
        return
    tmp = change.path.with_name(change.path.name + ".tmp")
    tmp.write_text(change.new, encoding="utf-8")
    tmp.replace(change.path)
