"""A thin JSON client over the Kubernetes API: raw camelCase dicts in and out, with retries.

This module does not import the kubernetes package (so `infleet.reconcile` may use it under
the import contracts); `infleet.k8s.connect` builds the authenticated client. The generated
kubernetes-client models are skipped on purpose: the operator reads thousands of
Nodes and Pods per cycle, and the pure code (`infleet.core.inventory`, the builders) works on
the same dictionaries `kubectl get -o json` prints. Authentication, TLS and kubeconfig parsing
still come from the kubernetes client.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import urllib3

from infleet.core.settings import RetrySettings

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
_TRANSIENT = {409, 429, 500, 502, 503, 504}
_REQUEST_TIMEOUT = (10.0, 60.0)


class KubeError(Exception):
    """An API call failed; says which call and what the API server answered."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.method = method
        self.path = path
        self.status = status
        self.message = message

    @property
    def not_found(self) -> bool:
        """The object does not exist (any more)."""
        return self.status == 404


def _message(data: bytes) -> str:
    try:
        body = json.loads(data)
    except ValueError:
        return data.decode(errors="replace")[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("reason") or body)[:1000]
    return str(body)[:1000]


class Kube:
    """JSON requests against one cluster, retried with exponential backoff on conflicts,
    throttling, server errors and broken connections."""

    def __init__(self, api_client: Any, retry: RetrySettings | None = None) -> None:
        self.api_client = api_client
        self.retry = retry or RetrySettings()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or ``KubeError``."""
        url_path = path
        if query:
            url_path += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        delay = self.retry.initial_backoff_seconds
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return self._once(method, url_path, headers, body)
            except KubeError as exc:
                if exc.status not in _TRANSIENT or attempt == self.retry.attempts:
                    raise
                log.info("retrying %s %s after HTTP %s", method, path, exc.status)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == self.retry.attempts:
                    raise KubeError(method, path, 0, f"connection failed: {exc}") from exc
                log.info("retrying %s %s after %s", method, path, exc)
            time.sleep(delay)
            delay = min(delay * 2, self.retry.max_backoff_seconds)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, method: str, url_path: str, headers: dict[str, str], body: Any) -> Any:
        serialized = self.api_client.param_serialize(
            method=method,
            resource_path=url_path,
            header_params=dict(headers),
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*serialized, _request_timeout=_REQUEST_TIMEOUT)
        data = response.read() or b""
        if not 200 <= response.status <= 299:
            raise KubeError(method, url_path, response.status, _message(data))
        return json.loads(data) if data else None

    def list_items(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        keep: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Every item of a list endpoint, following ``continue`` tokens. ``keep`` trims each
        item as its page arrives (thousands of nodes and pods need not be held whole)."""
        items: list[dict[str, Any]] = []
        query: dict[str, str] = {"limit": "500"}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        while True:
            page = self.request("GET", path, query=query)
            page_items = page.get("items") or []
            items.extend(map(keep, page_items) if keep else page_items)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token
