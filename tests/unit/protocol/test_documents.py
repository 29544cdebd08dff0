"""The typed documents: JSON field names as the V2 protocol and Triton's extensions name them (checked
against the gRPC service's own messages), defaults left out, exact bytes, and every document back
from its JSON unchanged."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from modelfleet.engine.stats import ModelStats
from modelfleet.protocol import sagemaker
from modelfleet.protocol.documents import (
    AllVersions,
    ConfigTensor,
    Document,
    Duration,
    ErrorDocument,
    IndexEntry,
    LatestVersions,
    Liveness,
    Memory,
    ModelConfiguration,
    ModelMetadata,
    ModelReady,
    ModelResidency,
    ModelStatistics,
    Readiness,
    ServerMetadata,
    SpecificVersions,
    Statistics,
    TensorMetadata,
    VersionPolicy,
    Worker,
    WorkerModel,
    Workers,
    error_json,
    to_json,
)
from modelfleet.protocol.grpc import grpc_service_pb2 as pb
from modelfleet.protocol.grpc import model_config_pb2 as mc

MEMORY = Memory(
    budget_bytes=1000, used_bytes=250, resident_models=1, known_models=2, blob_bytes=7, loads=2,
    load_failures=3, cold_starts=0, evictions=1,
)  # fmt: skip
RESIDENCY = ModelResidency(
    resident_bytes=150, pinned=True, last_load_s=0.25, last_used=1764900000.123, loads=2, load_failures=0,
    cold_starts=1, evictions=1, state="READY", reason="", load_s_total=0.5, accounted_bytes=250,
    load_s=0.25,
)  # fmt: skip
TENSOR = TensorMetadata(name="x", datatype="FP32", shape=[-1, 4])


def statistics_entry() -> ModelStatistics:
    counts = ModelStats()
    counts.record_success(4, 4, total_ns=10, queue_ns=1, input_ns=2, infer_ns=3, output_ns=4)
    counts.record_failure(7)
    return msgspec.structs.replace(counts.statistics("m", "1"), residency=RESIDENCY)


def worker(id: int, pid: int | None) -> Worker:
    model = WorkerModel(name="m", version="1", resident_bytes=150, in_flight=2)
    return Worker(
        id=id, pid=pid, device=f"cpu:{id}", state="ready", restarts=0, budget_bytes=500, used_bytes=150,
        rss_bytes=9000, cpu_seconds=1.5, in_flight=2, models=[model],
    )  # fmt: skip


def configuration(backend: str | None, policy: VersionPolicy) -> ModelConfiguration:
    tensor = ConfigTensor(name="x", data_type="TYPE_FP32", dims=[4])
    return ModelConfiguration(
        name="m", platform="onnxruntime_onnx", backend=backend, max_batch_size=8, input=[tensor], output=[],
        version_policy=policy,
    )  # fmt: skip


POLICIES = (
    ("onnxruntime", VersionPolicy(all=AllVersions())),
    (None, VersionPolicy(specific=SpecificVersions(versions=[1, 3]))),
    ("python", VersionPolicy(latest=LatestVersions(num_versions=2))),
)
INDEXED = IndexEntry(
    name="m", version="1", state="READY", reason="", resident_bytes=150, pinned=False, last_load_s=0.5,
    last_used=0.0, loads=1, load_failures=0, cold_starts=0, evictions=0,
)  # fmt: skip

DOCUMENTS: list[Document] = [
    Liveness(live=True),
    Readiness(ready=False),
    ServerMetadata(name="modelfleet", version="1.0", extensions=["statistics", "model_repository"]),
    ModelMetadata(
        name="m", versions=["1", "2"], platform="onnxruntime_onnx", inputs=[TENSOR], outputs=[TENSOR]
    ),
    ModelReady(name="m", version="1", ready=True),
    ErrorDocument(error="model 'x' not found"),
    *(configuration(backend, policy) for backend, policy in POLICIES),
    IndexEntry(name="never", state="UNAVAILABLE", reason="not loaded"),
    IndexEntry(name="m", version="1", state="READY", reason="", workers=[0, 1]),
    INDEXED,
    Statistics(model_stats=[statistics_entry()], memory=MEMORY),
    Statistics(model_stats=[]),
    Workers(workers=[worker(0, 42)], in_process=True),
    Workers(workers=[worker(0, 42), worker(1, None)]),
    sagemaker.ModelList(models=[sagemaker.ModelDescription(model_name="m", model_url="/models/m")]),
    sagemaker.ModelList(models=[], next_page_token="m"),
    sagemaker.Unloaded(model_name="m"),
]


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: type(d).__name__)
def test_every_document_comes_back_from_its_json(doc: Document) -> None:
    assert msgspec.json.decode(to_json(doc), type=type(doc)) == doc


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda d: type(d).__name__)
def test_the_bytes_are_those_the_plain_data_makes_in_orjson(doc: Document) -> None:
    """The control answers were orjson's encoding of plain dicts: the same bytes for the same values
    (floats below 1e16, where orjson and msgspec write exponents alike)."""
    assert to_json(doc) == orjson.dumps(msgspec.to_builtins(doc))


def keys(doc: Any) -> list[str]:
    return list(orjson.loads(to_json(doc)))


def proto_fields(message: Any) -> list[str]:
    return [f.name for f in message.DESCRIPTOR.fields]


def test_v2_core_documents_name_their_fields_as_the_protocol() -> None:
    assert keys(ServerMetadata(name="s", version="1", extensions=[])) == proto_fields(
        pb.ServerMetadataResponse
    )
    assert keys(DOCUMENTS[3]) == proto_fields(pb.ModelMetadataResponse)
    assert keys(TENSOR) == proto_fields(pb.ModelMetadataResponse.TensorMetadata)
    assert keys(Liveness(live=True)) == ["live"] and keys(Readiness(ready=True)) == ["ready"]
    assert keys(ModelReady(name="m", version="1", ready=True)) == ["name", "version", "ready"]
    assert to_json(ErrorDocument(error="no")) == error_json("no") == b'{"error":"no"}'


def test_statistics_name_their_fields_as_tritons_extension() -> None:
    """Every field of the gRPC statistics messages, in the JSON; `residency` and `memory` are
    modelfleet's additions beside them."""
    doc = orjson.loads(to_json(Statistics(model_stats=[statistics_entry()], memory=MEMORY)))
    assert list(doc) == [*proto_fields(pb.ModelStatisticsResponse), "memory"]
    entry = doc["model_stats"][0]
    assert list(entry) == [*proto_fields(pb.ModelStatistics), "residency"]
    assert sorted(entry["inference_stats"]) == sorted(proto_fields(pb.InferStatistics))
    assert list(entry["inference_stats"]["success"]) == proto_fields(pb.StatisticDuration)
    assert list(entry["batch_stats"][0]) == proto_fields(pb.InferBatchStatistics)


