from pathlib import Path

import pytest
from pydantic import ValidationError

from modelfleet.config import ServerSettings, StartupLoad


def test_defaults_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFLEET_HTTP_PORT", "9001")
    monkeypatch.setenv("MODELFLEET_STARTUP_LOAD", "none")
    settings = ServerSettings(repository=tmp_path)
    assert settings.host == "127.0.0.1"
    assert settings.http_port == 9001
    assert settings.startup_load == StartupLoad.NONE
    assert settings.max_body_bytes == 64 * 1024 * 1024
    assert ServerSettings(repository=tmp_path, http_port=1234).http_port == 1234


def test_bad_values_are_refused_with_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="http_port"):
        ServerSettings(repository=tmp_path, http_port=70000)
    with pytest.raises(ValidationError, match="is not a folder"):
        ServerSettings(repository=tmp_path / "missing")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        ServerSettings(repository=tmp_path, colour="blue")  # type: ignore[call-arg]


def test_neuron_core_groups_are_single_cores_or_ranges_each_core_once() -> None:
    from modelfleet.config import parse_core_groups

    assert parse_core_groups("") == []
    assert parse_core_groups("0-1, 2-3") == [(0, 1), (2, 3)]
    assert parse_core_groups("4,6") == [(4,), (6,)]
    for bad, message in (
        ("0-1,1-2", "neuron core 1 is in two groups"),
        ("a", "'a' is not a core"),
        ("0-", "'0-' is not a core"),
        ("0,,1", "'' is not a core"),
        ("3-1", "'3-1' must run upwards"),
        ("2000", "within cores 0-1023"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_core_groups(bad)


def test_neuron_core_groups_need_a_worker_each(tmp_path: Path) -> None:
    settings = ServerSettings(repository=tmp_path, workers="auto", neuron_core_groups="0-1,2-3")
    assert settings.neuron_groups() == [(0, 1), (2, 3)]
    assert ServerSettings(repository=tmp_path, workers="3", neuron_core_groups="0-1,2-3").workers == "3"
    for workers in ("0", "1"):
        with pytest.raises(ValidationError, match=f"gives 2 groups but workers is {workers}"):
            ServerSettings(repository=tmp_path, workers=workers, neuron_core_groups="0-1,2-3")
    with pytest.raises(ValidationError, match="neuron core 1 is in two groups"):
        ServerSettings(repository=tmp_path, workers="auto", neuron_core_groups="0-1,1")


def test_the_server_gives_its_neuron_workers_their_core_groups(tmp_path: Path) -> None:
    from modelfleet.server.app import worker_specs

    settings = ServerSettings(repository=tmp_path, workers="3", neuron_core_groups="0-1,2-3")
    specs = worker_specs(settings)
    assert [s.neuron_cores for s in specs] == [(0, 1), (2, 3), ()]
    assert [s.env.get("NEURON_RT_VISIBLE_CORES") for s in specs] == ["0-1", "2-3", None]
    assert worker_specs(ServerSettings(repository=tmp_path)) == []  # no workers: models in-process


def test_the_gil_switch_interval_is_set_only_when_asked(tmp_path: Path) -> None:
    import sys

    from modelfleet.server.app import apply_process_settings

    before = sys.getswitchinterval()
    try:
        apply_process_settings(ServerSettings(repository=tmp_path))
        assert sys.getswitchinterval() == before  # 0: Python's own
        apply_process_settings(ServerSettings(repository=tmp_path, gil_switch_interval_us=500))
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    finally:
        sys.setswitchinterval(before)
    with pytest.raises(ValidationError, match="gil_switch_interval_us"):
        ServerSettings(repository=tmp_path, gil_switch_interval_us=-1)
