"""Status documents, conditions and event messages from a plan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infleet.core.inventory import PoolInventory
from infleet.core.planner import ModelOutcome, Placement
from infleet.core.status import (
    decision_event,
    fix_hint,
    invalid_model_status,
    merge_conditions,
    model_status,
    pool_status,
    replica_change_message,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2026, 1, 2, 3, 9, 0, tzinfo=UTC)
KEY = ("team-a", "llama")


def outcome(reason: str | None = None, **kw: float) -> ModelOutcome:
    values = {
        "demand_rps": 8.0,
        "required_rps": 10.0,
        "capacity_rps": 12.0,
        "unmet_rps": 0.0,
        "replicas": 4,
        "cost_per_hour": 12.5,
    }
    values.update(kw)
    return ModelOutcome(
        key=KEY,
        demand_rps=values["demand_rps"],
        required_rps=values["required_rps"],
        capacity_rps=values["capacity_rps"],
        unmet_rps=values["unmet_rps"],
        replicas=int(values["replicas"]),
        cost_per_hour=values["cost_per_hour"],
        reason=reason,  # type: ignore[arg-type]
        explanation="wafer is cheapest per req/s",
    )


PLACEMENTS = (
    Placement(KEY, "h100", "h100-spot", 3, 3, 7.5, 6.0),
    Placement(KEY, "wafer", "wafer", 1, 2, 5.0, 6.0),
    Placement(KEY, "h100", "h100-od", 0, 0, 0.0, 0.0),
)
TYPES = {"h100-spot": "nvidia-h100-80gb", "wafer": "cerebras-cs3", "h100-od": "nvidia-h100-80gb"}


def test_model_status_placed_and_partly_ready() -> None:
    status = model_status(
        outcome=outcome(),
        placements=PLACEMENTS,
        ready={("h100", "h100-spot"): 2, ("wafer", "wafer"): 1, ("h100", "h100-od"): 1},
        accelerator_types=TYPES,
        demand_source="prior",
        generation=7,
        previous_conditions=[],
        now=T0,
    )
    assert status["placements"] == [
        {
            "pool": "h100-spot",
            "variant": "h100",
            "acceleratorType": "nvidia-h100-80gb",
            "desiredReplicas": 3,
            "readyReplicas": 2,
            "capacityRequestsPerSecond": 6.0,
        },
        {
            "pool": "wafer",
            "variant": "wafer",
            "acceleratorType": "cerebras-cs3",
            "desiredReplicas": 1,
            "readyReplicas": 1,
            "capacityRequestsPerSecond": 6.0,
        },
        # Still running but no longer wanted: shown with desired 0 until it is gone.
        {
            "pool": "h100-od",
            "variant": "h100",
            "acceleratorType": "nvidia-h100-80gb",
            "desiredReplicas": 0,
            "readyReplicas": 1,
            "capacityRequestsPerSecond": 0.0,
        },
    ]
    assert status["desiredReplicas"] == 4
    assert status["readyReplicas"] == 3
    assert status["costPerHour"] == 12.5
    assert status["demand"] == {
        "requestsPerSecond": 8.0,
        "source": "prior",
        "explanation": "the traffic prior, spec.traffic.requestsPerSecond",
    }
    assert status["observedGeneration"] == 7
    ready, scheduled = status["conditions"]
    assert ready == {
        "type": "Ready",
        "status": "False",
        "reason": "ReplicasNotReady",
        "message": "3 of 4 replicas ready",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 7,
    }
    assert scheduled["status"] == "True"
    assert scheduled["reason"] == "Placed"


@pytest.mark.parametrize(
    ("reason", "fragment", "fix"),
    [
        ("CapacityShortage", "the pools it can use are full", "raise their maxAccelerators"),
        ("Infeasible", "no variant can meet the SLO", "relax spec.slo"),
        ("NoMatchingPool", "no AcceleratorPool matches", "create an AcceleratorPool"),
        ("MaxReplicas", "replicas.max is too low", "raise spec.replicas.max"),
    ],
)
def test_shortfall_reasons(reason: str, fragment: str, fix: str) -> None:
    status = model_status(
        outcome=outcome(reason, unmet_rps=4.0, capacity_rps=6.0),
        placements=(),
        ready={},
        accelerator_types=TYPES,
        demand_source="prior",
        generation=1,
        previous_conditions=[],
        now=T0,
    )
    scheduled = status["conditions"][1]
    assert scheduled["status"] == "False"
    assert scheduled["reason"] == reason
    assert scheduled["message"].startswith("4 of 10 req/s needed cannot be placed: " + fragment)
    # The message ends with what to do, so `kubectl describe` answers "now what?".
    assert scheduled["message"].endswith(". To fix: " + fix_hint(reason))
    assert fix in fix_hint(reason)
    assert status["unmetRequestsPerSecond"] == 4.0


def test_no_fix_hint_without_a_known_shortfall() -> None:
    assert fix_hint(None) == ""
    assert fix_hint("SomethingNew") == ""
    placed = model_status(
        outcome=outcome(),
        placements=PLACEMENTS,
        ready={},
        accelerator_types=TYPES,
        demand_source="prior",
        generation=1,
        previous_conditions=[],
        now=T0,
    )
    assert "To fix" not in placed["conditions"][1]["message"]


@pytest.mark.parametrize(
    ("reason", "replicas", "ready_status", "ready_reason"),
    [
        # Demand but nothing placed: not a vacuous "0 of 0 replicas ready".
        ("NoMatchingPool", 0, "False", "NotScheduled"),
        ("Infeasible", 0, "False", "NotScheduled"),
        # Some replicas placed (all ready): Ready speaks of those, Scheduled of the rest.
        ("CapacityShortage", 2, "True", "ReplicasReady"),
        # Nothing wanted (no demand, min 0): ready.
        (None, 0, "True", "ReplicasReady"),
    ],
)
def test_ready_when_nothing_could_be_placed(
    reason: str | None, replicas: int, ready_status: str, ready_reason: str
) -> None:
    placements = (Placement(KEY, "h100", "h100-spot", replicas, replicas, 2.5, 6.0),)
    status = model_status(
        outcome=outcome(reason, unmet_rps=4.0 if reason else 0.0, replicas=replicas),
        placements=placements,
        ready={("h100", "h100-spot"): replicas},
        accelerator_types=TYPES,
        demand_source="prior",
        generation=1,
        previous_conditions=[],
        now=T0,
    )
    ready = status["conditions"][0]
    assert (ready["status"], ready["reason"]) == (ready_status, ready_reason)
    if ready_reason == "NotScheduled":
        assert ready["message"] == (
            f"no replica could be placed ({reason}): see the Scheduled condition"
        )


def test_advise_reports_the_plan_but_nothing_ready() -> None:
    status = model_status(
        outcome=outcome(),
        placements=PLACEMENTS,
        ready={("h100", "h100-spot"): 3},
        accelerator_types=TYPES,
        demand_source="prior",
        generation=1,
        previous_conditions=[],
        now=T0,
        advise=True,
    )
    assert status["desiredReplicas"] == 4
    assert status["readyReplicas"] == 0
    assert status["conditions"][0]["reason"] == "AdviseOnly"


def test_transition_time_kept_while_status_holds() -> None:
    first = merge_conditions([], [{"type": "Ready", "status": "False", "reason": "A"}], T0)
    same = merge_conditions(first, [{"type": "Ready", "status": "False", "reason": "B"}], T1)
    flipped = merge_conditions(same, [{"type": "Ready", "status": "True", "reason": "C"}], T1)
    assert same[0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "2026-01-02T03:09:00Z"


def test_conditions_of_other_writers_are_kept() -> None:
    previous = [{"type": "SLOMet", "status": "True", "reason": "X", "lastTransitionTime": "t"}]
    merged = merge_conditions(previous, [{"type": "Ready", "status": "True", "reason": "R"}], T0)
    assert [c["type"] for c in merged] == ["Ready", "SLOMet"]
    assert merged[1] == previous[0]


def test_invalid_model_status() -> None:
    status = invalid_model_status("spec.slo: bad", generation=3, previous_conditions=[], now=T0)
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Ready", "False", "InvalidSpec"),
        ("Scheduled", "False", "InvalidSpec"),
    ]
    assert status["conditions"][0]["message"] == "spec.slo: bad"


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (
            {},
            {("h100", "h100-spot"): 3, ("wafer", "wafer"): 1},
            "placed 3 on h100-spot, 1 on wafer: why",
        ),
        ({("h100", "p"): 2}, {("h100", "p"): 2, ("l4", "q"): 0}, None),
        ({("h100", "p"): 2}, {}, "scaled to 0 replicas: why"),
        ({}, {("a", "p"): 1, ("b", "p"): 2}, "placed 1 on p/a, 2 on p/b: why"),
    ],
)
def test_replica_change_message(
    before: dict[tuple[str, str], int], after: dict[tuple[str, str], int], expected: str | None
) -> None:
    assert replica_change_message(before, after, "why") == expected


@pytest.mark.parametrize(
    ("allocatable", "unavailable", "reason", "ready"),
    [
        (0, 0, "NoReadyNodes", "False"),
        (16, 0, "NodesReady", "True"),
        (16, 4, "CapacityReduced", "True"),
    ],
)
def test_pool_status(allocatable: int, unavailable: int, reason: str, ready: str) -> None:
    inventory = PoolInventory(
        pool="p",
        nodes=3,
        ready_nodes=2,
        allocatable_accelerators=allocatable,
        allocated_accelerators=min(6, allocatable),
        unavailable_accelerators=unavailable,
    )
    status = pool_status(inventory, generation=2, previous_conditions=[], now=T0)
    assert status["nodes"] == 3
    assert status["readyNodes"] == 2
    assert status["allocatableAccelerators"] == allocatable
    assert status["freeAccelerators"] == max(0, allocatable - min(6, allocatable) - unavailable)
    assert (status["conditions"][0]["reason"], status["conditions"][0]["status"]) == (reason, ready)


def _scheduled(reason: str) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "True", "reason": "X"},
            {"type": "Scheduled", "status": "False", "reason": reason}]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "reason", "previous", "expected"),
    [
        # A change of replicas: Placed (Normal) with the planner's line.
        (
            {},
            {("h100", "p"): 2},
            None,
            [],
            ("Placed", "placed 2 on p: wafer is cheapest per req/s"),
        ),
        # No change, nothing wrong: no event.
        ({("h100", "p"): 2}, {("h100", "p"): 2}, None, [], None),
        # A shortfall that changes replicas: its reason, and what to do.
        (
            {},
            {("h100", "p"): 2},
            "MaxReplicas",
            [],
            (
                "MaxReplicas",
                "placed 2 on p: wafer is cheapest per req/s. To fix: raise spec.replicas.max",
            ),
        ),
        # A model no pool can take changes no replica; it is announced once, on the transition.
        ({}, {}, "NoMatchingPool", [], "NoMatchingPool"),
        ({}, {}, "NoMatchingPool", _scheduled("Placed"), "NoMatchingPool"),
        ({}, {}, "NoMatchingPool", _scheduled("NoMatchingPool"), None),
        ({}, {}, "Infeasible", _scheduled("NoMatchingPool"), "Infeasible"),
    ],
)
def test_decision_event(
    before: dict[tuple[str, str], int],
    after: dict[tuple[str, str], int],
    reason: str | None,
    previous: list[dict[str, str]],
    expected: tuple[str, str] | str | None,
) -> None:
    result = outcome(reason, unmet_rps=4.0 if reason else 0.0)
    event = decision_event(before, after, result, previous)
    if isinstance(expected, str):
        # The transition event repeats the Scheduled condition's message, fix included.
        assert event is not None
        assert event[0] == expected
        assert event[1].startswith("4 of 10 req/s needed cannot be placed: ")
        assert event[1].endswith(". To fix: " + fix_hint(expected))
    else:
        assert event == expected
