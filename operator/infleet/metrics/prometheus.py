"""A small client for Prometheus' HTTP API (``GET /api/v1/query``, instant queries).

Errors are typed and say what failed and where:

* :class:`PrometheusUnreachable`: no connection or a timeout (after ``retries``).
* :class:`PrometheusHTTPError`: an HTTP status other than 200 with no PromQL error body
  (5xx are retried first).
* :class:`PromQLError`: Prometheus answered ``status: error`` (bad syntax, execution error),
  or the result had an unexpected type or too many series for a one-number query.

An empty result is not an error: :meth:`PrometheusClient.query_value` returns ``None``.
Values come back as floats with the sample's timestamp (Unix seconds), so a caller can tell
how old the data behind them are.

The base URL is ``--prometheus-url`` or ``$INFLEET_PROMETHEUS_URL`` (:func:`prometheus_url`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

ENV_URL = "INFLEET_PROMETHEUS_URL"


class PrometheusError(RuntimeError):
    """A query could not be answered."""


class PrometheusUnreachable(PrometheusError):
    """No connection to Prometheus, or it timed out."""


class PrometheusHTTPError(PrometheusError):
    """Prometheus answered with an unexpected HTTP status."""


class PromQLError(PrometheusError):
    """Prometheus rejected or could not evaluate the query, or its result has the wrong shape."""


@dataclass(frozen=True)
class Sample:
    """One series' value at one time."""

    labels: Mapping[str, str]
    value: float
    """May be NaN or infinite (``histogram_quantile`` of empty buckets is NaN)."""
    timestamp: float
    """Unix seconds of the evaluation (instant queries report the query time)."""


def prometheus_url(explicit: str | None = None) -> str:
    """``explicit``, else ``$INFLEET_PROMETHEUS_URL``; a clear error when neither is set."""
    url = explicit or os.environ.get(ENV_URL)
    if not url:
        raise PrometheusError(f"no Prometheus URL: pass --prometheus-url or set ${ENV_URL}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PrometheusError(f"Prometheus URL must be http(s)://host[:port][/path], got {url!r}")
    return url.rstrip("/")


def _parse_value(raw: Any, query: str) -> tuple[float, float]:
    try:
        stamp, text = raw
        return float(stamp), float(text)  # float() reads "NaN", "+Inf", "-Inf" too
    except (TypeError, ValueError) as exc:
        raise PromQLError(f"query {query!r}: unreadable sample {raw!r}") from exc


def parse_response(body: Any, query: str) -> list[Sample]:
    """Samples of a ``/api/v1/query`` JSON body (vector or scalar result)."""
    if not isinstance(body, dict):
        raise PromQLError(f"query {query!r}: response is not a JSON object")
    if body.get("status") != "success":
        kind = body.get("errorType", "error")
        raise PromQLError(f"query {query!r} failed: {kind}: {body.get('error', 'no message')}")
    data = body.get("data") or {}
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar":
        stamp, value = _parse_value(result, query)
        return [Sample({}, value, stamp)]
    if kind != "vector" or not isinstance(result, list):
        raise PromQLError(
            f"query {query!r}: expected an instant vector or scalar, got {kind or 'nothing'}"
        )
    samples = []
    for series in result:
        stamp, value = _parse_value(series.get("value"), query)
        samples.append(Sample(dict(series.get("metric") or {}), value, stamp))
    return samples


def redacted_url(url: str) -> str:
    """``url`` without the user name and password basic auth may carry in it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def _redact(text: str, url: str) -> str:
    """``text`` with the password of ``url`` (if any) blanked out."""
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


class PrometheusClient:
    """Instant queries against one Prometheus server (see the module docs)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = prometheus_url(url)
        self.shown_url = redacted_url(self.url)
        """The URL as messages and logs show it: without user name and password."""
        self.retries = retries
        self.backoff = backoff
        host = urlsplit(self.url).hostname or ""
        # Proxy settings from the environment must not capture a loopback Prometheus.
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            trust_env=not loopback,
            transport=transport,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Evaluate ``promql`` now (or at Unix time ``at``); every series of the result."""
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(at)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._http.get("/api/v1/query", params=params)
            except httpx.TimeoutException as exc:
                last = PrometheusUnreachable(
                    f"Prometheus at {self.shown_url} timed out on query {promql!r}"
                )
                last.__cause__ = exc
                continue
            except httpx.TransportError as exc:
                last = PrometheusUnreachable(
                    f"Prometheus at {self.shown_url} is unreachable: {_redact(str(exc), self.url)}"
                )
                last.__cause__ = exc
                continue
            if response.status_code >= 500 and attempt < self.retries:
                last = PrometheusHTTPError(f"HTTP {response.status_code}")
                continue
            return self._decode(response, promql)
        assert last is not None
        raise last

    def _decode(self, response: httpx.Response, promql: str) -> list[Sample]:
        try:
            body = response.json()
        except ValueError:
            body = None
        # Prometheus reports PromQL problems as 400/422 with an error body.
        if isinstance(body, dict) and body.get("status") == "error":
            return parse_response(body, promql)
        if response.status_code != 200:
            snippet = response.text[:200].strip()
            raise PrometheusHTTPError(
                f"Prometheus at {self.shown_url} answered HTTP {response.status_code} "
                f"to query {promql!r}: {snippet or 'no body'}"
            )
        if body is None:
            raise PromQLError(f"query {promql!r}: response is not JSON")
        return parse_response(body, promql)

    def query_value(self, promql: str, at: float | None = None) -> Sample | None:
        """The single value of a query meant to return one number; ``None`` when empty.

        More than one series is a :class:`PromQLError`: aggregate in the query (``sum``,
        ``max``) instead of letting the client pick one.
        """
        samples = self.query(promql, at)
        if not samples:
            return None
        if len(samples) > 1:
            shown = ", ".join(str(dict(s.labels)) for s in samples[:3])
            raise PromQLError(
                f"query {promql!r} returned {len(samples)} series, expected one "
                f"(aggregate it, e.g. sum(...)): {shown}"
            )
        return samples[0]


def finite(sample: Sample | None) -> float | None:
    """The sample's value when it is a finite number, else ``None``."""
    if sample is None or not math.isfinite(sample.value):
        return None
    return sample.value
