"""The one fleet loop: waits for a change (debounced) or the interval, then runs a cycle.

Per-object handlers only call :meth:`FleetLoop.trigger`; planning happens here, once for the
whole fleet, in a worker thread (the Kubernetes client is synchronous).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from infleet.core.planner import FleetPlan
from infleet.core.report import plan_document, plan_table
from infleet.core.settings import OperatorSettings
from infleet.reconcile.fleet import FleetReconciler
from infleet.reconcile.telemetry import OperatorMetrics

log = logging.getLogger("infleet.loop")


class FleetLoop:
    """Debounced trigger + interval timer around :class:`FleetReconciler`."""

    def __init__(
        self,
        reconciler: FleetReconciler,
        settings: OperatorSettings,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self.metrics = metrics
        self.cycles = 0
        self.last_progress = time.monotonic()
        self._dirty: asyncio.Event | None = None
        self._shown: object = None
        self._changed: set[str] = {"*"}
        self.acting: tuple[bool, str] | None = None
        """With peering: whether this instance was active at the last check, and why."""

    def trigger(self, kind: str | None = None) -> None:
        """Something relevant changed: plan again soon (many triggers, one cycle). ``kind``
        ("nodes", "pods", ...) says what changed, so the cycle re-lists only the cached kinds
        that did (None: anything may have)."""
        self._changed.add(kind or "*")
        if self._dirty is not None:
            self._dirty.set()

    def healthy(self) -> bool:
        """The loop finished a cycle (or started) recently enough."""
        budget = 3 * self.settings.fleet.interval_seconds + 120
        return time.monotonic() - self.last_progress < budget

    async def run(self) -> None:
        """Cycle until cancelled; the first cycle starts at once."""
        self._dirty = asyncio.Event()
        self._dirty.set()
        fleet = self.settings.fleet
        while True:
            triggered, early = await self._wait()
            if not await self._may_act():
                self._dirty.clear()  # the active instance handles the change
                self.reconciler.standing_by()
                self.last_progress = time.monotonic()
                continue
            triggered = triggered or self._dirty.is_set()  # set when we just became active
            if not triggered and not self.reconciler.due(time.time()):
                # Nothing changed, no deadline, no resync due: the plan would be the same.
                self.last_progress = time.monotonic()
                continue
            if triggered and not early and self.cycles > 0:
                await asyncio.sleep(fleet.debounce_seconds)
            self._dirty.clear()
            await self._cycle()

    def _probe_every(self) -> float | None:
        """Seconds between probes, or ``None`` when the probe is off."""
        auto = self.settings.autoscale
        every = auto.probe_interval_seconds
        if (
            self.reconciler.autoscaler is None
            or auto.resolved_fast_window is None
            or every <= 0
            or every >= self.settings.fleet.interval_seconds
        ):
            return None
        return every

    async def _wait(self) -> tuple[bool, bool]:
        """Wait for a trigger, the interval, or a probe that finds a model's load above what
        its plan covers (:meth:`FleetReconciler.probe`). ``(triggered, early)``: ``early``
        when the probe ended the wait (a cycle must start now, without debounce)."""
        assert self._dirty is not None
        interval = self.settings.fleet.interval_seconds
        every = self._probe_every()
        deadline = time.monotonic() + interval
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._dirty.wait(), timeout=left if every is None else min(left, every)
                )
                return True, False
            if every is None or deadline - time.monotonic() <= 0:
                continue
            rises = await asyncio.to_thread(self.reconciler.probe)
            if rises:
                for rise in rises:
                    log.info(
                        "early cycle: %s/%s at %.2f req/s over the short window, above the "
                        "%.2f req/s its plan covers",
                        *rise.key,
                        rise.fast_rate,
                        rise.covered,
                    )
                if self.metrics is not None:
                    self.metrics.early_cycles.inc()
                self._dirty.set()
                return True, True

    async def _may_act(self) -> bool:
        """With peering, only the active instance cycles; a standby checks every interval."""
        if not self.settings.peering:
            return True
        try:
            active, why = await asyncio.to_thread(self.reconciler.active)
        except Exception:
            log.exception("cannot read the peering object; standing by")
            active, why = False, "peering object unreadable"
        if (active, why) != self.acting:
            became_active = active and (self.acting is None or not self.acting[0])
            self.acting = (active, why)
            if active:
                log.info("active: %s", why)
                if became_active and self._dirty is not None:
                    self._dirty.set()  # plan at once, whatever the last instance left
            else:
                log.info("standby: %s", why)
        return active

    async def _cycle(self) -> None:
        try:
            changed, self._changed = self._changed, set()
            refresh = None if "*" in changed else changed
            report = await asyncio.to_thread(self.reconciler.run_cycle, refresh)
        except Exception:
            self._changed.add("*")  # read everything again next time
            log.exception("fleet cycle failed; retrying at the next trigger or interval")
            if self.metrics is not None:
                self.metrics.reconcile_errors.labels("cycle").inc()
            # A failed read must not wait a whole interval when the API comes back.
            await asyncio.sleep(min(5.0, self.settings.fleet.interval_seconds))
            if self._dirty is not None:
                self._dirty.set()
        else:
            plan = report.plan
            if self.settings.show_fleet and plan is not None:
                self._show(plan, report.ready)
            metrics = (
                "" if report.metrics_seconds is None else f"metrics {report.metrics_seconds:.2f}s, "
            )
            log.info(
                "fleet cycle %.2fs (%splanner %.2fs): %d placements, $%.2f/h, "
                "%d applied, %d deleted, %d statuses (%d deferred), %d events, %d errors",
                report.seconds,
                metrics,
                report.planner_seconds,
                sum(1 for p in plan.placements if p.replicas) if plan else 0,
                plan.cost_per_hour if plan else 0.0,
                report.applied,
                report.deleted,
                report.statuses,
                report.statuses_deferred,
                report.events,
                len(report.errors),
            )
        self.cycles += 1
        self.last_progress = time.monotonic()

    def _show(self, plan: FleetPlan, ready: int) -> None:
        table = plan_table(plan)
        shown = (plan_document(plan)["placements"], ready)
        if shown != self._shown:
            self._shown = shown
            stamp = time.strftime("%H:%M:%S")
            print(f"\n=== fleet at {stamp}: {ready} replicas ready ===\n{table}", flush=True)
