"""The instance catalogue: what each instance type offers (vCPUs, memory, accelerators) and costs.

A dated, sourced YAML ships in this package (`catalog.yaml`); `--catalog FILE` replaces it.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelfleet.planner.errors import PlanInputError
from modelfleet.planner.yamlfile import load_yaml_model, parse_yaml_model


class Accelerators(BaseModel):
    """The accelerator devices of one instance type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    """Device kind, e.g. `inferentia`, `inferentia2`, `nvidia-t4`."""
    count: int = Field(ge=1)
    """Devices per instance."""
    memory_bytes: int = Field(gt=0)
    """Memory of one device."""
    cores: int = Field(default=1, ge=1)
    """Cores per device (NeuronCores on Inferentia; 1 for a GPU)."""

    @property
    def total_cores(self) -> int:
        return self.count * self.cores

    @property
    def total_memory_bytes(self) -> int:
        return self.count * self.memory_bytes

    @property
    def memory_per_core_bytes(self) -> int:
        return self.memory_bytes // self.cores


class InstanceType(BaseModel):
    """One instance type and its on-demand price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    """The provider's name, e.g. `inf1.2xlarge`."""
    family: str = Field(min_length=1)
    """The family a fleet spec may pin models to, e.g. `inf1`."""
    vcpus: int = Field(ge=1)
    memory_bytes: int = Field(gt=0)
    """Host memory."""
    accelerators: Accelerators | None = None
    usd_per_hour: float | None = Field(default=None, gt=0)
    """On-demand price; a type without one cannot be planned with."""
    price_date: dt.date | None = None
    """The day the price was read (None: not known)."""
    price_source: str | None = None
    """Where the price was read."""
    price_verified: bool = False
    """Whether the price was checked against its source; plans name the unverified types they use."""

    @property
    def cores(self) -> int:
        """Cores a per-core capacity multiplies: accelerator cores where the type has them, else vCPUs."""
        return self.accelerators.total_cores if self.accelerators is not None else self.vcpus


class Catalog(BaseModel):
    """A list of instance types with prices (USD per hour)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    region: str | None = None
    currency: str = "USD"
    types: list[InstanceType] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Catalog:
        seen: set[str] = set()
        for item in self.types:
            if item.name in seen:
                raise ValueError(f"instance type '{item.name}' is listed twice")
            seen.add(item.name)
        return self

    def by_name(self) -> dict[str, InstanceType]:
        return {item.name: item for item in self.types}

    def families(self) -> set[str]:
        return {item.family for item in self.types}


def load_catalog(path: Path | None = None) -> Catalog:
    """The catalogue at `path`, or the one shipped with modelfleet."""
    if path is not None:
        return load_yaml_model(path, Catalog, "catalogue")
    text = resources.files("modelfleet.planner").joinpath("catalog.yaml").read_text(encoding="utf-8")
    try:
        return parse_yaml_model(text, "modelfleet/planner/catalog.yaml", Catalog, "catalogue")
    except PlanInputError as exc:  # pragma: no cover - the shipped file is tested
        raise RuntimeError(str(exc)) from None
