"""Every autoscaled model's signals from one round of fleet-wide queries.

Why: the per-model queries (:func:`infleet.metrics.observe.read_model_metrics`) cost about a
dozen Prometheus round trips per model and as many again per running variant, one after the
other. Measured on the sandbox with 200 single-variant models, reading them took 6-9 s of a
10 s fleet cycle; at the default 15 s interval a few hundred models would not fit at all.
Here each signal is one query over every pod of the engine in the models' namespaces,
grouped by ``(namespace, deployment)`` (:func:`infleet.metrics.engines.fleet_queries`), so a
cycle costs about a dozen queries per engine in use, whatever the number of models.

A model's figures are then the same aggregations the per-model queries make in PromQL, done
here over the model's Deployments: rates, queues, in-flight growth, token rates and
pods-reporting are sums, freshness is the newest scrape, KV-cache usage is the mean over the
pods, and percentiles come from the histogram buckets summed over the Deployments with
Prometheus' own ``histogram_quantile`` rule (:func:`histogram_quantile`). A variant's figures
are the same over its own Deployments (one per pool).

Two differences from the per-model queries, both deliberate:

* Only the model's own Deployments count. The per-model query of a model matches every pod
  serving its model id in the namespace (``model_name``), so two ModelDeployments serving the
  same model id there read each other's traffic; here they do not.
* The in-flight growth is a sum of per-Deployment slopes (``deriv`` of each Deployment's
  waiting + running count). It equals the slope of the sum whenever the Deployments were
  scraped over the whole window; a Deployment that appeared within the window contributes
  the slope of its own short history, as the traffic moves onto it.

Models this does not serve (the operator reads them one by one, as before): per-model
PromQL overrides (``spec.metrics``), the ``custom`` engine, and models without running
Deployments (scaled to zero: their signals, if any, come from elsewhere, such as a gateway).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from infleet.api import Engine
from infleet.core.settings import duration_seconds
from infleet.metrics.engines import DEPLOYMENT_LABEL, fleet_queries
from infleet.metrics.observe import ModelMetrics, assemble_metrics
from infleet.metrics.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusHTTPError,
    PrometheusUnreachable,
    Sample,
)

__all__ = ["FleetMetrics", "histogram_quantile", "read_fast_rates", "read_fleet_metrics"]

_SUMMED = (
    "request_rate",
    "request_rate_fast",
    "queue_length",
    "inflight_growth",
    "input_token_rate",
    "output_token_rate",
    "kv_cache_sum",
    "kv_cache_count",
    "replicas",
)
_BUCKETS = ("ttft_buckets", "tpot_buckets")


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile (0-1) of cumulative ``{upper bound: count}`` buckets, by the rule
    of Prometheus' ``histogram_quantile``; ``None`` where it answers NaN.

    Linear interpolation inside the bucket holding rank ``q * total``; the lowest bucket
    starts at 0 (when its upper bound is positive); a rank in the ``+Inf`` bucket answers the
    highest finite bound; counts that dip below an earlier bucket's are raised to it (rates
    of cumulative buckets can be slightly non-monotonic). NaN (``None``) without a ``+Inf``
    bucket, with fewer than two buckets, with no observations, or for ``q = 0`` when the
    lowest bucket is empty (0 / 0).
    """
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bounds = sorted(buckets)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return None
    counts: list[float] = []
    for bound in bounds:
        count = buckets[bound]
        counts.append(max(count, counts[-1]) if counts else count)
    total = counts[-1]
    if not total > 0:
        return None
    rank = q * total
    # The first bucket (the +Inf one excluded) whose cumulative count reaches the rank.
    index = next((i for i in range(len(bounds) - 1) if counts[i] >= rank), len(bounds) - 1)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, counts[index]
    if index > 0:
        start = bounds[index - 1]
        count -= counts[index - 1]
        rank -= counts[index - 1]
    if not count > 0:  # only at q = 0 over an empty lowest bucket: 0 / 0, NaN in Prometheus
        return None
    return start + (bounds[index] - start) * (rank / count)


@dataclass
class _Deployment:
    values: dict[str, float] = field(default_factory=dict)
    """Signal -> this Deployment's value (finite values only)."""
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    """``ttft_buckets`` / ``tpot_buckets`` -> ``{le: rate}``."""


