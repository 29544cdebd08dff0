"""Neuron core groups with real worker processes and a stand-in torch_neuronx (no Neuron SDK here):
each Neuron worker is spawned seeing only its group in NEURON_RT_VISIBLE_CORES, Neuron models load
only there (the stand-in records the cores of the process that imported it), other models only on
the CPU worker, and a model needing more cores than any group holds is refused with the reason."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from modelfleet.config import ServerSettings
from modelfleet.errors import ModelLoadError
from modelfleet.repository.config import TensorConfig
from modelfleet.repository.folder import FolderRepository
from modelfleet.workers.fleet import Fleet
from modelfleet.workers.plan import plan
from tests.models import identity, write_config

STAND_IN = """
import json, os

with open(os.environ["NEURON_STAND_IN_LOG"], "a") as log:
    log.write(json.dumps({"pid": os.getpid(), "cores": os.environ.get("NEURON_RT_VISIBLE_CORES")}) + "\\n")
"""


def neuron_model(root: Path, name: str, cores: int = 1) -> None:
    """A TorchScript model.pt marked as traced for Neuron (as `compile --target neuron` stores it)."""
    from modelfleet.runtimes.torchscript import SIGNATURE_FILE, signature_json

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    path = root / name / "1" / "model.pt"
    path.parent.mkdir(parents=True)
    signature = signature_json(
        [TensorConfig(name="x", datatype="FP32", shape=[-1, 2])],
        [TensorConfig(name="y", datatype="FP32", shape=[-1, 2])],
        target="neuron",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Double()), str(path), _extra_files={SIGNATURE_FILE: signature})
    write_config(root / name, {"backend": "torchscript", "device": "neuron", "neuron_cores": cores})


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    package = tmp_path / "stand-in" / "torch_neuronx"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(STAND_IN)
    log = tmp_path / "imports.jsonl"
    monkeypatch.setenv("NEURON_STAND_IN_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(package.parent), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("NEURON_RT_VISIBLE_CORES", raising=False)
    return log


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in raw if entry)


def imports(log: Path) -> list[dict[str, object]]:
    """The stand-in's record: one line per process that imported torch_neuronx."""
    return [json.loads(line) for line in log.read_text().splitlines()]


async def test_neuron_models_load_only_on_workers_holding_their_core_group(
    tmp_path: Path, stand_in: Path
) -> None:
    repo = tmp_path / "repo"
    identity(repo / "plain" / "1" / "model.onnx")
    neuron_model(repo, "bert-a")
    neuron_model(repo, "bert-b")
    neuron_model(repo, "wide", cores=4)
    settings = ServerSettings(
        repository=str(repo), workers="3", neuron_core_groups="0-1,2-3", intra_op_threads=1,
        startup_load="none", memory_budget="1GiB",
    )  # fmt: skip
    specs = plan(3, settings.memory_budget_bytes(), gpus=0, neuron_groups=settings.neuron_groups())
    fleet = Fleet(FolderRepository(repo), settings, specs)
    try:
        await fleet.start()
        seen = [environ(slot.pid or 0).get("NEURON_RT_VISIBLE_CORES") for slot in fleet.slots]
        assert seen == ["0-1", "2-3", None]  # the CPU worker sees no group
        assert [slot.spec.device.split(":")[0] for slot in fleet.slots] == ["neuron", "neuron", "cpu"]
        for name in ("bert-a", "bert-b", "plain"):
            await fleet.load(name)
        assert [fleet.router.placements(n) for n in ("bert-a", "bert-b", "plain")] == [[0], [1], [2]]
        assert sorted((i["pid"], i["cores"]) for i in imports(stand_in)) == [
            (fleet.slots[0].pid, "0-1"), (fleet.slots[1].pid, "2-3"),
        ]  # fmt: skip
        with pytest.raises(
            ModelLoadError, match="needs a worker holding 4 NeuronCore.*largest core group is 2"
        ):
            await fleet.load("wide")
        assert fleet.router.placements("wide") == []
        assert "largest core group is 2" in (fleet.record("wide").status.reason or "")  # type: ignore[union-attr]
    finally:
        await fleet.close()
