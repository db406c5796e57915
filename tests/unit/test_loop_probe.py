"""The fleet loop's wait between cycles: a probe that finds a model above its plan ends the
wait at once; without one, the loop waits out the interval."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from infleet.core.settings import AutoscaleSettings, FleetLoopSettings, OperatorSettings
from infleet.reconcile.autoscale import Rise
from infleet.reconcile.loop import FleetLoop
from infleet.reconcile.telemetry import OperatorMetrics


class _Reconciler:
    """Answers probes from a script: the n-th probe returns ``script[n]`` (then nothing)."""

    def __init__(self, script: list[list[Rise]], autoscaling: bool = True) -> None:
        self.script = script
        self.probes: list[float] = []
        self.autoscaler = object() if autoscaling else None

    def probe(self) -> list[Rise]:
        self.probes.append(time.monotonic())
        n = len(self.probes) - 1
        return self.script[n] if n < len(self.script) else []


def _loop(reconciler: _Reconciler, interval: float, probe: float, fast: str | None = None) -> Any:
    settings = OperatorSettings(
        fleet=FleetLoopSettings(interval_seconds=interval),
        autoscale=AutoscaleSettings(
            prometheus_url="http://127.0.0.1:9", probe_interval_seconds=probe, fast_window=fast
        ),
    )
    loop = FleetLoop(reconciler, settings, OperatorMetrics())  # type: ignore[arg-type]
    loop._dirty = asyncio.Event()
    return loop


RISE = Rise(("ns", "chat"), 12.0, 8.0)


def test_a_rise_ends_the_wait_at_once_and_is_counted() -> None:
    reconciler = _Reconciler([[], [], [RISE]])
    loop = _loop(reconciler, interval=30.0, probe=0.05)
    start = time.monotonic()
    assert asyncio.run(loop._wait()) == (True, True)
    assert time.monotonic() - start < 5.0  # not the 30 s interval
    assert len(reconciler.probes) == 3
    assert loop.metrics.registry.get_sample_value("infleet_early_cycles_total") == 1


def test_without_a_rise_the_interval_ends_the_wait() -> None:
    reconciler = _Reconciler([])
    loop = _loop(reconciler, interval=0.5, probe=0.1)
    start = time.monotonic()
    assert asyncio.run(loop._wait()) == (False, False)
    assert time.monotonic() - start == pytest.approx(0.5, abs=0.3)
    assert 2 <= len(reconciler.probes) <= 5
    assert loop.metrics.registry.get_sample_value("infleet_early_cycles_total") == 0


@pytest.mark.parametrize(
    ("probe", "fast", "autoscaling", "why"),
    [
        (0.0, None, True, "--probe-interval 0 turns it off"),
        (0.5, None, True, "not shorter than the interval"),
        (0.1, "0", True, "no fast window, nothing to probe"),
        (0.1, None, False, "no Prometheus, no autoscaling"),
    ],
)
def test_probe_off(probe: float, fast: str | None, autoscaling: bool, why: str) -> None:
    reconciler = _Reconciler([[RISE]], autoscaling=autoscaling)
    loop = _loop(reconciler, interval=0.5, probe=probe, fast=fast)
    assert asyncio.run(loop._wait()) == (False, False), why
    assert reconciler.probes == [], why


def test_a_trigger_still_ends_the_wait_as_a_change() -> None:
    reconciler = _Reconciler([])
    loop = _loop(reconciler, interval=30.0, probe=0.05)

    async def trigger_soon() -> tuple[bool, bool]:
        asyncio.get_running_loop().call_later(0.2, loop.trigger, "pods")
        return await loop._wait()

    assert asyncio.run(trigger_soon()) == (True, False)  # debounced as any change
