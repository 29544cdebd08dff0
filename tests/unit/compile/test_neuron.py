"""--target neuron with a stand-in torch_neuronx (the SDK is not installed here): the compile asks it
for a trace at the one fixed shape, with --auto-cast for bf16, and for its operator placement
(analyze), which lands in compile.json. Nothing here runs on a Neuron device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from modelfleet.compile.neuron import placement_line, summarise
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

def analyze(func, example_inputs, compiler_workdir=None, is_hf_transformers=False):
    # the real one compiles each operator with neuronx-cc; this one calls gelu unsupported
    graph = torch.jit.trace(func, example_inputs, check_trace=False).inlined_graph
    kinds = [n.kind() for n in graph.nodes() if n.kind().startswith("aten::")]
    supported = {}
    for kind in kinds:
        if kind != "aten::gelu":
            supported[kind] = supported.get(kind, 0) + 1
    unsupported = [{"kind": k, "failureAt": "neuronx-cc", "call": "model.py(1)"} for k in kinds if k == "aten::gelu"]
    with open(os.environ["NEURON_STAND_IN_LOG"], "a") as log:
        log.write(json.dumps({"analyze": len(kinds), "is_hf_transformers": is_hf_transformers}) + "\\n")
    return {
        "support_percentage": f"{100 * (len(kinds) - len(unsupported)) / len(kinds):.2f}%",
        "supported_operators": {"aten": supported},
        "unsupported_operators": unsupported,
    }
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
        assert served.config.device == "neuron"  # placed on workers holding NeuronCores
        spec = LoadSpec("m", 1, served.model_file(1), served.config, 1)
        assert load_runtime(spec).outputs[0].name == "logits"  # torch_neuronx imported first
        elsewhere = served.config.model_copy(update={"device": "auto"})
        with pytest.raises(
            ModelLoadError, match="compiled for Neuron: its config.yaml must say device: neuron"
        ):
            load_runtime(LoadSpec("m", 1, served.model_file(1), elsewhere, 1))
        monkeypatch.setattr(sys, "path", [p for p in sys.path if "stand-in" not in p])
        sys.modules.pop("torch_neuronx", None)
        with pytest.raises(ModelLoadError, match="compiled for Neuron: this server has no torch_neuronx"):
            load_runtime(spec)
    finally:
        sys.modules.pop("torch_neuronx", None)
    analyzed, call = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert call["shapes"] == [[8, 16], [8, 16]]
    assert call["compiler_args"] == ["--auto-cast", "all", "--auto-cast-type", "bf16"]
    assert report.format == "torchscript" and (tmp_path / "repo" / "m" / "1" / "model.pt").is_file()
    placed = json.loads((tmp_path / "repo" / "m" / "1" / "compile.json").read_text())["neuron_placement"]
    assert analyzed["is_hf_transformers"] is True
    assert placed["unsupported_operators"] == ["aten::gelu"]  # one per BERT layer: 2 of them
    assert placed["supported_operators"] == analyzed["analyze"] - 2
    assert placed["fraction_on_device"] == round(placed["supported_operators"] / analyzed["analyze"], 4)


def test_placement_from_counts_and_when_it_cannot_be_had() -> None:
    answer = {
        "supported_operators": {"aten": {"aten::linear": 3, "aten::relu": 2}, "prim": {"prim::Constant": 1}},
        "unsupported_operators": [{"kind": "aten::erfinv", "failureAt": "neuronx-cc", "call": "x.py(3)"}],
    }
    found = summarise(answer)
    assert found["fraction_on_device"] == round(6 / 7, 4) and found["unsupported_operators"] == [
        "aten::erfinv"
    ]
    assert placement_line(found) == "operators placed on Neuron: 85.71%; not supported: aten::erfinv"
    assert summarise({"support_percentage": "95.64%"})["fraction_on_device"] == 0.9564
    empty = summarise({})
    assert not empty["recorded"] and placement_line(empty).startswith(
        "operators placed on Neuron: not recorded"
    )
    assert summarise(["not", "a", "dict"]) == {
        "recorded": False,
        "reason": "torch_neuronx.analyze answered a list",
    }
