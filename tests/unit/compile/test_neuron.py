"""--target neuron with a stand-in torch_neuronx (the SDK is not installed here): the compile asks it
for a trace at the one fixed shape, with --auto-cast for bf16. Nothing here runs on a Neuron device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modelfleet.compile.pipeline import CompileRequest, compile_model
from modelfleet.compile.targets import Precision, Target
from modelfleet.errors import ModelLoadError
from modelfleet.repository.folder import FolderRepository
from modelfleet.runtimes.base import LoadSpec, load_runtime
from tests.unit.compile.tiny_bert import quiet_hf, tiny_bert

STAND_IN = """
import json, os, torch

def trace(module, args, compiler_args=()):
    with open(os.environ["NEURON_STAND_IN_LOG"], "a") as log:
        log.write(json.dumps({"shapes": [list(a.shape) for a in args], "compiler_args": list(compiler_args)}) + "\\n")
    return torch.jit.trace(module, args, check_trace=False)
"""


def test_neuron_traces_through_torch_neuronx_with_auto_cast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet_hf()
    package = tmp_path / "stand-in" / "torch_neuronx"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path / "stand-in"))
    monkeypatch.setenv("NEURON_STAND_IN_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delitem(sys.modules, "torch_neuronx", raising=False)
    try:
        request = CompileRequest(
            source=tiny_bert(tmp_path / "src"),
            out=tmp_path / "repo" / "m",
            target=Target.NEURON,
            precision=Precision.BF16,
            seq_lens=(16,),
            profile_s=0.0,
        )
        report = compile_model(request, log=lambda _line: None)
        served = FolderRepository(tmp_path / "repo").fetch("m")
        spec = LoadSpec("m", 1, served.model_file(1), served.config, 1)
        assert load_runtime(spec).outputs[0].name == "logits"  # torch_neuronx imported first
        monkeypatch.setattr(sys, "path", [p for p in sys.path if "stand-in" not in p])
        sys.modules.pop("torch_neuronx", None)
        with pytest.raises(ModelLoadError, match="compiled for Neuron: this server has no torch_neuronx"):
            load_runtime(spec)
    finally:
        sys.modules.pop("torch_neuronx", None)
    (call,) = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert call["shapes"] == [[8, 16], [8, 16]]
    assert call["compiler_args"] == ["--auto-cast", "all", "--auto-cast-type", "bf16"]
    assert report.format == "torchscript" and (tmp_path / "repo" / "m" / "1" / "model.pt").is_file()
    assert any("operators placed on Neuron: not recorded" in note for note in report.notes)
