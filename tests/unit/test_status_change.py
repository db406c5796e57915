"""Which status changes are decisions (written at once) and which are live figures that may
wait for ``--status-refresh`` (infleet.core.status_change)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.core.status_change import StatusChange, decision_fields, status_change

LIVE: dict[str, Any] = {
    "observedGeneration": 3,
    "placements": [
        {
            "pool": "h100",
            "variant": "h100",
            "acceleratorType": "nvidia-h100-80gb",
            "desiredReplicas": 3,
            "readyReplicas": 3,
            "capacityRequestsPerSecond": 5.0,
        }
    ],
    "desiredReplicas": 3,
    "readyReplicas": 3,
    "costPerHour": 14.76,
    "demand": {"requestsPerSecond": 9.5, "source": "metrics", "explanation": "observed 9.5"},
    "explanation": "3 x h100 cover 9.5 req/s",
    "unmetRequestsPerSecond": 0.0,
    "observed": {"requestsPerSecond": 9.4, "ttftMs": 420.0, "tpotMs": None, "queueLength": 0.0},
    "calibration": [{"variant": "h100", "factor": 0.9}],
    "lastScaleTime": "2026-11-29T10:00:00Z",
    "scaling": {"samples": [[1.0, 9.5]], "lastReplicas": 3},
    "conditions": [
        {"type": "Ready", "status": "True", "reason": "ReplicasReady", "message": "3 of 3"},
        {"type": "SLOMet", "status": "True", "reason": "WithinSLO", "message": "p95 420 ms"},
    ],
}


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of ``LIVE`` with the field at ``path`` set to ``value``."""
    out = copy.deepcopy(LIVE)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("observed", "requestsPerSecond"), 11.2),
        (("observed", "ttftMs"), 610.0),
        (("demand", "requestsPerSecond"), 10.1),
        (("demand", "explanation"), "observed 10.1"),
        (("explanation",), "3 x h100 cover 10.1 req/s"),
        (("scaling",), {"samples": [[1.0, 9.5], [16.0, 10.1]], "lastReplicas": 3}),
        (("conditions", 1, "message"), "p95 610 ms"),
        (("placements", 0, "capacityRequestsPerSecond"), 5.4),
        (("calibration", 0, "factor"), 0.918),  # recovering slowly
        (("demand", "source"), "forecast"),  # the trend above the figure, or not: noise
    ],
)
def test_live_figures_alone_are_telemetry(path: tuple[Any, ...], value: Any) -> None:
    assert status_change(LIVE, changed(path, value)) is StatusChange.TELEMETRY


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("desiredReplicas",), 4),
        (("readyReplicas",), 2),
        (("costPerHour",), 19.68),
        (("observedGeneration",), 4),
        (("lastScaleTime",), "2026-11-29T10:05:00Z"),
        (("placements", 0, "desiredReplicas"), 4),
        (("placements", 0, "readyReplicas"), 2),
        (("placements", 0, "pool"), "h100-spot"),
        (("demand", "source"), "prior"),  # metrics gone for good: the prior again
        (("conditions", 1, "status"), "False"),
        (("conditions", 1, "reason"), "SLOBroken"),
        (("calibration", 0, "factor"), 0.765),  # a derate
        (("calibration",), []),  # a variant's factor gone
        (("unmetRequestsPerSecond",), 2.5),  # demand no longer served in full
        (("someFieldAddedLater",), "x"),  # unknown fields are never held back
    ],
)
def test_what_a_user_acts_on_is_a_decision(path: tuple[Any, ...], value: Any) -> None:
    assert status_change(LIVE, changed(path, value)) is StatusChange.DECISION


def test_unmet_staying_above_zero_is_telemetry_and_falling_to_zero_a_decision() -> None:
    short = changed(("unmetRequestsPerSecond",), 2.5)
    assert status_change(short, changed(("unmetRequestsPerSecond",), 3.1)) is (
        StatusChange.TELEMETRY
    )
    assert status_change(short, LIVE) is StatusChange.DECISION


def test_a_decision_among_live_figures_is_a_decision() -> None:
    new = changed(("observed", "requestsPerSecond"), 14.0)
    new["desiredReplicas"] = 4
    assert status_change(LIVE, new) is StatusChange.DECISION


def test_decision_fields_name_what_made_the_write_urgent() -> None:
    new = changed(("observed", "requestsPerSecond"), 14.0)
    new["desiredReplicas"] = 4
    new["conditions"] = copy.deepcopy(LIVE["conditions"])
    new["conditions"][1]["status"] = "False"
    assert decision_fields(LIVE, new) == ["desiredReplicas", "conditions"]
    assert decision_fields(LIVE, changed(("observed", "ttftMs"), 1.0)) == []


def test_equal_statuses_and_fields_the_patch_does_not_set_are_no_change() -> None:
    assert status_change(LIVE, copy.deepcopy(LIVE)) is StatusChange.NONE
    # A merge patch leaves fields it does not name alone: only the new fields count.
    assert status_change(LIVE, {"desiredReplicas": 3}) is StatusChange.NONE


def test_a_first_status_is_a_decision() -> None:
    assert status_change(None, LIVE) is StatusChange.DECISION
    assert status_change({}, {"observed": {"requestsPerSecond": 1.0}}) is StatusChange.TELEMETRY


def test_a_status_field_of_an_unexpected_shape_is_a_decision() -> None:
    # A hand-edited or older status must not make a real change wait.
    odd = changed(("placements",), "not a list")
    assert status_change(odd, LIVE) is StatusChange.DECISION
    odd = changed(("calibration",), [{"variant": "h100", "factor": "high"}])
    assert status_change(odd, LIVE) is StatusChange.DECISION


_TELEMETRY_PATHS = [
    ("observed", "requestsPerSecond"),
    ("observed", "ttftMs"),
    ("demand", "requestsPerSecond"),
    ("explanation",),
    ("conditions", 0, "message"),
    ("placements", 0, "capacityRequestsPerSecond"),
]
_DECISION_PATHS = [
    ("desiredReplicas",),
    ("placements", 0, "desiredReplicas"),
    ("conditions", 0, "status"),
    ("observedGeneration",),
]


@given(
    telemetry=st.lists(
        st.tuples(st.sampled_from(range(len(_TELEMETRY_PATHS))), st.floats(0, 1e6)), max_size=6
    ),
    decision=st.lists(
        st.tuples(st.sampled_from(range(len(_DECISION_PATHS))), st.integers(100, 200)),
        max_size=3,
    ),
)
def test_any_decision_field_changed_makes_a_decision_whatever_else_changed(
    telemetry: list[tuple[int, float]], decision: list[tuple[int, int]]
) -> None:
    new = copy.deepcopy(LIVE)
    for index, value in telemetry:
        node: Any = new
        path = _TELEMETRY_PATHS[index]
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
    for index, number in decision:
        node = new
        path = _DECISION_PATHS[index]
        for step in path[:-1]:
            node = node[step]
        # Values no live field holds: every decision edit is a real change.
        node[path[-1]] = number if isinstance(LIVE.get(path[0]), int) else f"v{number}"
    got = status_change(LIVE, new)
    if decision:
        assert got is StatusChange.DECISION
    elif new == LIVE:
        assert got is StatusChange.NONE
    else:
        assert got is StatusChange.TELEMETRY
