from pathlib import Path

from typer.testing import CliRunner

from modelfleet.cli import COMMANDS, build_app


def test_every_registered_command_has_help() -> None:
    runner = CliRunner()
    top = runner.invoke(build_app(), ["--help"])
    assert top.exit_code == 0
    for name in COMMANDS:
        assert name in top.output
        result = runner.invoke(build_app(), [name, "--help"])
        assert result.exit_code == 0, result.output


def test_serve_refuses_bad_settings_with_the_field(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["serve", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "repository" in result.output
    assert "is not a folder" in result.output
    result = CliRunner().invoke(build_app(), ["serve", str(tmp_path), "--port", "99999"])
    assert result.exit_code == 2
    assert "http_port" in result.output
    result = CliRunner().invoke(build_app(), ["serve", str(tmp_path), "--log-format", "xml"])
    assert result.exit_code == 2
    assert "log_format" in result.output
    result = CliRunner().invoke(build_app(), ["serve", str(tmp_path), "--metrics-top-k", "-1"])
    assert result.exit_code == 2
    assert "metrics_top_k" in result.output


def test_every_setting_is_an_option_of_serve_with_its_help_and_default(tmp_path: Path) -> None:
    from modelfleet.cli.serve import ENVIRONMENT_ONLY, NESTED, RENAMED
    from modelfleet.config import ServerSettings

    result = CliRunner().invoke(build_app(), ["serve", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for name in ServerSettings.model_fields:
        if name in ("repository", *ENVIRONMENT_ONLY, *NESTED):
            continue
        flag = RENAMED.get(name, (f"--{name.replace('_', '-')}",))[0]
        assert flag in result.output, name
    assert "--s3-endpoint-url" in result.output
    assert "(default: 25.0)" in result.output  # shutdown_timeout_s, from its field
    assert "--admin-key" not in result.output  # secrets come from the environment only


def test_options_reach_the_settings(tmp_path: Path, monkeypatch: object) -> None:
    import modelfleet.server.app as app
    from modelfleet.config import ServerSettings, StartupLoad

    seen: list[ServerSettings] = []
    monkeypatch.setattr(app, "serve", seen.append)  # type: ignore[attr-defined]
    args = ["serve", str(tmp_path), "-p", "9001", "--max-json-depth", "8", "--startup-load", "all"]
    args += ["--python-models", "--s3-endpoint-url", "http://127.0.0.1:9", "--shutdown-timeout-s", "3"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    (settings,) = seen
    assert (settings.http_port, settings.max_json_depth, settings.startup_load) == (9001, 8, StartupLoad.ALL)
    assert (settings.python_models, settings.shutdown_timeout_s) == (True, 3.0)
    assert settings.s3.endpoint_url == "http://127.0.0.1:9"
    assert settings.max_body_bytes == ServerSettings.model_fields["max_body_bytes"].default  # not given
