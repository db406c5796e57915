"""From a raw snapshot to what the planner and the status writers need. Pure: plain dicts in,
dataclasses out, so unit tests feed it `kubectl get -o json`-shaped objects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from infleet.api import AcceleratorPool, ModelDeployment
from infleet.core.children import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_ANNOTATION,
    POOL_ANNOTATION,
    POOL_LABEL,
    SPEC_HASH_ANNOTATION,
    VARIANT_ANNOTATION,
    label_value,
)
from infleet.core.fleet import build_problem
from infleet.core.inventory import NodeInfo, PoolInventory, parse_quantity, pool_inventory
from infleet.core.planner import ModelKey, PlacementKey


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


@dataclass(frozen=True)
class ParsedModel:
    """A ModelDeployment the operator can plan for."""

    model: ModelDeployment
    uid: str
    raw: Mapping[str, Any]

    @property
    def key(self) -> ModelKey:
        """(namespace, name)."""
        return (self.model.metadata.namespace, self.model.metadata.name)


@dataclass(frozen=True)
class RejectedObject:
    """An object that could not be read, and why (written to its status as a condition)."""

    raw: Mapping[str, Any]
    message: str


def parse_models(
    raw_models: Iterable[Mapping[str, Any]],
) -> tuple[list[ParsedModel], list[RejectedObject]]:
    """Models that validate (and whose capacity can be computed), and those that do not.

    The CRD rejects most bad input at `kubectl apply`; what slips through (an older CRD, an
    impossible profile) is reported on the object instead of stopping the fleet.
    """
    good: list[ParsedModel] = []
    bad: list[RejectedObject] = []
    for raw in raw_models:
        if (raw.get("metadata") or {}).get("deletionTimestamp"):
            continue
        body = {k: v for k, v in raw.items() if k != "status"}
        try:
            model = ModelDeployment.model_validate(body)
            build_problem([], [model])  # the capacity model raises on what it cannot use
        except ValidationError as exc:
            bad.append(RejectedObject(raw, _validation_message(exc)))
            continue
        except (ValueError, ArithmeticError) as exc:
            bad.append(RejectedObject(raw, str(exc)))
            continue
        good.append(ParsedModel(model, str(raw["metadata"].get("uid", "")), raw))
    return good, bad


def parse_pools(
    raw_pools: Iterable[Mapping[str, Any]],
) -> tuple[list[AcceleratorPool], list[RejectedObject]]:
    """Pools that validate, and those that do not (left out of planning)."""
    good: list[AcceleratorPool] = []
    bad: list[RejectedObject] = []
    for raw in raw_pools:
        if (raw.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            good.append(
                AcceleratorPool.model_validate({k: v for k, v in raw.items() if k != "status"})
            )
        except ValidationError as exc:
            bad.append(RejectedObject(raw, _validation_message(exc)))
    return good, bad


@dataclass(frozen=True)
class LiveChild:
    """A Deployment infleet manages, as it is now."""

    namespace: str
    name: str
    model: str
    variant: str
    pool: str
    replicas: int
    ready_replicas: int
    spec_hash: str
    raw: Mapping[str, Any]


def live_deployments(raw: Iterable[Mapping[str, Any]]) -> list[LiveChild]:
    """infleet's Deployments with their identity read from annotations."""
    children: list[LiveChild] = []
    for obj in raw:
        meta = obj.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        children.append(
            LiveChild(
                namespace=str(meta.get("namespace", "")),
                name=str(meta.get("name", "")),
                model=str(annotations.get(MODEL_ANNOTATION, "")),
                variant=str(annotations.get(VARIANT_ANNOTATION, "")),
                pool=str(annotations.get(POOL_ANNOTATION, "")),
                replicas=int((obj.get("spec") or {}).get("replicas", 0) or 0),
                ready_replicas=int((obj.get("status") or {}).get("readyReplicas", 0) or 0),
                spec_hash=str(annotations.get(SPEC_HASH_ANNOTATION, "")),
                raw=obj,
            )
        )
    return children


def current_placements(children: Iterable[LiveChild]) -> dict[PlacementKey, int]:
    """Replicas running now per (model, variant, pool), for the planner's churn cost."""
    current: dict[PlacementKey, int] = {}
    for child in children:
        key = ((child.namespace, child.model), child.variant, child.pool)
        current[key] = current.get(key, 0) + child.replicas
    return current


def pod_accelerators(pod: Mapping[str, Any], resource_name: str) -> int:
    """Accelerators of ``resource_name`` a pod requests (requests, else limits, per container)."""
    total = 0
    spec = pod.get("spec") or {}
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        value = (resources.get("requests") or {}).get(resource_name)
        if value is None:
            value = (resources.get("limits") or {}).get(resource_name)
        if value is not None:
            total += int(parse_quantity(value))
    return total


def unschedulable_since(pod: Mapping[str, Any]) -> datetime | None:
    """When a Pending pod was found unschedulable (PodScheduled=False, Unschedulable)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Pending" or (pod.get("spec") or {}).get("nodeName"):
        return None
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            stamp = str(cond.get("lastTransitionTime") or "")
            try:
                return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class PoolUsage:
    """Accelerators on a pool by who uses them."""

    infleet: int = 0
    """Requested by infleet's scheduled pods."""
    others: int = 0
    """Requested by other pods on the pool's nodes."""
    unschedulable: int = 0
    """Requested by infleet pods left unschedulable beyond the grace period."""


