"""Memory that is shared really is shared, measured on this process (RSS) through the real server:
models whose weights are the same blob hold one copy of it, and adapters over one base hold one
base. The first model of each kind shows what a copy costs here; the next N - 1 must add far less
than one copy between them (N - 1 copies is what a regression would add)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.engine.memory import process_rss
from tests.integration.conftest import client_for
from tests.models import adapter, shared_matmul, write_config

N = 4
IN, OUT = 2048, 4096  # a 32 MiB float32 weight
WEIGHT_BYTES = IN * OUT * 4


def settings(root: Path) -> ServerSettings:
    return ServerSettings(
        repository=root, startup_load=StartupLoad.NONE, intra_op_threads=1, memory_budget="4GiB"
    )


def matmul_base(root: Path, name: str, weight: np.ndarray) -> None:
    """input [batch, IN] -> output [batch, OUT] = input @ weight, the weight inside the model file
    (so that each session holding it has a private copy)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", IN])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", OUT])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = root / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    write_config(root / name, {"dynamic_batching": {"enabled": False}})


async def infer(client: httpx.AsyncClient, model: str, name: str, x: np.ndarray) -> np.ndarray:
    doc = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = await client.post(f"/v2/models/{model}/infer", json=doc)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


async def test_models_sharing_a_blob_hold_one_copy_of_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((IN, OUT)).astype(np.float32)
    biases = [rng.standard_normal(OUT).astype(np.float32) for _ in range(N)]
    for i, bias in enumerate(biases):
        shared_matmul(tmp_path, f"s{i}", weight, bias)
    x = rng.standard_normal((1, IN)).astype(np.float32)
    async with client_for(settings(tmp_path)) as client:
        before = process_rss().total
        first = await infer(client, "s0", "x", x)  # loads it and reads every page of the weight
        one = process_rss().total
        outputs = [await infer(client, f"s{i}", "x", x) for i in range(1, N)]
        after = process_rss().total
    for out, bias in zip((first, *outputs), biases, strict=True):
        np.testing.assert_allclose(out, x @ weight + bias, rtol=1e-3, atol=1e-3)
    first_cost, rest = one - before, after - one
    report = f"first model {mib(first_cost)}, the {N - 1} others {mib(rest)}, a copy {mib(WEIGHT_BYTES)}"
    assert first_cost > WEIGHT_BYTES // 2, report  # the measure sees the weight
    assert rest < WEIGHT_BYTES // 2, report  # N - 1 copies would be 96 MiB


async def test_adapters_over_one_base_hold_one_base(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((IN, OUT)) / 64).astype(np.float32)
    matmul_base(tmp_path, "base", weight)
    heads = [(rng.standard_normal((2, OUT)), rng.standard_normal(2)) for _ in range(N)]
    for i, (w, b) in enumerate(heads):
        adapter(tmp_path, f"t{i}", "base", w, b)
    x = rng.standard_normal((1, IN)).astype(np.float32)
    async with client_for(settings(tmp_path)) as client:
        before = process_rss().total
        outputs = [await infer(client, "t0", "input", x)]  # loads the base, then the head
        one = process_rss().total
        outputs += [await infer(client, f"t{i}", "input", x) for i in range(1, N)]
        after = process_rss().total
    for out, (w, b) in zip(outputs, heads, strict=True):
        np.testing.assert_allclose(out, (x @ weight) @ w.T.astype(np.float32) + b, rtol=1e-3, atol=1e-3)
    first_cost, rest = one - before, after - one
    report = f"base and first head {mib(first_cost)}, the {N - 1} other heads {mib(rest)}"
    assert first_cost > WEIGHT_BYTES // 2, report  # the measure sees the base
    assert rest < WEIGHT_BYTES // 2, report  # N - 1 more bases would be 96 MiB or more
