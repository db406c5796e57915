"""Per-model replica bounds in PlanInputs (the autoscaler's hold floor, scale to zero, limits)."""

from __future__ import annotations

from typing import Any

import pytest

from infleet.api import AcceleratorPool, ModelDeployment
from infleet.core.fleet import PlanInputs, build_problem, model_slo
from infleet.core.planner import plan_fleet

POOL = AcceleratorPool.model_validate(
    {
        "apiVersion": "infleet.io/v1alpha1",
        "kind": "AcceleratorPool",
        "metadata": {"name": "h100"},
        "spec": {
            "acceleratorType": "nvidia-h100-80gb",
            "acceleratorsPerNode": 8,
            "nodeSelector": {"pool": "h100"},
            "costPerAcceleratorHour": 3.0,
            "maxAccelerators": 16,
        },
    }
)


def model(rps: float, **replicas: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "apiVersion": "infleet.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "chat", "namespace": "ns"},
            "spec": {
                "model": "m",
                "slo": {"percentile": 99, "timeToFirstTokenMs": 500},
                "traffic": {"requestsPerSecond": rps},
                "replicas": replicas or {"min": 0, "max": 10},
                "variants": [{"acceleratorType": "nvidia-h100-80gb", "maxRequestsPerSecond": 10}],
            },
        }
    )


KEY = ("ns", "chat")


@pytest.mark.parametrize(
    ("rps", "bounds", "replicas"),
    [
        (16.0, None, 2),  # 16 / 0.8 = 20 req/s: 2 replicas of 10 (spec bounds 0..10)
        (16.0, (5, 10), 5),  # a hold floor above the demand's need keeps 5
        (16.0, (0, 1), 1),  # a per-cycle up limit caps the plan (unmet demand reported)
        (16.0, (0, 0), 0),  # scale to zero
        (0.0, (1, 10), 1),  # floor 1 with no demand
    ],
)
def test_replica_bounds_replace_spec_replicas(
    rps: float, bounds: tuple[int, int] | None, replicas: int
) -> None:
    inputs = PlanInputs(replica_bounds={KEY: bounds} if bounds else {})
    fleet = build_problem([POOL], [model(rps)], inputs)
    request = fleet.problem.models[0]
    assert (request.min_replicas, request.max_replicas) == (bounds or (0, 10))
    plan = plan_fleet(fleet.problem)
    assert sum(p.replicas for p in plan.placements) == replicas


@pytest.mark.parametrize("bounds", [(3, 2), (-1, 4)])
def test_inconsistent_bounds_name_the_model(bounds: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"replica bounds of ns/chat .* got min"):
        build_problem([POOL], [model(1.0)], PlanInputs(replica_bounds={KEY: bounds}))


def test_model_slo_reads_percentile_and_targets() -> None:
    slo = model_slo(model(1.0))
    assert (slo.percentile, slo.ttft_ms, slo.tpot_ms) == (99, 500, None)
