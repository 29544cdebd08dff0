from pathlib import Path
from typing import Any

import orjson
import pytest

from modelfleet.bench.spec import (
    BenchSpec,
    ModelSelection,
    Phase,
    Protocol,
    Target,
    Thresholds,
    UserPhase,
    parse_shapes,
    split_names,
    users_at,
)


def test_target_parse() -> None:
    t = Target.parse("http://example:9000/base/")
    assert (t.host, t.port, t.host_header, t.base_path) == ("example", 9000, "example:9000", "/base")
    assert t.url == "http://example:9000/base"
    assert Target.parse("http://h").port == 80


@pytest.mark.parametrize("url", ["https://h", "h:8000", "http://", "http://h:port"])
def test_target_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="--url"):
        Target.parse(url)


def test_model_pattern_expands() -> None:
    sel = ModelSelection(pattern="tenant-{i:04d}", count=3, start=9)
    assert sel.expand() == ("tenant-0009", "tenant-0010", "tenant-0011")
    assert ModelSelection(names=("a", "b")).expand() == ("a", "b")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "name at least one model"),
        ({"names": ("a",), "pattern": "t-{i}", "count": 1}, "not both"),
        ({"pattern": "t-{i}"}, "--model-count"),
        ({"pattern": "tenant", "count": 2}, "exactly one"),
        ({"pattern": "t-{i}-{j}", "count": 2}, "exactly one"),
        ({"pattern": "t-{i:q}", "count": 2}, "cannot format"),
    ],
)
def test_model_selection_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelSelection(**kwargs)  # type: ignore[arg-type]


def test_split_names() -> None:
    assert split_names(["a,b", "c", " a ,", ""]) == ("a", "b", "c")


def test_parse_shapes() -> None:
    assert parse_shapes(["input_ids=1,128", "x=4"]) == {"input_ids": (1, 128), "x": (4,)}
    for bad in ["x", "=1", "x=", "x=1,a", "x=0"]:
        with pytest.raises(ValueError, match="NAME=D1,D2"):
            parse_shapes([bad])


def spec(**kwargs: object) -> BenchSpec:
    return BenchSpec(Target.parse("http://h:1"), ModelSelection(names=("m",)), **kwargs)  # type: ignore[arg-type]


def test_spec_checks() -> None:
    with pytest.raises(ValueError, match="cannot exceed --concurrency"):
        spec(concurrency=2, processes=3)
    with pytest.raises(ValueError, match="--duration"):
        spec(duration_s=0)
    with pytest.raises(ValueError, match="--shape does not apply"):
        spec(input_file=Path("x.json"), shapes={"x": (1,)})


def test_same_signature_defaults_to_pattern() -> None:
    assert not spec().shares_signature
    assert spec(same_signature=True).shares_signature
    by_pattern = BenchSpec(Target.parse("http://h:1"), ModelSelection(pattern="t{i}", count=2))
    assert by_pattern.shares_signature


@pytest.mark.parametrize(
    ("text", "phase"),
    [
        ("10s@100", Phase(10, 100)),
        ("500ms@2000", Phase(0.5, 2000)),
        ("2m@50", Phase(120, 50)),
        ("10@100", Phase(10, 100)),
        (" 1.5s @ 0.5/s ", Phase(1.5, 0.5)),
        (".5s@12.5", Phase(0.5, 12.5)),
    ],
)
def test_phase_parse(text: str, phase: Phase) -> None:
    assert Phase.parse(text) == phase


@pytest.mark.parametrize("text", ["10s", "@100", "10x@1", "s@1", "10s@", "10s@1e3", "-1s@10", "10s@-1"])
def test_phase_parse_rejects_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="DURATION@RATE"):
        Phase.parse(text)


@pytest.mark.parametrize(("text", "message"), [("0s@10", "positive duration"), ("10s@0", "positive rate")])
def test_phase_parse_rejects_zero(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Phase.parse(text)


def test_open_loop_spec() -> None:
    closed = spec()
    assert not closed.open_loop and closed.schedule == ()
    by_rate = spec(rate_per_s=250.0, duration_s=4)
    assert by_rate.open_loop and by_rate.schedule == (Phase(4, 250),)
    stepped = spec(phases=(Phase(10, 100), Phase(5, 400)))
    assert stepped.open_loop and stepped.duration_s == 15 and stepped.schedule == stepped.phases
    # the open loop's processes share --max-connections, not --concurrency
    assert spec(rate_per_s=10.0, concurrency=1, processes=2).processes == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_s": 10.0, "phases": (Phase(1, 1),)}, "either --rate or --phase"),
        ({"rate_per_s": 0.0}, "--rate must be positive"),
        ({"rate_per_s": float("inf")}, "--rate must be positive"),
        ({"rate_per_s": 10.0, "max_connections": 0}, "--max-connections must be at least 1"),
        ({"rate_per_s": 10.0, "max_connections": 2, "processes": 3}, "cannot exceed --max-connections"),
    ],
)
def test_open_loop_spec_checks(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**kwargs)


