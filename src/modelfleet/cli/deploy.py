"""`modelfleet deploy`: Kubernetes manifests for a plan (server groups, nginx router, HTTPRoutes, a
KServe runtime). Option parsing only; deploy/ builds the objects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

EXIT_INPUT = 2  # bad plan, catalogue, repository or option: nothing written
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]*")


def deploy(
    plan_dir: Annotated[
        Path, typer.Argument(help="The folder `modelfleet plan --out` wrote (or its plan.yaml).")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Write the manifests here: a new or empty folder, or one deploy wrote before (replaced).",
        ),
    ],
    repository: Annotated[
        str, typer.Option("--repository", help="Model repository the servers read: s3://bucket/prefix.")
    ],
    image: Annotated[
        str, typer.Option("--image", help="The modelfleet image (built from the Dockerfile).")
    ] = ("modelfleet:0.1.0"),
    namespace: Annotated[str, typer.Option("--namespace", help="Kubernetes namespace of every object.")] = (
        "modelfleet"
    ),
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo", help="Check that this repository (a folder or s3://) has every planned model."
        ),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="The instance catalogue the plan was made with.")
    ] = None,
    router_image: Annotated[str, typer.Option("--router-image", help="The router's nginx image.")] = (
        "nginxinc/nginx-unprivileged:1.27-alpine"
    ),
    gateway: Annotated[
        str, typer.Option("--gateway", help="The Gateway the HTTPRoutes attach to.")
    ] = "modelfleet",
    min_replicas: Annotated[int, typer.Option("--min-replicas", min=1, help="Pods per group, at least.")] = 1,
    max_replicas: Annotated[
        int, typer.Option("--max-replicas", min=1, help="Pods per group at most (the HPA's ceiling).")
    ] = 4,
    cache_gib: Annotated[
        int,
        typer.Option(
            "--cache-gib", min=1, help="Local volume per pod for models fetched from the repository."
        ),
    ] = 20,
) -> None:
    """Write Kubernetes manifests for PLAN_DIR's plan: one server group per planned instance (Deployment,
    Service, PodDisruptionBudget, HPA, its model list), an nginx router by model name, Gateway API
    HTTPRoutes and a KServe ClusterServingRuntime. Apply with `kubectl apply -k OUT`."""
    from modelfleet.deploy.groups import GroupOptions
    from modelfleet.deploy.plan import DeployError
    from modelfleet.deploy.routing import RouterOptions
    from modelfleet.deploy.write import render, write
    from modelfleet.planner.catalog import load_catalog
    from modelfleet.planner.errors import PlanInputError

    try:
        _check_options(namespace, image, router_image, gateway, min_replicas, max_replicas)
        groups = GroupOptions(
            image=image,
            repository=repository,
            namespace=namespace,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            cache_bytes=cache_gib << 30,
        )
        router = RouterOptions(namespace=namespace, image=router_image, gateway=gateway)
        available = _models_of(repo) if repo is not None else None
        rendered = render(plan_dir, load_catalog(catalog), groups, router, available, repo or "")
        write(out, rendered)
    except (DeployError, PlanInputError, ValueError) as exc:
        typer.echo(f"modelfleet deploy: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    models = sum(len(g.models) for g in rendered.groups)
    typer.echo(
        f"wrote {out}: {len(rendered.groups)} server groups, {models} model placements, the router, Gateway API routes"
    )
    typer.echo(
        f"apply: kubectl apply -k {out}   (KServe runtime: kubectl apply -f {out}/kserve/runtime.yaml)"
    )


def _check_options(
    namespace: str, image: str, router_image: str, gateway: str, min_replicas: int, max_replicas: int
) -> None:
    if not _DNS_LABEL.fullmatch(namespace):
        raise ValueError(
            f"--namespace {namespace[:80]!r} is not a DNS label (lower-case letters, digits, '-')"
        )
    if not _DNS_LABEL.fullmatch(gateway):
        raise ValueError(f"--gateway {gateway[:80]!r} is not a DNS label (lower-case letters, digits, '-')")
    for option, value in (("--image", image), ("--router-image", router_image)):
        if not _IMAGE.fullmatch(value):
            raise ValueError(f"{option} {value[:80]!r} is not an image reference")
    if max_replicas < min_replicas:
        raise ValueError(f"--max-replicas ({max_replicas}) is below --min-replicas ({min_replicas})")


def _models_of(location: str) -> list[str]:
    """The model names of a repository (ValueError when it cannot be opened or listed)."""
    from modelfleet.config import DEFAULT_S3_CACHE
    from modelfleet.errors import ModelfleetError
    from modelfleet.repository.open import open_repository

    options = {"cache_dir": DEFAULT_S3_CACHE} if location.startswith("s3://") else {}
    if not location.startswith("s3://") and not Path(location).is_dir():
        raise ValueError(f"--repo {location}: no such folder")
    try:
        return open_repository(location, **options).list_models()
    except (ModelfleetError, OSError) as exc:
        raise ValueError(f"--repo {location}: cannot list its models ({exc})") from None
