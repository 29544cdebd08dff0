"""The Dockerfile's structure, read with dockerfile-parse (no container engine here): stages, base,
user, health check, entrypoint, and a build context that carries what the build copies."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def instructions() -> list[dict[str, str]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"), env_replace=False)
    return list(parser.structure)


def _of(instructions: list[dict[str, str]], name: str) -> list[str]:
    return [i["value"] for i in instructions if i["instruction"] == name]


def _stages(instructions: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    stages: list[list[dict[str, str]]] = []
    for instruction in instructions:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_two_stages_on_a_slim_python_3_11(instructions: list[dict[str, str]]) -> None:
    assert any(v.startswith("PYTHON_IMAGE=python:3.11-slim") for v in _of(instructions, "ARG"))
    froms = _of(instructions, "FROM")
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    runtime = _stages(instructions)[-1]
    copies = _of(runtime, "COPY")
    assert any(c.startswith("--from=build /opt/modelfleet") for c in copies)
    assert not any(i["instruction"] == "RUN" and "pip install" in i["value"] for i in runtime)


def test_torch_is_pinned_to_the_cpu_build_when_asked_for(instructions: list[dict[str, str]]) -> None:
    build = _stages(instructions)[0]
    assert "TORCH_VERSION=2.13.0" in _of(build, "ARG")
    assert "WITH_TORCH=0" in _of(build, "ARG")
    run = " ".join(_of(build, "RUN"))
    assert "--index-url https://download.pytorch.org/whl/cpu" in run
    assert '"torch==${TORCH_VERSION}"' in run


def test_runs_as_a_numeric_non_root_user(instructions: list[dict[str, str]]) -> None:
    runtime = _stages(instructions)[-1]
    users = _of(runtime, "USER")
    assert users == ["10001:10001"]  # numeric: Kubernetes' runAsNonRoot can check it
    # nothing runs as root after the switch
    after = runtime[[i["instruction"] for i in runtime].index("USER") :]
    assert not any(i["instruction"] == "RUN" for i in after)


def test_writable_paths_are_volumes_only(instructions: list[dict[str, str]]) -> None:
    volumes = json.loads(_of(instructions, "VOLUME")[0])
    assert volumes == ["/tmp", "/var/cache/modelfleet"]
    env = " ".join(_of(instructions, "ENV"))
    assert "HOME=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "MODELFLEET_S3__CACHE_DIR=/var/cache/modelfleet/s3" in env


def test_healthcheck_entrypoint_ports_and_sagemaker_labels(instructions: list[dict[str, str]]) -> None:
    (healthcheck,) = _of(instructions, "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["modelfleet-entrypoint", "healthcheck"]')
    assert _of(instructions, "ENTRYPOINT") == ['["modelfleet-entrypoint"]']
    assert set(" ".join(_of(instructions, "EXPOSE")).split()) == {"8000", "8001", "8080"}
    labels = " ".join(_of(instructions, "LABEL"))
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
    assert "com.amazonaws.sagemaker.capabilities.multi-models=true" in labels
    copy = next(c for c in _of(instructions, "COPY") if "entrypoint" in c)
    source = copy.split()[-2]
    assert (ROOT / source).is_file()


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore's rule: the last matching pattern wins; '!' re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, body) or path.startswith(body + "/"):
            ignored = not negate
    return ignored


def test_the_build_context_carries_what_the_build_copies_and_little_else(
    instructions: list[dict[str, str]],
) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source for c in _of(instructions, "COPY") if not c.startswith("--from") for source in c.split()[:-1]
    ]
    sources = [s for s in copied if not s.startswith("--")]
    assert sources
    for source in sources:
        assert not _ignored(source.rstrip("/"), patterns), source
        assert (ROOT / source).exists(), source
    for kept_out in (".venv", ".git", "tests", "benchmarks", "docs"):
        assert _ignored(kept_out, patterns), kept_out
