"""SageMaker multi-model endpoints for real: POST /models loads the artefact at `url` from the model
root (a tmp folder laid out as /opt/ml/models/<id>/model), and every unsafe url or archive is refused
with nothing loaded and nothing left in the repository."""

from __future__ import annotations

import io
import tarfile
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelfleet.config import ServerSettings, StartupLoad
from tests.integration.conftest import client_for
from tests.models import identity, write_config

ROW = [i / 16 for i in range(16)]
TARGET = "X-Amzn-SageMaker-Target-Model"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The model root SageMaker mounts (/opt/ml/models), here a tmp folder."""
    (tmp_path / "opt" / "ml" / "models").mkdir(parents=True)
    return tmp_path / "opt" / "ml" / "models"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    identity(tmp_path / "repo" / "identity" / "1" / "model.onnx")
    return tmp_path / "repo"


@pytest.fixture
async def client(repo: Path, root: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServerSettings(
        repository=repo,
        sagemaker=True,
        sagemaker_model_root=root,
        startup_load=StartupLoad.NONE,
        intra_op_threads=1,
    )
    async with client_for(settings) as c:
        yield c


async def load(client: httpx.AsyncClient, name: str, url: str) -> httpx.Response:
    return await client.post("/models", json={"model_name": name, "url": url})


async def invoke(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post("/invocations", json={"instances": [ROW]}, headers={TARGET: name})


async def loaded(client: httpx.AsyncClient) -> list[str]:
    return [m["modelName"] for m in (await client.get("/models")).json()["models"]]


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def model_folder(folder: Path) -> Path:
    """A model folder in our layout: config.yaml and 1/model.onnx."""
    identity(folder / "1" / "model.onnx")
    write_config(folder, {"max_batch_size": 8})
    return folder


def torchscript_file(path: Path) -> Path:
    """A TorchScript doubling model with its signature inside, as `modelfleet compile` writes it."""
    import torch

    from modelfleet.repository.config import TensorConfig
    from modelfleet.runtimes.torchscript import SIGNATURE_FILE, signature_json

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    spec = [TensorConfig(name="input", datatype="FP32", shape=[-1, 16])]
    out = [TensorConfig(name="output", datatype="FP32", shape=[-1, 16])]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(Double())  # type: ignore[no-untyped-call]
        torch.jit.save(scripted, str(path), _extra_files={SIGNATURE_FILE: signature_json(spec, out)})
    return path


def archive(path: Path, entries: list[tarfile.TarInfo | tuple[str, Path]]) -> Path:
    """A .tar.gz of (name, file) pairs and hand-made entries (links, odd paths)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.isfile() else None)
            else:
                tar.add(entry[1], arcname=entry[0])
    return path