@pytest.mark.parametrize(
    ("text", "phase"),
    [
        ("2:2:25m", UserPhase(2, 2.0, 1500.0)),
        ("4:0:30s", UserPhase(4, 0.0, 30.0)),
        ("1:0.5:90", UserPhase(1, 0.5, 90.0)),
    ],
)
def test_user_phase_parse(text: str, phase: UserPhase) -> None:
    assert UserPhase.parse(text) == phase


@pytest.mark.parametrize("text", ["2:2", "0:1:10s", "2:-1:10s", "a:b:c", "2:2:0s"])
def test_user_phase_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--users|user phase"):
        UserPhase.parse(text)


def test_users_over_the_phases() -> None:
    phases = (UserPhase(2, 2.0, 120.0), UserPhase(1, 0.0, 10.0))  # seed 003's ramp, then one user
    assert [users_at(phases, t) for t in (0, 29.9, 30, 59.9, 60, 119.9, 120, 129, 500)] == [
        2,
        2,
        3,
        3,
        4,
        5,
        1,
        1,
        1,
    ]
    spec = BenchSpec(target=Target.parse("http://h"), models=ModelSelection(("m",)), user_phases=phases)
    assert spec.duration_s == 130 and spec.concurrency == 6  # the most users at once
    assert spec.users == phases
    fixed = BenchSpec(
        target=Target.parse("http://h"), models=ModelSelection(("m",)), concurrency=3, duration_s=4
    )
    assert fixed.users == (UserPhase(3, 0.0, 4.0),)


def test_grpc_targets() -> None:
    t = Target.parse("127.0.0.1:9001", Protocol.GRPC)
    assert (t.host, t.port, t.protocol, t.url) == ("127.0.0.1", 9001, Protocol.GRPC, "grpc://127.0.0.1:9001")
    assert Target.parse("grpc://h", Protocol.GRPC).url == "grpc://h:8001"
    with pytest.raises(ValueError, match="grpc://"):
        Target.parse("https://h", Protocol.GRPC)
    with pytest.raises(ValueError, match="http://"):
        Target.parse("grpc://h", Protocol.SAGEMAKER)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": Protocol.GRPC, "rate_per_s": 10.0}, "HTTP only"),
        ({"thresholds": Thresholds(p90_ms=10), "rate_per_s": 10.0}, "closed loop"),
        ({"thresholds": Thresholds(p90_ms=10), "processes": 2}, "one client process"),
        ({"user_phases": (UserPhase(2, 0, 1),), "processes": 2}, "one client process"),
        ({"user_phases": (UserPhase(2, 0, 1),), "rate_per_s": 5.0}, "closed-loop ramp"),
        ({"usd_per_hour": -1.0}, "--price-per-hour"),
    ],
)
def test_modes_that_do_not_combine(kwargs: dict[str, Any], message: str) -> None:
    protocol = kwargs.pop("protocol", Protocol.V2)
    with pytest.raises(ValueError, match=message):
        BenchSpec(target=Target.parse("http://h:1", protocol), models=ModelSelection(("m",)), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p90_ms": 0}, "--stop-p90-ms"),
        ({"error_rate": 1.5}, "--stop-error-rate"),
        ({"max_requests": 0}, "--max-requests"),
    ],
)
def test_threshold_checks(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(**kwargs)


def test_mixed_lengths_make_bodies_of_several_lengths() -> None:
    from modelfleet.bench.synth import parse_signature
    from modelfleet.bench.workload import _bodies

    doc = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [-1, -1]}]}
    spec = BenchSpec(
        target=Target.parse("http://h"), models=ModelSelection(("m",)), seq_len=4, seq_len_max=12, bodies=32
    )
    bodies, _ = _bodies(spec, [parse_signature(doc, "m")])
    shapes = {orjson.loads(b.content)["inputs"][0]["shape"][1] for b in bodies}
    assert len(shapes) > 3 and min(shapes) >= 4 and max(shapes) <= 12
    with pytest.raises(ValueError, match="--seq-len-max"):
        BenchSpec(target=Target.parse("http://h"), models=ModelSelection(("m",)), seq_len=8, seq_len_max=4)
