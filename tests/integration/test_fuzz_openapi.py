"""schemathesis fuzzing of every operation in the OpenAPI document (GET /v2/openapi.json) against
the real app, in process (issue 16, item 8): no answer is a 5xx, every answer's status, media type,
headers and body conform to the document.

The app is build_app's, with SageMaker's routes on, over a small repository (identity, strings)
whose models all load; schemathesis runs its lifespan (models load as under `modelfleet serve`)
on its own event loop thread. Requests come from a loopback address, so model control (load,
unload) is fuzzed too rather than answered 403. Examples per operation are few and the seed fixed,
so a run is bounded and the same on every machine.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.server.openapi import openapi_document
from tests.integration.conftest import client_for
from tests.models import identity, write_config

SendCase = Callable[[Case], httpx.Response]
# Per operation and generation mode (positive, negative), past the coverage phase's. To search
# further by hand: FUZZ_SEED=<any int> FUZZ_EXAMPLES=100 pytest tests/integration/test_fuzz_openapi.py
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
SEED = int(os.environ.get("FUZZ_SEED", "20261205"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CONFIG = {
    "seed": SEED,
    "generation": {"max-examples": EXAMPLES, "deterministic": True, "mode": "all", "database": "none"},
    # one operation at a time, as the tests are parametrized: no stateful links
    "phases": {"stateful": {"enabled": False}},
}


def fuzz_repo(root: Path) -> Path:
    identity(root / "identity" / "1" / "model.onnx")
    write_config(
        root / "identity",
        {
            "max_batch_size": 8,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 16]}],
        },
    )
    identity(root / "strings" / "1" / "model.onnx", "BYTES", ("batch", 2))
    return root


REQUEST_KEYS = ("method", "url", "headers", "params", "cookies", "data", "json", "files", "auth")


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SendCase]:
    """Send a schemathesis case to the app, in the app's own event loop; the answer comes back
    as httpx.Response. The in-process client is a loopback one, so model control is allowed."""
    settings = ServerSettings(
        repository=fuzz_repo(tmp_path_factory.mktemp("fuzz-repo")),
        intra_op_threads=1,
        load_concurrency=2,
        startup_load=StartupLoad.ALL,
        sagemaker=True,
        sagemaker_default_model="identity",
        grpc_port=0,
    )
    with asyncio.Runner() as runner:
        ctx = client_for(settings)
        client = runner.run(ctx.__aenter__())

        def send(case: Case) -> httpx.Response:
            # the request exactly as schemathesis would send it (its requests-based serializer)
            kwargs = case.as_transport_kwargs(base_url=str(client.base_url))
            prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in REQUEST_KEYS}).prepare()
            body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
            assert prepared.method is not None and prepared.url is not None
            return runner.run(
                client.request(prepared.method, prepared.url, headers=dict(prepared.headers), content=body)
            )

        try:
            yield send
        finally:
            runner.run(ctx.__aexit__(None, None, None))


# The document the server serves (tests/integration/test_openapi.py checks that they are the same).
# Loaded eagerly and sent through our own client: schemathesis' lazy loader (from_fixture) does not
# run under pytest 9, and its ASGI transport ends the app's lifespan after every test.
schema = schemathesis.openapi.from_dict(openapi_document(), config=SchemathesisConfig.from_dict(CONFIG))


@schema.parametrize()
def test_every_operation_answers_without_5xx_and_as_documented(case: Case, fuzzed_app: SendCase) -> None:
    case.validate_response(fuzzed_app(case), checks=CHECKS)
