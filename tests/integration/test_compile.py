"""Compiled models served: a tiny BERT compiled to int8 ONNX and to bf16 TorchScript, then asked
through the real app over V2 with lengths that the shape buckets pad."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modelfleet.compile.pipeline import CompileRequest, compile_model
from modelfleet.compile.targets import Precision
from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.unit.compile.tiny_bert import SEQ_LENS, quiet_hf, tiny_bert

IDS = [[5, 17, 33, 2, 9, 60], [7, 8, 9, 0, 0, 0]]


def _body(ids: list[list[int]]) -> dict[str, Any]:
    mask = [[1 if t else 0 for t in row] for row in ids]
    flat = lambda rows: [v for row in rows for v in row]  # noqa: E731
    shape = [len(ids), len(ids[0])]
    return {
        "inputs": [
            {"name": "input_ids", "shape": shape, "datatype": "INT64", "data": flat(ids)},
            {"name": "attention_mask", "shape": shape, "datatype": "INT64", "data": flat(mask)},
        ]
    }


def _reference(folder: Path) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), attn_implementation="eager"
    ).eval()
    ids = torch.tensor(IDS)
    with torch.inference_mode():
        logits: np.ndarray = model(input_ids=ids, attention_mask=(ids > 0).long()).logits.numpy()
    return logits


@pytest.mark.parametrize(
    ("precision", "name", "tolerance"),
    [(Precision.INT8, "clf-int8", 0.05), (Precision.BF16, "clf-bf16", 0.05)],
)
async def test_compiled_models_serve_like_their_source(
    tmp_path: Path, precision: Precision, name: str, tolerance: float
) -> None:
    quiet_hf()
    source = tiny_bert(tmp_path / "src")
    repo = tmp_path / "repo"
    compile_model(
        CompileRequest(
            source=source,
            out=repo / name,
            precision=precision,
            seq_lens=SEQ_LENS,
            batch_sizes=(1,),
            profile_s=0.0,
        ),
        log=lambda _line: None,
    )
    settings = ServerSettings(repository=repo, startup_load=StartupLoad.ALL, intra_op_threads=1)
    async with client_for(settings) as client:
        meta = (await client.get(f"/v2/models/{name}")).json()
        assert meta["platform"] == (
            "onnxruntime_onnx" if precision == Precision.INT8 else "pytorch_libtorch"
        )  # Triton's name
        r = await client.post(f"/v2/models/{name}/infer", json=_body(IDS))
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        assert out["name"] == "logits" and out["shape"] == [2, 3]
        got = np.array(out["data"], np.float32).reshape(2, 3)
        assert np.abs(got - _reference(source)).max() < tolerance
        too_long = await client.post(f"/v2/models/{name}/infer", json=_body([[1] * 40]))
        assert too_long.status_code == 400


async def test_imported_fine_tunes_serve_as_adapters_like_their_checkpoints(tmp_path: Path) -> None:
    from modelfleet.compile.importer import import_checkpoints
    from tests.unit.compile.tiny_bert import head_only_copy

    quiet_hf()
    first = tiny_bert(tmp_path / "src" / "t1")
    second = head_only_copy(first, tmp_path / "src" / "t2", seed=3)
    repo = tmp_path / "repo"
    report = import_checkpoints([first, second], repo, log=lambda _line: None)
    assert report.adapters == ["t1", "t2"]
    settings = ServerSettings(repository=repo, startup_load=StartupLoad.NONE, intra_op_threads=1)
    async with client_for(settings) as client:
        for name, folder in (("t1", first), ("t2", second)):
            r = await client.post(f"/v2/models/{name}/infer", json=_body(IDS))
            assert r.status_code == 200, r.text
            got = np.array(r.json()["outputs"][0]["data"], np.float32).reshape(2, 3)
            assert np.abs(got - _reference(folder)).max() < 1e-4
