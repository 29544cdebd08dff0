"""The objects in front of the server groups: the nginx router (ConfigMap, Deployment, Service,
PodDisruptionBudget), Gateway API HTTPRoutes as the alternative, and a KServe ClusterServingRuntime.

The router's upstreams are the groups' Services by name: nginx resolves each once at start to the
Service's stable ClusterIP, and picks the upstream per request through a map (router.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from modelfleet.deploy.groups import (
    APP,
    GRPC_PORT,
    HTTP_PORT,
    Doc,
    container_security,
    meta,
    object_name,
)
from modelfleet.deploy.router import GRPC_MODEL_HEADER, render_nginx

ROUTER = f"{APP}-router"
ROUTER_CONF_DIR = "/etc/modelfleet-router"
ROUTER_USER = 101  # the nginx-unprivileged image's user
ROUTER_CPUS = 2  # the router pod's CPU limit, and so its nginx workers
# Gateway API: at most 16 rules a route and 128 matches in all; 8 x 15 stays inside both
MATCHES_PER_RULE = 8
RULES_PER_ROUTE = 15


@dataclass(frozen=True, slots=True)
class RouterOptions:
    namespace: str
    image: str = "nginxinc/nginx-unprivileged:1.27-alpine"
    replicas: int = 2
    gateway: str = APP  # the Gateway the HTTPRoutes attach to


def service_address(group: str, namespace: str, port: int) -> str:
    return f"{object_name(group)}.{namespace}.svc.cluster.local:{port}"


def nginx_conf(
    routes: Mapping[str, str], shared: Mapping[str, Sequence[str]], groups: Sequence[str], ns: str
) -> str:
    """The router's whole nginx.conf: each group's Service, shared targets over several groups."""
    members = {g: [g] for g in groups} | {target: list(names) for target, names in shared.items()}
    http = {t: [service_address(g, ns, HTTP_PORT) for g in names] for t, names in members.items()}
    grpc = {t: [service_address(g, ns, GRPC_PORT) for g in names] for t, names in members.items()}
    body = render_nginx(
        routes,
        http,
        listen=str(HTTP_PORT),
        grpc_listen=str(GRPC_PORT),
        grpc_upstreams=grpc,
        default_group=groups[0],
        worker_processes=ROUTER_CPUS,
    )
    return "pid /tmp/nginx.pid;\nerror_log /dev/stderr warn;\n" + body


def router_objects(conf: str, options: RouterOptions) -> list[Doc]:
    ns = options.namespace
    selector = {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": "router"}
    digest = hashlib.sha256(conf.encode()).hexdigest()[:16]
    container: Doc = {
        "name": "nginx",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["nginx", "-p", "/tmp/", "-c", f"{ROUTER_CONF_DIR}/nginx.conf", "-g", "daemon off;"],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": "500m", "memory": "128Mi"},
            "limits": {"cpu": str(ROUTER_CPUS), "memory": "512Mi"},
        },
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/v2/health/live", "port": "http"}, "periodSeconds": 10},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "conf", "mountPath": ROUTER_CONF_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod: Doc = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": ROUTER_USER,
            "runAsGroup": ROUTER_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "conf", "configMap": {"name": ROUTER}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    return [
        meta("v1", "ConfigMap", ROUTER, ns, "router") | {"data": {"nginx.conf": conf}},
        meta("apps/v1", "Deployment", ROUTER, ns, "router")
        | {
            "spec": {
                "replicas": options.replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    # a new routing table rolls the router's pods
                    "metadata": {"labels": selector, "annotations": {"modelfleet.dev/config-sha256": digest}},
                    "spec": pod,
                },
            }
        },
        meta("v1", "Service", ROUTER, ns, "router")
        | {
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "http", "port": HTTP_PORT, "targetPort": "http", "appProtocol": "http"},
                    {
                        "name": "grpc",
                        "port": GRPC_PORT,
                        "targetPort": "grpc",
                        "appProtocol": "kubernetes.io/h2c",
                    },
                ],
            }
        },
        meta("policy/v1", "PodDisruptionBudget", ROUTER, ns, "router")
        | {"spec": {"minAvailable": 1, "selector": {"matchLabels": selector}}},
    ]


def http_routes(
    routes: Mapping[str, str], shared: Mapping[str, Sequence[str]], options: RouterOptions
) -> list[Doc]:
    """Gateway API HTTPRoutes: `/v2/models/{name}` (and below) to the Service of its group."""
    return _gateway_routes(
        "HTTPRoute",
        routes,
        shared,
        options,
        HTTP_PORT,
        lambda m: {"path": {"type": "PathPrefix", "value": f"/v2/models/{m}"}},
    )


def grpc_routes(
    routes: Mapping[str, str], shared: Mapping[str, Sequence[str]], options: RouterOptions
) -> list[Doc]:
    """Gateway API GRPCRoutes: calls with the `x-model-name: {name}` header to its group's gRPC port."""
    return _gateway_routes(
        "GRPCRoute",
        routes,
        shared,
        options,
        GRPC_PORT,
        lambda m: {"headers": [{"type": "Exact", "name": GRPC_MODEL_HEADER, "value": m}]},
    )


