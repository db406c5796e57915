"""The `infleet` command line: plan, run, crds, sandbox."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from infleet import __version__

EXIT_BAD_INPUT = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="infleet")
def main() -> None:
    """infleet places LLM inference fleets on heterogeneous accelerators."""


def _fail(messages: list[str]) -> None:
    for message in messages:
        click.echo(message, err=True)
    sys.exit(EXIT_BAD_INPUT)


def _read_nodes(path: Path) -> list[dict[str, Any]]:
    """Nodes from `kubectl get nodes -o yaml` output (a List) or multi-document YAML."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        _fail([f"{path}: cannot read nodes: {exc}"])
        raise  # unreachable: _fail exits
    nodes: list[dict[str, Any]] = []
    for doc in documents:
        if doc is None:
            continue
        items = (
            doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        )
        for item in items:
            if not isinstance(item, dict) or item.get("kind") != "Node":
                kind = item.get("kind") if isinstance(item, dict) else type(item).__name__
                _fail([f"{path}: expected Node objects, found {kind!r}"])
            nodes.append(item)
    return nodes


@main.command()
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Manifest file or directory (repeatable); multi-document YAML is fine.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "yaml"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--nodes",
    "nodes_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Nodes (e.g. `kubectl get nodes -o yaml`) to size pools from, instead of maxAccelerators.",
)
def plan(paths: tuple[Path, ...], output: str, nodes_file: Path | None) -> None:
    """Plan the fleet offline: which models run how many replicas on which pools.

    Pool capacity is each pool's maxAccelerators (unbounded when unset), or what the nodes in
    --nodes offer. Exit status 2 means the manifests are malformed; every problem is listed.
    """
    from infleet.api.manifests import load_manifests
    from infleet.core.fleet import PlanInputs, build_problem
    from infleet.core.inventory import NodeInfo, pool_inventory
    from infleet.core.planner import plan_fleet
    from infleet.core.report import plan_document, plan_table

    loaded = load_manifests(list(paths))
    if loaded.errors:
        _fail([str(e) for e in loaded.errors])
    if not loaded.models:
        _fail([f"{', '.join(map(str, paths))}: no ModelDeployment found: nothing to plan"])
    capacity: dict[str, int] = {}
    if nodes_file is not None:
        try:
            nodes = [NodeInfo.from_object(n) for n in _read_nodes(nodes_file)]
            for pool in loaded.pools:
                capacity[pool.metadata.name] = pool_inventory(
                    pool=pool.metadata.name,
                    node_selector=pool.spec.node_selector,
                    resource_name=pool.spec.resource_name,
                    max_accelerators=pool.spec.max_accelerators,
                    nodes=nodes,
                ).planning_capacity
        except ValueError as exc:
            _fail([f"{nodes_file}: {exc}"])
    fleet = build_problem(loaded.pools, loaded.models, PlanInputs(pool_capacity=capacity))
    result = plan_fleet(fleet.problem)
    if output == "json":
        click.echo(json.dumps(plan_document(result), indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(plan_document(result), sort_keys=False), nl=False)
    else:
        click.echo(plan_table(result))


def priority_for_pod(pod_name: str) -> int:
    """A stable peering priority in [0, 2**31) from a pod's name: two pods of one Deployment
    get equal priorities (which would pause both) with a chance of about 5e-10."""
    import hashlib

    return int.from_bytes(hashlib.sha256(pod_name.encode()).digest()[:4], "big") >> 1


@main.command()
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Kubeconfig of the cluster (default: $KUBECONFIG, ~/.kube/config, or in-cluster).",
)
@click.option(
    "-n", "--namespace", "namespaces", multiple=True, help="Manage this namespace (repeatable)."
)
@click.option("-A", "--all-namespaces", is_flag=True, help="Manage every namespace (the default).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Seconds between fleet cycles when nothing changes.",
)
@click.option(
    "--debounce",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Seconds to gather changes before planning.",
)
@click.option(
    "--pending-grace",
    type=click.FloatRange(min=0.0),
    default=120.0,
    show_default=True,
    help="Seconds a replica may stay unschedulable before its pool counts as full.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=8080,
    show_default=True,
    help="Port of /metrics and /healthz (0: off).",
)
@click.option(
    "--log-format", type=click.Choice(["plain", "json"]), default="plain", show_default=True
)
@click.option("--peering", is_flag=True, help="Kopf peering: one active instance among several.")
@click.option(
    "--priority",
    type=int,
    default=0,
    show_default=True,
    help="Peering priority: the live instance with the highest is active (give each its own).",
)
@click.option(
    "--priority-from-pod-name",
    is_flag=True,
    help="Peering priority derived from $POD_NAME instead of --priority: distinct per pod, so "
    "the replicas of a Deployment (which have no ordinal) do not all pause.",
)
@click.option("--show-fleet", is_flag=True, help="Print the fleet whenever the plan changes.")
@click.option(
    "--prometheus-url",
    envvar="INFLEET_PROMETHEUS_URL",
    default=None,
    help="Autoscale from live metrics read from this Prometheus (also $INFLEET_PROMETHEUS_URL); "
    "without it demand is the models' traffic prior.",
)
@click.option(
    "--metrics-window",
    default="1m",
    show_default=True,
    help="PromQL range of rates and percentiles when autoscaling (e.g. 20s, 1m).",
)
@click.option(
    "--fast-window",
    default=None,
    help="PromQL range of the short-window request rate that speeds up scaling up "
    "(default: 40% of --metrics-window; 0 turns it off).",
)
@click.option(
    "--probe-interval",
    type=click.FloatRange(min=0.0),
    default=5.0,
    show_default=True,
    help="Seconds between probes of the short-window request rate between cycles: a model "
    "whose load outgrew its plan gets a cycle at once (0: off; off when not below --interval).",
)
@click.option(
    "--status-refresh",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Seconds a model's status may show older live figures (observed rate and latency, "
    "the demand figure) before they are written again; replicas, placements and conditions "
    "are written at once (0: every change at once).",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def run(
    kubeconfig: Path | None,
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    interval: float,
    debounce: float,
    pending_grace: float,
    metrics_port: int,
    log_format: str,
    peering: bool,
    priority: int,
    priority_from_pod_name: bool,
    show_fleet: bool,
    prometheus_url: str | None,
    metrics_window: str,
    fast_window: str | None,
    probe_interval: float,
    status_refresh: float,
    verbose: bool,
) -> None:
    """Run the operator: watch pools, models and nodes; plan the fleet; apply it."""
    import os
    import re
    from dataclasses import replace

    from infleet.core.settings import (
        AutoscaleSettings,
        FleetLoopSettings,
        OperatorSettings,
        PendingSettings,
        duration_seconds,
    )
    from infleet.metrics.prometheus import PrometheusError
    from infleet.metrics.prometheus import prometheus_url as checked_url

    if namespaces and all_namespaces:
        _fail(["--namespace and --all-namespaces exclude each other"])
    if priority_from_pod_name:
        pod_name = os.environ.get("POD_NAME", "")
        if not pod_name:
            _fail(["--priority-from-pod-name needs $POD_NAME (the downward API's metadata.name)"])
        priority = priority_for_pod(pod_name)
    if prometheus_url:
        try:
            prometheus_url = checked_url(prometheus_url)
        except PrometheusError as exc:
            _fail([f"--prometheus-url: {exc}"])
    if not re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", metrics_window):
        _fail([f"--metrics-window must be a duration such as 20s or 1m, got {metrics_window!r}"])
    if fast_window is not None and fast_window != "0":
        if not re.fullmatch(r"[1-9][0-9]*(ms|s|m|h)", fast_window):
            _fail([f"--fast-window must be a duration such as 8s, or 0, got {fast_window!r}"])
        if duration_seconds(fast_window) >= duration_seconds(metrics_window):
            _fail(
                [
                    f"--fast-window {fast_window} must be shorter than --metrics-window "
                    f"{metrics_window}"
                ]
            )
    if kubeconfig is not None:
        # Kopf's own login reads $KUBECONFIG; the fleet client is given the path directly.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    settings = OperatorSettings(
        namespaces=tuple(namespaces),
        fleet=FleetLoopSettings(interval_seconds=interval, debounce_seconds=debounce),
        pending=replace(PendingSettings(), grace_period_seconds=pending_grace),
        metrics_port=metrics_port,
        peering=peering,
        peering_priority=priority,
        show_fleet=show_fleet,
        autoscale=AutoscaleSettings(
            prometheus_url=prometheus_url or None,
            metrics_window=metrics_window,
            fast_window=fast_window,
            probe_interval_seconds=probe_interval,
            status_refresh_seconds=status_refresh,
        ),
    )
    from infleet.handlers import run_operator

    run_operator(settings, kubeconfig=kubeconfig, log_format=log_format, verbose=verbose)


