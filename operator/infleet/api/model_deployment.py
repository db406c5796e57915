"""ModelDeployment: one model served with a latency SLO on one or more accelerator variants."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from infleet.api.base import (
    API_VERSION,
    DNS_LABEL_PATTERN,
    ApiModel,
    Condition,
    NamespacedObjectMeta,
    SpecModel,
    StatusModel,
)

MAX_VARIANTS = 16
"""Upper bound on variants per model; keeps the CRD's CEL uniqueness rule cheap."""

# Messages shared by the pydantic validators and the CRD's CEL rules, so a manifest rejected by
# `infleet plan` and by `kubectl apply` reads the same.
MSG_SLO_TARGET = "set at least one of timeToFirstTokenMs and timePerOutputTokenMs"
MSG_REPLICAS_ORDER = "min must be <= max"
MSG_VARIANT_CAPACITY = (
    "set maxRequestsPerSecond or profile (or both): one is needed to know a replica's capacity"
)
MSG_UNIQUE_VARIANTS = (
    "variant names must be unique (a variant's name defaults to its acceleratorType)"
)


# An object whose fields all have defaults defaults to {} in the CRD, so the API server fills in
# the nested defaults and `kubectl get -o yaml` shows the effective values.
_DEFAULT_EMPTY: dict[str, Any] = {"default": {}}


class Engine(StrEnum):
    """Inference engine; picks the default metric queries."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"
    CUSTOM = "custom"


class Mode(StrEnum):
    """Whether the operator acts on its plan or only reports it."""

    APPLY = "Apply"
    ADVISE = "Advise"


class DemandSource(StrEnum):
    """Where a demand figure came from."""

    METRICS = "metrics"
    PRIOR = "prior"
    FORECAST = "forecast"


class ModelConditionType(StrEnum):
    """Condition types a ModelDeployment reports."""

    READY = "Ready"
    SLO_MET = "SLOMet"
    SCHEDULED = "Scheduled"
    METRICS_AVAILABLE = "MetricsAvailable"


class ScheduledReason(StrEnum):
    """Reasons of a Scheduled=False condition."""

    CAPACITY_SHORTAGE = "CapacityShortage"
    INFEASIBLE = "Infeasible"
    MAX_REPLICAS = "MaxReplicas"


class SLO(SpecModel):
    """Latency objective at a percentile; at least one of the two targets is required."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.timeToFirstTokenMs) || has(self.timePerOutputTokenMs)",
                    "message": MSG_SLO_TARGET,
                }
            ]
        }
    )

    percentile: float = Field(
        default=95.0,
        ge=50,
        le=99.9,
        description="Percentile the targets apply to, in percent (50 to 99.9; default 95).",
    )
    time_to_first_token_ms: float | None = Field(
        default=None,
        gt=0,
        description="Target time to first token (queueing + prefill), in milliseconds.",
    )
    time_per_output_token_ms: float | None = Field(
        default=None,
        gt=0,
        description="Target time per output token (inter-token latency), in milliseconds.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if self.time_to_first_token_ms is None and self.time_per_output_token_ms is None:
            raise ValueError(MSG_SLO_TARGET)
        return self


class DecodeStep(SpecModel):
    """Duration of one decode step for a batch of b sequences: base + perSequence * b."""

    base: float = Field(gt=0, description="Fixed part of a decode step, in milliseconds (> 0).")
    per_sequence: float = Field(
        ge=0, description="Added per sequence in the batch, in milliseconds (>= 0)."
    )


class Profile(SpecModel):
    """Analytic performance profile of one replica, used when no measured capacity is given."""

    prefill_tokens_per_second: float = Field(
        gt=0, description="Prompt tokens one replica prefills per second (> 0)."
    )
    decode_step_ms: DecodeStep = Field(
        description="Decode step time model t(b) = base + perSequence * b, in milliseconds."
    )
    max_concurrency: int = Field(
        gt=0, description="Largest batch (concurrent sequences) the engine runs (> 0)."
    )


class EnvVar(SpecModel):
    """An environment variable for the server container."""

    name: str = Field(min_length=1, description="Variable name.")
    value: str = Field(default="", description="Variable value.")


def _variant_schema(schema: dict[str, Any]) -> None:
    # `name` is always set after validation (it defaults to acceleratorType) but is optional in
    # manifests; the generated schema must say so and carry no empty-string default.
    schema["required"] = [r for r in schema.get("required", []) if r != "name"]
    schema["properties"]["name"].pop("default", None)
    schema["x-kubernetes-validations"] = [
        {
            "rule": "has(self.maxRequestsPerSecond) || has(self.profile)",
            "message": MSG_VARIANT_CAPACITY,
        }
    ]


class Variant(SpecModel):
    """One way to run the model: an accelerator type, how many per replica, and its capacity."""

    model_config = ConfigDict(
        json_schema_extra=_variant_schema,
    )

    name: str = Field(
        default="",
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Variant name, unique within the model; defaults to acceleratorType. "
        "Used in Deployment names and the infleet.io/variant label.",
    )
    accelerator_type: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Accelerator type this variant runs on; matches AcceleratorPool "
        "spec.acceleratorType.",
    )
    pools: list[str] | None = Field(
        default=None,
        description="Restrict the variant to these AcceleratorPools (names); unset means every "
        "pool of the accelerator type.",
    )
    accelerators_per_replica: int = Field(
        default=1, gt=0, description="Accelerators one replica uses (tensor parallel size; > 0)."
    )
    max_requests_per_second: float | None = Field(
        default=None,
        gt=0,
        description="Measured requests per second one replica sustains while meeting the SLO. "
        "When both this and profile are set, this measured figure wins.",
    )
    profile: Profile | None = Field(
        default=None,
        description="Analytic profile from which the capacity at the SLO is computed when "
        "maxRequestsPerSecond is not set.",
    )
    startup_seconds: int = Field(
        default=300,
        ge=0,
        description="Seconds a new replica needs to become ready (image pull, weight loading); "
        "demand is forecast this far ahead.",
    )
    args: list[str] | None = Field(
        default=None, description="Replace the server container's args for this variant."
    )
    env: list[EnvVar] | None = Field(
        default=None, description="Environment variables added to the server container."
    )

    @model_validator(mode="after")
    def _name_and_capacity(self) -> Self:
        if not self.name:
            self.name = self.accelerator_type
        if self.max_requests_per_second is None and self.profile is None:
            raise ValueError(MSG_VARIANT_CAPACITY)
        return self

    @property
    def resolved_name(self) -> str:
        """The variant's name (``acceleratorType`` when the manifest gave none)."""
        return self.name or self.accelerator_type


