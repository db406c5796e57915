"""The API models: defaults, and every validation rule accepted and rejected."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from infleet.api import (
    API_VERSION,
    GROUP,
    VERSION,
    AcceleratorPool,
    CapacityType,
    Engine,
    Mode,
    ModelDeployment,
    ModelDeploymentStatus,
    TolerationOperator,
)
from infleet.api.errors import describe_validation_error, field_path

POOL: dict[str, Any] = {
    "apiVersion": "infleet.io/v1alpha1",
    "kind": "AcceleratorPool",
    "metadata": {"name": "h100"},
    "spec": {
        "acceleratorType": "nvidia-h100-80gb",
        "acceleratorsPerNode": 8,
        "nodeSelector": {"pool": "h100"},
        "costPerAcceleratorHour": 4.0,
    },
}

MODEL: dict[str, Any] = {
    "apiVersion": "infleet.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "llama"},
    "spec": {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "slo": {"timePerOutputTokenMs": 50},
        "variants": [{"acceleratorType": "nvidia-h100-80gb", "maxRequestsPerSecond": 10}],
    },
}


def with_change(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``path`` set to ``value`` (or removed when
    ``value`` is ``...``); digits index lists."""
    doc = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    key: Any = int(last) if last.isdigit() else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return doc


def problems(cls: type[AcceleratorPool] | type[ModelDeployment], doc: dict[str, Any]) -> list[str]:
    try:
        cls.model_validate(doc)
    except ValidationError as exc:
        return [str(p) for p in describe_validation_error(exc, cls)]
    return []


def test_api_version_is_group_and_version() -> None:
    assert f"{GROUP}/{VERSION}" == API_VERSION == "infleet.io/v1alpha1"


def test_pool_defaults() -> None:
    pool = AcceleratorPool.model_validate(POOL)
    assert pool.spec.resource_name == "nvidia.com/gpu"
    assert pool.spec.capacity_type is CapacityType.ON_DEMAND
    assert pool.spec.tolerations == []
    assert pool.spec.max_accelerators is None
    assert pool.status is None


def test_model_defaults() -> None:
    model = ModelDeployment.model_validate(MODEL)
    spec = model.spec
    assert model.metadata.namespace == "default"
    assert spec.engine is Engine.VLLM
    assert spec.template == {}
    assert spec.slo.percentile == 95
    assert spec.slo.time_to_first_token_ms is None
    assert (spec.replicas.min, spec.replicas.max) == (0, 10)
    assert spec.traffic.requests_per_second == 0
    assert spec.traffic.mean_input_tokens == 1024
    assert spec.traffic.mean_output_tokens == 256
    assert spec.target_utilization == 0.8
    assert spec.priority == 0
    assert spec.spot.max_fraction == 1.0
    assert spec.scaling.scale_down_window_seconds == 300
    assert spec.scaling.max_scale_up_replicas is None
    assert spec.scaling.max_scale_down_replicas is None
    assert spec.scale_to_zero.enabled is False
    assert spec.scale_to_zero.idle_seconds == 600
    assert spec.scale_to_zero.wake_query is None
    assert spec.mode is Mode.APPLY
    assert spec.metrics.request_rate is None
    variant = spec.variants[0]
    assert variant.name == variant.resolved_name == "nvidia-h100-80gb"
    assert variant.accelerators_per_replica == 1
    assert variant.startup_seconds == 300
    assert variant.pools is None
    assert variant.profile is None


def test_status_defaults_and_unknown_status_fields_ignored() -> None:
    status = ModelDeploymentStatus.model_validate({"futureField": 1, "desiredReplicas": 3})
    assert status.desired_replicas == 3
    assert status.ready_replicas == 0
    assert status.placements == []
    assert status.conditions == []
    assert status.cost_per_hour == 0
    assert status.unmet_requests_per_second == 0


def test_snake_case_names_are_accepted_in_python() -> None:
    doc = with_change(MODEL, "spec.target_utilization", 0.5)
    assert ModelDeployment.model_validate(doc).spec.target_utilization == 0.5


def test_to_dict_uses_camel_case_and_leaves_out_unset_fields() -> None:
    out = ModelDeployment.model_validate(MODEL).to_dict()
    assert out["spec"]["targetUtilization"] == 0.8
    assert out["spec"]["variants"][0]["acceleratorType"] == "nvidia-h100-80gb"
    assert "maxAccelerators" not in AcceleratorPool.model_validate(POOL).to_dict()["spec"]
    assert "status" not in out


