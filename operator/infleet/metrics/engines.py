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
from dataclasses import dataclass, fields, replace

from infleet.api import Engine, MetricsOverrides
from infleet.core.settings import duration_seconds

__all__ = ["ModelQueries", "Selector", "model_queries"]


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


def _default(
    engine: Engine, selector: Selector, q: float, window: str, fast: str | None
) -> ModelQueries:
    if engine is Engine.VLLM or engine is Engine.SGLANG:
        sel = selector.matchers()
        if engine is Engine.VLLM:
            p = "vllm:"
            success: tuple[str, ...] = ("vllm:request_success_total",)
            kv: tuple[str, ...]
            waiting = "vllm:num_requests_waiting"
            running = "vllm:num_requests_running"
            itl = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")
            kv = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
            # Tokens of finished requests (histograms observed at completion) first: the
            # counters also count tokens of requests still running, so during a ramp
            # counter / completions over-states the mean (and under-states capacity).
            tokens_in: tuple[str, ...] = ("vllm:request_prompt_tokens_sum",)
            tokens_out: tuple[str, ...] = ("vllm:request_generation_tokens_sum",)
        else:
            p = "sglang:"
            success = ("sglang:e2e_request_latency_seconds_count",)
            waiting = "sglang:num_queue_reqs"
            running = "sglang:num_running_reqs"
            itl = ("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds")
            kv = ("sglang:token_usage",)
            tokens_in = tokens_out = ()
        queue = f"sum({waiting}{{{sel}}})"
        inflight = f"{queue} + sum({running}{{{sel}}})"
        return ModelQueries(
            request_rate=_rate(success, sel, window),
            request_rate_fast=None if fast is None else _rate(success, sel, fast),
            queue_length=queue,
            inflight_growth=_growth(inflight, window),
            ttft=_quantile(q, (f"{p}time_to_first_token_seconds",), sel, window),
            tpot=_quantile(q, itl, sel, window),
            input_token_rate=_rate((*tokens_in, f"{p}prompt_tokens_total"), sel, window),
            output_token_rate=_rate((*tokens_out, f"{p}generation_tokens_total"), sel, window),
            kv_cache_usage=" or ".join(f"avg({name}{{{sel}}})" for name in kv),
            last_scrape=f"max(timestamp({running}{{{sel}}}))",
            replicas=f"count({running}{{{sel}}})",
        )
    if engine is Engine.TGI:
        sel = replace(selector, model_name=None).matchers()
        queue = f"sum(tgi_queue_size{{{sel}}})"
        inflight = f"{queue} + sum(tgi_batch_current_size{{{sel}}})"
        counters = ("tgi_request_success", "tgi_request_count")
        return ModelQueries(
            request_rate=_rate(counters, sel, window),
            request_rate_fast=None if fast is None else _rate(counters, sel, fast),
            queue_length=queue,
            inflight_growth=_growth(inflight, window),
            ttft=None,
            tpot=_quantile(q, ("tgi_request_mean_time_per_token_duration",), sel, window),
            input_token_rate=_rate(("tgi_request_input_length_sum",), sel, window),
            output_token_rate=_rate(("tgi_request_generated_tokens_sum",), sel, window),
            kv_cache_usage=None,
            last_scrape=f"max(timestamp(tgi_queue_size{{{sel}}}))",
            replicas=f"count(tgi_queue_size{{{sel}}})",
        )
    return ModelQueries(None, None, None, None, None, None, None, None, None, None, None)


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
    for name, value in (("window", window), ("fast_window", fast_window)):
        if value is not None and not re.fullmatch(r"[0-9]+(ms|s|m|h)", value):
            raise ValueError(f"{name} must be a PromQL duration such as 30s or 1m, got {value!r}")
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