class Replicas(SpecModel):
    """Bounds on the model's total replicas over all pools."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    # has() guards: the API server also checks the rule against the
                    # default ({}), before nested defaults are filled in.
                    "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                    "message": MSG_REPLICAS_ORDER,
                }
            ]
        }
    )

    min: int = Field(
        default=0,
        ge=0,
        description="Fewest replicas in total (default 0: the model may have none when there "
        "is no demand).",
    )
    max: int = Field(default=10, ge=1, description="Most replicas in total (default 10).")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"{MSG_REPLICAS_ORDER} (min {self.min}, max {self.max})")
        return self


class Traffic(SpecModel):
    """Prior demand: used before metrics exist and by `infleet plan`."""

    requests_per_second: float = Field(
        default=0.0, ge=0, description="Expected request rate, in requests per second (>= 0)."
    )
    mean_input_tokens: float = Field(
        default=1024.0, gt=0, description="Mean prompt length, in tokens (> 0; default 1024)."
    )
    mean_output_tokens: float = Field(
        default=256.0, gt=0, description="Mean generated length, in tokens (> 0; default 256)."
    )


class SpotPolicy(SpecModel):
    """How much of the model may run on spot capacity."""

    max_fraction: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="At most this share (0 to 1) of the model's served capacity on spot pools.",
    )


class Scaling(SpecModel):
    """How fast the replica count may change."""

    scale_down_window_seconds: int = Field(
        default=300,
        ge=0,
        description="Scale down only to the peak demand of this many past seconds (default 300, "
        "as Kubernetes HPA).",
    )
    max_scale_up_replicas: int | None = Field(
        default=None,
        gt=0,
        description="Most replicas added per cycle over all pools; unset means no limit.",
    )
    max_scale_down_replicas: int | None = Field(
        default=None,
        gt=0,
        description="Most replicas removed per cycle over all pools; unset means no limit.",
    )


class ScaleToZero(SpecModel):
    """Removing every replica of an idle model, and waking it on demand."""

    enabled: bool = Field(default=False, description="Allow scaling to zero replicas.")
    idle_seconds: int = Field(
        default=600,
        gt=0,
        description="Seconds without requests before the model scales to zero (default 600).",
    )
    wake_query: str | None = Field(
        default=None,
        min_length=1,
        description="PromQL returning requests waiting for this model while it has no replicas "
        "(e.g. a gateway's queued-request gauge); a value > 0 wakes the model.",
    )


class MetricsOverrides(SpecModel):
    """PromQL expressions replacing the engine's default query for a signal. Each is used as
    written and must return one sample for this model (aggregate over its pods yourself)."""

    request_rate: str | None = Field(
        default=None, min_length=1, description="Completed requests per second."
    )
    ttft: str | None = Field(
        default=None,
        min_length=1,
        description="Time to first token at the SLO percentile, in seconds.",
    )
    tpot: str | None = Field(
        default=None,
        min_length=1,
        description="Time per output token (inter-token latency) at the SLO percentile, "
        "in seconds.",
    )
    queue_length: str | None = Field(
        default=None, min_length=1, description="Requests waiting in the engines' queues."
    )
    kv_cache_usage: str | None = Field(
        default=None, min_length=1, description="KV-cache usage as a fraction from 0 to 1."
    )
    input_tokens: str | None = Field(
        default=None, min_length=1, description="Prompt tokens processed per second."
    )
    output_tokens: str | None = Field(
        default=None, min_length=1, description="Output tokens generated per second."
    )


class ModelDeploymentSpec(SpecModel):
    """What is served, at which latency, on which accelerators, for how much traffic."""

    model: str = Field(
        min_length=1,
        description="Model id the engines serve, e.g. meta-llama/Llama-3.1-70B-Instruct.",
    )
    engine: Engine = Field(
        default=Engine.VLLM,
        description="vllm, sglang, tgi or custom; picks the default metric queries.",
    )
    template: dict[str, Any] = Field(
        default_factory=dict,
        description="Pod template (metadata, spec) of the inference server, as in a "
        "Deployment's spec.template. infleet adds accelerator requests and limits, "
        "nodeSelector, tolerations, labels and the variant's args/env. Empty means the "
        "engine's default server container.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    slo: SLO = Field(description="Latency objective every replica must meet.")
    variants: list[Variant] = Field(
        min_length=1,
        max_length=MAX_VARIANTS,
        description="Ways to run the model (at least one, at most 16, unique names).",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(v, self.exists_one(w, "
                    "(has(w.name) ? w.name : w.acceleratorType) == "
                    "(has(v.name) ? v.name : v.acceleratorType)))",
                    "message": MSG_UNIQUE_VARIANTS,
                }
            ]
        },
    )
    replicas: Replicas = Field(
        default_factory=Replicas,
        json_schema_extra=_DEFAULT_EMPTY,
        description="Bounds on total replicas over all pools.",
    )
    traffic: Traffic = Field(
        default_factory=Traffic,
        json_schema_extra=_DEFAULT_EMPTY,
        description="Prior demand and token mix.",
    )
    target_utilization: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Planned capacity = demand / targetUtilization (0 < u <= 1; default 0.8).",
    )
    priority: int = Field(
        default=0, description="Higher priority is served first when capacity is short."
    )
    spot: SpotPolicy = Field(
        default_factory=SpotPolicy,
        json_schema_extra=_DEFAULT_EMPTY,
        description="Spot capacity policy.",
    )
    scaling: Scaling = Field(
        default_factory=Scaling,
        json_schema_extra=_DEFAULT_EMPTY,
        description="Rate limits on scaling.",
    )
    scale_to_zero: ScaleToZero = Field(
        default_factory=ScaleToZero,
        json_schema_extra=_DEFAULT_EMPTY,
        description="Scale-to-zero policy.",
    )
    mode: Mode = Field(
        default=Mode.APPLY,
        description="Apply (default): reconcile the plan onto Deployments. "
        "Advise: only write the plan to status.",
    )
    metrics: MetricsOverrides = Field(
        default_factory=MetricsOverrides,
        json_schema_extra=_DEFAULT_EMPTY,
        description="PromQL overrides per signal.",
    )

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: list[Variant]) -> list[Variant]:
        counts = Counter(v.name for v in variants)
        duplicates = sorted(name for name, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"{MSG_UNIQUE_VARIANTS}; repeated: {', '.join(duplicates)}")
        return variants


class Placement(StatusModel):
    """Replicas of one variant on one pool."""

    pool: str = Field(description="AcceleratorPool name.")
    variant: str = Field(description="Variant name.")
    accelerator_type: str = Field(description="Accelerator type of the pool.")
    desired_replicas: int = Field(default=0, description="Replicas the plan wants here.")
    ready_replicas: int = Field(default=0, description="Replicas ready here.")
    capacity_requests_per_second: float = Field(
        default=0.0,
        description="Requests per second these replicas serve at the SLO (after calibration).",
    )


class Demand(StatusModel):
    """The demand figure the current plan was made for."""

    requests_per_second: float = Field(default=0.0, description="Requests per second.")
    source: DemandSource = Field(
        default=DemandSource.PRIOR,
        description="metrics (measured), prior (spec.traffic) or forecast.",
    )
    explanation: str = Field(
        default="",
        description="One line: how the figure was reached (the measured rates, the forecast, "
        "the scale-down window's peak, a hold on missing metrics, or the traffic prior).",
    )


class Observed(StatusModel):
    """Latest measurements from Prometheus."""

    ttft_ms: float | None = Field(
        default=None, description="Time to first token at the SLO percentile, in ms."
    )
    tpot_ms: float | None = Field(
        default=None, description="Time per output token at the SLO percentile, in ms."
    )
    requests_per_second: float | None = Field(
        default=None, description="Completed requests per second."
    )
    queue_length: float | None = Field(default=None, description="Requests waiting.")


class Calibration(StatusModel):
    """Learned capacity factor of one variant (1 = as modelled)."""

    variant: str = Field(description="Variant name.")
    factor: float = Field(gt=0, description="Multiplier on the modelled capacity.")


class ScalingState(StatusModel):
    """The autoscaler's memory between cycles (``infleet.core.autoscale.ModelScalingState``),
    kept in status so that a restarted operator continues where it stopped. Written by the
    operator only; times are Unix seconds."""

    samples: list[list[float]] = Field(
        default_factory=list,
        description="[time, requests per second] demand samples of the recent window.",
    )
    last_queue: list[float] | None = Field(
        default=None, description="[time, queue length] of the last fresh queue reading."
    )
    last_traffic_time: float | None = Field(
        default=None, description="Last time the model had (or may have had) traffic."
    )
    planned_requests_per_second: float | None = Field(
        default=None, description="Demand the last decision planned for."
    )
    planned_source: DemandSource | None = Field(
        default=None, description="Source of that figure: metrics, prior or forecast."
    )
    scaled_to_zero: bool = Field(
        default=False, description="Whether the autoscaler took the model to zero replicas."
    )
    metrics_available: bool | None = Field(
        default=None, description="The last MetricsAvailable verdict."
    )
    calibration: dict[str, float] = Field(
        default_factory=dict, description="Capacity factor per variant name."
    )


class ModelDeploymentStatus(StatusModel):
    """The plan for the model and how it is doing."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status was computed from."
    )
    placements: list[Placement] = Field(
        default_factory=list, description="Replicas per (variant, pool)."
    )
    desired_replicas: int = Field(default=0, description="Total replicas the plan wants.")
    ready_replicas: int = Field(default=0, description="Total ready replicas.")
    cost_per_hour: float = Field(
        default=0.0, description="Cost of the desired placements, in USD per hour."
    )
    demand: Demand | None = Field(default=None, description="Demand the plan was made for.")
    observed: Observed | None = Field(default=None, description="Latest measurements.")
    explanation: str = Field(default="", description="One line: why this mix of variants.")
    unmet_requests_per_second: float = Field(
        default=0.0,
        description="Demand (requests per second) the plan cannot serve at the SLO.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, SLOMet, Scheduled (reasons CapacityShortage, Infeasible, "
        "MaxReplicas), MetricsAvailable.",
    )
    calibration: list[Calibration] = Field(
        default_factory=list, description="Learned capacity factors per variant."
    )
    last_scale_time: datetime | None = Field(
        default=None, description="When the replica count last changed (RFC 3339)."
    )
    scaling: ScalingState | None = Field(
        default=None,
        description="Autoscaler state persisted between cycles (live metrics mode only).",
    )


class ModelDeployment(ApiModel):
    """A model served with a latency SLO on heterogeneous accelerators. Namespaced; short
    name mdep."""

    model_config = ConfigDict(extra="forbid")

    api_version: Literal["infleet.io/v1alpha1"] = Field(
        default=API_VERSION, description="infleet.io/v1alpha1."
    )
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="Kind.")
    metadata: NamespacedObjectMeta = Field(description="Object metadata.")
    spec: ModelDeploymentSpec = Field(description="What to serve and how.")
    status: ModelDeploymentStatus | None = Field(
        default=None, description="Plan and observations, written by the operator."
    )
