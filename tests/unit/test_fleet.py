"""From API objects to the planner's problem: capacities, demand, pool supply."""

from __future__ import annotations

from typing import Any

import pytest

from infleet.api import AcceleratorPool, ModelDeployment
from infleet.core.capacity import TokenMix
from infleet.core.fleet import (
    UNBOUNDED_ACCELERATORS,
    Demand,
    PlanInputs,
    build_problem,
    variant_capacity,
)
from infleet.core.planner import plan_fleet


def pool(name: str, accel: str, *, quota: int | None, cost: float, kind: str = "on-demand") -> Any:
    spec: dict[str, Any] = {
        "acceleratorType": accel,
        "acceleratorsPerNode": 8,
        "nodeSelector": {"pool": name},
        "costPerAcceleratorHour": cost,
        "capacityType": kind,
    }
    if quota is not None:
        spec["maxAccelerators"] = quota
    return AcceleratorPool.model_validate(
        {
            "apiVersion": "infleet.io/v1alpha1",
            "kind": "AcceleratorPool",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def model(name: str, rps: float, variants: list[dict[str, Any]], **spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate(
        {
            "apiVersion": "infleet.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "model": "m",
                "slo": {"timeToFirstTokenMs": 1000, "timePerOutputTokenMs": 50},
                "traffic": {"requestsPerSecond": rps},
                "variants": variants,
                **spec,
            },
        }
    )


PROFILE = {
    "prefillTokensPerSecond": 10000,
    "decodeStepMs": {"base": 10, "perSequence": 1},
    "maxConcurrency": 64,
}


def test_problem_carries_pools_quota_and_unbounded_default() -> None:
    fleet = build_problem(
        [pool("a", "h100", quota=16, cost=4.0), pool("b", "l4", quota=None, cost=0.7)],
        [model("m1", 4, [{"acceleratorType": "h100", "maxRequestsPerSecond": 2}])],
    )
    supply = {p.name: p.accelerators for p in fleet.problem.pools}
    assert supply == {"a": 16, "b": UNBOUNDED_ACCELERATORS}


def test_observed_capacity_overrides_quota() -> None:
    fleet = build_problem(
        [pool("a", "h100", quota=16, cost=4.0)],
        [model("m1", 4, [{"acceleratorType": "h100", "maxRequestsPerSecond": 2}])],
        PlanInputs(pool_capacity={"a": 3}),
    )
    assert fleet.problem.pools[0].accelerators == 3


def test_demand_prior_and_override() -> None:
    m = model("m1", 4, [{"acceleratorType": "h100", "maxRequestsPerSecond": 2}])
    prior = build_problem([], [m])
    assert prior.problem.models[0].demand_rps == 4
    assert prior.demand[("ns", "m1")].source == "prior"
    live = build_problem([], [m], PlanInputs(demand={("ns", "m1"): Demand(9.5, "metrics")}))
    assert live.problem.models[0].demand_rps == 9.5
    assert live.demand[("ns", "m1")].source == "metrics"


def test_variant_options_measured_profile_and_calibration() -> None:
    m = model(
        "m1",
        1,
        [
            {"acceleratorType": "h100", "maxRequestsPerSecond": 2, "pools": ["a"]},
            {
                "name": "l4-x2",
                "acceleratorType": "l4",
                "acceleratorsPerReplica": 2,
                "profile": PROFILE,
            },
        ],
        targetUtilization=0.5,
        replicas={"min": 1, "max": 7},
        priority=3,
        spot={"maxFraction": 0.25},
    )
    fleet = build_problem([], [m], PlanInputs(calibration={(("ns", "m1"), "h100"): 0.5}))
    request = fleet.problem.models[0]
    assert (request.target_utilization, request.min_replicas, request.max_replicas) == (0.5, 1, 7)
    assert (request.priority, request.spot_max_fraction) == (3, 0.25)
    h100, l4 = request.variants
    assert (h100.name, h100.capacity_rps, h100.pools) == ("h100", 1.0, ("a",))
    assert (l4.name, l4.accelerators_per_replica, l4.pools) == ("l4-x2", 2, None)
    # The profile's capacity is the capacity model's answer for this SLO and the prior mix.
    assert l4.capacity_rps == pytest.approx(variant_capacity(m, 1).requests_per_second)
    assert l4.capacity_rps > 0
    assert fleet.capacities[(("ns", "m1"), "l4-x2")].limited_by == "ttft"


def test_observed_token_mix_changes_profile_capacity() -> None:
    m = model("m1", 1, [{"acceleratorType": "l4", "profile": PROFILE}])
    short = variant_capacity(m, 0, mix=TokenMix(mean_input_tokens=100, mean_output_tokens=50))
    long = variant_capacity(m, 0, mix=TokenMix(mean_input_tokens=4000, mean_output_tokens=800))
    assert short.requests_per_second > long.requests_per_second > 0


def test_build_then_plan_end_to_end() -> None:
    # 3 rps at u=0.75 needs 4 rps: two 2-rps replicas on the cheapest matching pool.
    fleet = build_problem(
        [pool("cheap", "h100", quota=8, cost=3.0), pool("dear", "h100", quota=8, cost=5.0)],
        [
            model(
                "m1",
                3,
                [{"acceleratorType": "h100", "maxRequestsPerSecond": 2}],
                targetUtilization=0.75,
            )
        ],
    )
    plan = plan_fleet(fleet.problem)
    assert [(p.pool, p.replicas) for p in plan.placements if p.replicas] == [("cheap", 2)]
    assert plan.cost_per_hour == pytest.approx(6.0)
