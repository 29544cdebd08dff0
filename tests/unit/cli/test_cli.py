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
