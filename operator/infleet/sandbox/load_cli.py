"""`infleet sandbox load|perf|startup-scale|stop|start`: drive the simulated engines.

Every command writes `<dir>/engine/settings.json` (see :mod:`infleet.sandbox.load_settings`)
and makes sure the engine process runs; the engine applies a change within a second.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from infleet.sandbox import kwok
from infleet.sandbox.cluster import ENGINE, Sandbox, SandboxError, default_state_dir
from infleet.sandbox.load_settings import (
    EngineSettings,
    SettingsError,
    SteadyLoad,
    TraceReplay,
    parse_model_key,
    read_settings,
    settings_path,
    update_settings,
)
from infleet.sandbox.load_trace import TraceError, read_trace
from infleet.sandbox.prometheus import write_if_changed

STOPPABLE = ("prometheus", ENGINE)
"""Components `stop`/`start` handle (to simulate a metrics outage)."""

_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory of the sandbox (default: $INFLEET_SANDBOX_DIR, else "
    "~/.local/state/infleet/sandbox).",
)


def _box(directory: Path | None) -> Sandbox:
    box = Sandbox(directory or default_state_dir())
    if not box.kubeconfig.exists():
        click.echo(f"no sandbox in {box.dir}; run `infleet sandbox up` first", err=True)
        sys.exit(1)
    return box


def _fail(command: str, exc: Exception) -> None:
    click.echo(f"infleet sandbox {command}: {exc}", err=True)
    sys.exit(1)


def _model(text: str) -> tuple[str, str]:
    try:
        return parse_model_key(text)
    except SettingsError as exc:
        raise click.BadParameter(str(exc)) from exc


def _ensure_engine(box: Sandbox) -> None:
    if box.processes.running(ENGINE) is None:
        box.start_engine(lambda line: click.echo(line, err=True))


def _show(settings: EngineSettings) -> None:
    for (namespace, name), setting in sorted(settings.models.items()):
        if isinstance(setting, SteadyLoad):
            click.echo(
                f"{namespace}/{name}: {setting.requests_per_second:g} rps, "
                f"{setting.input_tokens} input / {setting.output_tokens} output tokens"
            )
        else:
            click.echo(
                f"{namespace}/{name}: replaying {setting.trace} "
                f"(speedup {setting.speedup:g}, scale {setting.scale:g}, "
                f"started {time.time() - setting.started_at:.0f}s ago)"
            )
    for pool, factor in sorted(settings.perf.items()):
        click.echo(f"pool {pool}: perf factor {factor:g}")
    click.echo(f"startup scale: {settings.startup_scale:g}")


@click.group()
def load() -> None:
    """Set the request load the simulated engines receive."""


@load.command("set")
@_DIR
@click.argument("model", metavar="NS/NAME")
@click.option("--rps", type=click.FloatRange(min=0), required=True, help="Requests per second.")
@click.option("--input-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--output-tokens", type=click.IntRange(min=1), default=128, show_default=True)
def load_set(
    directory: Path | None, model: str, rps: float, input_tokens: int, output_tokens: int
) -> None:
    """Poisson arrivals at RPS for the ModelDeployment NS/NAME."""
    box = _box(directory)
    key = _model(model)
    try:
        update_settings(
            settings_path(box.dir),
            model=key,
            load=SteadyLoad(rps, input_tokens, output_tokens),
        )
        _ensure_engine(box)
    except (SettingsError, SandboxError, RuntimeError) as exc:
        _fail("load set", exc)
    click.echo(f"{model}: {rps:g} rps ({input_tokens} input / {output_tokens} output tokens)")


@load.command("replay")
@_DIR
@click.argument("model", metavar="NS/NAME")
@click.option(
    "--trace",
    "trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="CSV with TIMESTAMP, ContextTokens, GeneratedTokens (Azure LLM trace format).",
)
@click.option("--speedup", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option("--scale", type=click.FloatRange(min=0), default=1.0, help="Rate multiplier.")
@click.option("--follow", is_flag=True, help="Wait until the replay has ended.")
def load_replay(
    directory: Path | None, model: str, trace: Path, speedup: float, scale: float, follow: bool
) -> None:
    """Replay a trace for NS/NAME in the background (the engine reads the file itself)."""
    box = _box(directory)
    key = _model(model)
    try:
        rows = read_trace(trace, speedup=speedup, scale=scale)
        update_settings(
            settings_path(box.dir),
            model=key,
            load=TraceReplay(str(trace.resolve()), speedup, scale, started_at=time.time()),
        )
        _ensure_engine(box)
    except (TraceError, SettingsError, SandboxError, RuntimeError) as exc:
        _fail("load replay", exc)
    length = rows[-1][0] if rows else 0.0
    click.echo(f"{model}: replaying {len(rows)} requests over {length:.0f}s")
    if follow:
        time.sleep(length)


@load.command("clear")
@_DIR
@click.argument("model", metavar="NS/NAME")
def load_clear(directory: Path | None, model: str) -> None:
    """Stop sending requests to NS/NAME."""
    box = _box(directory)
    update_settings(settings_path(box.dir), model=_model(model), load=None)
    click.echo(f"{model}: no load")


@load.command("show")
@_DIR
def load_show(directory: Path | None) -> None:
    """Print the loads, perf factors and start-up scale in effect."""
    box = _box(directory)
    try:
        _show(read_settings(settings_path(box.dir)))
    except SettingsError as exc:
        _fail("load show", exc)


@click.command()
@_DIR
@click.argument("pool")
@click.option(
    "--factor",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="Hidden performance factor of the pool's replicas (1: as profiled, 0.7: 30% slower).",
)
def perf(directory: Path | None, pool: str, factor: float) -> None:
    """Make the replicas on POOL faster or slower than their profile says."""
    box = _box(directory)
    try:
        update_settings(settings_path(box.dir), perf=(pool, factor))
        _ensure_engine(box)
    except (SettingsError, SandboxError, RuntimeError) as exc:
        _fail("perf", exc)
    click.echo(f"pool {pool}: perf factor {factor:g}")


def _restart_kwok(box: Sandbox, timeout: float) -> None:
    """Restart kwok so that it reads its configuration again (starting kwok releases the
    fake nodes' leases the old process held: see ``Sandbox.start_component``)."""
    box.stop_component("kwok")
    box.start_component("kwok", timeout)


@click.command("startup-scale")
@_DIR
@click.argument("scale", type=click.FloatRange(min=0))
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for kwok.")
def startup_scale(directory: Path | None, scale: float, timeout: float) -> None:
    """Model pods become Ready startupSeconds x SCALE after they start (0: at once).

    kwok reads the scale from its configuration, so a running kwok is restarted when the
    scale changes (pods already Ready stay Ready; starting ones start their wait again).
    """
    box = _box(directory)
    update_settings(settings_path(box.dir), startup_scale=scale)
    changed = write_if_changed(box.dir / "kwok.yaml", kwok.config_for(box.dir))
    if changed and box.processes.running("kwok") is not None:
        try:
            _restart_kwok(box, timeout)
        except (SandboxError, RuntimeError) as exc:
            _fail("startup-scale", exc)
        click.echo("kwok: restarted with the new scale")
    click.echo(f"startup scale: {scale:g}")


@click.command()
@_DIR
@click.argument("component", type=click.Choice(STOPPABLE))
def stop(directory: Path | None, component: str) -> None:
    """Stop one component (the rest keeps running)."""
    box = _box(directory)
    stopped = box.stop_component(component)
    click.echo(f"{component}: {'stopped' if stopped else 'was not running'}")


@click.command()
@_DIR
@click.argument("component", type=click.Choice(STOPPABLE))
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for health.")
def start(directory: Path | None, component: str, timeout: float) -> None:
    """Start one stopped component again (same port, same data)."""
    box = _box(directory)
    try:
        box.start_component(component, timeout)
    except (SandboxError, RuntimeError) as exc:
        _fail("start", exc)
    click.echo(f"{component}: running")
