"""The manifests `modelfleet deploy` writes: every object valid for Kubernetes 1.33 (strict schemas of
kubernetes-validate), the CRDs (HTTPRoute, ClusterServingRuntime) checked by their own structure, and
the hardening, probes, resources and routing the issue asks for."""

from __future__ import annotations

from typing import Any, Literal

import kubernetes_validate
import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelfleet.deploy.groups import HPA_METRIC, SHUTDOWN_TIMEOUT_S, GroupOptions
from modelfleet.deploy.plan import NEURON_CORE, NVIDIA_GPU
from modelfleet.deploy.routing import RouterOptions
from modelfleet.deploy.write import Rendered, load_all, render
from modelfleet.planner.catalog import load_catalog
from tests.unit.test_deploy_plan import write_plan

KUBERNETES = "1.33.0"  # the pinned version the manifests are validated against
REPOSITORY = "s3://models/prod"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    plan = write_plan(
        tmp_path_factory.mktemp("plan"),
        [
            {"type": "inf1.2xlarge", "models": [f"tenant-{i:03d}" for i in range(200)] + ["shared"]},
            {"type": "g4dn.xlarge", "models": ["ranker", "shared"]},
            {"type": "c7i.large", "models": ["default", "tiny"]},
        ],
    )
    options = GroupOptions(
        image="registry.example/modelfleet:0.1.0", repository=REPOSITORY, namespace="fleet"
    )
    return render(plan, load_catalog(), options, RouterOptions(namespace="fleet"))


def documents(rendered: Rendered, path: str) -> list[dict[str, Any]]:
    return load_all(rendered.files[path])


def all_documents(rendered: Rendered) -> list[dict[str, Any]]:
    return [d for path in rendered.files if path.endswith(".yaml") for d in documents(rendered, path)]


def by_kind(rendered: Rendered, kind: str) -> list[dict[str, Any]]:
    return [d for d in all_documents(rendered) if d["kind"] == kind]


CRDS = {"HTTPRoute", "GRPCRoute", "ClusterServingRuntime", "Kustomization"}


def test_every_builtin_object_is_valid_for_the_pinned_kubernetes(rendered: Rendered) -> None:
    checked = 0
    for document in all_documents(rendered):
        if document["kind"] in CRDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # checked below instead
                kubernetes_validate.validate(document, KUBERNETES, strict=True)
            continue
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
        checked += 1
    # per group: ConfigMap, Deployment, Service, PDB, HPA; router: 4; namespace and service account
    assert checked == 3 * 5 + 4 + 2


