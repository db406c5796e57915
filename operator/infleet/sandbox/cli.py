"""`infleet sandbox up|down|status|env`: a local Kubernetes control plane with fake accelerator
nodes and Prometheus, for tests, the demo and benchmarks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from infleet.sandbox.binaries import REPO_ROOT, BinariesError
from infleet.sandbox.cluster import Sandbox, SandboxError, default_state_dir, echo_stderr
from infleet.sandbox.load_cli import load, perf, start, startup_scale, stop
from infleet.sandbox.pools import PoolFileError, load_pools

F = TypeVar("F", bound=Callable[..., Any])


def dir_option(function: F) -> F:
    """The --dir option every subcommand takes."""
    decorated: F = click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="State directory of the sandbox (default: $INFLEET_SANDBOX_DIR, else "
        "~/.local/state/infleet/sandbox).",
    )(function)
    return decorated


def _sandbox(directory: Path | None) -> Sandbox:
    return Sandbox(directory or default_state_dir())


@click.group()
def sandbox() -> None:
    """A real Kubernetes control plane on this machine, with kwok nodes for AcceleratorPools."""


for _command in (load, perf, startup_scale, stop, start):
    sandbox.add_command(_command)


@sandbox.command()
@dir_option
@click.option(
    "--pools",
    "pool_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="AcceleratorPool manifests (file or directory, repeatable; default: examples/).",
)
@click.option(
    "--nodes-without-quota",
    default=2,
    show_default=True,
    type=click.IntRange(min=0),
    help="Nodes for a pool that sets no maxAccelerators.",
)
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait per step.")
@click.option("--kind", "use_kind", is_flag=True, help="Use a kind cluster (needs Docker).")
def up(
    directory: Path | None,
    pool_paths: tuple[Path, ...],
    nodes_without_quota: int,
    timeout: float,
    use_kind: bool,
) -> None:
    """Start the sandbox (or keep it running) and create nodes for the pools.

    The last line printed is `export KUBECONFIG=<path>`.
    """
    paths = list(pool_paths) or [REPO_ROOT / "examples"]
    try:
        pools = load_pools(paths)
        if use_kind:
            from infleet.sandbox.kind import KindSandbox

            kind_box = KindSandbox(directory or default_state_dir())
            kind_box.up(pools, echo=echo_stderr)
            click.echo(f"export KUBECONFIG={kind_box.kubeconfig}")
            return
        box = _sandbox(directory)
        box.up(pools, nodes_without_quota=nodes_without_quota, echo=echo_stderr, timeout=timeout)
    except (PoolFileError, BinariesError, SandboxError, RuntimeError) as exc:
        click.echo(f"infleet sandbox up: {exc}", err=True)
        sys.exit(1)
    click.echo(f"export KUBECONFIG={box.kubeconfig}")


@sandbox.command()
@dir_option
@click.option("--wipe", is_flag=True, help="Also delete the state directory.")
def down(directory: Path | None, wipe: bool) -> None:
    """Stop every process the sandbox started."""
    box = _sandbox(directory)
    box.down(wipe=wipe, echo=echo_stderr)
    if (box.dir / "kind.json").exists() or wipe:
        from infleet.sandbox.kind import KindSandbox

        KindSandbox(box.dir).down(echo=echo_stderr)


@sandbox.command()
@dir_option
def status(directory: Path | None) -> None:
    """Say what runs; exit 0 when every component is healthy."""
    box = _sandbox(directory)
    if not box.dir.exists():
        click.echo(f"no sandbox in {box.dir}")
        sys.exit(1)
    report = box.status()
    for item in report:
        pid = f"pid {item.pid}" if item.pid else "-"
        click.echo(f"{item.name:<24} {pid:<11} {item.detail}")
    click.echo(f"kubeconfig: {box.kubeconfig}")
    click.echo(f"prometheus: {box.prometheus_url}")
    sys.exit(0 if all(item.healthy for item in report) else 1)


@sandbox.command()
@dir_option
def env(directory: Path | None) -> None:
    """Print shell exports for KUBECONFIG, INFLEET_PROMETHEUS_URL and PATH (for helm, kubectl)."""
    box = _sandbox(directory)
    if not box.kubeconfig.exists():
        click.echo(f"no sandbox in {box.dir}; run `infleet sandbox up` first", err=True)
        sys.exit(1)
    try:
        for line in box.env_lines():
            click.echo(line)
    except BinariesError as exc:
        click.echo(f"infleet sandbox env: {exc}", err=True)
        sys.exit(1)