def link_entry(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def file_entry(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 4
    return info


# -- loading ---------------------------------------------------------------------------------------


async def test_a_model_folder_loads_under_its_opaque_name_and_unloads(
    client: httpx.AsyncClient, root: Path, repo: Path
) -> None:
    url = str(model_folder(root / "7f3a9c" / "model"))
    r = await load(client, "7f3a9c", url)
    assert (r.status_code, r.json()) == (200, {"modelName": "7f3a9c", "modelUrl": url})
    assert (await invoke(client, "7f3a9c")).json() == {"predictions": [ROW]}
    r = await client.post("/models/7f3a9c/invoke", json={"instances": [ROW, ROW]})
    assert r.json() == {"predictions": [ROW, ROW]}
    assert (await client.get("/models/7f3a9c")).json() == {"modelName": "7f3a9c", "modelUrl": url}
    assert await loaded(client) == ["7f3a9c"]
    config = (await client.get("/v2/models/7f3a9c/config")).json()
    assert config["max_batch_size"] == 8  # the artefact's own config.yaml
    r = await load(client, "7f3a9c", url)
    assert (r.status_code, r.json()["error"]) == (409, "model '7f3a9c' is already loaded")

    assert (await client.delete("/models/7f3a9c")).json() == {"modelName": "7f3a9c"}
    assert (await invoke(client, "7f3a9c")).status_code == 404
    assert names_in(repo) == ["identity"]  # the staged copy is gone
    assert (root / "7f3a9c" / "model" / "1" / "model.onnx").is_file()  # the artefact is untouched
    assert (await load(client, "7f3a9c", url)).status_code == 200  # SageMaker loads it again
    assert (await invoke(client, "7f3a9c")).json() == {"predictions": [ROW]}


@pytest.mark.parametrize("where", ["file", "folder"])
async def test_a_bare_onnx_file_loads(client: httpx.AsyncClient, root: Path, where: str) -> None:
    file = identity(root / "b1" / "model" / "model.onnx")
    url = str(file if where == "file" else file.parent)
    assert (await load(client, "b1", url)).status_code == 200
    assert (await invoke(client, "b1")).json() == {"predictions": [ROW]}


async def test_a_bare_torchscript_file_loads(client: httpx.AsyncClient, root: Path) -> None:
    url = str(torchscript_file(root / "ts" / "model" / "doubler.pt").parent)
    r = await load(client, "ts", url)
    assert r.status_code == 200, r.text
    assert (await invoke(client, "ts")).json() == {"predictions": [[2 * x for x in ROW]]}
    meta = (await client.get("/v2/models/ts")).json()
    assert meta["platform"] == "pytorch_libtorch"


async def test_a_tar_gz_artefact_loads_and_its_name_reaches_it_whole(
    client: httpx.AsyncClient, root: Path, tmp_path: Path
) -> None:
    folder = model_folder(tmp_path / "build" / "model")
    tgz = archive(root / "a1" / "model.tar.gz", [("model", folder)])
    assert (await load(client, "tenant-9.tar.gz", str(tgz))).status_code == 200
    # The opaque name is kept whole, not read as the archive of a model 'tenant-9'.
    assert (await invoke(client, "tenant-9.tar.gz")).json() == {"predictions": [ROW]}
    assert (await invoke(client, "tenant-9")).status_code == 404


# -- refusals -------------------------------------------------------------------------------------


async def expect_refused(
    client: httpx.AsyncClient, repo: Path, name: str, url: str, status: int, message: str
) -> None:
    r = await load(client, name, url)
    assert r.status_code == status, r.text
    assert message in r.json()["error"], r.json()["error"]
    assert name not in await loaded(client)
    assert (await invoke(client, name)).status_code in (400, 404)
    assert names_in(repo) == ["identity"]  # nothing staged, nothing left
    assert (await invoke(client, "identity")).json() == {"predictions": [ROW]}  # still healthy


async def test_urls_outside_the_root_are_refused(
    client: httpx.AsyncClient, repo: Path, root: Path, tmp_path: Path
) -> None:
    outside = model_folder(tmp_path / "elsewhere" / "model")
    (root / "escape").symlink_to(outside.parent)
    for url in [
        str(outside),
        f"{root}/../../../elsewhere/model",
        "s3://bucket/m",
        str(root / "escape" / "model"),
    ]:
        await expect_refused(
            client, repo, "m", url, 400, "is not inside the model repository nor the model root"
        )


async def test_links_out_of_the_root_inside_the_artefact_are_refused(
    client: httpx.AsyncClient, repo: Path, root: Path, tmp_path: Path
) -> None:
    outside = identity(tmp_path / "elsewhere" / "secret.onnx")
    folder = root / "l1" / "model"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").symlink_to(outside)
    await expect_refused(client, repo, "l1", str(folder), 400, "'1/model.onnx' links outside the model root")
    bare = root / "l2" / "model"
    bare.mkdir(parents=True)
    (bare / "model.onnx").symlink_to(outside)
    await expect_refused(client, repo, "l2", str(bare), 400, "'model.onnx' links outside the model root")


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([file_entry("/etc/model.onnx")], "entry '/etc/model.onnx' has an absolute path"),
        ([file_entry("model/../../x.onnx")], "entry 'model/../../x.onnx' leaves the archive ('..')"),
        ([link_entry("model.onnx", "/etc/passwd")], "entry 'model.onnx' links outside the archive"),
        ([link_entry("m/model.onnx", "../../x")], "entry 'm/model.onnx' links outside the archive"),
        ([link_entry("model.onnx", "../x", tarfile.LNKTYPE)], "links outside the archive"),
    ],
)
async def test_archives_with_unsafe_entries_are_refused(
    client: httpx.AsyncClient, repo: Path, root: Path, entries: list[Any], message: str
) -> None:
    tgz = archive(root / "bad" / "model.tar.gz", entries)
    await expect_refused(client, repo, "bad", str(tgz), 400, message)


async def test_artefacts_that_are_no_model_are_refused(
    client: httpx.AsyncClient, repo: Path, root: Path
) -> None:
    (root / "e" / "model").mkdir(parents=True)
    await expect_refused(client, repo, "e", str(root / "e" / "model"), 400, "holds no model file")
    (root / "t.txt").write_text("hello")
    await expect_refused(client, repo, "t", str(root / "t.txt"), 400, "is a file of unknown kind")
    await expect_refused(client, repo, "n", str(root / "missing"), 400, "nothing at url")
    (root / "junk").mkdir()
    (root / "junk" / "1").mkdir()
    (root / "junk" / "1" / "model.onnx").write_bytes(b"not onnx")
    await expect_refused(client, repo, "junk", str(root / "junk"), 400, "failed to load model 'junk'")


async def test_a_repository_model_is_not_replaced(client: httpx.AsyncClient, repo: Path, root: Path) -> None:
    identity(root / "x" / "model" / "1" / "model.onnx", shape=("batch", 4))
    r = await load(client, "identity", str(root / "x" / "model"))
    assert r.status_code == 409 and "is a model of the repository itself" in r.json()["error"]
    assert names_in(repo / "identity") == ["1"]
    assert (await invoke(client, "identity")).json() == {"predictions": [ROW]}  # 16 wide: its own


async def test_an_object_store_repository_cannot_stage(root: Path, tmp_path: Path) -> None:
    settings = ServerSettings(
        repository="s3://bucket/models",
        s3={"cache_dir": tmp_path / "cache"},
        sagemaker=True,
        sagemaker_model_root=root,
        startup_load=StartupLoad.NONE,
    )
    url = str(model_folder(root / "x" / "model"))
    app = client_for(settings).app  # not started: the url is refused before any storage is read
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        r = await load(client, "x", url)
        assert r.status_code == 400 and "needs a folder repository" in r.json()["error"], r.text