@dataclass(frozen=True)
class FleetMetrics:
    """What one round of fleet-wide queries answered, per ``(namespace, deployment)``."""

    deployments: Mapping[tuple[str, str], _Deployment]
    errors: tuple[str, ...]
    """What failed, one sentence each (every model read from this round reports them)."""
    window_seconds: float
    fast_window_seconds: float | None

    def metrics(
        self,
        namespace: str,
        deployments: Iterable[str],
        *,
        percentile: float,
        now: float,
        wake: float | None = None,
        errors: Sequence[str] = (),
    ) -> ModelMetrics:
        """The signals of the pods of ``deployments`` in ``namespace`` (a model, or one of
        its variants), as :func:`~infleet.metrics.observe.read_model_metrics` reports them;
        ``percentile`` is the SLO's (0-100); ``wake`` and ``errors`` are read elsewhere."""
        parts = [
            part
            for name in sorted(set(deployments))
            if (part := self.deployments.get((namespace, name))) is not None
        ]
        got: dict[str, float | None] = {}
        for signal in _SUMMED:
            values = [p.values[signal] for p in parts if signal in p.values]
            got[signal] = math.fsum(values) if values else None
        scrapes = [p.values["last_scrape"] for p in parts if "last_scrape" in p.values]
        got["last_scrape"] = max(scrapes) if scrapes else None
        kv_sum, kv_count = got.pop("kv_cache_sum"), got.pop("kv_cache_count")
        got["kv_cache_usage"] = kv_sum / kv_count if kv_sum is not None and kv_count else None
        for signal, name in (("ttft", "ttft_buckets"), ("tpot", "tpot_buckets")):
            summed: dict[float, float] = {}
            for part in parts:
                for bound, rate in part.buckets.get(name, {}).items():
                    summed[bound] = summed.get(bound, 0.0) + rate
            value = histogram_quantile(percentile / 100.0, summed) if summed else None
            got[signal] = value if value is not None and math.isfinite(value) else None
        return assemble_metrics(
            got,
            now=now,
            wake=wake,
            errors=[*self.errors, *errors],
            window_seconds=self.window_seconds,
            fast_window_seconds=self.fast_window_seconds,
        )


def _deployment_of(sample: Sample) -> tuple[str, str] | None:
    """``(namespace, deployment)`` of a fleet-wide series with a finite value, else ``None``."""
    name = sample.labels.get(DEPLOYMENT_LABEL)
    namespace = sample.labels.get("namespace")
    if not name or not namespace or not math.isfinite(sample.value):
        return None
    return namespace, name


def read_fleet_metrics(
    client: PrometheusClient,
    namespaces: Mapping[Engine, Sequence[str]],
    *,
    window: str = "1m",
    fast_window: str | None = None,
    at: float | None = None,
) -> FleetMetrics:
    """One round of :func:`~infleet.metrics.engines.fleet_queries` per engine over its
    ``namespaces``, evaluated now (or at Unix time ``at``).

    Never raises on Prometheus trouble: a PromQL error costs that signal (and is reported);
    an unreachable server or an HTTP error stops the round, so every model read from it has
    no figures and holds."""
    out: dict[tuple[str, str], _Deployment] = {}
    errors: list[str] = []
    for engine, listed in sorted(namespaces.items(), key=lambda item: item[0].value):
        queries = fleet_queries(engine, listed, window=window, fast_window=fast_window)
        if queries is None:
            continue
        for signal, query in queries.items():
            if query is None:
                continue
            try:
                samples = client.query(query, at)
            except (PrometheusUnreachable, PrometheusHTTPError) as exc:
                errors.append(str(exc))
                return FleetMetrics({}, tuple(errors), duration_seconds(window), None)
            except PrometheusError as exc:
                errors.append(f"{signal}: {exc}")
                continue
            for sample in samples:
                key = _deployment_of(sample)
                if key is None:
                    continue
                part = out.setdefault(key, _Deployment())
                if signal in _BUCKETS:
                    try:
                        bound = float(sample.labels.get("le", ""))
                    except ValueError:
                        continue
                    part.buckets.setdefault(signal, {})[bound] = sample.value
                else:
                    part.values[signal] = sample.value
    return FleetMetrics(
        out,
        tuple(errors),
        duration_seconds(window),
        None if fast_window is None else duration_seconds(fast_window),
    )


def read_fast_rates(
    client: PrometheusClient,
    namespaces: Mapping[Engine, Sequence[str]],
    *,
    window: str,
    fast_window: str,
) -> dict[tuple[str, str], float]:
    """The short-window completion rate per ``(namespace, deployment)``: the one signal the
    probe between cycles reads (:mod:`infleet.core.probe`), one query per engine.

    Raises :class:`~infleet.metrics.prometheus.PrometheusError` when a query fails: the caller
    skips that probe (the next regular cycle reads everything and reports)."""
    out: dict[tuple[str, str], float] = {}
    for engine, listed in sorted(namespaces.items(), key=lambda item: item[0].value):
        queries = fleet_queries(engine, listed, window=window, fast_window=fast_window)
        if queries is None or queries.request_rate_fast is None:
            continue
        for sample in client.query(queries.request_rate_fast):
            key = _deployment_of(sample)
            if key is not None:
                out[key] = out.get(key, 0.0) + sample.value
    return out
