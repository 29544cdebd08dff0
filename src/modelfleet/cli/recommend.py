"""`modelfleet recommend`: the cheapest configuration, instance type and count for a rate and an SLO,
from profiles measured here (profile.json) or declared (YAML). Option parsing only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from modelfleet.tune.recommend import Option, Ranking, Recommendation
    from modelfleet.tune.schema import Machine, Profile

EXIT_INPUT = 2  # unknown model, malformed profile, SLO nobody meets, --strict warning: nothing written


def recommend(
    repository: Annotated[
        Path | None, typer.Argument(help="Model repository holding MODEL (its profile.json is read).")
    ] = None,
    model: Annotated[str | None, typer.Argument(help="The model to recommend for.")] = None,
    rate: Annotated[
        float, typer.Option("--rate", help="Target inferences per second, all instances together.")
    ] = 0.0,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            "--max-latency-ms",
            help="Latency bound: measured profiles count capacity within it (P90); declared rows are "
            "kept only if their latency is within it. Unset: the profile's own SLO.",
        ),
    ] = None,
    slo_margin: Annotated[
        float | None,
        typer.Option(
            "--slo-margin",
            help="Measured profiles count capacity within this share of the latency bound (default: "
            "the profile's own, `slo.margin`: 0.9 from `profile`).",
        ),
    ] = None,
    profiles: Annotated[
        list[Path] | None,
        typer.Option(
            "--profiles",
            help="A declared profiles YAML or a profile.json (e.g. a precision variant's); repeatable.",
        ),
    ] = None,
    instance_type: Annotated[
        str | None,
        typer.Option(
            help="The instance type a measured profile stands for (default: the cheapest CPU type of "
            "the catalogue with as many vCPUs as the measuring machine)."
        ),
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option("--catalog", help="Instance catalogue YAML (default: the planner's).")
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option(help="Sequence length to recommend for (default: the longest profiled).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default: the highest).")] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows shown.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the ranking as one JSON document.")] = False,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Write the first recommendation's settings into MODEL/config.yaml (diff shown first).",
        ),
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Refuse a profile from another machine or model version.")
    ] = False,
) -> None:
    """Rank configurations x instance types by cost for --rate: instances = ceil(rate / capacity),
    $/h, $ per million inferences and the predicted P90; --apply writes the winner's settings."""
    from rich.console import Console

    from modelfleet.tune.errors import TuneInputError
    from modelfleet.tune.recommend import NoConfigurationMeets

    out, err = Console(), Console(stderr=True, soft_wrap=True)
    if rate <= 0:
        raise typer.BadParameter("--rate is required: target inferences per second (> 0)")
    if (repository is None) != (model is None):
        raise typer.BadParameter("give both REPOSITORY and MODEL, or neither (with --profiles)")
    if repository is None and not profiles:
        raise typer.BadParameter("give REPOSITORY MODEL (its measured profile.json) or --profiles FILE")
    if apply and repository is None:
        raise typer.BadParameter("--apply needs REPOSITORY MODEL: the config.yaml to write")
    try:
        options, warnings = _options(
            repository,
            model,
            profiles or [],
            catalog,
            instance_type,
            max_latency_ms,
            seq_len,
            version,
            slo_margin,
        )
        for line in warnings:
            err.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
        if strict and warnings:
            raise TuneInputError(f"--strict: {len(warnings)} warning(s) above; profile the model again here")
        ranking = _rank(options, rate, max_latency_ms)
    except NoConfigurationMeets as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        if as_json:
            print(json.dumps(_document(rate, max_latency_ms, [], exc.best), indent=2))
        raise typer.Exit(EXIT_INPUT) from None
    except TuneInputError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    shown = ranking.recommendations[:top]
    if as_json:
        print(json.dumps(_document(rate, max_latency_ms, shown, None, warnings), indent=2))
    else:
        _table(out, shown, rate, max_latency_ms)
    if shown and shown[0].basis == "window":
        err.print(
            f"note: {shown[0].config}'s capacity is one short window (neither confirmed nor a final "
            f"step): check it with `modelfleet bench -c {shown[0].concurrency}` before relying on it",
            highlight=False,
        )
    if apply:
        assert repository is not None and model is not None
        winner = shown[0]
        _apply(err, repository, winner.model or model, winner)