POOL_ACCEPTED = [
    ("spec.capacityType", "spot"),
    ("spec.capacityType", "reserved"),
    ("spec.costPerAcceleratorHour", 0),
    ("spec.maxAccelerators", 0),
    ("spec.resourceName", "cerebras.net/wse"),
    ("spec.tolerations", [{"key": "spot", "operator": "Exists", "effect": "NoSchedule"}]),
    ("spec.tolerations", [{"operator": "Exists"}]),
    (
        "spec.tolerations",
        [{"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30}],
    ),
    ("metadata.labels", {"team": "ml"}),
    ("metadata.uid", "1234"),  # other metadata is kept
]


@pytest.mark.parametrize(("path", "value"), POOL_ACCEPTED)
def test_pool_accepts(path: str, value: Any) -> None:
    assert problems(AcceleratorPool, with_change(POOL, path, value)) == []


POOL_REJECTED = [
    ("spec.acceleratorsPerNode", 0, "spec.acceleratorsPerNode: must be > 0, got 0"),
    ("spec.costPerAcceleratorHour", -0.5, "spec.costPerAcceleratorHour: must be >= 0, got -0.5"),
    ("spec.nodeSelector", {}, "spec.nodeSelector: must have at least 1 entry"),
    ("spec.nodeSelector", ..., "spec.nodeSelector: required field is missing"),
    (
        "spec.capacityType",
        "preemptible",
        "spec.capacityType: must be one of on-demand, spot, reserved; got the string 'preemptible'",
    ),
    ("spec.maxAccelerators", -1, "spec.maxAccelerators: must be >= 0, got -1"),
    (
        "spec.tolerations",
        [{"key": "spot", "operator": "Exists", "value": "true"}],
        "spec.tolerations[0]: value must be empty when operator is Exists",
    ),
    (
        "spec.tolerations",
        [{"value": "x"}],
        "spec.tolerations[0]: operator must be Exists when key is empty (tolerate every taint)",
    ),
    (
        "spec.tolerations",
        [{"key": "a", "effect": "Sometimes"}],
        "spec.tolerations[0].effect: must be one of NoSchedule, PreferNoSchedule, NoExecute; "
        "got the string 'Sometimes'",
    ),
    (
        "spec.gpus",
        8,
        "spec.gpus: unknown field; known fields here: acceleratorType, "
        "resourceName, acceleratorsPerNode, nodeSelector, tolerations, costPerAcceleratorHour, "
        "capacityType, maxAccelerators",
    ),
    (
        "metadata.name",
        "H100_pool",
        "metadata.name: must be a DNS subdomain: lowercase letters, digits, '-' and '.', each "
        "dot-separated part starting and ending with a letter or digit; got the string "
        "'H100_pool'",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), POOL_REJECTED)
def test_pool_rejects(path: str, value: Any, expected: str) -> None:
    assert problems(AcceleratorPool, with_change(POOL, path, value)) == [expected]


MODEL_ACCEPTED = [
    ("spec.slo", {"timeToFirstTokenMs": 500}),
    ("spec.slo", {"timeToFirstTokenMs": 500, "timePerOutputTokenMs": 40, "percentile": 99.9}),
    ("spec.slo", {"timePerOutputTokenMs": 40, "percentile": 50}),
    ("spec.replicas", {"min": 3, "max": 3}),
    ("spec.replicas", {"min": 0, "max": 1}),
    ("spec.targetUtilization", 1),
    ("spec.targetUtilization", 0.01),
    ("spec.spot", {"maxFraction": 0}),
    ("spec.traffic", {"requestsPerSecond": 0, "meanInputTokens": 1, "meanOutputTokens": 1}),
    ("spec.priority", -5),
    ("spec.mode", "Advise"),
    ("spec.engine", "sglang"),
    ("spec.template", {"spec": {"containers": [{"name": "server", "image": "vllm"}]}}),
    ("spec.scaleToZero", {"enabled": True, "idleSeconds": 60, "wakeQuery": "sum(queue)"}),
    ("spec.scaling", {"maxScaleUpReplicas": 4, "maxScaleDownReplicas": 1}),
    ("spec.metrics", {"requestRate": "sum(rate(x[1m]))", "kvCacheUsage": "avg(y)"}),
    (
        "spec.variants",
        [
            {"acceleratorType": "nvidia-l4", "maxRequestsPerSecond": 1},
            {
                "name": "l4-tp2",
                "acceleratorType": "nvidia-l4",
                "acceleratorsPerReplica": 2,
                "profile": {
                    "prefillTokensPerSecond": 5000,
                    "maxConcurrency": 16,
                    "decodeStepMs": {"base": 20, "perSequence": 0},
                },
            },
        ],
    ),
    (
        "spec.variants",
        [
            {
                "acceleratorType": "nvidia-l4",
                "maxRequestsPerSecond": 1,
                "pools": ["l4"],
                "args": ["--max-model-len=8192"],
                "env": [{"name": "A", "value": "b"}],
                "startupSeconds": 0,
            }
        ],
    ),
]


@pytest.mark.parametrize(("path", "value"), MODEL_ACCEPTED)
def test_model_accepts(path: str, value: Any) -> None:
    assert problems(ModelDeployment, with_change(MODEL, path, value)) == []


PROFILE = {
    "prefillTokensPerSecond": 1000,
    "decodeStepMs": {"base": 10, "perSequence": 0.1},
    "maxConcurrency": 8,
}

MODEL_REJECTED = [
    ("spec.model", ..., "spec.model: required field is missing"),
    ("spec.model", "", "spec.model: must not be empty"),
    ("spec.slo", {}, "spec.slo: set at least one of timeToFirstTokenMs and timePerOutputTokenMs"),
    (
        "spec.slo",
        {"percentile": 95},
        "spec.slo: set at least one of timeToFirstTokenMs and timePerOutputTokenMs",
    ),
    ("spec.slo.percentile", 49.9, "spec.slo.percentile: must be >= 50 and <= 99.9, got 49.9"),
    ("spec.slo.percentile", 100, "spec.slo.percentile: must be >= 50 and <= 99.9, got 100"),
    ("spec.slo.timePerOutputTokenMs", 0, "spec.slo.timePerOutputTokenMs: must be > 0, got 0"),
    ("spec.replicas", {"min": 4, "max": 2}, "spec.replicas: min must be <= max (min 4, max 2)"),
    ("spec.replicas", {"min": 20}, "spec.replicas: min must be <= max (min 20, max 10)"),
    ("spec.replicas.min", -1, "spec.replicas.min: must be >= 0, got -1"),
    ("spec.replicas.max", 0, "spec.replicas.max: must be >= 1, got 0"),
    ("spec.targetUtilization", 0, "spec.targetUtilization: must be > 0 and <= 1, got 0"),
    ("spec.targetUtilization", 1.2, "spec.targetUtilization: must be > 0 and <= 1, got 1.2"),
    ("spec.variants", [], "spec.variants: must have at least 1 item"),
    ("spec.variants", ..., "spec.variants: required field is missing"),
    (
        "spec.variants",
        [{"acceleratorType": "nvidia-l4", "maxRequestsPerSecond": 1}] * 17,
        "spec.variants: must have at most 16 items, got 17",
    ),
    (
        "spec.variants",
        [
            {"acceleratorType": "nvidia-l4", "maxRequestsPerSecond": 1},
            {"acceleratorType": "nvidia-l4", "profile": PROFILE},
        ],
        "spec.variants: variant names must be unique (a variant's name defaults to its "
        "acceleratorType); repeated: nvidia-l4",
    ),
    (
        "spec.variants",
        [
            {"name": "fast", "acceleratorType": "nvidia-l4", "maxRequestsPerSecond": 1},
            {"name": "fast", "acceleratorType": "nvidia-h100", "maxRequestsPerSecond": 1},
        ],
        "spec.variants: variant names must be unique (a variant's name defaults to its "
        "acceleratorType); repeated: fast",
    ),
    (
        "spec.variants.0.maxRequestsPerSecond",
        ...,
        "spec.variants[0]: set maxRequestsPerSecond or profile (or both): one is needed to know "
        "a replica's capacity",
    ),
    (
        "spec.variants.0.maxRequestsPerSecond",
        0,
        "spec.variants[0].maxRequestsPerSecond: must be > 0, got 0",
    ),
    (
        "spec.variants.0.acceleratorsPerReplica",
        0,
        "spec.variants[0].acceleratorsPerReplica: must be > 0, got 0",
    ),
    ("spec.variants.0.startupSeconds", -1, "spec.variants[0].startupSeconds: must be >= 0, got -1"),
    (
        "spec.variants.0.profile",
        {**PROFILE, "maxConcurrency": 0},
        "spec.variants[0].profile.maxConcurrency: must be > 0, got 0",
    ),
    (
        "spec.variants.0.profile",
        {**PROFILE, "prefillTokensPerSecond": 0},
        "spec.variants[0].profile.prefillTokensPerSecond: must be > 0, got 0",
    ),
    (
        "spec.variants.0.profile",
        {**PROFILE, "decodeStepMs": {"base": 0, "perSequence": 0}},
        "spec.variants[0].profile.decodeStepMs.base: must be > 0, got 0",
    ),
    (
        "spec.variants.0.profile",
        {**PROFILE, "decodeStepMs": {"base": 1, "perSequence": -1}},
        "spec.variants[0].profile.decodeStepMs.perSequence: must be >= 0, got -1",
    ),
    (
        "spec.traffic",
        {"requestsPerSecond": -1},
        "spec.traffic.requestsPerSecond: must be >= 0, got -1",
    ),
    ("spec.traffic", {"meanInputTokens": 0}, "spec.traffic.meanInputTokens: must be > 0, got 0"),
    (
        "spec.traffic",
        {"meanOutputTokens": -3},
        "spec.traffic.meanOutputTokens: must be > 0, got -3",
    ),
    ("spec.spot", {"maxFraction": 1.5}, "spec.spot.maxFraction: must be >= 0 and <= 1, got 1.5"),
    ("spec.mode", "apply", "spec.mode: must be one of Apply, Advise; got the string 'apply'"),
    (
        "spec.engine",
        "llama.cpp",
        "spec.engine: must be one of vllm, sglang, tgi, custom; got the string 'llama.cpp'",
    ),
    ("spec.scaleToZero", {"idleSeconds": 0}, "spec.scaleToZero.idleSeconds: must be > 0, got 0"),
    (
        "spec.scaling",
        {"maxScaleUpReplicas": 0},
        "spec.scaling.maxScaleUpReplicas: must be > 0, got 0",
    ),
    ("spec.template", ["not", "a", "pod"], "spec.template: must be a mapping, got a list"),
    ("spec.priority", "high", "spec.priority: must be an integer, got the string 'high'"),
    (
        "spec.targetUtilisation",
        0.5,
        "spec.targetUtilisation: unknown field (did you mean 'targetUtilization'?)",
    ),
    (
        "metadata.name",
        "Llama",
        "metadata.name: must be a DNS-1035 label: lowercase letters, digits and '-', starting "
        "with a letter and ending with a letter or digit; got the string 'Llama'",
    ),
]


@pytest.mark.parametrize(("path", "value", "expected"), MODEL_REJECTED)
def test_model_rejects(path: str, value: Any, expected: str) -> None:
    assert problems(ModelDeployment, with_change(MODEL, path, value)) == [expected]


def test_several_problems_in_one_object_are_all_reported() -> None:
    doc = with_change(MODEL, "spec.targetUtilization", 2)
    doc = with_change(doc, "spec.replicas", {"min": 3, "max": 1})
    doc = with_change(doc, "spec.slo", {})
    assert problems(ModelDeployment, doc) == [
        "spec.slo: set at least one of timeToFirstTokenMs and timePerOutputTokenMs",
        "spec.replicas: min must be <= max (min 3, max 1)",
        "spec.targetUtilization: must be > 0 and <= 1, got 2",
    ]


def test_measured_capacity_and_profile_may_both_be_given() -> None:
    doc = with_change(MODEL, "spec.variants.0.profile", PROFILE)
    variant = ModelDeployment.model_validate(doc).spec.variants[0]
    assert variant.max_requests_per_second == 10
    assert variant.profile is not None
    assert variant.profile.decode_step_ms.per_sequence == 0.1


def test_toleration_defaults_to_equal() -> None:
    doc = with_change(POOL, "spec.tolerations", [{"key": "a", "value": "b"}])
    pool = AcceleratorPool.model_validate(doc)
    assert pool.spec.tolerations[0].operator is TolerationOperator.EQUAL


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("spec",), "spec"),
        (("spec", "variants", 1, "profile"), "spec.variants[1].profile"),
        (
            ("spec", "nodeSelector", "node.kubernetes.io/instance-type"),
            'spec.nodeSelector["node.kubernetes.io/instance-type"]',
        ),
        ((), ""),
    ],
)
def test_field_path(loc: tuple[int | str, ...], expected: str) -> None:
    assert field_path(loc) == expected


_label = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)


@given(
    name=_label,
    namespace=_label,
    tpot=st.floats(min_value=0.1, max_value=1000),
    percentile=st.floats(min_value=50, max_value=99.9),
    util=st.floats(min_value=0.01, max_value=1),
    replicas=st.tuples(st.integers(0, 50), st.integers(1, 50)).filter(lambda r: r[0] <= r[1]),
    types=st.lists(_label, min_size=1, max_size=16, unique=True),
)
def test_valid_models_round_trip_through_yaml_shape(
    name: str,
    namespace: str,
    tpot: float,
    percentile: float,
    util: float,
    replicas: tuple[int, int],
    types: list[str],
) -> None:
    doc = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": "m",
            "slo": {"timePerOutputTokenMs": tpot, "percentile": percentile},
            "targetUtilization": util,
            "replicas": {"min": replicas[0], "max": replicas[1]},
            "variants": [{"acceleratorType": t, "maxRequestsPerSecond": 1.0} for t in types],
        },
    }
    model = ModelDeployment.model_validate(doc)
    again = ModelDeployment.model_validate(model.to_dict())
    assert again == model
    assert [v.name for v in again.spec.variants] == types
