"""A scikit-learn pipeline and an XGBoost model compiled to ONNX, then served through the real app:
the V2 answers (label and probabilities, batched across requests) equal the libraries' own."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from modelfleet.compile.pipeline import CompileRequest, compile_model
from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for

FEATURES = 4


def _body(rows: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }


async def test_classic_models_serve_their_libraries_answers(tmp_path: Path) -> None:
    import xgboost
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(7)
    x = rng.normal(2.0, 3.0, size=(400, FEATURES)).astype(np.float32)
    y = (x[:, 0] - x[:, 3] > 0).astype(int) + (x[:, 1] > 4).astype(int)
    sk = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    (tmp_path / "sk.pkl").write_bytes(pickle.dumps(sk))
    xg = xgboost.XGBClassifier(n_estimators=6, max_depth=2).fit(x, y)
    xg.save_model(tmp_path / "xg.json")
    repo = tmp_path / "repo"
    for name, source, trust in (("sk", "sk.pkl", True), ("xg", "xg.json", False)):
        compile_model(
            CompileRequest(source=tmp_path / source, out=repo / name, trust_pickle=trust, profile_s=0.0),
            log=lambda _line: None,
        )
    queries = rng.normal(2.0, 3.0, size=(6, 3, FEATURES)).astype(np.float32)  # 6 requests of 3 rows
    settings = ServerSettings(repository=repo, startup_load=StartupLoad.ALL, intra_op_threads=1)
    async with client_for(settings) as client:
        for name, model in (("sk", sk), ("xg", xg)):
            answers = await asyncio.gather(
                *(client.post(f"/v2/models/{name}/infer", json=_body(rows)) for rows in queries)
            )
            for rows, r in zip(queries, answers, strict=True):
                assert r.status_code == 200, r.text
                outputs = {o["name"]: o for o in r.json()["outputs"]}
                assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [3]
                assert outputs["label"]["data"] == model.predict(rows).tolist()
                got = np.array(outputs["probabilities"]["data"], np.float32).reshape(3, 3)
                assert np.abs(got - model.predict_proba(rows)).max() < 1e-4
