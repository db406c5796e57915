"""One model's live signals from Prometheus, as the autoscaling policy consumes them.

The operator calls, per model and cycle::

    metrics = read_model_metrics(client, model, now=time.time())
    decision = decide_demand(state, metrics.observation, ctx, policy, now)
    variants = read_variant_observations(client, model, deployments, capacity, now=...)

``now`` is Unix time (Prometheus' clock). Nothing here raises on a Prometheus outage or a bad
query: the figures are ``None``, ``data_age_seconds`` is infinite when nothing fresh was read,
and ``errors`` says what went wrong; the policy then holds (``MetricsAvailable=False``).

**Freshness.** ``data_age_seconds`` is ``now`` minus the newest scrape of the model's pods
(``max(timestamp(<gauge>))``), so a Prometheus that answers from old data, or engines that
stopped being scraped, read as stale. Engines without a default freshness query (``custom``)
report age 0 whenever the request rate answers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from infleet.api import Engine, ModelDeployment
from infleet.core.autoscale import Observation
from infleet.core.calibration import VariantObservation
from infleet.core.children import dns_label
from infleet.core.settings import duration_seconds
from infleet.metrics.engines import ModelQueries, Selector, model_queries
from infleet.metrics.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusUnreachable,
    finite,
)

__all__ = [
    "ModelMetrics",
    "model_selector",
    "read_model_metrics",
    "read_model_observation",
    "read_value",
    "read_variant_observations",
    "variant_observation",
]


@dataclass(frozen=True)
class ModelMetrics:
    """Every signal read for one model (or one variant's pods); ``None`` = not observed."""

    request_rate: float | None = None
    """Completed requests/s."""
    fast_request_rate: float | None = None
    """Completed requests/s over the short window (``None``: not read)."""
    fast_window_seconds: float | None = None
    """Length of the short window, seconds (``None``: no short window)."""
    queue_length: float | None = None
    inflight_growth: float | None = None
    """Requests/s the requests in the engines (waiting + running) grew by over the window
    (negative: draining)."""
    growth_window_seconds: float | None = None
    """Length of the window the growth was fitted over (``None``: no growth read)."""
    ttft_ms: float | None = None
    """TTFT at the SLO percentile."""
    tpot_ms: float | None = None
    """Inter-token latency at the SLO percentile."""
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None
    kv_cache_usage: float | None = None
    """Mean over the pods, 0-1."""
    replicas: int | None = None
    """Pods reporting."""
    wake_demand: float | None = None
    """Value of ``spec.scaleToZero.wakeQuery`` (not read for variants)."""
    data_age_seconds: float = math.inf
    """Seconds since the newest scrape; infinite when nothing was read."""
    errors: tuple[str, ...] = field(default_factory=tuple)
    """What failed, one sentence each."""

    @property
    def arrival_rate(self) -> float | None:
        """Completions plus in-flight growth: requests/s arriving (growth only adds)."""
        if self.request_rate is None:
            return None
        return self.request_rate + max(0.0, self.inflight_growth or 0.0)

    @property
    def observation(self) -> Observation:
        """The :class:`~infleet.core.autoscale.Observation` for ``decide_demand``.

        ``request_rate`` is completions only: the policy adds the in-flight growth itself (the
        windowed ``deriv`` passed here, or consecutive cycles' queue lengths without it).
        """
        return Observation(
            request_rate=self.request_rate,
            fast_request_rate=self.fast_request_rate,
            fast_window_seconds=self.fast_window_seconds,
            queue_length=self.queue_length,
            ttft_ms=self.ttft_ms,
            tpot_ms=self.tpot_ms,
            mean_input_tokens=self.mean_input_tokens,
            mean_output_tokens=self.mean_output_tokens,
            data_age_seconds=self.data_age_seconds,
            wake_demand=self.wake_demand,
            inflight_growth=self.inflight_growth,
            growth_window_seconds=self.growth_window_seconds,
        )


def model_selector(model: ModelDeployment, deployments: Sequence[str] = ()) -> Selector:
    """The series of ``model``'s pods (of ``deployments`` only, when given)."""
    namespace = model.metadata.namespace or "default"
    prefix = None if deployments else dns_label(model.metadata.name)
    return Selector(
        namespace=namespace,
        model_name=model.spec.model if model.spec.engine is not Engine.TGI else None,
        pod_prefixes=tuple(deployments),
        pod_name_prefix=prefix if model.spec.engine is Engine.TGI else None,
    )


class _Reader:
    def __init__(self, client: PrometheusClient, at: float | None = None) -> None:
        self.client = client
        self.at = at
        self.errors: list[str] = []
        self.down = False

    def value(self, signal: str, query: str | None) -> float | None:
        if query is None or self.down:
            return None
        try:
            return finite(self.client.query_value(query, self.at))
        except (PrometheusUnreachable, PrometheusHTTPError) as exc:
            self.down = True  # no point asking an unreachable server nine more times
            self.errors.append(str(exc))
        except PrometheusError as exc:
            self.errors.append(f"{signal}: {exc}")
        return None


MIN_MIX_REQUESTS = 20.0
"""Finished requests the metrics window must hold before its token mix counts. With a handful
(the first seconds of traffic) the ratio rests on whichever requests happened to finish, and
with token counters that include running requests (the fallback for engines without the
per-request histograms) it is several times too high: an e2e run against such an engine
planned 8 replicas where 2 were right. Below it, the model's prior mix stands."""


def read_value(
    client: PrometheusClient, signal: str, query: str | None, at: float | None = None
) -> tuple[float | None, tuple[str, ...]]:
    """One query's finite value (``None``: empty, not finite, or failed) and what failed."""
    reader = _Reader(client, at)
    value = reader.value(signal, query)
    return value, tuple(reader.errors)


def _per_request(
    token_rate: float | None, request_rate: float | None, window_seconds: float
) -> float | None:
    if token_rate is None or not request_rate:
        return None
    if request_rate * window_seconds < MIN_MIX_REQUESTS:
        return None
    return token_rate / request_rate


def _read(
    client: PrometheusClient,
    queries: ModelQueries,
    now: float,
    wake_query: str | None,
    window_seconds: float,
    fast_window_seconds: float | None = None,
    at: float | None = None,
) -> ModelMetrics:
    reader = _Reader(client, at)
    got = {signal: reader.value(signal, query) for signal, query in queries.items()}
    wake = reader.value("wakeQuery", wake_query)
    return assemble_metrics(
        got,
        now=now,
        wake=wake,
        errors=reader.errors,
        window_seconds=window_seconds,
        fast_window_seconds=fast_window_seconds,
        has_freshness_query=queries.last_scrape is not None,
    )


def assemble_metrics(
    got: Mapping[str, float | None],
    *,
    now: float,
    wake: float | None,
    errors: Sequence[str],
    window_seconds: float,
    fast_window_seconds: float | None,
    has_freshness_query: bool = True,
) -> ModelMetrics:
    """:class:`ModelMetrics` from one value per :class:`ModelQueries` signal (``ttft`` and
    ``tpot`` in seconds, ``None`` where not observed)."""
    rate = got.get("request_rate")
    last = got.get("last_scrape")
    if last is not None:
        age = max(0.0, now - last)
    elif not has_freshness_query and rate is not None:
        age = 0.0
    else:
        age = math.inf
    ttft, tpot = got.get("ttft"), got.get("tpot")
    replicas = got.get("replicas")
    fast = got.get("request_rate_fast")
    growth = got.get("inflight_growth")
    return ModelMetrics(
        request_rate=rate,
        fast_request_rate=fast,
        fast_window_seconds=None if fast is None else fast_window_seconds,
        queue_length=got.get("queue_length"),
        inflight_growth=growth,
        growth_window_seconds=None if growth is None else window_seconds,
        ttft_ms=None if ttft is None else ttft * 1000.0,
        tpot_ms=None if tpot is None else tpot * 1000.0,
        mean_input_tokens=_per_request(got.get("input_token_rate"), rate, window_seconds),
        mean_output_tokens=_per_request(got.get("output_token_rate"), rate, window_seconds),
        kv_cache_usage=got.get("kv_cache_usage"),
        replicas=None if replicas is None else round(replicas),
        wake_demand=wake,
        data_age_seconds=age,
        errors=tuple(errors),
    )


def read_model_metrics(
    client: PrometheusClient,
    model: ModelDeployment,
    now: float,
    *,
    deployments: Sequence[str] = (),
    window: str = "1m",
    fast_window: str | None = None,
    at: float | None = None,
) -> ModelMetrics:
    """All signals of ``model`` at Unix time ``now``, with its overrides and wake query;
    ``fast_window`` adds the completion rate over that short window (fast attack). The
    queries are evaluated at Unix time ``at`` (default: when Prometheus answers)."""
    queries = model_queries(
        model.spec.engine,
        model_selector(model, deployments),
        model.spec.slo.percentile,
        window=window,
        fast_window=fast_window,
        overrides=model.spec.metrics,
    )
    return _read(
        client,
        queries,
        now,
        model.spec.scale_to_zero.wake_query,
        duration_seconds(window),
        None if fast_window is None else duration_seconds(fast_window),
        at,
    )


def read_model_observation(
    client: PrometheusClient, model: ModelDeployment, now: float, *, window: str = "1m"
) -> Observation:
    """:func:`read_model_metrics` reduced to the policy's :class:`Observation`."""
    return read_model_metrics(client, model, now, window=window).observation


def read_variant_observations(
    client: PrometheusClient,
    model: ModelDeployment,
    deployments: Mapping[str, Sequence[str]],
    capacity_per_replica: Mapping[str, float],
    now: float,
    *,
    window: str = "1m",
) -> dict[str, VariantObservation]:
    """Per variant: latency at the SLO percentile and utilisation, for calibration.

    ``deployments`` maps a variant name to its Deployment names (one per pool);
    ``capacity_per_replica`` to its *calibrated* requests/s per replica. Utilisation is the
    variant's completions/s over (pods reporting x capacity). Engine default queries are used
    (``spec.metrics`` overrides are per model, not per variant).
    """
    out: dict[str, VariantObservation] = {}
    for variant, names in deployments.items():
        if not names:
            continue
        queries = model_queries(
            model.spec.engine,
            model_selector(model, names),
            model.spec.slo.percentile,
            window=window,
        )
        metrics = _read(client, queries, now, None, duration_seconds(window))
        out[variant] = variant_observation(metrics, capacity_per_replica.get(variant))
    return out


def variant_observation(metrics: ModelMetrics, capacity: float | None) -> VariantObservation:
    """A variant's signals (``metrics`` of its pods) for calibration; ``capacity`` is its
    *calibrated* requests/s per replica. Utilisation is the completions/s over (pods
    reporting x capacity)."""
    utilization = None
    if metrics.request_rate is not None and metrics.replicas and capacity:
        utilization = metrics.request_rate / (metrics.replicas * capacity)
    return VariantObservation(
        ttft_ms=metrics.ttft_ms,
        tpot_ms=metrics.tpot_ms,
        utilization=utilization,
        data_age_seconds=metrics.data_age_seconds,
    )
