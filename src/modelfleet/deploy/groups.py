"""Kubernetes objects of one server group: its model list (ConfigMap), Deployment, Service,
PodDisruptionBudget and HorizontalPodAutoscaler, built as plain dicts (dumped to YAML by the caller).

The pod runs the image's entrypoint, which serves MODELFLEET_REPOSITORY (object storage, cached on
a local volume) restricted to the group's models (`--models @FILE`, the ConfigMap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelfleet.deploy.plan import ServerGroup

HTTP_PORT = 8000
GRPC_PORT = 8001
MODELS_DIR = "/etc/modelfleet/models"
MODELS_FILE = "models.txt"
CACHE_DIR = "/var/cache/modelfleet"
SHUTDOWN_TIMEOUT_S = 25  # the server's default deadline for calls in flight after SIGTERM
PRE_STOP_S = 5  # Services and the router stop sending before the listener closes
# the Pods metric the HPA reads (prometheus-adapter rule in docs/deploy.md): requests queued or running
HPA_METRIC = "modelfleet_queue_depth"
APP = "modelfleet"
Doc = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GroupOptions:
    image: str
    repository: str
    namespace: str
    service_account: str = APP
    min_replicas: int = 1
    max_replicas: int = 4
    queue_depth_target: int = 8  # average requests waiting or running per pod before scaling out
    cache_bytes: int = 20 << 30  # local volume for downloaded models


def labels(group: str, component: str = "server") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/component": component,
        "modelfleet.dev/group": group,
    }


def object_name(group: str) -> str:
    return f"{APP}-{group}"


def group_objects(group: ServerGroup, options: GroupOptions) -> list[Doc]:
    """ConfigMap, Deployment, Service, PodDisruptionBudget and HPA of one group."""
    name = object_name(group.name)
    return [
        _meta("v1", "ConfigMap", name + "-models", group.name, options)
        | {"data": {MODELS_FILE: "\n".join(group.models) + "\n"}},
        deployment(group, options),
        _meta("v1", "Service", name, group.name, options)
        | {
            "spec": {
                "type": "ClusterIP",
                "selector": labels(group.name),
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
        _meta("policy/v1", "PodDisruptionBudget", name, group.name, options)
        | {"spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(group.name)}}},
        _meta("autoscaling/v2", "HorizontalPodAutoscaler", name, group.name, options)
        | {"spec": _hpa(name, options)},
    ]


def deployment(group: ServerGroup, options: GroupOptions) -> Doc:
    name = object_name(group.name)
    pod_spec: Doc = {
        "serviceAccountName": options.service_account,
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": SHUTDOWN_TIMEOUT_S + PRE_STOP_S + 5,
        "nodeSelector": {
            "node.kubernetes.io/instance-type": group.instance_type,
            "kubernetes.io/os": "linux",
        },
        "securityContext": pod_security(),
        "containers": [_server_container(group, options)],
        "volumes": [
            {"name": "models", "configMap": {"name": name + "-models"}},
            {"name": "cache", "emptyDir": {"sizeLimit": _quantity(options.cache_bytes)}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}},
        ],
    }
    if group.accelerator is not None:  # device nodes are usually tainted by their node group
        pod_spec["tolerations"] = [
            {"key": group.accelerator.resource, "operator": "Exists", "effect": "NoSchedule"}
        ]
    return _meta("apps/v1", "Deployment", name, group.name, options) | {
        "spec": {
            "replicas": options.min_replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": labels(group.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(group.name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(HTTP_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        }
    }


def pod_security() -> Doc:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> Doc:
    return {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _server_container(group: ServerGroup, options: GroupOptions) -> Doc:
    limits: dict[str, str] = {"cpu": _cpu(group.cpu_millis), "memory": _quantity(group.memory_bytes)}
    requests = dict(limits)
    if group.accelerator is not None:  # extended resources: request equals limit
        limits[group.accelerator.resource] = requests[group.accelerator.resource] = str(
            group.accelerator.count
        )
    env = {
        "MODELFLEET_REPOSITORY": options.repository,
        "MODELFLEET_MODELS": f"@{MODELS_DIR}/{MODELS_FILE}",
        "MODELFLEET_HOST": "0.0.0.0",
        "MODELFLEET_HTTP_PORT": str(HTTP_PORT),
        "MODELFLEET_GRPC_PORT": str(GRPC_PORT),
        "MODELFLEET_S3__CACHE_DIR": f"{CACHE_DIR}/s3",
        "MODELFLEET_S3__CACHE_MAX_BYTES": str(options.cache_bytes * 9 // 10),
        "MODELFLEET_MEMORY_BUDGET": f"{group.memory_budget_bytes // (1 << 20)}MiB",
        "MODELFLEET_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
        "MODELFLEET_LOG_FORMAT": "json",
    }
    return {
        "name": "server",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": requests, "limits": limits},
        # loading the pinned models may take minutes: liveness starts once ready was seen
        "startupProbe": _probe("/v2/health/ready", period_s=5, failures=120),
        "readinessProbe": _probe("/v2/health/ready", period_s=5, failures=2),
        "livenessProbe": _probe("/v2/health/live", period_s=10, failures=3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_S}}},
        "securityContext": container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "cache", "mountPath": CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _probe(path: str, *, period_s: int, failures: int) -> Doc:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _hpa(name: str, options: GroupOptions) -> Doc:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": options.min_replicas,
        "maxReplicas": options.max_replicas,
        "metrics": [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": HPA_METRIC},
                    "target": {"type": "AverageValue", "averageValue": str(options.queue_depth_target)},
                },
            }
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
    }


def _meta(
    api: str, kind: str, name: str, group: str, options: GroupOptions, component: str = "server"
) -> Doc:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name, "namespace": options.namespace, "labels": labels(group, component)},
    }


def meta(api: str, kind: str, name: str, namespace: str, component: str) -> Doc:
    """apiVersion, kind and metadata of an object that belongs to no server group."""
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/component": component},
        },
    }


def _cpu(millis: int) -> str:
    return f"{millis}m"


def _quantity(size: int) -> str:
    return f"{size // (1 << 20)}Mi"
