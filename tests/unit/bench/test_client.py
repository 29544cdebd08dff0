"""The pure parts of the client: pre-built requests and the pre-sampled plan."""

from collections import Counter

import pytest

from modelfleet.bench import client
from modelfleet.bench.client import build_plan, build_requests
from modelfleet.bench.encode import Body
from modelfleet.bench.messages import Workload
from modelfleet.bench.spec import Popularity, Target


def workload(models: list[str], popularity: Popularity = Popularity.UNIFORM) -> Workload:
    bodies = [Body(b'{"inputs":[1]}', "application/json"), Body(b"HDRraw", "application/octet-stream", 3)]
    return Workload(
        target=Target.parse("http://h:8000/p"),
        models=models,
        bodies=bodies,
        body_sets=[[0], [1]],
        model_body_set=[i % 2 for i in range(len(models))],
        popularity=popularity,
        zipf_s=1.1,
    )


def test_requests_are_complete_http_messages() -> None:
    requests = build_requests(workload(["a", "b"]))
    (json_request,), (binary_request,) = requests
    assert json_request == (
        b"POST /p/v2/models/a/infer HTTP/1.1\r\nHost: h:8000\r\nContent-Type: application/json\r\n"
        b'Content-Length: 14\r\n\r\n{"inputs":[1]}',
    )
    assert binary_request[0].startswith(b"POST /p/v2/models/b/infer HTTP/1.1\r\n")
    assert b"Inference-Header-Content-Length: 3\r\nContent-Length: 6\r\n\r\nHDRraw" in binary_request[0]


def test_large_workloads_keep_shared_bodies_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "CONCAT_LIMIT_BYTES", 10)
    (request,), _ = build_requests(workload(["a", "b"]))
    assert len(request) == 2 and request[1] == b'{"inputs":[1]}'


def test_plan_follows_popularity() -> None:
    models = [f"m{i}" for i in range(4)]
    plan = build_plan(workload(models, Popularity.ZIPF), seed=3)
    assert len(plan) == client.PLAN_MIN
    counts = Counter(m for m, _ in plan)
    assert counts[0] > counts[1] > counts[2] > counts[3] > 0
    requests = build_requests(workload(models))
    assert all(request in requests[m] for m, request in plan[:100])


def test_plan_for_one_model() -> None:
    plan = build_plan(workload(["only"]), seed=0)
    assert {m for m, _ in plan} == {0}
