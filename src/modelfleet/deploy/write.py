"""`modelfleet deploy`: from plan.yaml to a folder of Kubernetes manifests, built whole in memory
(every check passes first) and only then written, so bad input leaves nothing behind.

Layout of the output folder (`kubectl apply -k DIR` applies the server groups and the router):

    kustomization.yaml      namespace, service account, groups/*, router.yaml
    namespace.yaml          the Namespace and the pods' ServiceAccount
    groups/<group>.yaml     per planned instance: models ConfigMap, Deployment, Service, PDB, HPA
    router.yaml             nginx router: ConfigMap (nginx.conf), Deployment, Service, PDB
    nginx.conf              the same configuration, to read or `nginx -t`
    gateway/httproutes.yaml the Gateway API alternative to the router (not in the kustomization),
    gateway/grpcroutes.yaml and for gRPC, by the x-model-name header
    kserve/runtime.yaml     KServe ClusterServingRuntime (not in the kustomization)
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelfleet.deploy.groups import APP, Doc, GroupOptions, group_objects, meta
from modelfleet.deploy.plan import (
    DeployError,
    ServerGroup,
    check_models_exist,
    read_plan,
    routes,
    server_groups,
)
from modelfleet.deploy.routing import (
    RouterOptions,
    grpc_routes,
    http_routes,
    kserve_runtime,
    nginx_conf,
    router_objects,
)
from modelfleet.planner import Catalog

MARKER = ".modelfleet-deploy"  # in an output folder: written by deploy, so it may be replaced


@dataclass(frozen=True, slots=True)
class Rendered:
    files: dict[str, str]  # relative path -> text
    groups: list[ServerGroup]


def render(
    plan_dir: Path,
    catalog: Catalog,
    groups_options: GroupOptions,
    router: RouterOptions,
    available: Sequence[str] | None = None,
    repo_shown: str = "",
) -> Rendered:
    """Every file of the output folder; DeployError on bad input (available: the repository's models)."""
    _check_repository(groups_options.repository)
    groups = server_groups(read_plan(plan_dir), catalog)
    if available is not None:
        check_models_exist(groups, list(available), repo_shown)
    table, shared = routes(groups)
    ns = groups_options.namespace
    conf = nginx_conf(table, shared, [g.name for g in groups], ns)
    files = {"nginx.conf": conf}
    for group in groups:
        files[f"groups/{group.name}.yaml"] = dump(group_objects(group, groups_options))
    files["router.yaml"] = dump(router_objects(conf, router))
    files["namespace.yaml"] = dump(_namespace(ns, groups_options.service_account))
    files["gateway/httproutes.yaml"] = dump(http_routes(table, shared, router))
    files["gateway/grpcroutes.yaml"] = dump(grpc_routes(table, shared, router))
    files["kserve/runtime.yaml"] = dump([kserve_runtime(groups_options.image)])
    resources = ["namespace.yaml", *(f"groups/{g.name}.yaml" for g in groups), "router.yaml"]
    files["kustomization.yaml"] = dump(
        [{"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}]
    )
    return Rendered(files, groups)


def write(out: Path, rendered: Rendered) -> None:
    """The files under `out`: a new or empty folder, or one an earlier deploy wrote (replaced whole)."""
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DeployError(
                f"--out {out} is not empty and was not written by modelfleet deploy: give a new folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by modelfleet deploy; the whole folder is replaced on the next run\n")
    for relative, text in rendered.files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (model lists, nginx.conf) as literal blocks, readable in the manifests."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(documents: Sequence[Doc]) -> str:
    return yaml.dump_all(list(documents), Dumper=_Dumper, sort_keys=False, width=120, explicit_start=True)


def load_all(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _namespace(namespace: str, service_account: str) -> list[Doc]:
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            "labels": {
                "app.kubernetes.io/name": APP,
                # the pods meet the restricted Pod Security Standard: have the namespace enforce it
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }
    account = meta("v1", "ServiceAccount", service_account, namespace, "server")
    account["automountServiceAccountToken"] = False
    return [ns, account]


def _check_repository(repository: str) -> None:
    if not repository.startswith("s3://") or len(repository) <= len("s3://"):
        raise DeployError(
            f"--repository {repository[:80]!r}: the server groups read their models from object storage: "
            "give s3://bucket/prefix"
        )