@dataclass
class _Tally:
    infleet: int = 0
    others: int = 0
    unschedulable: int = 0


def pool_usage(
    pools: Sequence[AcceleratorPool],
    nodes: Sequence[NodeInfo],
    pods: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    grace_seconds: float,
    namespaces: Sequence[str] = (),
) -> dict[str, PoolUsage]:
    """Who uses each pool's accelerators; pending infleet pods count after ``grace_seconds``.

    With ``namespaces`` (a namespaced operator), infleet pods elsewhere belong to another
    operator instance and count as others'.
    """
    node_pools: dict[str, list[AcceleratorPool]] = defaultdict(list)
    for node in nodes:
        for pool in pools:
            if node.matches(pool.spec.node_selector):
                node_pools[node.name].append(pool)
    by_label = {label_value(p.metadata.name): p for p in pools}
    tally: dict[str, _Tally] = {p.metadata.name: _Tally() for p in pools}
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        ours = labels.get(MANAGED_BY_LABEL) == MANAGED_BY and (
            not namespaces or meta.get("namespace") in namespaces
        )
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            for pool in node_pools.get(str(node_name), []):
                count = pod_accelerators(pod, pool.spec.resource_name)
                if ours:
                    tally[pool.metadata.name].infleet += count
                else:
                    tally[pool.metadata.name].others += count
            continue
        if not ours:
            continue
        since = unschedulable_since(pod)
        target = by_label.get(str(labels.get(POOL_LABEL, "")))
        if since is None or target is None:
            continue
        if (now - since).total_seconds() >= grace_seconds:
            tally[target.metadata.name].unschedulable += pod_accelerators(
                pod, target.spec.resource_name
            )
    return {name: PoolUsage(t.infleet, t.others, t.unschedulable) for name, t in tally.items()}


@dataclass
class CapacityHold:
    """Capacity a pool was seen to lack, remembered so the fleet does not oscillate."""

    accelerators: int
    until: float
    allocatable: int
    """The pool's allocatable accelerators when the hold was made; a change clears it."""


@dataclass
class HoldBook:
    """Per pool: accelerators held unavailable after replicas were left unschedulable."""

    holds: dict[str, CapacityHold] = field(default_factory=dict)

    def unavailable(
        self, pool: str, *, seen: int, allocatable: int, now: float, hold_seconds: float
    ) -> int:
        """Accelerators to treat as unavailable: what is seen now, or what was seen recently
        (until ``hold_seconds`` pass or the pool's allocatable capacity changes)."""
        hold = self.holds.get(pool)
        if hold is not None and (hold.until <= now or hold.allocatable != allocatable):
            del self.holds[pool]
            hold = None
        if seen > 0:
            held = max(seen, hold.accelerators if hold else 0)
            self.holds[pool] = CapacityHold(held, now + hold_seconds, allocatable)
            return held
        return hold.accelerators if hold else 0


def inventories(
    pools: Sequence[AcceleratorPool],
    nodes: Sequence[NodeInfo],
    usage: Mapping[str, PoolUsage],
    holds: HoldBook,
    *,
    now: float,
    hold_seconds: float,
) -> dict[str, PoolInventory]:
    """Each pool's inventory: allocatable on Ready nodes, infleet's use, and what is unavailable
    (others' pods, plus, once replicas stayed unschedulable, everything not in use: the pool
    counts as full, and stays so while the hold lasts)."""
    result: dict[str, PoolInventory] = {}
    for pool in pools:
        name = pool.metadata.name
        use = usage.get(name, PoolUsage())
        base = pool_inventory(
            pool=name,
            node_selector=pool.spec.node_selector,
            resource_name=pool.spec.resource_name,
            max_accelerators=pool.spec.max_accelerators,
            nodes=nodes,
            allocated_accelerators=use.infleet,
        )
        # A replica that cannot be scheduled proves the pool has no room for more, whatever
        # its nodes advertise (taints, fragmentation, a device plugin gone bad): the pool
        # counts as full, i.e. everything beyond what runs there now is unavailable.
        full = base.allocatable_accelerators - use.infleet - use.others
        seen = max(use.unschedulable, full) if use.unschedulable else 0
        held = holds.unavailable(
            name,
            seen=seen,
            allocatable=base.allocatable_accelerators,
            now=now,
            hold_seconds=hold_seconds,
        )
        result[name] = pool_inventory(
            pool=name,
            node_selector=pool.spec.node_selector,
            resource_name=pool.spec.resource_name,
            max_accelerators=pool.spec.max_accelerators,
            nodes=nodes,
            allocated_accelerators=use.infleet,
            unavailable_accelerators=use.others + held,
        )
    return result


def next_deadline(
    pods: Iterable[Mapping[str, Any]],
    holds: HoldBook,
    *,
    grace_seconds: float,
    namespaces: Sequence[str] = (),
) -> float:
    """Unix time of the next time-based change of the inputs (no watch event announces it):
    an unschedulable infleet replica reaching its grace period, or a capacity hold expiring.
    ``inf`` when there is none."""
    deadlines = [hold.until for hold in holds.holds.values()]
    for pod in pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        if namespaces and meta.get("namespace") not in namespaces:
            continue
        since = unschedulable_since(pod)
        if since is not None:
            deadlines.append(since.timestamp() + grace_seconds)
    return min(deadlines, default=float("inf"))
