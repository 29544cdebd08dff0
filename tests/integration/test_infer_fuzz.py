"""Random infer bodies through the real app (issue 16, item 8): every body, header and encoding
answers 2xx or 4xx with the JSON error envelope, never 5xx, and the server stays healthy after.

The app is the one `modelfleet serve` runs (build_app: data plane, engine, ONNX Runtime) behind the
in-process ASGI client; hypothesis (profile in tests/conftest.py: derandomized, no deadline) drives
one app for all of a test's examples, in one event loop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.protocol.datatypes import serialize_bytes
from tests.integration.conftest import client_for
from tests.unit.protocol.test_codec_properties import json_scalars, json_values, rarely, rest_body

ROW = [i / 16 for i in range(16)]
PATHS = [
    "/v2/models/identity/infer",
    "/v2/models/identity/versions/1/infer",
    "/v2/models/strings/infer",  # BYTES [batch, 2]
    "/v2/models/half/infer",  # FP16 [batch, 4], binary only
    "/v2/models/add_sub/infer",  # two INT64 inputs
]


@contextmanager
def running_app(repo: Path) -> Iterator[tuple[asyncio.Runner, httpx.AsyncClient]]:
    """The real app with every model loaded, and the event loop its client runs in."""
    settings = ServerSettings(
        repository=repo, intra_op_threads=1, load_concurrency=2, startup_load=StartupLoad.ALL, grpc_port=0
    )
    with asyncio.Runner() as runner:
        ctx = client_for(settings)
        client = runner.run(ctx.__aenter__())
        try:
            yield runner, client
        finally:
            runner.run(ctx.__aexit__(None, None, None))


@st.composite
def identity_body(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """Bodies near a right one for identity (input FP32 [-1, 16], max_batch_size 8): batch sizes
    0-10, JSON or binary, sometimes a wrong datatype, width, name or value."""
    batch = draw(st.integers(0, 10))
    width = 15 if rarely(draw) else 16
    datatype = draw(st.sampled_from(["FP64", "FP16", "INT32", "BYTES", "BOOL"])) if rarely(draw) else "FP32"
    tensor: dict[str, Any] = {
        "name": "inputs" if rarely(draw) else "input",
        "datatype": datatype,
        "shape": [batch, width],
    }
    values = draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=batch * width, max_size=batch * width))
    top: dict[str, Any] = {}
    if rarely(draw):
        top["parameters"] = {"binary_data_output": draw(st.one_of(st.booleans(), json_scalars))}
    if rarely(draw):
        top["outputs"] = [
            {"name": draw(st.sampled_from(["output", "nope"])), "parameters": {"binary_data": True}}
        ]
    if draw(st.booleans()):
        tensor["data"] = values if not rarely(draw) else draw(json_values)
        return json.dumps({"inputs": [tensor], **top}).encode(), None
    with np.errstate(over="ignore"):  # FP16 holds up to 65504: larger values become inf, a valid input
        raw = (
            serialize_bytes(np.array([str(v).encode() for v in values] + [b""], dtype=object)[:-1])
            if datatype == "BYTES"
            else np.array(values, dtype=np.float32)
            .astype(datatype.lower().replace("fp", "float"), copy=False)
            .tobytes()
            if datatype.startswith("FP")
            else np.array(values, dtype=np.float32).tobytes()
        )
    if rarely(draw):
        raw = raw[: draw(st.integers(0, len(raw)))]
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = json.dumps({"inputs": [tensor], **top}).encode()
    return header + raw, len(header)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str | bytes]]:
    """A path, a body, and headers: Inference-Header-Content-Length right, absent or wrong;
    sometimes gzip/deflate (or a false Content-Encoding), a Content-Type of any kind."""
    path = PATHS[0] if not draw(st.booleans()) else draw(st.sampled_from(PATHS))
    body, json_length = draw(
        st.one_of(identity_body(), rest_body(), st.binary(max_size=200).map(lambda b: (b, None)))
    )
    headers: dict[str, str | bytes] = {}
    if json_length is not None:
        headers["inference-header-content-length"] = str(json_length)
    if rarely(draw):
        headers["inference-header-content-length"] = draw(
            st.sampled_from(["", "-1", " 7", "abc", "1e3", str(2**64), "\u0663".encode(), b"\xff"])
        )
    if rarely(draw):
        encoding = draw(st.sampled_from(["gzip", "deflate", "br", "gzip, gzip", "identity"]))
        headers["content-encoding"] = encoding
        if encoding == "gzip":
            body = gzip.compress(body)
        elif encoding == "deflate":
            body = zlib.compress(body)[: draw(st.sampled_from([None, -1]))]  # sometimes truncated
    if rarely(draw):
        headers["content-type"] = draw(
            st.sampled_from(["application/json", "text/plain", "application/octet-stream"])
        )
    return path, body, headers


def test_random_infer_requests_answer_2xx_or_4xx_and_the_server_stays_healthy(repo: Path) -> None:
    statuses: Counter[int] = Counter()
    with running_app(repo) as (runner, client):

        @given(requests())
        @settings(max_examples=150)
        def answers_without_5xx(case: tuple[str, bytes, dict[str, str | bytes]]) -> None:
            path, body, headers = case
            response = runner.run(client.post(path, content=body, headers=headers))
            statuses[response.status_code] += 1
            assert response.status_code < 500, (response.status_code, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/json"
                doc = response.json()
                assert list(doc) == ["error"] and isinstance(doc["error"], str)

        answers_without_5xx()

        assert runner.run(client.get("/v2/health/live")).status_code == 200
        assert runner.run(client.get("/v2/health/ready")).status_code == 200
        good = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": ROW}]}
        answer = runner.run(client.post(PATHS[0], json=good))
        assert answer.status_code == 200
        assert answer.json()["outputs"][0]["data"] == ROW
    # the examples reached the models, not only the parser
    assert statuses[200] >= 10, statuses
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) >= 50, statuses


def test_a_non_ascii_digit_in_inference_header_content_length_is_400(repo: Path) -> None:
    with running_app(repo) as (runner, client):
        response = runner.run(
            client.post(PATHS[0], content=b"{}", headers={"inference-header-content-length": b"\xb3"})
        )
        assert response.status_code == 400, response.text
