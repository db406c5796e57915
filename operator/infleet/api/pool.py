"""AcceleratorPool: a set of nodes with one accelerator type and one price (cluster-scoped)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, Self

from pydantic import ConfigDict, Field, model_validator

from infleet.api.base import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    ApiModel,
    Condition,
    ObjectMeta,
    SpecModel,
    StatusModel,
)

MSG_EXISTS_NO_VALUE = "value must be empty when operator is Exists"
MSG_EMPTY_KEY_NEEDS_EXISTS = "operator must be Exists when key is empty (tolerate every taint)"


class CapacityType(StrEnum):
    """How a pool's accelerators are paid for."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


class TolerationOperator(StrEnum):
    """How a toleration matches a taint's value."""

    EQUAL = "Equal"
    EXISTS = "Exists"


class TaintEffect(StrEnum):
    """Effect of a taint that a toleration tolerates."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(SpecModel):
    """A Kubernetes toleration, added to every pod infleet places on the pool."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.operator) || self.operator != 'Exists' || "
                    "!has(self.value) || self.value == ''",
                    "message": MSG_EXISTS_NO_VALUE,
                },
                {
                    "rule": "(has(self.key) && self.key != '') || "
                    "(has(self.operator) && self.operator == 'Exists')",
                    "message": MSG_EMPTY_KEY_NEEDS_EXISTS,
                },
            ]
        }
    )

    key: str | None = Field(
        default=None, description="Taint key to tolerate; empty with operator Exists matches all."
    )
    operator: TolerationOperator = Field(
        default=TolerationOperator.EQUAL,
        description="Equal (key and value must match) or Exists (any value).",
    )
    value: str | None = Field(default=None, description="Taint value to match with Equal.")
    effect: TaintEffect | None = Field(
        default=None,
        description="NoSchedule, PreferNoSchedule or NoExecute; empty matches every effect.",
    )
    toleration_seconds: int | None = Field(
        default=None,
        description="For NoExecute: seconds the pod stays after the taint appears; "
        "unset means forever.",
    )

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> Self:
        if self.operator is TolerationOperator.EXISTS and self.value:
            raise ValueError(MSG_EXISTS_NO_VALUE)
        if not self.key and self.operator is not TolerationOperator.EXISTS:
            raise ValueError(MSG_EMPTY_KEY_NEEDS_EXISTS)
        return self


class AcceleratorPoolSpec(SpecModel):
    """What hardware a pool offers and what it costs."""

    accelerator_type: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Accelerator identifier that model variants match, e.g. nvidia-h100-80gb, "
        "nvidia-a100-80gb, nvidia-l4, amd-mi300x, google-tpu-v5e, cerebras-cs3.",
    )
    resource_name: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        description="Extended resource a replica requests for its accelerators, "
        "e.g. nvidia.com/gpu, amd.com/gpu, google.com/tpu.",
    )
    accelerators_per_node: int = Field(
        gt=0, description="Accelerators on one node of the pool (count, > 0)."
    )
    node_selector: dict[str, str] = Field(
        min_length=1,
        description="Labels that select the pool's nodes (required, at least one); also set as "
        "the nodeSelector of pods placed on the pool.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="Tolerations added to pods placed on the pool (e.g. for a tainted spot pool).",
    )
    cost_per_accelerator_hour: float = Field(
        ge=0, description="Price of one accelerator for one hour, in USD (>= 0)."
    )
    capacity_type: CapacityType = Field(
        default=CapacityType.ON_DEMAND,
        description="on-demand, spot (may be reclaimed; limited per model by spot.maxFraction) "
        "or reserved (prepaid: marginal cost 0 up to the pool's size).",
    )
    max_accelerators: int | None = Field(
        default=None,
        ge=0,
        description="Quota: at most this many accelerators of the pool are used by infleet. "
        "Capacity is min(quota, allocatable on Ready matching nodes); unset means no quota.",
    )


class AcceleratorPoolStatus(StatusModel):
    """What the operator observed about the pool's nodes and its own use of them."""

    nodes: int = Field(default=0, description="Nodes matching nodeSelector.")
    ready_nodes: int = Field(
        default=0, description="Matching nodes that are Ready and schedulable."
    )
    allocatable_accelerators: int = Field(
        default=0, description="Accelerators allocatable on Ready matching nodes (count)."
    )
    allocated_accelerators: int = Field(
        default=0, description="Accelerators requested by replicas infleet placed on the pool."
    )
    free_accelerators: int = Field(
        default=0, description="Accelerators still available to infleet, within maxAccelerators."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Conditions, e.g. Ready.")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status was computed from."
    )


class AcceleratorPool(ApiModel):
    """A node pool of one accelerator type with its price. Cluster-scoped; short name apool."""

    model_config = ConfigDict(extra="forbid")

    api_version: Literal["infleet.io/v1alpha1"] = Field(
        default=API_VERSION, description="infleet.io/v1alpha1."
    )
    kind: Literal["AcceleratorPool"] = Field(default="AcceleratorPool", description="Kind.")
    metadata: ObjectMeta = Field(description="Object metadata; the name identifies the pool.")
    spec: AcceleratorPoolSpec = Field(description="The pool's hardware and price.")
    status: AcceleratorPoolStatus | None = Field(
        default=None, description="Observed state, written by the operator."
    )