def test_the_validator_is_strict_about_unknown_fields(rendered: Rendered) -> None:
    deployment = by_kind(rendered, "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_one_server_group_per_planned_instance_with_its_models(rendered: Rendered) -> None:
    assert sorted(p for p in rendered.files if p.startswith("groups/")) == [
        "groups/c7i-large-000.yaml",
        "groups/g4dn-xlarge-000.yaml",
        "groups/inf1-2xlarge-000.yaml",
    ]
    config = documents(rendered, "groups/g4dn-xlarge-000.yaml")[0]
    assert config["data"]["models.txt"].split() == ["ranker", "shared"]
    kustomization = documents(rendered, "kustomization.yaml")[0]
    assert set(kustomization["resources"]) <= set(rendered.files)


def _server(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_servers_are_hardened_probed_and_restricted_to_their_models(rendered: Rendered) -> None:
    for deployment in by_kind(rendered, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
    for deployment in by_kind(rendered, "Deployment"):
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] != "server":
            continue
        pod = deployment["spec"]["template"]["spec"]
        container = _server(deployment)
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["MODELFLEET_REPOSITORY"] == REPOSITORY
        mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
        assert env["MODELFLEET_MODELS"] == f"@{mount['mountPath']}/models.txt"
        assert env["MODELFLEET_S3__CACHE_DIR"].startswith(
            next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "cache")
        )
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert (
            pod["terminationGracePeriodSeconds"]
            > SHUTDOWN_TIMEOUT_S + container["lifecycle"]["preStop"]["sleep"]["seconds"]
        )
        assert int(env["MODELFLEET_SHUTDOWN_TIMEOUT_S"]) == SHUTDOWN_TIMEOUT_S


@pytest.mark.parametrize(
    ("group", "instance_type", "device"),
    [
        ("inf1-2xlarge-000", "inf1.2xlarge", (NEURON_CORE, "4")),
        ("g4dn-xlarge-000", "g4dn.xlarge", (NVIDIA_GPU, "1")),
        ("c7i-large-000", "c7i.large", None),
    ],
)
def test_node_selector_and_device_resources_follow_the_instance_type(
    rendered: Rendered, group: str, instance_type: str, device: tuple[str, str] | None
) -> None:
    deployment = next(d for d in documents(rendered, f"groups/{group}.yaml") if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["node.kubernetes.io/instance-type"] == instance_type
    resources = _server(deployment)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    extended = {k: v for k, v in resources["limits"].items() if "/" in k}
    assert extended == ({device[0]: device[1]} if device else {})
    assert ("tolerations" in pod) == (device is not None)


def test_hpa_scales_each_group_on_the_servers_queue_depth(rendered: Rendered) -> None:
    for hpa in by_kind(rendered, "HorizontalPodAutoscaler"):
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == HPA_METRIC
        target = hpa["spec"]["scaleTargetRef"]
        assert any(d["metadata"]["name"] == target["name"] for d in by_kind(rendered, "Deployment"))
    assert len(by_kind(rendered, "PodDisruptionBudget")) == 4


def test_router_configmap_holds_the_routing_table_over_the_group_services(rendered: Rendered) -> None:
    (config,) = [d for d in documents(rendered, "router.yaml") if d["kind"] == "ConfigMap"]
    conf = config["data"]["nginx.conf"]
    assert conf == rendered.files["nginx.conf"]
    (deployment,) = [d for d in documents(rendered, "router.yaml") if d["kind"] == "Deployment"]
    cpus = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"]
    assert f"worker_processes {cpus};" in conf  # not one per node CPU
    assert "server modelfleet-g4dn-xlarge-000.fleet.svc.cluster.local:8000;" in conf
    assert '"ranker" "mf-g4dn-xlarge-000";' in conf
    assert '"\\default" "mf-c7i-large-000";' in conf
    # a model on two instances is balanced over both groups' Services
    shared = conf[conf.index('"shared" "') :].split('"')[3]
    block = conf[conf.index(f"upstream {shared} {{") :].split("}")[0]
    assert "modelfleet-inf1-2xlarge-000.fleet" in block and "modelfleet-g4dn-xlarge-000.fleet" in block


class _Path(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["Exact", "PathPrefix", "RegularExpression"]
    value: str = Field(pattern=r"^/", max_length=1024)


class _Match(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: _Path


class _Backend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
    port: int = Field(ge=1, le=65535)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    matches: list[_Match] = Field(min_length=1, max_length=64)
    backendRefs: list[_Backend] = Field(min_length=1, max_length=16)


class _RouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parentRefs: list[dict[Literal["name"], str]] = Field(min_length=1, max_length=32)
    rules: list[_Rule] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _total_matches(self) -> _RouteSpec:  # Gateway API v1's CEL rule: at most 128 matches a route
        assert sum(len(r.matches) for r in self.rules) <= 128
        return self


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
    namespace: str | None = None
    labels: dict[str, str]


class _HTTPRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    apiVersion: Literal["gateway.networking.k8s.io/v1"]
    kind: Literal["HTTPRoute"]
    metadata: _Metadata
    spec: _RouteSpec


def test_httproutes_are_well_formed_and_cover_every_model(rendered: Rendered) -> None:
    routes = [_HTTPRoute.model_validate(d) for d in documents(rendered, "gateway/httproutes.yaml")]
    services = {d["metadata"]["name"] for d in by_kind(rendered, "Service")}
    covered: dict[str, set[str]] = {}
    for route in routes:
        for rule in route.spec.rules:
            for match in rule.matches:
                covered[match.path.value.removeprefix("/v2/models/")] = {b.name for b in rule.backendRefs}
            assert {b.name for b in rule.backendRefs} <= services
    assert len(covered) == 200 + 4
    assert covered["shared"] == {"modelfleet-inf1-2xlarge-000", "modelfleet-g4dn-xlarge-000"}
    assert len(routes) >= 2  # 201 models of one group need two routes of at most 120 matches


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["Exact", "RegularExpression"]
    name: str = Field(pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$", max_length=256)
    value: str = Field(min_length=1, max_length=4096)


class _GrpcMatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    headers: list[_Header] = Field(min_length=1, max_length=16)


class _GrpcRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    matches: list[_GrpcMatch] = Field(min_length=1, max_length=64)
    backendRefs: list[_Backend] = Field(min_length=1, max_length=16)


class _GrpcRouteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parentRefs: list[dict[Literal["name"], str]] = Field(min_length=1, max_length=32)
    rules: list[_GrpcRule] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _total_matches(self) -> _GrpcRouteSpec:
        assert sum(len(r.matches) for r in self.rules) <= 128
        return self


class _GRPCRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    apiVersion: Literal["gateway.networking.k8s.io/v1"]
    kind: Literal["GRPCRoute"]
    metadata: _Metadata
    spec: _GrpcRouteSpec


def test_grpcroutes_send_each_model_header_to_its_groups_grpc_port(rendered: Rendered) -> None:
    routes = [_GRPCRoute.model_validate(d) for d in documents(rendered, "gateway/grpcroutes.yaml")]
    covered: dict[str, set[tuple[str, int]]] = {}
    for route in routes:
        for rule in route.spec.rules:
            for match in rule.matches:
                (header,) = match.headers
                assert (header.type, header.name) == ("Exact", "x-model-name")
                covered[header.value] = {(b.name, b.port) for b in rule.backendRefs}
    assert len(covered) == 204
    assert covered["ranker"] == {("modelfleet-g4dn-xlarge-000", 8001)}
    names = [r.metadata.name for r in routes] + [
        d["metadata"]["name"] for d in documents(rendered, "gateway/httproutes.yaml")
    ]
    assert len(set(names)) == len(names)


class _Format(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    version: str | None = None
    autoSelect: bool = False
    priority: int | None = Field(default=None, ge=1)


class _RuntimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotations: dict[str, str] = {}
    supportedModelFormats: list[_Format] = Field(min_length=1)
    protocolVersions: list[Literal["v1", "v2", "grpc-v1", "grpc-v2"]]
    multiModel: bool
    containers: list[dict[str, Any]] = Field(min_length=1)
    volumes: list[dict[str, Any]] = []


def test_kserve_runtime_serves_onnx_over_v2_with_a_valid_container(rendered: Rendered) -> None:
    (runtime,) = documents(rendered, "kserve/runtime.yaml")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert runtime["kind"] == "ClusterServingRuntime"
    assert "namespace" not in runtime["metadata"]  # cluster-scoped
    spec = _RuntimeSpec.model_validate(runtime["spec"])
    assert [f.name for f in spec.supportedModelFormats] == ["onnx"]
    assert "v2" in spec.protocolVersions
    # the containers and volumes are a pod's: the pinned Kubernetes schema checks them
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runtime"}, "spec": runtime["spec"]}
    pod["spec"] = {"containers": spec.containers, "volumes": spec.volumes}
    kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    env = {e["name"]: e["value"] for e in spec.containers[0]["env"]}
    assert env["MODELFLEET_REPOSITORY"] == "/mnt/models"  # where KServe's storage initializer puts the model


def test_the_kustomization_lists_existing_files_only(rendered: Rendered) -> None:
    (kustomization,) = documents(rendered, "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert all(resource in rendered.files for resource in kustomization["resources"])
    assert "router.yaml" in kustomization["resources"]
