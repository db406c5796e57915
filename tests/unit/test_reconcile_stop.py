"""Stopping the operator while a fleet cycle runs: the cycle's thread keeps going after its
awaiting task is cancelled, so the reconciler must not close what the cycle still uses."""

from __future__ import annotations

import threading
import time
from typing import Any

from infleet.core.settings import OperatorSettings
from infleet.reconcile.fleet import FleetReconciler


class _SlowCluster:
    """Answers every list with no items, the first one only once ``release`` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lists = 0

    def list_items(self, path: str, **_: Any) -> list[dict[str, Any]]:
        self.lists += 1
        self.entered.set()
        assert self.release.wait(10), "the test never released the cycle"
        return []


class _Autoscaler:
    """Records when it was closed, and whether a cycle was using it then."""

    def __init__(self, cluster: _SlowCluster) -> None:
        self.cluster = cluster
        self.closed_while_cycle_blocked: bool | None = None

    def prepare(self, *_: Any) -> None:
        """No live-metrics decisions: the cycle plans from the (empty) snapshot."""

    def close(self) -> None:
        self.closed_while_cycle_blocked = not self.cluster.release.is_set()


def test_close_waits_for_the_running_cycle_then_closes_its_clients() -> None:
    cluster = _SlowCluster()
    reconciler = FleetReconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    autoscaler = _Autoscaler(cluster)
    reconciler.autoscaler = autoscaler  # type: ignore[assignment]
    cycle = threading.Thread(target=reconciler.run_cycle)
    cycle.start()
    assert cluster.entered.wait(5)
    closer = threading.Thread(target=reconciler.close)
    closer.start()
    time.sleep(0.3)
    assert closer.is_alive(), "close() returned while a cycle was still running"
    assert autoscaler.closed_while_cycle_blocked is None
    cluster.release.set()
    cycle.join(5)
    closer.join(5)
    assert not closer.is_alive()
    assert autoscaler.closed_while_cycle_blocked is False


def test_no_cycle_starts_after_close() -> None:
    cluster = _SlowCluster()
    cluster.release.set()
    reconciler = FleetReconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    reconciler.close()
    report = reconciler.run_cycle()
    assert cluster.lists == 0
    assert report.errors == ["stopping: cycle skipped"]


def test_close_gives_up_on_a_stuck_cycle_after_its_timeout() -> None:
    cluster = _SlowCluster()
    reconciler = FleetReconciler(cluster, OperatorSettings())  # type: ignore[arg-type]
    autoscaler = _Autoscaler(cluster)
    reconciler.autoscaler = autoscaler  # type: ignore[assignment]
    cycle = threading.Thread(target=reconciler.run_cycle)
    cycle.start()
    assert cluster.entered.wait(5)
    started = time.monotonic()
    reconciler.close(timeout=0.2)
    assert time.monotonic() - started < 5
    assert autoscaler.closed_while_cycle_blocked is None  # never closed under the cycle
    cluster.release.set()
    cycle.join(5)