def _options(
    repository: Path | None,
    model: str | None,
    files: list[Path],
    catalog_path: Path | None,
    instance_type: str | None,
    max_latency_ms: float | None,
    seq_len: int | None,
    version: str | None,
    margin: float | None = None,
) -> tuple[list[Option], list[str]]:
    from modelfleet.planner.catalog import load_catalog
    from modelfleet.planner.errors import PlanInputError
    from modelfleet.tune import sources
    from modelfleet.tune.errors import TuneInputError
    from modelfleet.tune.machine import this_machine
    from modelfleet.tune.schema import DeclaredProfiles

    try:
        catalog = load_catalog(catalog_path)
    except PlanInputError as exc:
        raise TuneInputError(str(exc)) from None
    here = this_machine()
    found = []
    declared: list[tuple[Path, DeclaredProfiles]] = []
    if repository is not None and model is not None:
        found.append(sources.find_profile(repository, model, version, here))
    for path in files:
        if path.suffix == ".json":
            profile = sources.load_profile(path)
            found.append(sources.Found(path, profile, _file_warnings(profile, here)))
        else:
            doc = sources.load_declared(path)
            if model is not None and doc.model != model:
                raise TuneInputError(f"{path} declares model '{doc.model}', not '{model}'")
            declared.append((path, doc))
    table = sources.prices(catalog, [doc for _, doc in declared])
    options: list[Option] = []
    warnings: list[str] = []
    for path, doc in declared:
        options += sources.declared_options(doc, path, table, seq_len)
    several = len({item.profile.model for item in found}) > 1
    for item in found:
        warnings += item.warnings
        chosen = (
            instance_type
            or item.profile.instance_type
            or sources.default_instance_type(catalog, item.profile.machine)
        )
        if chosen is None:
            raise TuneInputError(
                f"no catalogue CPU type has {item.profile.machine.nproc} vCPUs: say which type the "
                "profile's machine stands for with --instance-type"
            )
        usd = table.get(chosen)
        if usd is None:
            raise TuneInputError(f"instance type '{chosen}' has no price in the catalogue")
        options += sources.measured_options(item, chosen, usd, max_latency_ms, seq_len, several, margin)
    return options, warnings


def _file_warnings(profile: Profile, here: Machine) -> list[str]:
    warnings = []
    if not profile.machine.same_hardware(here):
        warnings.append(
            f"the profile was measured on another machine ({profile.machine.line}); this one: {here.line}"
        )
    return warnings


def _rank(options: list[Option], rate: float, max_latency_ms: float | None) -> Ranking:
    from modelfleet.tune.recommend import rank

    return rank(options, rate, max_latency_ms)


def _document(
    rate: float,
    max_latency_ms: float | None,
    shown: list[Recommendation],
    best: Recommendation | None,
    warnings: list[str] | None = None,
) -> dict[str, object]:
    return {
        "rate_per_s": rate,
        "max_latency_ms": max_latency_ms,
        "warnings": warnings or [],
        "recommendations": [r.document() for r in shown],
        "best_reachable": None if best is None else best.document(),
    }


def _table(out: Console, shown: list[Recommendation], rate: float, max_latency_ms: float | None) -> None:
    from rich.table import Table

    bound = f", latency ≤ {max_latency_ms:g} ms" if max_latency_ms is not None else ""
    table = Table(title=f"Recommendations for {rate:g} inferences/s{bound}, cheapest first")
    for name in ("#", "config", "instance type", "count", "$/h", "$/M inf.", "latency ms", "per inst./s"):
        text = name in ("config", "instance type")
        table.add_column(name, justify="left" if text else "right", no_wrap=text)
    for i, r in enumerate(shown, 1):
        table.add_row(
            str(i),
            r.config,
            r.instance_type,
            str(r.instance_count),
            f"{r.cost_per_hour:.4g}",
            f"{r.cost_per_million:.4g}",
            f"{r.predicted_p90_ms:.4g}",
            f"{r.capacity_per_s:.4g}",
        )
    out.print(table)


def _apply(err: Console, repository: Path, model: str, chosen: Recommendation) -> None:
    """Show the diff of MODEL/config.yaml, then write it (the winner's model: a variant's own)."""
    from modelfleet.tune.apply import planned, write
    from modelfleet.tune.errors import TuneInputError
    from modelfleet.tune.sources import model_folder

    if chosen.settings is None:
        err.print(
            f"[red]error:[/red] {chosen.config} has no settings this server can apply "
            "(a declared row without `settings`)",
            highlight=False,
        )
        raise typer.Exit(EXIT_INPUT)
    try:
        change = planned(model_folder(repository, model), chosen.settings)
        err.print(change.diff or "config.yaml already has these settings", markup=False, highlight=False)
        write(change)
    except (TuneInputError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None
    err.print(f"applied {chosen.config} to {change.path}", style="green", highlight=False)