def test_the_index_and_the_configuration_name_their_fields_as_triton() -> None:
    entry = IndexEntry(name="m", version="1", state="READY", reason="")
    assert keys(entry) == proto_fields(pb.RepositoryIndexResponse.ModelIndex)
    config = orjson.loads(to_json(DOCUMENTS[6]))
    assert set(config) <= set(proto_fields(mc.ModelConfig))
    assert list(config["input"][0]) == ["name", "data_type", "dims"]
    assert set(config["input"][0]) <= set(proto_fields(mc.ModelInput))
    assert config["version_policy"] == {"all": {}}
    assert set(proto_fields(mc.ModelVersionPolicy)) == {"latest", "all", "specific"}


def test_optional_fields_are_absent_not_null() -> None:
    assert keys(IndexEntry(name="m", state="UNAVAILABLE", reason="x")) == ["name", "state", "reason"]
    assert keys(Statistics(model_stats=[])) == ["model_stats"]  # a tenant's: no server-wide memory
    assert "in_process" not in keys(Workers(workers=[]))
    assert orjson.loads(to_json(Workers(workers=[], in_process=True)))["in_process"] is True
    assert "residency" not in keys(ModelStats().statistics("m", "1"))
    assert "nextPageToken" not in keys(sagemaker.ModelList(models=[]))
    # but a field whose value may be null is written: a worker's pid while it is down, a config's backend
    assert orjson.loads(to_json(worker(1, None)))["pid"] is None
    assert orjson.loads(to_json(DOCUMENTS[7]))["backend"] is None


def test_exact_bytes_of_small_documents() -> None:
    assert to_json(DOCUMENTS[2]) == (
        b'{"name":"modelfleet","version":"1.0","extensions":["statistics","model_repository"]}'
    )
    assert to_json(IndexEntry(name="m", version="2", state="EVICTED", reason="", workers=[])) == (
        b'{"name":"m","version":"2","state":"EVICTED","reason":"","workers":[]}'
    )
    assert to_json([IndexEntry(name="a", state="READY", reason="")]) == (
        b'[{"name":"a","state":"READY","reason":""}]'
    )
    assert to_json(
        sagemaker.ModelList(models=[sagemaker.ModelDescription(model_name="m", model_url="u")])
    ) == (b'{"models":[{"modelName":"m","modelUrl":"u"}]}')
    assert to_json(ModelStats().statistics("m", "1").inference_stats.fail) == b'{"count":0,"ns":0}'


def test_numpy_scalars_encode_as_their_values_and_other_objects_are_refused() -> None:
    entry = WorkerModel(name="m", version="1", resident_bytes=np.int64(5), in_flight=0)  # type: ignore[arg-type]
    assert orjson.loads(to_json(entry))["resident_bytes"] == 5
    with pytest.raises(NotImplementedError, match="cannot encode object in a document"):
        to_json(ErrorDocument(error=object()))  # type: ignore[arg-type]


def test_documents_are_values() -> None:
    """Frozen and compared by value: one built twice is equal, and nobody changes a shared one."""
    assert statistics_entry() == statistics_entry()
    with pytest.raises(AttributeError):
        MEMORY.loads = 5  # type: ignore[misc]
    assert Duration(count=1, ns=2) != Duration(count=1, ns=3)
