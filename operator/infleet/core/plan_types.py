"""Plain data the fleet planner reads and writes (see `infleet.core.planner` for semantics).

Frozen dataclasses, not the pydantic API models: the planner is pure arithmetic and the
translation from manifests lives in `infleet.core.fleet`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ModelKey = tuple[str, str]
"""(namespace, name) of a ModelDeployment."""

CapacityType = Literal["on-demand", "spot", "reserved"]

PlacementKey = tuple[ModelKey, str, str]
"""(model, variant name, pool name)."""

Reason = Literal["NoMatchingPool", "Infeasible", "CapacityShortage", "MaxReplicas"]


@dataclass(frozen=True)
class PoolSupply:
    """Accelerators a pool can hand out now, and what one costs."""

    name: str
    accelerator_type: str
    accelerators: int
    """Available now, including those held by infleet's own running replicas."""
    cost_per_accelerator_hour: float
    capacity_type: CapacityType = "on-demand"
    """``reserved`` is prepaid: its marginal price is 0 up to its size."""


@dataclass(frozen=True)
class VariantOption:
    """One way to run a model: accelerator type, size of a replica, capacity at the SLO."""

    name: str
    accelerator_type: str
    accelerators_per_replica: int
    capacity_rps: float
    """Requests/s one replica sustains at the SLO, already calibrated; 0 = SLO unattainable."""
    pools: tuple[str, ...] | None = None
    """Restrict the variant to these pools (``None``: any pool of its accelerator type)."""


@dataclass(frozen=True)
class ModelRequest:
    """What one model needs from the fleet."""

    key: ModelKey
    demand_rps: float
    target_utilization: float = 0.8
    """Plan capacity = demand / target_utilization (headroom for bursts)."""
    min_replicas: int = 0
    max_replicas: int = 100
    """Bounds on the total number of replicas over all variants and pools."""
    priority: int = 0
    """Higher priority is served first when capacity is short."""
    spot_max_fraction: float = 1.0
    """At most this share of the model's served capacity may run on spot pools."""
    variants: tuple[VariantOption, ...] = ()

    @property
    def required_rps(self) -> float:
        """Capacity the model is planned for: demand plus utilisation headroom."""
        return self.demand_rps / self.target_utilization


@dataclass(frozen=True)
class PlanProblem:
    """The whole fleet: every model, every pool, and what runs now."""

    models: tuple[ModelRequest, ...]
    pools: tuple[PoolSupply, ...]
    current: Mapping[PlacementKey, int] = field(default_factory=dict)
    """(model, variant, pool) -> replicas running now (used by the churn penalty)."""
    churn_cost_per_replica: float = 0.0
    """$/h-equivalent penalty per replica added or removed relative to ``current``."""


@dataclass(frozen=True)
class Placement:
    """Replicas of one model variant on one pool."""

    model: ModelKey
    variant: str
    pool: str
    replicas: int
    accelerators: int
    cost_per_hour: float
    """Marginal cost: reserved pools count 0."""
    capacity_rps: float


@dataclass(frozen=True)
class ModelOutcome:
    """What one model got, and why."""

    key: ModelKey
    demand_rps: float
    required_rps: float
    capacity_rps: float
    unmet_rps: float
    """max(0, required_rps - capacity_rps): missing capacity, in the units of ``required_rps``."""
    replicas: int
    cost_per_hour: float
    reason: Reason | None
    explanation: str


@dataclass(frozen=True)
class SolverInfo:
    """Which method produced the plan, how long it took and how close to optimal it is proven."""

    name: str
    seconds: float
    optimality_gap: float
    """Proven relative gap (objective - lower bound) / objective; 0 = proven optimal."""


@dataclass(frozen=True)
class FleetPlan:
    """The planner's answer for the whole fleet."""

    placements: tuple[Placement, ...]
    models: tuple[ModelOutcome, ...]
    cost_per_hour: float
    """Sum of placement costs (marginal: reserved capacity is free), without the churn penalty."""
    solver: SolverInfo
