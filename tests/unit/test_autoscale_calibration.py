"""Capacity calibration: derate, recover, bounds, the no-change band, per-variant updates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.core.calibration import (
    CalibrationSettings,
    VariantObservation,
    calibrate_variants,
    update_calibration,
    worst_latency_ratio,
)
from infleet.core.capacity import LatencySLO

DEFAULT = CalibrationSettings()
SLO = LatencySLO(percentile=95, ttft_ms=500, tpot_ms=50)


@pytest.mark.parametrize(
    ("factor", "ratio", "util", "complete", "expected", "action"),
    [
        # derate: breach while the plan claimed headroom (utilisation <= target 0.8)
        (1.0, 1.5, 0.6, True, 0.85, "derated"),
        (1.0, 1.06, 0.8, True, 0.85, "derated"),  # at the target still counts as headroom
        (0.5, 3.0, 0.1, False, 0.425, "derated"),  # a breach needs no other target observed
        (0.34, 2.0, 0.5, True, 0.3, "derated"),  # 0.289 clamped to the floor
        # no derate
        (1.0, 1.05, 0.6, True, 1.0, "unchanged"),  # within the 5% breach tolerance
        (1.0, 2.0, 0.81, True, 1.0, "unchanged"),  # above target: too few replicas
        (0.3, 2.0, 0.5, True, 0.3, "unchanged"),  # already at the floor
        # recover: well under the SLO at meaningful load (>= 0.5 x 0.8 = 0.4)
        (0.5, 0.6, 0.6, True, 0.51, "recovered"),
        (0.5, 0.6, 0.4, True, 0.51, "recovered"),
        (0.99, 0.5, 0.7, True, 1.0, "recovered"),  # 1.0098 clamped to the ceiling
        # no recovery
        (1.0, 0.5, 0.7, True, 1.0, "unchanged"),  # at the ceiling
        (0.5, 0.6, 0.39, True, 0.5, "unchanged"),  # load too light
        (0.5, 0.6, 0.7, False, 0.5, "unchanged"),  # a target not observed
        (0.5, 0.7, 0.7, True, 0.5, "unchanged"),  # 0.7 is not below 0.7
        # the band in between, and missing inputs
        (0.5, 0.9, 0.7, True, 0.5, "unchanged"),
        (0.5, 1.0, 0.7, True, 0.5, "unchanged"),
        (0.5, None, 0.7, True, 0.5, "unchanged"),
        (0.5, 1.5, None, True, 0.5, "unchanged"),
        # a stored factor outside the bounds is clamped first
        (1.5, 0.9, 0.7, True, 1.0, "unchanged"),
        (0.1, 0.9, 0.7, True, 0.3, "unchanged"),
    ],
)
def test_update_calibration(
    factor: float,
    ratio: float | None,
    util: float | None,
    complete: bool,
    expected: float,
    action: str,
) -> None:
    update = update_calibration(
        factor,
        latency_ratio=ratio,
        utilization=util,
        target_utilization=0.8,
        settings=DEFAULT,
        all_targets_observed=complete,
    )
    assert update.factor == pytest.approx(expected)
    assert update.action == action
    assert update.reason


def test_recovery_above_one_when_the_ceiling_allows() -> None:
    settings = CalibrationSettings(max_factor=1.2)
    update = update_calibration(
        1.0, latency_ratio=0.5, utilization=0.7, target_utilization=0.8, settings=settings
    )
    assert update.factor == pytest.approx(1.02)
    assert update.action == "recovered"


def test_derate_reason_names_the_change() -> None:
    update = update_calibration(
        1.0, latency_ratio=1.5, utilization=0.6, target_utilization=0.8, settings=DEFAULT
    )
    assert update.reason == (
        "latency 1.50x the SLO at 60% load while the plan claimed headroom: "
        "capacity factor 1.000 -> 0.850"
    )


@pytest.mark.parametrize(
    ("ttft", "tpot", "slo", "expected"),
    [
        (250.0, 25.0, SLO, (0.5, True)),
        (250.0, 75.0, SLO, (1.5, True)),
        (750.0, None, SLO, (1.5, False)),
        (None, None, SLO, (None, False)),
        (math.nan, 40.0, SLO, (0.8, False)),
        (900.0, None, LatencySLO(tpot_ms=50), (None, False)),  # TTFT has no target
        (None, 25.0, LatencySLO(tpot_ms=50), (0.5, True)),
    ],
)
def test_worst_latency_ratio(
    ttft: float | None,
    tpot: float | None,
    slo: LatencySLO,
    expected: tuple[float | None, bool],
) -> None:
    assert worst_latency_ratio(ttft, tpot, slo) == expected


def test_calibrate_variants_updates_each_variant_on_its_own_evidence() -> None:
    updates = calibrate_variants(
        {"h100": 0.5, "l4": 1.0},
        {
            "h100": VariantObservation(ttft_ms=750, tpot_ms=40, utilization=0.6),
            "mi300x": VariantObservation(
                ttft_ms=900, tpot_ms=90, utilization=0.5, data_age_seconds=61
            ),
            "tpu": VariantObservation(ttft_ms=200, tpot_ms=20, utilization=0.7),
        },
        slo=SLO,
        target_utilization=0.8,
        settings=DEFAULT,
        stale_after_seconds=60,
    )
    assert {k: (round(u.factor, 6), u.action) for k, u in updates.items()} == {
        "h100": (0.425, "derated"),
        "l4": (1.0, "unchanged"),
        "mi300x": (1.0, "unchanged"),
        "tpu": (1.0, "unchanged"),  # at the ceiling already
    }
    assert updates["l4"].reason == "no metrics for the variant"
    assert updates["mi300x"].reason == "metrics 61 s old (stale after 60 s)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_factor": 0.0}, "CalibrationSettings.min_factor"),
        ({"min_factor": 1.1}, "CalibrationSettings.min_factor"),
        ({"max_factor": 0.9}, "CalibrationSettings.max_factor"),
        ({"max_factor": 2.5}, "CalibrationSettings.max_factor"),
        ({"derate_step": 1.0}, "CalibrationSettings.derate_step"),
        ({"recover_step": 0.99}, "CalibrationSettings.recover_step"),
        ({"recover_below": 0.0}, "CalibrationSettings.recover_below"),
        ({"breach_tolerance": -0.1}, "CalibrationSettings.breach_tolerance"),
        ({"recover_min_load": math.nan}, "CalibrationSettings.recover_min_load"),
    ],
)
def test_settings_reject_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CalibrationSettings(**kwargs)


@pytest.mark.parametrize(
    ("factor", "target", "message"),
    [
        (0.0, 0.8, "calibration factor must be a finite number > 0"),
        (math.inf, 0.8, "calibration factor"),
        (1.0, 0.0, "target_utilization"),
        (1.0, 1.5, "target_utilization"),
    ],
)
def test_update_rejects_bad_inputs(factor: float, target: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        update_calibration(
            factor, latency_ratio=1.0, utilization=0.5, target_utilization=target, settings=DEFAULT
        )


settings_strategy = st.builds(
    CalibrationSettings,
    min_factor=st.floats(0.05, 1.0),
    max_factor=st.floats(1.0, 2.0),
    derate_step=st.floats(0.1, 0.99),
    recover_step=st.floats(1.0, 1.5),
)
step = st.tuples(
    st.one_of(st.none(), st.floats(0, 10, allow_nan=False)),
    st.one_of(st.none(), st.floats(0, 3, allow_nan=False)),
    st.booleans(),
)


@given(
    settings_strategy,
    st.floats(0.01, 5.0),
    st.floats(0.1, 1.0),
    st.lists(step, max_size=60),
)
def test_factor_stays_within_bounds_for_any_sequence(
    settings: CalibrationSettings,
    start: float,
    target: float,
    steps: list[tuple[float | None, float | None, bool]],
) -> None:
    factor = start
    for ratio, util, complete in steps:
        update = update_calibration(
            factor,
            latency_ratio=ratio,
            utilization=util,
            target_utilization=target,
            settings=settings,
            all_targets_observed=complete,
        )
        assert settings.min_factor <= update.factor <= settings.max_factor
        if update.action == "derated":
            assert update.factor < max(min(factor, settings.max_factor), settings.min_factor)
        if update.action == "recovered":
            assert update.factor > max(min(factor, settings.max_factor), settings.min_factor)
        factor = update.factor


@pytest.mark.parametrize(
    ("factor", "ratio", "util", "expected", "action"),
    [
        (1.0, 1.5, 0.6, 1.0, "unchanged"),  # a breach is not learned while settling
        (0.5, 0.6, 0.6, 0.51, "recovered"),  # recovery is not held back
        (0.5, 0.9, 0.6, 0.5, "unchanged"),
    ],
)
def test_unsettled_fleet_is_not_derated(
    factor: float, ratio: float, util: float, expected: float, action: str
) -> None:
    update = update_calibration(
        factor,
        latency_ratio=ratio,
        utilization=util,
        target_utilization=0.8,
        settings=DEFAULT,
        settled=False,
    )
    assert update.factor == pytest.approx(expected)
    assert update.action == action
    if ratio > 1.05:
        assert "settles" in update.reason


def test_calibrate_variants_passes_settled_to_every_variant() -> None:
    observations = {
        "h100": VariantObservation(ttft_ms=750, tpot_ms=40, utilization=0.6),
        "l4": VariantObservation(ttft_ms=900, tpot_ms=40, utilization=0.5),
    }
    held = calibrate_variants(
        {},
        observations,
        slo=SLO,
        target_utilization=0.8,
        settings=DEFAULT,
        stale_after_seconds=60,
        settled=False,
    )
    assert {v: u.factor for v, u in held.items()} == {"h100": 1.0, "l4": 1.0}
    learned = calibrate_variants(
        {}, observations, slo=SLO, target_utilization=0.8, settings=DEFAULT, stale_after_seconds=60
    )
    assert {v: u.factor for v, u in learned.items()} == {
        "h100": pytest.approx(0.85),
        "l4": pytest.approx(0.85),
    }
