"""Pool inventory: how many accelerators a pool can offer, from plain Node objects.

Pure functions over the dictionaries the Kubernetes API returns for Nodes (the same shape as
`kubectl get nodes -o yaml`), so the operator, `infleet plan --nodes` and the tests share one rule:

* a node belongs to a pool when every label of the pool's ``nodeSelector`` is on the node;
* only Ready nodes that are not cordoned (``spec.unschedulable``) count as capacity;
* a pool's planning capacity is ``min(maxAccelerators, allocatable on its Ready nodes)`` minus
  accelerators that cannot be used (pods of others, or capacity marked unavailable).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")
_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes resource quantity (``"8"``, ``"500m"``, ``"64Gi"``) into a number.

    Raises ``ValueError`` naming the bad text, so a malformed node file gives a clear error.
    """
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc
    return number * _SUFFIX[match.group(2)]


@dataclass(frozen=True)
class NodeInfo:
    """What the inventory needs to know about one Node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    allocatable: Mapping[str, str] = field(default_factory=dict)
    ready: bool = True
    unschedulable: bool = False

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> NodeInfo:
        """Build from a Node as the API returns it (camelCase keys)."""
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        return cls(
            name=str(metadata.get("name", "")),
            labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
            allocatable={str(k): str(v) for k, v in (status.get("allocatable") or {}).items()},
            ready=ready,
            unschedulable=bool(spec.get("unschedulable", False)),
        )

    def matches(self, node_selector: Mapping[str, str]) -> bool:
        """True when every selector label is on the node with the same value."""
        return all(self.labels.get(k) == v for k, v in node_selector.items())

    def accelerators(self, resource_name: str) -> int:
        """Whole accelerators of ``resource_name`` the node can allocate (0 when absent)."""
        raw = self.allocatable.get(resource_name)
        if raw is None:
            return 0
        return int(parse_quantity(raw))

    @property
    def usable(self) -> bool:
        """Ready and not cordoned: new replicas can land here."""
        return self.ready and not self.unschedulable


@dataclass(frozen=True)
class PoolInventory:
    """One pool's accelerators as seen on the cluster (mirrors ``AcceleratorPool.status``)."""

    pool: str
    nodes: int
    ready_nodes: int
    allocatable_accelerators: int
    """Accelerators on Ready, schedulable matching nodes, capped by the pool's quota."""
    allocated_accelerators: int
    """Accelerators requested by infleet's own replicas on this pool."""
    unavailable_accelerators: int = 0
    """Accelerators the planner must not count on (used by others, or seen unschedulable)."""

    @property
    def free_accelerators(self) -> int:
        """Accelerators neither allocated by infleet nor otherwise unavailable."""
        return max(
            0,
            self.allocatable_accelerators
            - self.allocated_accelerators
            - self.unavailable_accelerators,
        )

    @property
    def planning_capacity(self) -> int:
        """What the planner may hand out to infleet's replicas (including those running now)."""
        return max(0, self.allocatable_accelerators - self.unavailable_accelerators)


def pool_inventory(
    *,
    pool: str,
    node_selector: Mapping[str, str],
    resource_name: str,
    max_accelerators: int | None,
    nodes: Iterable[NodeInfo],
    allocated_accelerators: int = 0,
    unavailable_accelerators: int = 0,
) -> PoolInventory:
    """Count a pool's nodes and accelerators.

    An empty ``node_selector`` matches nothing: the API forbids it, and matching every node
    would silently put a pool's price on the whole cluster.
    """
    if not node_selector:
        members: list[NodeInfo] = []
    else:
        members = [n for n in nodes if n.matches(node_selector)]
    usable = [n for n in members if n.usable]
    allocatable = sum(n.accelerators(resource_name) for n in usable)
    if max_accelerators is not None:
        allocatable = min(allocatable, max_accelerators)
    return PoolInventory(
        pool=pool,
        nodes=len(members),
        ready_nodes=sum(1 for n in members if n.ready),
        allocatable_accelerators=allocatable,
        allocated_accelerators=allocated_accelerators,
        unavailable_accelerators=min(unavailable_accelerators, allocatable),
    )
