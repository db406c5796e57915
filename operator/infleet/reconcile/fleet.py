"""One fleet cycle: snapshot -> inventory -> plan -> apply -> status, for the whole fleet.

Level-based: every cycle reads the cluster, decides from scratch (with the running placement
and a churn cost, so a restart or an unchanged cluster gives the same plan) and converges.
Writes are skipped when the live object already says the same (spec hash, equal status), so an
idle or restarted operator changes nothing.

Decisions written down here:

* **Advise models** are planned after the Apply models, on the capacity those leave free: a
  model in Advise mode never takes capacity from models that are really running. Their
  existing Deployments (if they were switched from Apply) are left untouched.
* **Deletes** only ever hit Deployments labelled ``app.kubernetes.io/managed-by=infleet`` with
  a ModelDeployment owner, in the namespaces the operator manages, and with a uid precondition.
* **Live figures wait, decisions do not.** With live metrics every model's status changes
  every cycle (observed rate and latency, the demand figure, the scaling window). A status
  whose only changes are such figures (:mod:`infleet.core.status_change`) is written at most
  every ``--status-refresh`` seconds (60); a change of replicas, placements, conditions, the
  demand source or a derate is written in the cycle that makes it. The first cycle after a
  start writes every status that differs.
* **Errors** of one object (a write refused, a model that cannot be built) are logged, counted
  in ``infleet_reconcile_errors`` and the cycle goes on with the others.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from infleet.api import AcceleratorPool, Mode
from infleet.core.children import deployment_manifest, service_manifest
from infleet.core.fleet import PlanInputs, build_problem
from infleet.core.inventory import NodeInfo, PoolInventory
from infleet.core.planner import FleetPlan, ModelKey, PlacementKey, plan_fleet
from infleet.core.settings import OperatorSettings
from infleet.core.status import (
    decision_event,
    invalid_model_status,
    model_status,
    pool_status,
)
from infleet.core.status_change import StatusChange, decision_fields, status_change
from infleet.k8s import apply as k8s_apply
from infleet.k8s import peering
from infleet.k8s.client import Kube, KubeError
from infleet.k8s.snapshot import Snapshot, read_snapshot
from infleet.reconcile.autoscale import AutoscaleCycle, Rise, autoscaler_from_settings
from infleet.reconcile.observe import (
    HoldBook,
    LiveChild,
    ParsedModel,
    current_placements,
    inventories,
    live_deployments,
    next_deadline,
    parse_models,
    parse_pools,
    pool_usage,
)
from infleet.reconcile.telemetry import OperatorMetrics

log = logging.getLogger("infleet.fleet")


@dataclass
class CycleReport:
    """What one cycle did (for logs, tests and the demo)."""

    plan: FleetPlan | None = None
    advice: FleetPlan | None = None
    applied: int = 0
    deleted: int = 0
    statuses: int = 0
    statuses_deferred: int = 0
    """Status patches held back because only live figures changed (``--status-refresh``)."""
    events: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    planner_seconds: float = 0.0
    metrics_seconds: float | None = None
    """Reading live metrics (``None``: no autoscaling this cycle)."""
    ready: int = 0
    """Ready replicas of infleet's Deployments when the cycle read the cluster."""


CLOSE_TIMEOUT_SECONDS = 20.0
"""How long stopping waits for a running cycle (its queued writes are dropped at once)."""

WRITE_WORKERS = 16
"""API writes in flight at once: a cycle that places 1,000 models writes thousands of objects,
and one at a time each waits a full round trip (minutes at scale, seconds with 16)."""


