"""Per-tenant quotas through the real fronts (HTTP V2, SageMaker, gRPC): a tenant past its quota
gets 429 / RESOURCE_EXHAUSTED with Retry-After at once; the other tenant is served meanwhile."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from modelfleet.server.auth import key_digest
from tests.e2e.conftest import free_port
from tests.hold import HeldRuns
from tests.integration.test_auth import INFER, KEY_A, KEY_B, bearer
from tests.integration.test_grpc import identity_request, serving
from tests.integration.test_grpc_auth import A, rpc
from tests.waiting import until

TENANTS = {
    "acme": {"keys": [key_digest(KEY_A)], "models": ["identity"], "quota": {"max_concurrent": 1}},
    "beta": {"keys": [key_digest(KEY_B)], "models": ["auto"], "quota": {"rate_per_s": 0.001, "burst": 2}},
}
AUTO = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def quota_settings(repo: Path, tmp_path: Path) -> ServerSettings:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"tenants": TENANTS}))
    return ServerSettings(
        repository=repo,
        intra_op_threads=1,
        startup_load=StartupLoad.ALL,
        auth_keys_file=keys,
        grpc_port=free_port(),
        sagemaker=True,
    )


async def test_a_tenant_over_its_concurrency_quota_is_refused_on_every_front(
    repo: Path, tmp_path: Path
) -> None:
    async with serving(quota_settings(repo, tmp_path)) as s:
        http = s.http
        model = s.plane.manager.resident("identity")
        assert model is not None
        with HeldRuns(model.runtime) as held:
            first = asyncio.create_task(
                http.post("/v2/models/identity/infer", json=INFER, headers=bearer(KEY_A))
            )
            await held.started()
            r = await http.post("/v2/models/identity/infer", json=INFER, headers=bearer(KEY_A))
            assert r.status_code == 429, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json() == {"error": "tenant 'acme' has 1 requests in flight, its quota is 1"}
            r = await http.post(
                "/invocations", json={"instances": [INFER["inputs"][0]["data"]]},
                headers={**bearer(KEY_A), "X-Amzn-SageMaker-Target-Model": "identity"},
            )  # fmt: skip
            assert r.status_code == 429, r.text
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await rpc(s, "ModelInfer", A, **identity_request())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "its quota is 1" in (caught.value.details() or "")
            other = await http.post("/v2/models/auto/infer", json=AUTO, headers=bearer(KEY_B))
            assert other.status_code == 200, other.text  # the other tenant is served meanwhile
            held.release()
            assert (await first).status_code == 200
        r = await http.post("/v2/models/identity/infer", json=INFER, headers=bearer(KEY_A))
        assert r.status_code == 200  # its place was given back


async def test_a_refused_grpc_connection_reads_its_next_call_when_the_quota_frees(
    repo: Path, tmp_path: Path
) -> None:
    async with serving(quota_settings(repo, tmp_path)) as s:
        model = s.plane.manager.resident("identity")
        assert model is not None
        with HeldRuns(model.runtime) as held:
            first = asyncio.create_task(
                s.http.post("/v2/models/identity/infer", json=INFER, headers=bearer(KEY_A))
            )
            await held.started()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await rpc(s, "ModelInfer", A, **identity_request())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            second = asyncio.create_task(rpc(s, "ModelInfer", A, **identity_request()))
            await until(lambda: held.calls == 1 and not second.done(), "the next call is sent, not read")
            held.release()
            assert (await first).status_code == 200
            answer = await second  # read once the tenant's call left its quota: served, not refused
            assert answer.model_name == "identity"


async def test_a_tenant_over_its_rate_waits_as_retry_after_says(repo: Path, tmp_path: Path) -> None:
    async with serving(quota_settings(repo, tmp_path)) as s:
        for _ in range(2):  # the burst
            r = await s.http.post("/v2/models/auto/infer", json=AUTO, headers=bearer(KEY_B))
            assert r.status_code == 200, r.text
        r = await s.http.post("/v2/models/auto/infer", json=AUTO, headers=bearer(KEY_B))
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 900  # a token each 1,000 s
        assert r.json() == {"error": "tenant 'beta' is over its quota of 0.001 requests/s"}
        r = await s.http.post("/v2/models/identity/infer", json=INFER, headers=bearer(KEY_A))
        assert r.status_code == 200  # acme's quota is its own
