"""Demand history: bounded sample buffer, window peak, least-squares trend, forecast."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.core.forecast import (
    ForecastSettings,
    Sample,
    add_sample,
    forecast_demand,
    trend_slope,
    window_peak,
)

DEFAULT = ForecastSettings()
RAMP: list[Sample] = [(0.0, 1.0), (15.0, 2.0), (30.0, 3.0)]  # slope 1/15 rps per second


@pytest.mark.parametrize(
    ("samples", "new", "keep", "cap", "expected"),
    [
        # a sample exactly keep_seconds old stays (closed window); older ones go
        (
            [(0.0, 1.0), (10.0, 2.0), (20.0, 3.0)],
            (30.0, 4.0),
            20.0,
            64,
            [(10, 2), (20, 3), (30, 4)],
        ),
        ([(0.0, 1.0), (10.0, 2.0)], (31.0, 4.0), 20.0, 64, [(31, 4)]),
        ([], (5.0, 7.0), 0.0, 64, [(5, 7)]),
        # over the cap the two oldest merge at the newer time, keeping the larger value
        (
            [(0.0, 5.0), (10.0, 9.0), (20.0, 1.0)],
            (30.0, 2.0),
            300.0,
            3,
            [(10, 9), (20, 1), (30, 2)],
        ),
        (
            [(0.0, 9.0), (10.0, 5.0), (20.0, 1.0)],
            (30.0, 2.0),
            300.0,
            3,
            [(10, 9), (20, 1), (30, 2)],
        ),
        ([(0.0, 9.0), (10.0, 5.0), (20.0, 1.0)], (30.0, 2.0), 300.0, 2, [(20, 9), (30, 2)]),
    ],
)
def test_add_sample(
    samples: list[Sample], new: Sample, keep: float, cap: int, expected: list[Sample]
) -> None:
    assert add_sample(samples, new, keep_seconds=keep, max_samples=cap) == tuple(
        (float(t), float(v)) for t, v in expected
    )


def test_add_sample_rejects_a_cap_below_two() -> None:
    with pytest.raises(ValueError, match="max_samples must be >= 2"):
        add_sample([], (0.0, 1.0), keep_seconds=10, max_samples=1)


@pytest.mark.parametrize(
    ("samples", "now", "window", "expected"),
    [
        ([(0.0, 10.0), (100.0, 4.0), (200.0, 6.0)], 300.0, 300.0, 10.0),
        ([(0.0, 10.0), (100.0, 4.0), (200.0, 6.0)], 300.5, 300.0, 6.0),
        ([(0.0, 10.0), (100.0, 4.0), (200.0, 6.0)], 500.0, 300.0, 6.0),
        ([(0.0, 10.0), (100.0, 4.0), (200.0, 6.0)], 500.5, 300.0, None),
        ([(0.0, 10.0), (100.0, 4.0), (200.0, 6.0)], 200.0, 0.0, 6.0),
        ([], 0.0, 300.0, None),
    ],
)
def test_window_peak(
    samples: list[Sample], now: float, window: float, expected: float | None
) -> None:
    assert window_peak(samples, now, window) == expected


@pytest.mark.parametrize(
    ("samples", "now", "settings", "expected"),
    [
        (RAMP, 30.0, DEFAULT, 1 / 15),
        ([(0.0, 5.0), (15.0, 5.0), (30.0, 5.0)], 30.0, DEFAULT, 0.0),
        ([(0.0, 3.0), (15.0, 2.0), (30.0, 1.0)], 30.0, DEFAULT, -1 / 15),
        # (0,0) (10,1) (20,5): the whole line 50/200 = 0.25 (mean t 10, mean v 2), the older
        # half (0,0)-(10,1) 0.1, the newer (10,1)-(20,5) 0.4: the smallest, 0.1
        ([(0.0, 0.0), (10.0, 1.0), (20.0, 5.0)], 20.0, DEFAULT, 0.1),
        # a step is no trend: the half without it is flat
        ([(0.0, 0.0), (15.0, 0.0), (30.0, 3.0)], 30.0, DEFAULT, 0.0),
        ([(0.0, 0.0), (10.0, 0.0), (20.0, 3.0), (30.0, 3.0)], 30.0, DEFAULT, 0.0),
        ([(0.0, 0.0), (10.0, 3.0), (20.0, 3.0), (30.0, 3.0), (40.0, 3.0)], 40.0, DEFAULT, 0.0),
        # a falling older half vetoes a rising whole: 2 -> 1 -> 3 -> 4
        ([(0.0, 2.0), (10.0, 1.0), (20.0, 3.0), (30.0, 4.0)], 30.0, DEFAULT, -0.1),
        # a steady ramp keeps its slope over five samples
        ([(0.0, 1.0), (10.0, 2.0), (20.0, 3.0), (30.0, 4.0), (40.0, 5.0)], 40.0, DEFAULT, 0.1),
        # a half spanning under a second carries no trend
        ([(0.0, 1.0), (0.5, 2.0), (30.0, 3.0), (30.4, 4.0)], 30.0, DEFAULT, None),
        (RAMP[1:], 30.0, DEFAULT, None),  # two points are too few
        ([(30.0, 1.0), (30.0, 2.0), (30.0, 3.0)], 30.0, DEFAULT, None),  # no time spread
        ([(29.2, 1.0), (29.6, 2.0), (30.0, 3.0)], 30.0, DEFAULT, None),  # spread < 1 s
        # the first sample falls out of a 20 s window, leaving two
        (RAMP, 30.0, ForecastSettings(window_seconds=20.0), None),
        (RAMP, 30.0, ForecastSettings(window_seconds=20.0, min_samples=2), 1 / 15),
    ],
)
def test_trend_slope(
    samples: list[Sample], now: float, settings: ForecastSettings, expected: float | None
) -> None:
    slope = trend_slope(samples, now, settings)
    if expected is None:
        assert slope is None
    else:
        assert slope == pytest.approx(expected)


@pytest.mark.parametrize(
    ("samples", "current", "horizon", "expected"),
    [
        (RAMP, 3.0, 15.0, 4.0),  # rising ramp: 3 + 15/15
        (RAMP, 3.0, 30.0, 5.0),
        (RAMP, 3.0, 300.0, 6.0),  # 3 + 20 capped at 2 x 3
        (RAMP, 3.0, 0.0, 3.0),
        ([(0.0, 5.0), (15.0, 5.0), (30.0, 5.0)], 5.0, 300.0, 5.0),  # flat: the same figure
        ([(0.0, 3.0), (15.0, 2.0), (30.0, 1.0)], 1.0, 300.0, 1.0),  # falling: never lower
        (RAMP[1:], 3.0, 300.0, 3.0),  # too few samples for a trend
        ([(0.0, 0.0), (15.0, 0.0), (30.0, 0.0)], 0.0, 300.0, 0.0),
    ],
)
def test_forecast_demand(
    samples: list[Sample], current: float, horizon: float, expected: float
) -> None:
    assert forecast_demand(samples, 30.0, current, horizon, DEFAULT) == pytest.approx(expected)


def test_forecast_cap_follows_max_ratio() -> None:
    settings = ForecastSettings(max_ratio=1.5)
    assert forecast_demand(RAMP, 30.0, 3.0, 300.0, settings) == pytest.approx(4.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window_seconds": -1.0}, "ForecastSettings.window_seconds"),
        ({"window_seconds": math.inf}, "ForecastSettings.window_seconds"),
        ({"min_samples": 1}, "ForecastSettings.min_samples must be an integer >= 2"),
        ({"max_ratio": 0.5}, "ForecastSettings.max_ratio must be a finite number >= 1"),
    ],
)
def test_forecast_settings_reject_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ForecastSettings(**kwargs)  # type: ignore[arg-type]


def test_forecast_rejects_negative_horizon() -> None:
    with pytest.raises(ValueError, match="horizon_seconds must be a finite number >= 0"):
        forecast_demand(RAMP, 30.0, 3.0, -1.0, DEFAULT)


values = st.floats(min_value=0, max_value=1e4, allow_nan=False)


@given(
    st.lists(st.tuples(st.floats(0, 1000, allow_nan=False), values), max_size=30),
    values,
    st.floats(min_value=0, max_value=3600, allow_nan=False),
)
def test_forecast_is_never_below_current_nor_above_the_cap(
    samples: list[Sample], current: float, horizon: float
) -> None:
    got = forecast_demand(samples, 1000.0, current, horizon, DEFAULT)
    assert current <= got <= current * DEFAULT.max_ratio + 1e-9


@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=3, max_size=30), values)
def test_flat_signal_forecasts_itself(times: list[float], level: float) -> None:
    samples = [(t, level) for t in sorted(times)]
    assert forecast_demand(samples, max(times), level, 300.0, DEFAULT) == level


@given(
    before=st.integers(min_value=1, max_value=12),
    after=st.integers(min_value=1, max_value=12),
    low=st.floats(min_value=0.0, max_value=100.0),
    rise=st.floats(min_value=0.01, max_value=100.0),
    spacing=st.floats(min_value=1.0, max_value=30.0),
)
def test_a_level_shift_forecasts_no_rise(
    before: int, after: int, low: float, rise: float, spacing: float
) -> None:
    """Samples at one level, then at a higher one: the new level is the forecast, whatever
    the horizon (the fitted line through the step would have kept rising)."""
    levels = [low] * before + [low + rise] * after
    if len(levels) < DEFAULT.min_samples:
        levels = [low, *levels]
    samples = [(i * spacing, v) for i, v in enumerate(levels)]
    now = samples[-1][0]
    assert forecast_demand(samples, now, low + rise, 300.0, DEFAULT) == low + rise


@given(
    start=st.floats(min_value=0.0, max_value=100.0),
    slope=st.floats(min_value=0.001, max_value=1.0),
    count=st.integers(min_value=3, max_value=12),
    spacing=st.floats(min_value=1.0, max_value=15.0),
)
def test_a_steady_ramp_keeps_its_slope(
    start: float, slope: float, count: int, spacing: float
) -> None:
    samples = [(i * spacing, start + slope * i * spacing) for i in range(count)]
    got = trend_slope(samples, samples[-1][0], DEFAULT)
    assert got == pytest.approx(slope, rel=1e-6)


@given(
    st.lists(st.tuples(st.floats(0, 1000, allow_nan=False), values), max_size=40),
    st.integers(min_value=2, max_value=10),
)
def test_buffer_bound_never_loses_the_peak(samples: list[Sample], cap: int) -> None:
    ordered = sorted(samples)
    buffer: tuple[Sample, ...] = ()
    for sample in ordered:
        buffer = add_sample(buffer, sample, keep_seconds=1e6, max_samples=cap)
        assert len(buffer) <= cap
    if ordered:
        assert max(v for _, v in buffer) == max(v for _, v in ordered)