def _gateway_routes(
    kind: str,
    routes: Mapping[str, str],
    shared: Mapping[str, Sequence[str]],
    options: RouterOptions,
    port: int,
    match: Callable[[str], Doc],
) -> list[Doc]:
    by_target: dict[str, list[str]] = {}
    for model in sorted(routes):
        by_target.setdefault(routes[model], []).append(model)
    per_route = MATCHES_PER_RULE * RULES_PER_ROUTE
    suffix = "grpc-" if kind == "GRPCRoute" else ""
    documents = []
    for target in sorted(by_target):
        backends = [{"name": object_name(g), "port": port} for g in shared.get(target, [target])]
        models = by_target[target]
        for part, start in enumerate(range(0, len(models), per_route)):
            chunk = models[start : start + per_route]
            rules = [
                {"matches": [match(m) for m in chunk[i : i + MATCHES_PER_RULE]], "backendRefs": backends}
                for i in range(0, len(chunk), MATCHES_PER_RULE)
            ]
            name = f"{APP}-{suffix}{target}-{part}"
            route = meta("gateway.networking.k8s.io/v1", kind, name, options.namespace, "route")
            route["spec"] = {"parentRefs": [{"name": options.gateway}], "rules": rules}
            documents.append(route)
    return documents


def kserve_runtime(image: str) -> Doc:
    """A ClusterServingRuntime that serves `onnx` InferenceServices over the v2 protocol.

    KServe's storage initializer puts the storageUri at /mnt/models; it must hold a repository (a
    folder per model, ours or Triton's layout), as for KServe's Triton runtime.
    """
    doc = meta("serving.kserve.io/v1alpha1", "ClusterServingRuntime", APP, "", "kserve-runtime")
    del doc["metadata"]["namespace"]
    doc["spec"] = {
        "annotations": {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"},
        "supportedModelFormats": [{"name": "onnx", "version": "1", "autoSelect": True, "priority": 1}],
        "protocolVersions": ["v2", "grpc-v2"],
        "multiModel": False,
        "containers": [
            {
                "name": "kserve-container",
                "image": image,
                # the image's entrypoint serves MODELFLEET_REPOSITORY with these options
                "args": ["--port", "8080", "--grpc-port", "9000"],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "MODELFLEET_REPOSITORY", "value": "/mnt/models"},
                    {"name": "MODELFLEET_LOG_FORMAT", "value": "json"},
                ],
                "resources": {
                    "requests": {"cpu": "1", "memory": "2Gi"},
                    "limits": {"cpu": "1", "memory": "2Gi"},
                },
                "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 5},
                "securityContext": container_security(),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
    }
    return doc
