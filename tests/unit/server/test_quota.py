"""Per-tenant quotas: the token bucket and the in-flight count, on an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from modelfleet.errors import Overloaded
from modelfleet.server.auth import AuthConfigError, Guard, key_digest, load_tenants
from modelfleet.server.quota import Quota, QuotaConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_in_flight_are_bounded_and_given_back() -> None:
    quota = Quota("acme", QuotaConfig(max_concurrent=2))
    quota.enter()
    quota.enter()
    with pytest.raises(Overloaded, match="tenant 'acme' has 2 requests in flight, its quota is 2") as refused:
        quota.enter()
    assert refused.value.retry_after_s == 1
    quota.leave()
    quota.enter()  # a place was given back
    assert (quota.in_flight, quota.refused) == (2, 1)


def test_the_rate_allows_a_burst_then_refills_with_time() -> None:
    clock = Clock()
    quota = Quota("acme", QuotaConfig(rate_per_s=2.0, burst=3), clock)
    for _ in range(3):
        quota.enter()
        quota.leave()
    with pytest.raises(Overloaded, match="over its quota of 2 requests/s") as refused:
        quota.enter()
    assert refused.value.retry_after_s == 1  # half a second to the next token, rounded up
    clock.now += 0.5
    quota.enter()  # one token back
    with pytest.raises(Overloaded):
        quota.enter()
    clock.now += 100
    for _ in range(3):  # never more than the burst, however long the pause
        quota.enter()
    with pytest.raises(Overloaded):
        quota.enter()


def test_a_slow_rate_asks_for_a_longer_wait() -> None:
    quota = Quota("acme", QuotaConfig(rate_per_s=0.1, burst=1), Clock())
    quota.enter()
    with pytest.raises(Overloaded) as refused:
        quota.enter()
    assert refused.value.retry_after_s == 10


def write(tmp_path: Path, quota: object) -> Path:
    path = tmp_path / "keys.yaml"
    entry = {"keys": [key_digest("acme-key-0123456789")], "models": ["acme-*"], "quota": quota}
    path.write_text(
        yaml.safe_dump(
            {"tenants": {"acme": entry, "beta": {"keys": [key_digest("b" * 20)], "models": ["b"]}}}
        )
    )
    return path


def test_the_keys_file_gives_each_tenant_its_quota(tmp_path: Path) -> None:
    tenants, quotas = load_tenants(write(tmp_path, {"rate_per_s": 50, "burst": 100, "max_concurrent": 8}))
    assert set(tenants) == {"acme", "beta"}
    assert quotas == {"acme": QuotaConfig(50, 100, 8)}
    guard = Guard(tenants, quotas=quotas)
    acme = guard.identify(b"acme-key-0123456789", None)
    beta = guard.identify(b"b" * 20, None)
    assert acme is not None and acme.quota is not None and acme.quota.tenant == "acme"
    assert beta is not None and beta.quota is None


@pytest.mark.parametrize(
    ("quota", "message"),
    [
        ({"rate": 5}, "'quota' takes rate_per_s, burst and max_concurrent"),
        ({}, "'quota' takes rate_per_s, burst and max_concurrent"),
        ({"rate_per_s": 0}, "quota.rate_per_s must be a positive number, got 0"),
        ({"max_concurrent": 2.5}, "quota.max_concurrent must be a positive integer, got 2.5"),
        ({"max_concurrent": True}, "quota.max_concurrent must be a positive integer, got True"),
        ({"burst": 4}, "quota.burst needs quota.rate_per_s"),
        ("fast", "'quota' takes rate_per_s"),
    ],
)
def test_bad_quotas_name_the_tenant_and_field(tmp_path: Path, quota: object, message: str) -> None:
    with pytest.raises(AuthConfigError, match=f"tenant 'acme': {message}"):
        load_tenants(write(tmp_path, quota))


def releaser(released: list[str], name: str) -> Callable[[], bool]:
    """A held connection's resume: records that it was let go."""

    def resume() -> bool:
        released.append(name)
        return True

    return resume


async def test_held_connections_are_let_go_one_per_request_that_ends() -> None:
    quota = Quota("acme", QuotaConfig(max_concurrent=1))
    quota.enter()
    released: list[str] = []
    for name in ("first", "second"):
        with pytest.raises(Overloaded):
            quota.enter()
        quota.hold(releaser(released, name))
    assert (quota.held, released) == (2, [])
    quota.leave()
    assert released == ["first"]  # oldest first, one per request that ends
    quota.enter()
    quota.leave()
    assert (quota.held, released) == (0, ["first", "second"])


async def test_held_connections_are_let_go_one_per_token_due() -> None:
    quota = Quota("acme", QuotaConfig(rate_per_s=200.0, burst=1))
    quota.enter()
    with pytest.raises(Overloaded):
        quota.enter()
    done = asyncio.Event()
    released: list[int] = []

    def resume(n: int) -> bool:
        released.append(n)
        if len(released) == 3:
            done.set()
        return True

    for n in range(3):
        quota.hold(lambda n=n: resume(n))
    await asyncio.wait_for(done.wait(), 5)  # a token every 5 ms: each lets one connection go
    assert released == [0, 1, 2] and quota.held == 0


async def test_connections_no_longer_held_are_skipped_and_the_held_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import modelfleet.server.quota as module

    monkeypatch.setattr(module, "MAX_HELD", 2)
    quota = Quota("acme", QuotaConfig(max_concurrent=1))
    quota.enter()
    released: list[str] = []
    quota.hold(lambda: False)  # its client went away meanwhile
    quota.hold(releaser(released, "live"))
    quota.leave()
    assert released == ["live"] and quota.held == 0  # the gone one was skipped
    for name in ("a", "b", "c"):
        quota.hold(releaser(released, name))
    assert released == ["live", "a"] and quota.held == 2  # the oldest went at once
