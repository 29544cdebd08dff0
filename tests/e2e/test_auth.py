"""Keys through the official client against `modelfleet serve --auth-keys-file`: tritonclient's
`headers=` carries them; refusals come back as exceptions with the message; no key in the log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from modelfleet.server.auth import key_digest
from tests.e2e.conftest import ServerProcess

KEY = "e2e-tenant-key-0123456789"
ADMIN = "e2e-admin-key-0123456789"


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = tmp_path_factory.mktemp("auth") / "keys.json"
    keys.write_text(json.dumps({"tenants": {"t": {"keys": [key_digest(KEY)], "models": ["identity"]}}}))
    proc = ServerProcess(
        repo, "--intra-op-threads", "1", "--auth-keys-file", str(keys), env={"MODELFLEET_ADMIN_KEY": ADMIN}
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url)
    yield client
    client.close()


def test_tritonclient_with_and_without_keys(
    server: ServerProcess, client: httpclient.InferenceServerClient
) -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    tensor = httpclient.InferInput("input", [1, 16], "FP32")
    tensor.set_data_from_numpy(x)
    tenant = {"Authorization": f"Bearer {KEY}"}
    np.testing.assert_array_equal(client.infer("identity", [tensor], headers=tenant).as_numpy("output"), x)
    with pytest.raises(InferenceServerException, match="missing API key"):
        client.infer("identity", [tensor])
    with pytest.raises(InferenceServerException, match="model 'auto' not found"):
        client.get_model_metadata("auto", headers=tenant)
    with pytest.raises(InferenceServerException, match="inference keys cannot control"):
        client.unload_model("identity", headers=tenant)
    client.load_model("auto", headers={"Authorization": f"Bearer {ADMIN}"})
    assert client.is_model_ready("auto", headers={"X-Api-Key": ADMIN})
    np.testing.assert_array_equal(client.infer("identity", [tensor], headers=tenant).as_numpy("output"), x)
    log = server.output()
    assert "authentication on: 1 tenant(s)" in log
    for secret in (KEY, ADMIN, key_digest(KEY), key_digest(ADMIN)):
        assert secret not in log