class _Writes:
    """Runs one cycle's writes concurrently; counts and errors go to the cycle's report."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        report: CycleReport,
        on_error: Callable[[CycleReport, str, str], None],
    ) -> None:
        self.pool = pool
        self.report = report
        self.on_error = on_error
        self.lock = threading.Lock()
        self.futures: list[Future[None]] = []
        self.dropped = 0
        """Writes not started because the operator is stopping."""

    def submit(
        self, stage: str, counter: str, call: Callable[[], object], ignore_not_found: bool = False
    ) -> None:
        """Run ``call``; on success add 1 to ``report.<counter>`` (unless it returns False)."""

        def run() -> None:
            try:
                done = call()
            except KubeError as exc:
                if not (ignore_not_found and exc.not_found):
                    with self.lock:
                        self.on_error(self.report, stage, str(exc))
                return
            if done is not False:
                with self.lock:
                    setattr(self.report, counter, getattr(self.report, counter) + 1)

        try:
            self.futures.append(self.pool.submit(run))
        except RuntimeError:  # the pool was shut down: the operator is stopping
            with self.lock:
                self.dropped += 1

    def wait(self) -> None:
        """Block until every submitted write finished (or was dropped by a stop)."""
        for future in self.futures:
            with contextlib.suppress(CancelledError):  # dropped by a stop
                future.result()
        self.futures.clear()


def _used_accelerators(plan: FleetPlan) -> dict[str, int]:
    used: dict[str, int] = defaultdict(int)
    for p in plan.placements:
        used[p.pool] += p.accelerators
    return used


class FleetReconciler:
    """Runs fleet cycles against one cluster; keeps the little state that must survive between
    cycles (capacity held after unschedulable replicas)."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        metrics: OperatorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.holds = HoldBook()
        # autoscale hook: live-metrics demand when --prometheus-url is set, else None
        self.autoscaler = autoscaler_from_settings(settings.autoscale)
        self._autoscale: AutoscaleCycle | None = None
        self.next_deadline = float("inf")
        """Unix time at which a time-based input changes (a grace period ends, a hold expires)."""
        self.last_cycle = float("-inf")
        """Unix time the last cycle started."""
        self.last_full_read = float("-inf")
        """Unix time of the last cycle that listed every kind (see ``resync_seconds``)."""
        self._snapshot: Snapshot | None = None
        self._status_written: dict[tuple[ModelKey, str], float] = {}
        """Clock time of the last status patch per (model key, uid): live figures alone are
        not written again within ``status_refresh_seconds`` of it."""
        self._writers = ThreadPoolExecutor(WRITE_WORKERS, thread_name_prefix="infleet-write")
        self._writes: _Writes | None = None
        self._cycling = threading.Lock()
        """Held while a cycle runs: close() waits on it before closing what the cycle uses."""
        self._stopping = threading.Event()

    def active(self) -> tuple[bool, str]:
        """Whether this instance may act (always, without peering), and why."""
        ours = self.settings
        if not ours.peering:
            return True, "standalone"
        return peering.is_active(
            self.kube,
            ours.peering_name,
            ours.namespaces,
            ours.peering_identity,
            ours.peering_priority,
        )

    def due(self, now: float) -> bool:
        """Whether a cycle is needed although nothing changed: a deadline passed or a resync
        is due."""
        if self.autoscaler is not None:  # autoscale hook: metrics change without events
            return True
        resync = self.settings.fleet.resync_seconds
        return now >= self.next_deadline or now - self.last_cycle >= resync

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Stop: drop the running cycle's queued writes, let it finish, then close its clients.

        Cancelling the task that awaits a cycle does not stop the cycle's thread; closing the
        Prometheus client under it made the cycle fail with "the client has been closed".
        """
        self._stopping.set()
        self._writers.shutdown(wait=False, cancel_futures=True)
        if not self._cycling.acquire(timeout=timeout):
            log.warning("a fleet cycle is still running after %.0fs; exiting without it", timeout)
            return
        try:
            self._writers.shutdown(wait=True)
            if self.autoscaler is not None:  # autoscale hook
                self.autoscaler.close()
        finally:
            self._cycling.release()

    def probe(self) -> list[Rise]:
        """Between cycles: the autoscaled models whose load already outgrew their plan (see
        :mod:`infleet.core.probe`); empty without autoscaling, or while a cycle or close runs."""
        if self.autoscaler is None or self._stopping.is_set():
            return []
        if not self._cycling.acquire(blocking=False):
            return []
        try:
            return self.autoscaler.probe()
        finally:
            self._cycling.release()

    def standing_by(self) -> None:
        """This instance stopped acting (peering): no probing on the last plan's lines."""
        if self.autoscaler is not None:
            self.autoscaler.forget_lines()

    def _error(self, report: CycleReport, stage: str, message: str) -> None:
        log.warning("%s: %s", stage, message)
        report.errors.append(f"{stage}: {message}")
        if self.metrics is not None:
            self.metrics.reconcile_errors.labels(stage).inc()

    def run_cycle(self, refresh: Collection[str] | None = None) -> CycleReport:
        """Read, plan, apply, report. Raises only when the cluster cannot be read at all.

        ``refresh`` names the cached kinds (nodes, pods) watch events changed since the last
        cycle; the others are reused. None, or a resync being due, reads everything.
        """
        with self._cycling:
            if self._stopping.is_set():
                return CycleReport(errors=["stopping: cycle skipped"])
            return self._run_cycle(refresh)

    def _run_cycle(self, refresh: Collection[str] | None) -> CycleReport:
        start = time.perf_counter()
        now = self.clock()
        full = refresh is None or now - self.last_full_read >= self.settings.fleet.resync_seconds
        self.last_cycle = now
        report = CycleReport()
        snap = read_snapshot(
            self.kube,
            self.settings.namespaces,
            previous=None if full else self._snapshot,
            refresh=refresh or (),
        )
        self._snapshot = snap
        if full:
            self.last_full_read = now
        self._writes = _Writes(self._writers, report, self._error)
        try:
            self._cycle(snap, report)
        finally:
            self._writes.wait()
            self._writes = None
        report.seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.cycle_seconds.observe(report.seconds)
            self.metrics.planner_seconds.observe(report.planner_seconds)
            if report.metrics_seconds is not None:
                self.metrics.metrics_read_seconds.observe(report.metrics_seconds)
            self.metrics.last_cycle_end.set(time.time())
        return report

    def _cycle(self, snap: Snapshot, report: CycleReport) -> None:
        now_dt = datetime.fromtimestamp(self.clock(), UTC)
        pools, _bad_pools = parse_pools(snap.pools)
        models, rejected = parse_models(snap.models)
        nodes = [NodeInfo.from_object(n) for n in snap.nodes]
        usage = pool_usage(
            pools,
            nodes,
            snap.pods,
            now=now_dt,
            grace_seconds=self.settings.pending.grace_period_seconds,
            namespaces=self.settings.namespaces,
        )
        inventory = inventories(
            pools,
            nodes,
            usage,
            self.holds,
            now=self.clock(),
            hold_seconds=self.settings.pending.hold_seconds,
        )
        self.next_deadline = next_deadline(
            snap.pods,
            self.holds,
            grace_seconds=self.settings.pending.grace_period_seconds,
            namespaces=self.settings.namespaces,
        )
        children = live_deployments(snap.deployments)
        report.ready = sum(c.ready_replicas for c in children)
        pool_names = {p.metadata.name for p in pools}
        variants = {m.key: {v.resolved_name for v in m.model.spec.variants} for m in models}
        current = {
            key: n
            for key, n in current_placements(children).items()
            if key[2] in pool_names and key[1] in variants.get(key[0], set())
        }

        applying = [m for m in models if m.model.spec.mode == Mode.APPLY]
        advising = [m for m in models if m.model.spec.mode == Mode.ADVISE]
        capacity = {name: inv.planning_capacity for name, inv in inventory.items()}
        loop = self.settings.fleet
        # autoscale hook: demand, calibration and replica bounds of the Apply models
        self._autoscale = None
        if self.autoscaler is not None:
            t0 = time.perf_counter()
            self._autoscale = self.autoscaler.prepare(applying, children, current, self.clock())
            report.metrics_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan = self._plan(pools, applying, capacity, current)
        if self.autoscaler is not None and self._autoscale is not None:  # autoscale hook
            self.autoscaler.draw_lines(plan, self._autoscale)
        advice = None
        if advising:
            used = _used_accelerators(plan)
            left = {name: max(0, cap - used.get(name, 0)) for name, cap in capacity.items()}
            advice = self._plan(pools, advising, left, {})
        report.planner_seconds = time.perf_counter() - t0
        report.plan, report.advice = plan, advice
        log.debug("planned in %.3fs (%s)", report.planner_seconds, loop)

        by_key = {m.key: m for m in models}
        pool_by_name = {p.metadata.name: p for p in pools}
        # Neither Advise models nor models that cannot be read lose what is running.
        keep = {m.key for m in advising} | {
            (str(r.raw["metadata"].get("namespace")), str(r.raw["metadata"].get("name")))
            for r in rejected
        }
        self._actuate(plan, applying, pool_by_name, children, snap.services, keep, report)
        self._write_model_statuses(plan, advice, by_key, pools, children, current, now_dt, report)
        for rejected_model in rejected:
            self._write_invalid(rejected_model.raw, rejected_model.message, now_dt, report)
        self._write_pool_statuses(snap.pools, inventory, now_dt, report)
        self._export(plan, children)

    def _plan(
        self,
        pools: Sequence[AcceleratorPool],
        models: Sequence[ParsedModel],
        capacity: Mapping[str, int],
        current: Mapping[PlacementKey, int],
    ) -> FleetPlan:
        fleet = build_problem(
            pools,
            [m.model for m in models],
            self._with_autoscale(  # autoscale hook
                PlanInputs(
                    pool_capacity=capacity,
                    current=current,
                    churn_cost_per_replica=self.settings.fleet.churn_cost_per_replica,
                )
            ),
        )
        return plan_fleet(
            fleet.problem, time_limit_seconds=self.settings.fleet.planner_time_limit_seconds
        )

    def _with_autoscale(self, inputs: PlanInputs) -> PlanInputs:
        """``inputs`` with this cycle's autoscaling decisions (autoscale hook)."""
        return inputs if self._autoscale is None else self._autoscale.plan_inputs(inputs)

    def _actuate(
        self,
        plan: FleetPlan,
        applying: Sequence[ParsedModel],
        pools: Mapping[str, AcceleratorPool],
        children: Sequence[LiveChild],
        services: Sequence[Mapping[str, Any]],
        keep: set[ModelKey],
        report: CycleReport,
    ) -> None:
        live = {(c.namespace, c.name): c for c in children}
        wanted: set[tuple[str, str]] = set()
        models = {m.key: m for m in applying}
        for placement in plan.placements:
            parsed = models.get(placement.model)
            if parsed is None or placement.replicas <= 0:
                continue
            try:
                manifest = deployment_manifest(
                    parsed.model,
                    variant=placement.variant,
                    pool=pools[placement.pool],
                    replicas=placement.replicas,
                    owner_uid=parsed.uid,
                )
            except (KeyError, ValueError) as exc:
                self._error(report, "build", f"{placement.model}: {exc}")
                continue
            meta = manifest["metadata"]
            wanted.add((meta["namespace"], meta["name"]))
            existing = live.get((meta["namespace"], meta["name"]))
            if existing is not None and existing.spec_hash == meta["annotations"].get(
                "infleet.io/spec-hash"
            ):
                continue
            self._apply(manifest, report)

        live_services = {
            ((s.get("metadata") or {}).get("namespace"), (s.get("metadata") or {}).get("name")): s
            for s in services
        }
        for parsed in applying:
            manifest = service_manifest(parsed.model, owner_uid=parsed.uid)
            meta = manifest["metadata"]
            existing_svc = live_services.get((meta["namespace"], meta["name"]))
            live_hash = ((existing_svc or {}).get("metadata") or {}).get("annotations") or {}
            if live_hash.get("infleet.io/spec-hash") != meta["annotations"]["infleet.io/spec-hash"]:
                self._apply(manifest, report)

        for child in children:
            if (child.namespace, child.name) in wanted:
                continue
            if (child.namespace, child.model) in keep:
                continue
            if not k8s_apply.is_owned_by_infleet(child.raw):
                continue
            body = {"kind": "Deployment", **child.raw}
            self._write("delete", "deleted", partial(k8s_apply.delete_owned, self.kube, body))

    def _write(
        self, stage: str, counter: str, call: Callable[[], object], ignore_not_found: bool = False
    ) -> None:
        assert self._writes is not None, "writes happen within run_cycle"
        self._writes.submit(stage, counter, call, ignore_not_found)

    def _apply(self, manifest: Mapping[str, Any], report: CycleReport) -> None:
        self._write("apply", "applied", lambda: k8s_apply.server_side_apply(self.kube, manifest))

    def _write_model_statuses(
        self,
        plan: FleetPlan,
        advice: FleetPlan | None,
        by_key: Mapping[ModelKey, ParsedModel],
        pools: Sequence[AcceleratorPool],
        children: Sequence[LiveChild],
        current: Mapping[PlacementKey, int],
        now: datetime,
        report: CycleReport,
    ) -> None:
        types = {p.metadata.name: p.spec.accelerator_type for p in pools}
        known = {(key, parsed.uid) for key, parsed in by_key.items()}
        for gone in self._status_written.keys() - known:
            del self._status_written[gone]
        ready: dict[ModelKey, dict[tuple[str, str], int]] = defaultdict(dict)
        for child in children:
            key = (child.namespace, child.model)
            ready[key][(child.variant, child.pool)] = child.ready_replicas
        before: dict[ModelKey, dict[tuple[str, str], int]] = defaultdict(dict)
        for (key, variant, pool), n in current.items():
            before[key][(variant, pool)] = n
        for source, advise in ((plan, False), (advice, True)):
            if source is None:
                continue
            placements: dict[ModelKey, list[Any]] = defaultdict(list)
            for p in source.placements:
                placements[p.model].append(p)
            for outcome in source.models:
                parsed = by_key.get(outcome.key)
                if parsed is None:
                    continue
                raw_status = parsed.raw.get("status") or {}
                status = model_status(
                    outcome=outcome,
                    placements=placements[outcome.key],
                    ready=ready.get(outcome.key, {}),
                    accelerator_types=types,
                    demand_source="prior",
                    generation=parsed.model.metadata.generation,
                    previous_conditions=raw_status.get("conditions") or [],
                    now=now,
                    advise=advise,
                )
                if self._autoscale is not None and not advise:  # autoscale hook: live fields
                    status = self._autoscale.status(
                        outcome.key, status, raw_status, now, parsed.model.metadata.generation
                    )
                self._patch_status(parsed, raw_status, status, report)
                if advise:
                    continue
                after = {(p.variant, p.pool): p.replicas for p in placements[outcome.key]}
                event = decision_event(
                    before.get(outcome.key, {}),
                    after,
                    outcome,
                    raw_status.get("conditions") or [],
                )
                if event is not None:
                    self._event(parsed, event[0], event[1], report)

    def _patch_status(
        self,
        parsed: ParsedModel,
        live: Mapping[str, Any],
        status: Mapping[str, Any],
        report: CycleReport,
    ) -> None:
        change = status_change(live, status)
        if change is StatusChange.NONE:
            return
        ident = (parsed.key, parsed.uid)
        now = self.clock()
        refresh = self.settings.autoscale.status_refresh_seconds
        last = self._status_written.get(ident, float("-inf"))
        # Only live metrics make figures change without a decision; the prior never does.
        live_metrics = self.autoscaler is not None
        if live_metrics and change is StatusChange.TELEMETRY and now - last < refresh:
            report.statuses_deferred += 1
            return
        if live_metrics and change is StatusChange.DECISION and log.isEnabledFor(logging.DEBUG):
            fields = ", ".join(decision_fields(live, status))
            log.debug("%s/%s: status written at once for %s", *parsed.key, fields)
        self._status_written[ident] = now
        namespace, name = parsed.key
        self._write(
            "status",
            "statuses",
            lambda: k8s_apply.patch_model_status(self.kube, namespace, name, status),
            ignore_not_found=True,
        )

    def _event(self, parsed: ParsedModel, reason: str, message: str, report: CycleReport) -> None:
        namespace, name = parsed.key
        self._write(
            "event",
            "events",
            lambda: k8s_apply.post_event(
                self.kube,
                namespace=namespace,
                name=name,
                uid=parsed.uid,
                reason=reason,
                message=message,
                type_="Normal" if reason == "Placed" else "Warning",
            ),
        )

    def _write_invalid(
        self, raw: Mapping[str, Any], message: str, now: datetime, report: CycleReport
    ) -> None:
        meta = raw.get("metadata") or {}
        live = raw.get("status") or {}
        status = invalid_model_status(
            message,
            generation=meta.get("generation"),
            previous_conditions=live.get("conditions") or [],
            now=now,
        )
        if status_change(live, status) is StatusChange.NONE:
            return
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        self._write(
            "status",
            "statuses",
            lambda: k8s_apply.patch_model_status(self.kube, namespace, name, status),
            ignore_not_found=True,
        )

    def _write_pool_statuses(
        self,
        raw_pools: Sequence[Mapping[str, Any]],
        inventory: Mapping[str, PoolInventory],
        now: datetime,
        report: CycleReport,
    ) -> None:
        for raw in raw_pools:
            meta = raw.get("metadata") or {}
            inv = inventory.get(str(meta.get("name")))
            if inv is None:
                continue
            live = raw.get("status") or {}
            status = pool_status(
                inv,
                generation=meta.get("generation"),
                previous_conditions=live.get("conditions") or [],
                now=now,
            )
            if status_change(live, status) is StatusChange.NONE:
                continue
            self._write(
                "pool-status",
                "statuses",
                partial(k8s_apply.patch_pool_status, self.kube, str(meta["name"]), status),
                ignore_not_found=True,
            )

    def _export(self, plan: FleetPlan, children: Sequence[LiveChild]) -> None:
        if self.metrics is None:
            return
        self.metrics.fleet_cost.set(plan.cost_per_hour)
        self.metrics.set_replicas(
            [(p.model[0], p.model[1], p.pool, p.replicas) for p in plan.placements if p.replicas],
            [(c.namespace, c.model, c.pool, c.ready_replicas) for c in children],
        )
        self.metrics.set_unmet([(m.key[0], m.key[1], m.unmet_rps) for m in plan.models])