@main.group()
def crds() -> None:
    """The CustomResourceDefinitions generated from the API models."""


@crds.command("generate")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("crds"),
    show_default=True,
    help="Directory the CRD files are written to (or compared with, with --check).",
)
@click.option(
    "--chart",
    "chart_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("charts/infleet"),
    show_default=True,
    help="Helm chart whose templates/crds/ get the same CRDs as templates (plus Kopf's "
    "peering CRDs).",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a file is missing or stale.")
def crds_generate(out_dir: Path, chart_dir: Path, check: bool) -> None:
    """Write (or --check) one YAML file per CRD, and the chart's CRD templates."""
    from infleet.api.crd import CHART_CRD_DIR, rendered_chart_crds, rendered_crds
    from infleet.k8s.peering import peering_crds

    template_dir = chart_dir / CHART_CRD_DIR
    files = {out_dir / name: text for name, text in rendered_crds().items()}
    files |= {
        template_dir / name: text for name, text in rendered_chart_crds(peering_crds()).items()
    }
    if check:
        stale = [
            path for path, text in files.items() if not path.is_file() or path.read_text() != text
        ]
        # A template left behind by a removed kind would still be installed by the chart.
        known = set(files)
        stray = sorted(p for p in template_dir.glob("*.yaml") if p not in known)
        problems = []
        if stale:
            problems.append(f"stale or missing generated CRDs: {', '.join(map(str, stale))}")
        if stray:
            problems.append(
                f"CRD templates not made by the generator: {', '.join(map(str, stray))}"
            )
        if problems:
            click.echo(
                "; ".join(problems) + "; run `infleet crds generate` (or `make crds`) and commit "
                "the result",
                err=True,
            )
            sys.exit(1)
        click.echo(
            f"{len(files)} generated CRD files in {out_dir} and {template_dir} are up to date"
        )
        return
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(f"wrote {path}")


def _register_subcommands() -> None:
    # Sub-command groups live next to the code they drive.
    from infleet.sandbox.cli import sandbox

    main.add_command(sandbox)


_register_subcommands()


if __name__ == "__main__":  # `python -m infleet.cli`, as the e2e tests run it
    main()
