"""PromQL per signal and per inference engine (pure: strings in, strings out).

Which series belong to a model
------------------------------
A :class:`Selector` matches the model's pods by ``namespace`` plus, where the engine labels its
metrics with the served model, ``model_name="<spec.model>"`` (vLLM and SGLang do). Pass the
model's Deployment names as ``deployments`` to narrow it to pods ``<deployment>-<hash>-<hash>``
(one variant, or two ModelDeployments serving the same model id in one namespace). TGI has no
model label, so it is matched by pod names only: the given Deployments, or the model's own
name as prefix. ``namespace`` and ``pod`` are the labels Kubernetes service discovery
attaches in the usual ``PodMonitor``/relabelling setups; the sandbox's engines export them
directly.

Signals (``None`` where an engine does not export one)
-----------------------------------------------------
* ``request_rate``: vLLM ``rate(vllm:request_success_total)``; SGLang the count of
  ``sglang:e2e_request_latency_seconds``; TGI ``tgi_request_success`` (or
  ``tgi_request_count``).
* ``request_rate_fast``: the same completion rate over a short window (the operator's
  ``--fast-window``, 40% of the metrics window by default), for the policy's fast attack.
* ``queue_length``: ``vllm:num_requests_waiting``, ``sglang:num_queue_reqs``,
  ``tgi_queue_size``, summed.
* ``inflight_growth``: ``deriv`` over a subquery (step: a tenth of the window, not the server's
  evaluation interval) of the requests in the engines, waiting plus
  running (``vllm:num_requests_running``, ``sglang:num_running_reqs``,
  ``tgi_batch_current_size``): arrivals = completions + this growth. The queue alone misses
  the requests that arrived and got a batch slot but have not finished yet, which is most of
  them while a fleet with free slots takes a rise in load.
* ``ttft``: ``histogram_quantile`` over ``vllm:time_to_first_token_seconds`` /
  ``sglang:time_to_first_token_seconds``; TGI exports none.
* ``tpot``: ``vllm:inter_token_latency_seconds``, falling back to the older
  ``vllm:time_per_output_token_seconds`` (SGLang alike);
  TGI ``tgi_request_mean_time_per_token_duration``.
* token rates: vLLM ``vllm:request_prompt_tokens_sum`` / ``vllm:request_generation_tokens_sum``
  (tokens of finished requests), else ``*:prompt_tokens_total`` / ``*:generation_tokens_total``
  (these also count requests still running: biased high during a ramp); TGI the ``_sum`` of
  ``tgi_request_input_length`` / ``tgi_request_generated_tokens``.
* ``kv_cache_usage``: ``avg(vllm:kv_cache_usage_perc)``, older ``vllm:gpu_cache_usage_perc``;
  SGLang ``sglang:token_usage``; TGI exports none.
* ``last_scrape``: ``max(timestamp(<a gauge>))``, the newest scrape behind the figures;
  ``replicas``: pods reporting.

Rates use a window (default ``1m``: several scrapes at the usual 15 s interval, and at the
sandbox's 2 s). Percentiles are computed with ``histogram_quantile`` over the buckets summed
across the model's pods, so they are fleet-wide percentiles, not averages of per-pod ones.

Per-model overrides (``spec.metrics``) replace a default query as written; ``inputTokens``
and ``outputTokens`` are token *rates*, divided by the request rate for the mean. With a
``queueLength`` override the in-flight growth is that query's growth (the running requests of
whatever it measures are not known).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from infleet.api import Engine, MetricsOverrides
from infleet.core.settings import duration_seconds

__all__ = [
    "ENGINE_METRICS",
    "EngineMetrics",
    "FleetQueries",
    "ModelQueries",
    "Selector",
    "fleet_queries",
    "model_queries",
]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Selector:
    """Which series belong to the model (see the module docs)."""

    namespace: str
    model_name: str | None = None
    """``model_name`` label value (``spec.model``); ``None``: not matched on."""
    pod_prefixes: tuple[str, ...] = ()
    """Deployment names: pods named ``<deployment>-<replicaset hash>-<pod hash>``."""
    pod_name_prefix: str | None = None
    """Without ``pod_prefixes``: pods whose name starts with ``<this>-`` (TGI's fallback)."""

    def matchers(self) -> str:
        """The label matchers, without braces."""
        parts = [f"namespace={_quote(self.namespace)}"]
        if self.model_name is not None:
            parts.append(f"model_name={_quote(self.model_name)}")
        if self.pod_prefixes:
            names = "|".join(re.escape(p) for p in sorted(set(self.pod_prefixes)))
            parts.append(f"pod=~{_quote(f'({names})-[a-z0-9]+-[a-z0-9]+')}")
        elif self.pod_name_prefix is not None:
            parts.append(f"pod=~{_quote(re.escape(self.pod_name_prefix) + '-.*')}")
        return ",".join(parts)


@dataclass(frozen=True)
class ModelQueries:
    """One PromQL expression per signal; ``None`` when the engine has no such metric."""

    request_rate: str | None
    """Completed requests/s."""
    request_rate_fast: str | None
    """Completed requests/s over the short window (fast attack); ``None`` without one, and
    with a ``requestRate`` override (its window is the user's)."""
    queue_length: str | None
    """Requests waiting."""
    inflight_growth: str | None
    """Change of the requests in the engines (waiting + running), requests/s (negative when
    draining)."""
    ttft: str | None
    """Time to first token at the percentile, seconds."""
    tpot: str | None
    """Inter-token latency at the percentile, seconds."""
    input_token_rate: str | None
    """Prompt tokens/s."""
    output_token_rate: str | None
    """Generated tokens/s."""
    kv_cache_usage: str | None
    """Mean KV-cache usage over the pods, 0-1."""
    last_scrape: str | None
    """Unix time of the newest scrape behind the figures."""
    replicas: str | None
    """Pods reporting."""

    def items(self) -> list[tuple[str, str | None]]:
        """``(signal, query)`` pairs in field order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def _quantile(q: float, histograms: tuple[str, ...], sel: str, window: str) -> str:
    parts = [
        f"histogram_quantile({q:g}, sum by (le) (rate({name}_bucket{{{sel}}}[{window}])))"
        for name in histograms
    ]
    return " or ".join(parts)


def _rate(counters: tuple[str, ...], sel: str, window: str) -> str:
    return " or ".join(f"sum(rate({name}{{{sel}}}[{window}]))" for name in counters)


def _subquery_step(window: str) -> str:
    """A tenth of ``window`` (at least 1 ms), as a PromQL duration.

    Without an explicit step a subquery uses the server's global evaluation interval: 1m by
    default, which leaves a single point in a 1m window and no slope at all."""
    millis = max(1, round(duration_seconds(window) * 1000) // 10)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _growth(inflight: str, window: str) -> str:
    return f"deriv(({inflight})[{window}:{_subquery_step(window)}])"


@dataclass(frozen=True)
class EngineMetrics:
    """The metric names behind each signal for one engine (module docs); alternatives in
    order of preference (joined with PromQL ``or``)."""

    success: tuple[str, ...]
    """Counters of completed requests."""
    waiting: str
    """Gauge of requests waiting."""
    running: str
    """Gauge of requests running."""
    presence: str
    """Gauge every pod exports: the freshness (``timestamp``) and pods-reporting series."""
    ttft: tuple[str, ...]
    """TTFT histograms (base names, without ``_bucket``)."""
    tpot: tuple[str, ...]
    """Inter-token latency histograms."""
    tokens_in: tuple[str, ...]
    """Prompt token counters."""
    tokens_out: tuple[str, ...]
    """Generated token counters."""
    kv: tuple[str, ...]
    """KV-cache usage gauges (0-1)."""
    model_label: bool
    """Whether the engine labels its series with ``model_name``."""


ENGINE_METRICS: dict[Engine, EngineMetrics] = {
    Engine.VLLM: EngineMetrics(
        success=("vllm:request_success_total",),
        waiting="vllm:num_requests_waiting",
        running="vllm:num_requests_running",
        presence="vllm:num_requests_running",
        ttft=("vllm:time_to_first_token_seconds",),
        tpot=("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        # Tokens of finished requests (histograms observed at completion) first: the
        # counters also count tokens of requests still running, so during a ramp
        # counter / completions over-states the mean (and under-states capacity).
        tokens_in=("vllm:request_prompt_tokens_sum", "vllm:prompt_tokens_total"),
        tokens_out=("vllm:request_generation_tokens_sum", "vllm:generation_tokens_total"),
        kv=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        model_label=True,
    ),
    Engine.SGLANG: EngineMetrics(
        success=("sglang:e2e_request_latency_seconds_count",),
        waiting="sglang:num_queue_reqs",
        running="sglang:num_running_reqs",
        presence="sglang:num_running_reqs",
        ttft=("sglang:time_to_first_token_seconds",),
        tpot=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
        tokens_in=("sglang:prompt_tokens_total",),
        tokens_out=("sglang:generation_tokens_total",),
        kv=("sglang:token_usage",),
        model_label=True,
    ),
    Engine.TGI: EngineMetrics(
        success=("tgi_request_success", "tgi_request_count"),
        waiting="tgi_queue_size",
        running="tgi_batch_current_size",
        presence="tgi_queue_size",
        ttft=(),
        tpot=("tgi_request_mean_time_per_token_duration",),
        tokens_in=("tgi_request_input_length_sum",),
        tokens_out=("tgi_request_generated_tokens_sum",),
        kv=(),
        model_label=False,
    ),
}
"""Default metric names per engine (``custom`` has none)."""


def _default(
    engine: Engine, selector: Selector, q: float, window: str, fast: str | None
) -> ModelQueries:
    names = ENGINE_METRICS.get(engine)
    if names is None:
        return ModelQueries(None, None, None, None, None, None, None, None, None, None, None)
    sel = (selector if names.model_label else replace(selector, model_name=None)).matchers()
    queue = f"sum({names.waiting}{{{sel}}})"
    inflight = f"{queue} + sum({names.running}{{{sel}}})"
    return ModelQueries(
        request_rate=_rate(names.success, sel, window),
        request_rate_fast=None if fast is None else _rate(names.success, sel, fast),
        queue_length=queue,
        inflight_growth=_growth(inflight, window),
        ttft=_quantile(q, names.ttft, sel, window) if names.ttft else None,
        tpot=_quantile(q, names.tpot, sel, window) if names.tpot else None,
        input_token_rate=_rate(names.tokens_in, sel, window),
        output_token_rate=_rate(names.tokens_out, sel, window),
        kv_cache_usage=" or ".join(f"avg({n}{{{sel}}})" for n in names.kv) or None,
        last_scrape=f"max(timestamp({names.presence}{{{sel}}}))",
        replicas=f"count({names.presence}{{{sel}}})",
    )


def _check_windows(window: str, fast_window: str | None) -> None:
    for name, value in (("window", window), ("fast_window", fast_window)):
        if value is not None and not re.fullmatch(r"[0-9]+(ms|s|m|h)", value):
            raise ValueError(f"{name} must be a PromQL duration such as 30s or 1m, got {value!r}")


def model_queries(
    engine: Engine,
    selector: Selector,
    percentile: float,
    *,
    window: str = "1m",
    fast_window: str | None = None,
    overrides: MetricsOverrides | None = None,
) -> ModelQueries:
    """The queries for one model (or one variant's pods) of ``engine`` (module docs);
    ``fast_window`` adds the completion rate over that short window."""
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be strictly between 0 and 100, got {percentile!r}")
    _check_windows(window, fast_window)
    queries = _default(engine, selector, percentile / 100.0, window, fast_window)
    if overrides is None:
        return queries
    queue = overrides.queue_length or queries.queue_length
    growth = queries.inflight_growth
    if overrides.queue_length:
        growth = _growth(overrides.queue_length, window)
    return replace(
        queries,
        request_rate=overrides.request_rate or queries.request_rate,
        request_rate_fast=None if overrides.request_rate else queries.request_rate_fast,
        queue_length=queue,
        inflight_growth=growth,
        ttft=overrides.ttft or queries.ttft,
        tpot=overrides.tpot or queries.tpot,
        input_token_rate=overrides.input_tokens or queries.input_token_rate,
        output_token_rate=overrides.output_tokens or queries.output_token_rate,
        kv_cache_usage=overrides.kv_cache_usage or queries.kv_cache_usage,
    )


DEPLOYMENT_LABEL = "deployment"
"""Label the fleet-wide queries group by: the pod's Deployment (see :func:`fleet_queries`)."""

_POD_OF_DEPLOYMENT = "(.+)-[a-z0-9]+-[a-z0-9]+"
"""A Deployment's pods are ``<deployment>-<replicaset hash>-<pod hash>``."""


@dataclass(frozen=True)
class FleetQueries:
    """One PromQL expression per signal over every pod of some namespaces, answering one
    series per ``(namespace, deployment)`` (``deployment`` derived from the ``pod`` label);
    ``None`` when the engine has no such metric. The operator sums these series over a model's
    (or a variant's) Deployments, which is what the per-model :class:`ModelQueries` compute
    in PromQL: every per-model figure is a sum, a maximum or a count over the model's pods,
    and percentiles come from the buckets summed over them (``*_buckets``, one series per
    ``le`` as well)."""

    request_rate: str | None
    request_rate_fast: str | None
    queue_length: str | None
    inflight_growth: str | None
    ttft_buckets: str | None
    tpot_buckets: str | None
    input_token_rate: str | None
    output_token_rate: str | None
    kv_cache_sum: str | None
    """Sum of the KV-cache usage gauges (divided by ``kv_cache_count`` for the mean)."""
    kv_cache_count: str | None
    last_scrape: str | None
    replicas: str | None

    def items(self) -> list[tuple[str, str | None]]:
        """``(signal, query)`` pairs in field order."""
        return [(f.name, getattr(self, f.name)) for f in fields(self)]


def _per_deployment(expression: str, how: str = "sum", extra: str = "") -> str:
    grouped = f"namespace, {DEPLOYMENT_LABEL}{extra}"
    relabelled = (
        f'label_replace({expression}, "{DEPLOYMENT_LABEL}", "$1", "pod", "{_POD_OF_DEPLOYMENT}")'
    )
    return f"{how} by ({grouped}) ({relabelled})"


def fleet_queries(
    engine: Engine, namespaces: Sequence[str], *, window: str = "1m", fast_window: str | None = None
) -> FleetQueries | None:
    """The fleet-wide queries for every pod of ``engine`` in ``namespaces`` (see
    :class:`FleetQueries`); ``None`` for an engine without default metrics (``custom``)."""
    names = ENGINE_METRICS.get(engine)
    if names is None or not namespaces:
        return None
    _check_windows(window, fast_window)
    listed = "|".join(re.escape(n) for n in sorted(set(namespaces)))
    sel = f"namespace=~{_quote(listed)}"

    def rates(counters: tuple[str, ...], span: str) -> str | None:
        parts = [_per_deployment(f"rate({n}{{{sel}}}[{span}])") for n in counters]
        return " or ".join(parts) or None

    def buckets(histograms: tuple[str, ...]) -> str | None:
        parts = [
            _per_deployment(f"rate({n}_bucket{{{sel}}}[{window}])", extra=", le")
            for n in histograms
        ]
        return " or ".join(parts) or None

    queue = _per_deployment(f"{names.waiting}{{{sel}}}")
    inflight = f"{queue} + {_per_deployment(f'{names.running}{{{sel}}}')}"
    presence = f"{names.presence}{{{sel}}}"
    return FleetQueries(
        request_rate=rates(names.success, window),
        request_rate_fast=None if fast_window is None else rates(names.success, fast_window),
        queue_length=queue,
        inflight_growth=_growth(inflight, window),
        ttft_buckets=buckets(names.ttft),
        tpot_buckets=buckets(names.tpot),
        input_token_rate=rates(names.tokens_in, window),
        output_token_rate=rates(names.tokens_out, window),
        kv_cache_sum=" or ".join(_per_deployment(f"{n}{{{sel}}}") for n in names.kv) or None,
        kv_cache_count=" or ".join(_per_deployment(f"{n}{{{sel}}}", "count") for n in names.kv)
        or None,
        last_scrape=_per_deployment(f"timestamp({presence})", "max"),
        replicas=_per_deployment(presence, "count"),
    )
