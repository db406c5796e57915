"""M/M/c formulas: Erlang C, wait quantiles, the inverse rate search, busy-slot quantiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet.core.queueing import (
    busy_servers_quantile,
    erlang_c,
    max_arrival_rate_for_wait,
    wait_quantile_seconds,
)


def textbook_erlang_c(servers: int, load: float) -> float:
    """C(c, a) = [a^c/c! * c/(c-a)] / [sum_{k<c} a^k/k! + a^c/c! * c/(c-a)], in logs.

    Deliberately a different route from the Erlang-B recursion under test.
    """
    log_terms = [k * math.log(load) - math.lgamma(k + 1) for k in range(servers)]
    log_top = (
        servers * math.log(load) - math.lgamma(servers + 1) + math.log(servers / (servers - load))
    )
    peak = max([*log_terms, log_top])
    below = math.fsum(math.exp(t - peak) for t in log_terms)
    top = math.exp(log_top - peak)
    return top / (below + top)


@pytest.mark.parametrize(
    ("servers", "load", "expected"),
    [
        # c = 1: C = rho.
        (1, 0.3, 0.3),
        (1, 0.9, 0.9),
        # c = 2, a = 1: top = 1/2 * 2/1 = 1; below = 1 + 1 = 2; C = 1/3.
        (2, 1.0, 1 / 3),
        # c = 3, a = 2: top = 8/6 * 3/1 = 4; below = 1 + 2 + 2 = 5; C = 4/9.
        (3, 2.0, 4 / 9),
        # c = 10, a = 8: below = sum_{k<10} 8^k/k! = 1 + 8 + 32 + 85.333 + 170.667 + 273.067
        #   + 364.089 + 416.102 + 416.102 + 369.868 = 2136.2268;
        # top = 8^10/10! * 10/2 = 295.8945 * 5 = 1479.4723; C = 1479.4723 / 3615.6991 = 0.409180.
        (10, 8.0, 0.409180),
        # No load: nobody waits. Load at or above c: everybody waits.
        (5, 0.0, 0.0),
        (4, 4.0, 1.0),
        (4, 7.5, 1.0),
    ],
)
def test_erlang_c_textbook_values(servers: int, load: float, expected: float) -> None:
    assert erlang_c(servers, load) == pytest.approx(expected, rel=1e-5, abs=1e-12)


def test_erlang_c_thousands_of_servers_without_overflow() -> None:
    # a^c/c! overflows a float long before c = 3000; the recursion must not.
    value = erlang_c(3000, 2900.0)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(textbook_erlang_c(3000, 2900.0), rel=1e-9)


@given(
    servers=st.integers(min_value=1, max_value=400),
    utilisation=st.floats(min_value=0.001, max_value=0.999),
)
def test_erlang_c_matches_textbook_formula(servers: int, utilisation: float) -> None:
    load = servers * utilisation
    assert erlang_c(servers, load) == pytest.approx(textbook_erlang_c(servers, load), rel=1e-9)


@given(
    servers=st.integers(min_value=1, max_value=300),
    low=st.floats(min_value=0.0, max_value=1.0),
    high=st.floats(min_value=0.0, max_value=1.0),
)
def test_erlang_c_increases_with_load(servers: int, low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert erlang_c(servers, servers * low) <= erlang_c(servers, servers * high)


@given(servers=st.integers(min_value=1, max_value=300), load=st.floats(0.0, 300.0))
def test_erlang_c_decreases_with_more_servers(servers: int, load: float) -> None:
    assert erlang_c(servers + 1, load) <= erlang_c(servers, load)


@pytest.mark.parametrize(
    ("servers", "load", "message"),
    [
        (0, 1.0, "servers must be an integer >= 1"),
        (-3, 1.0, "servers must be an integer >= 1"),
        (2, -0.1, "offered_load must be a finite number >= 0"),
        (2, math.nan, "offered_load must be a finite number >= 0"),
        (2, math.inf, "offered_load must be a finite number >= 0"),
    ],
)
def test_erlang_c_rejects_bad_input(servers: int, load: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        erlang_c(servers, load)


WAIT_CASES = [
    # (servers, lambda, mu, percentile, expected p-quantile wait in seconds)
    # M/M/1, rho = 0.5: C = 0.5; ln(0.5/0.05)/(1 - 0.5) = ln(10)/0.5 = 4.605170.
    (1, 0.5, 1.0, 95.0, 4.605170186),
    # M/M/2, a = 1: C = 1/3; ln((1/3)/0.05)/(2 - 1) = ln(6.6667) = 1.897120.
    (2, 1.0, 1.0, 95.0, 1.897119985),
    # M/M/10, a = 8: C = 0.4091802; ln(0.4091802/0.05)/(10 - 8) = ln(8.183603)/2
    #   = (ln 8 + ln 1.0229504)/2 = (2.0794415 + 0.0226910)/2 = 1.0510663.
    (10, 8.0, 1.0, 95.0, 1.0510663),
    # Same queue with mu = 2 per second and lambda = 16: the wait halves.
    (10, 16.0, 2.0, 95.0, 0.5255331),
    # C = 1/3 <= 1 - 0.5: at the median nobody waits.
    (2, 1.0, 1.0, 50.0, 0.0),
    # No traffic.
    (4, 0.0, 1.0, 99.0, 0.0),
]


@pytest.mark.parametrize(("servers", "rate", "mu", "percentile", "expected"), WAIT_CASES)
def test_wait_quantile_formula(
    servers: int, rate: float, mu: float, percentile: float, expected: float
) -> None:
    assert wait_quantile_seconds(servers, rate, mu, percentile) == pytest.approx(
        expected, rel=1e-6, abs=1e-12
    )


@pytest.mark.parametrize(("rate", "mu"), [(2.0, 1.0), (3.0, 1.0), (1.5, 0.5)])
def test_wait_quantile_is_infinite_when_unstable(rate: float, mu: float) -> None:
    # Two servers: unstable once lambda >= 2 mu.
    assert wait_quantile_seconds(2, rate, mu, 95.0) == math.inf


@given(
    servers=st.integers(min_value=1, max_value=200),
    utilisation=st.floats(min_value=0.01, max_value=0.99),
    percentile=st.floats(min_value=1.0, max_value=99.9),
)
def test_wait_quantile_satisfies_its_tail_probability(
    servers: int, utilisation: float, percentile: float
) -> None:
    # P(W > q) = C e^{-(c mu - lambda) q} must equal 1 - p whenever q > 0, else C <= 1 - p.
    rate = servers * utilisation
    quantile = wait_quantile_seconds(servers, rate, 1.0, percentile)
    waiting = erlang_c(servers, rate)
    tail = waiting * math.exp(-(servers - rate) * quantile)
    if quantile > 0:
        assert tail == pytest.approx(1 - percentile / 100, rel=1e-9)
    else:
        assert waiting <= 1 - percentile / 100


@pytest.mark.parametrize(
    ("percentile", "message"),
    [(0.0, "strictly between 0 and 100"), (100.0, "strictly between"), (math.nan, "between")],
)
def test_wait_quantile_rejects_bad_percentile(percentile: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wait_quantile_seconds(2, 1.0, 1.0, percentile)


@pytest.mark.parametrize(
    ("servers", "rate", "mu", "percentile", "budget"),
    WAIT_CASES[:4],
)
def test_max_arrival_rate_inverts_the_wait_quantile(
    servers: int, rate: float, mu: float, percentile: float, budget: float
) -> None:
    # Each forward case above, run backwards: the rate whose wait quantile is `budget`.
    assert max_arrival_rate_for_wait(servers, mu, percentile, budget) == pytest.approx(
        rate, rel=1e-6
    )


@pytest.mark.parametrize(
    ("servers", "mu", "expected"),
    [
        # Zero wait budget at p95 means C(c, a) = 0.05.
        # M/M/1: C = rho, so lambda = 0.05 mu.
        (1, 1.0, 0.05),
        (1, 4.0, 0.2),
        # M/M/2: C = 2 rho^2 / (1 + rho) = 0.05 -> 2 rho^2 - 0.05 rho - 0.05 = 0
        # -> rho = (0.05 + sqrt(0.0025 + 0.4)) / 4 = 0.171107; lambda = 2 rho mu = 0.342215.
        (2, 1.0, 0.342215),
    ],
)
def test_max_arrival_rate_with_zero_wait_budget(servers: int, mu: float, expected: float) -> None:
    assert max_arrival_rate_for_wait(servers, mu, 95.0, 0.0) == pytest.approx(expected, rel=1e-5)


@given(
    servers=st.integers(min_value=1, max_value=300),
    mu=st.floats(min_value=0.01, max_value=100.0),
    percentile=st.floats(min_value=50.0, max_value=99.9),
    budget=st.floats(min_value=0.0, max_value=100.0),
)
def test_max_arrival_rate_is_the_boundary(
    servers: int, mu: float, percentile: float, budget: float
) -> None:
    rate = max_arrival_rate_for_wait(servers, mu, percentile, budget)
    assert 0 < rate < servers * mu
    # Feasible at the answer, infeasible just above it.
    assert wait_quantile_seconds(servers, rate, mu, percentile) <= budget * (1 + 1e-9) + 1e-12
    assert wait_quantile_seconds(servers, rate * (1 + 1e-6), mu, percentile) > budget


@given(
    servers=st.integers(min_value=1, max_value=100),
    low=st.floats(min_value=0.0, max_value=50.0),
    high=st.floats(min_value=0.0, max_value=50.0),
)
def test_max_arrival_rate_grows_with_the_budget(servers: int, low: float, high: float) -> None:
    low, high = sorted((low, high))
    assert max_arrival_rate_for_wait(servers, 1.0, 95.0, low) <= max_arrival_rate_for_wait(
        servers, 1.0, 95.0, high
    ) * (1 + 1e-8)


@pytest.mark.parametrize(
    ("servers", "load", "percentile", "expected"),
    [
        # c = 1, a = 0.5: P(0 busy) = 0.5, P(1 busy) = C = 0.5.
        (1, 0.5, 40.0, 0),
        (1, 0.5, 95.0, 1),
        # c = 3, a = 1: a^k/k! = 1, 1, 0.5; top = 1/6 * 3/2 = 0.25; total 2.75.
        # P(busy = 0, 1, 2, 3) = 0.3636, 0.3636, 0.1818, 0.0909;
        # CDF = 0.3636, 0.7273, 0.9091, 1.
        (3, 1.0, 30.0, 0),
        (3, 1.0, 50.0, 1),
        (3, 1.0, 90.0, 2),
        (3, 1.0, 95.0, 3),
        # Idle and saturated queues.
        (8, 0.0, 99.0, 0),
        (8, 8.0, 10.0, 8),
    ],
)
def test_busy_servers_quantile(servers: int, load: float, percentile: float, expected: int) -> None:
    assert busy_servers_quantile(servers, load, percentile) == expected


@given(
    servers=st.integers(min_value=1, max_value=500),
    utilisation=st.floats(min_value=0.0, max_value=0.999),
    low=st.floats(min_value=1.0, max_value=99.0),
    high=st.floats(min_value=1.0, max_value=99.0),
)
def test_busy_servers_quantile_grows_with_the_percentile(
    servers: int, utilisation: float, low: float, high: float
) -> None:
    low, high = sorted((low, high))
    load = servers * utilisation
    first = busy_servers_quantile(servers, load, low)
    second = busy_servers_quantile(servers, load, high)
    assert 0 <= first <= second <= servers
