"""M/M/c queueing formulas used by the capacity model (pure math, no I/O).

Conventions shared by every function here:

* ``servers`` is the number of parallel servers ``c`` (an integer >= 1).
* Rates are per second; ``offered_load`` is ``a = lambda / mu`` in Erlangs.
* ``percentile`` is on the 0-100 scale used by SLOs (95.0 means the 0.95 quantile),
  strictly between 0 and 100.

Erlang C is computed with the Erlang-B recursion ``B_0 = 1``,
``B_k = a B_{k-1} / (k + a B_{k-1})`` and ``C = B / (1 - rho (1 - B))`` with ``rho = a / c``.
Every intermediate value stays in [0, 1], so it neither overflows nor loses precision for
thousands of servers, unlike the textbook ``a^c / c!`` form.
"""

from __future__ import annotations

import math

__all__ = [
    "busy_servers_quantile",
    "erlang_c",
    "max_arrival_rate_for_wait",
    "wait_quantile_seconds",
]

_RELATIVE_TOLERANCE = 1e-9
"""Bracket width, relative to the stability limit, at which the rate search stops.

Tighter than the 1e-6 the planner needs; the search converges superlinearly, so it is cheap.
"""

_MAX_SEARCH_STEPS = 200
"""Safety net only: the bracketed search normally finishes in 10-30 steps."""


def _check_servers(servers: int) -> None:
    if isinstance(servers, bool) or not isinstance(servers, int) or servers < 1:
        raise ValueError(f"servers must be an integer >= 1, got {servers!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _quantile_fraction(percentile: float) -> float:
    if not math.isfinite(percentile) or not 0 < percentile < 100:
        raise ValueError(f"percentile must be strictly between 0 and 100, got {percentile!r}")
    return percentile / 100.0


def erlang_c(servers: int, offered_load: float) -> float:
    """Probability that an arrival waits in an M/M/c queue (Erlang C formula).

    Returns 1.0 when ``offered_load >= servers`` (the queue is unstable, everyone waits)
    and 0.0 for zero load.
    """
    _check_servers(servers)
    _check_non_negative("offered_load", offered_load)
    if offered_load >= servers:
        return 1.0
    if offered_load == 0:
        return 0.0
    blocking = 1.0
    for k in range(1, servers + 1):
        carried = offered_load * blocking
        blocking = carried / (k + carried)
    rho = offered_load / servers
    return blocking / (1.0 - rho * (1.0 - blocking))


def wait_quantile_seconds(
    servers: int, arrival_rate: float, service_rate: float, percentile: float
) -> float:
    """The ``percentile`` quantile of the queueing wait (before service starts) in M/M/c.

    With ``P(W > t) = C e^{-(c mu - lambda) t}`` the quantile is
    ``ln(C / (1 - p)) / (c mu - lambda)`` when ``C > 1 - p`` and 0 otherwise.
    Returns ``math.inf`` when ``arrival_rate >= servers * service_rate`` (unstable).
    """
    _check_servers(servers)
    _check_non_negative("arrival_rate", arrival_rate)
    _check_positive("service_rate", service_rate)
    p = _quantile_fraction(percentile)
    slack = servers * service_rate - arrival_rate
    if slack <= 0:
        return math.inf
    waiting = erlang_c(servers, arrival_rate / service_rate)
    if waiting <= 1.0 - p:
        return 0.0
    return math.log(waiting / (1.0 - p)) / slack


def max_arrival_rate_for_wait(
    servers: int, service_rate: float, percentile: float, max_wait_seconds: float
) -> float:
    """Largest arrival rate whose ``percentile`` wait quantile is at most ``max_wait_seconds``.

    The answer lies strictly inside ``(0, servers * service_rate)``: at zero load nobody
    waits, and near the stability limit the wait quantile grows without bound. It is the
    root of ``g(lambda) = ln C(lambda) - ln(1 - p) - max_wait * (c mu - lambda)``, which is
    strictly increasing and has the same sign as ``quantile(lambda) - max_wait`` (both
    terms of the quantile formula are monotone). The root is bracketed and found with the
    Illinois variant of false position, falling back to bisection while ``C`` underflows
    to zero. The returned rate is the bracket's feasible end, so the wait quantile there
    never exceeds ``max_wait_seconds``; it is within 1e-9 (relative) of the exact root.
    """
    _check_servers(servers)
    _check_positive("service_rate", service_rate)
    _check_non_negative("max_wait_seconds", max_wait_seconds)
    p = _quantile_fraction(percentile)
    log_allowed = math.log(1.0 - p)
    limit = servers * service_rate

    def excess(rate: float) -> float:
        waiting = erlang_c(servers, rate / service_rate)
        if waiting <= 0.0:
            return -math.inf
        return math.log(waiting) - log_allowed - max_wait_seconds * (limit - rate)

    low, high = 0.0, limit
    g_low, g_high = -math.inf, -log_allowed  # g at the stability limit, where C = 1
    retained = 0  # which end survived the previous step: -1 low, +1 high
    for _ in range(_MAX_SEARCH_STEPS):
        if high - low <= _RELATIVE_TOLERANCE * limit:
            break
        if math.isfinite(g_low):
            rate = high - g_high * (high - low) / (g_high - g_low)
            if not low < rate < high:
                rate = 0.5 * (low + high)
        else:
            rate = 0.5 * (low + high)
        g_rate = excess(rate)
        if g_rate <= 0.0:
            low, g_low = rate, g_rate
            if retained == 1:
                g_high *= 0.5  # Illinois step: stop the stale end from pinning the secant
            retained = 1
        else:
            high, g_high = rate, g_rate
            if retained == -1:
                g_low *= 0.5
            retained = -1
    return low


def busy_servers_quantile(servers: int, offered_load: float, percentile: float) -> int:
    """The ``percentile`` quantile of the number of busy servers in a stable M/M/c queue.

    In steady state ``P(k busy) = pi_0 a^k / k!`` for ``k < c`` and ``P(c busy) = C(c, a)``.
    Returns ``servers`` when ``offered_load >= servers``.
    """
    _check_servers(servers)
    _check_non_negative("offered_load", offered_load)
    p = _quantile_fraction(percentile)
    if offered_load >= servers:
        return servers
    all_busy = erlang_c(servers, offered_load)
    if 1.0 - all_busy < p:
        return servers
    if offered_load == 0:
        return 0
    # Below c the busy count is a truncated Poisson(a); work in logs because a^k / k!
    # overflows for loads in the hundreds.
    log_load = math.log(offered_load)
    log_terms = [k * log_load - math.lgamma(k + 1) for k in range(servers)]
    peak = max(log_terms)
    weights = [math.exp(t - peak) for t in log_terms]
    total = math.fsum(weights)
    # Stop at the first k whose cumulative probability reaches p.
    target = p / (1.0 - all_busy) * total
    cumulative = 0.0
    for k, weight in enumerate(weights):
        cumulative += weight
        if cumulative >= target:
            return k
    return servers - 1
