"""Kopf registrations: per-object handlers only mark the fleet dirty; the fleet loop plans.

Handlers are ``on.event`` (no progress annotations, no finalizers on users' objects). To keep
an idle operator idle, each handler compares a fingerprint of the fields that matter (a node's
readiness and allocatable accelerators, a Deployment's replicas...) with the last one seen and
triggers only on a real change; the operator's own status writes therefore do not re-trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import kopf

from infleet.core.settings import ANNOTATION_PREFIX, OperatorSettings
from infleet.k8s.connect import connect
from infleet.k8s.peering import ensure_peering
from infleet.reconcile.fleet import FleetReconciler
from infleet.reconcile.loop import FleetLoop
from infleet.reconcile.telemetry import MetricsServer, OperatorMetrics

log = logging.getLogger("infleet.handlers")

MANAGED = {"app.kubernetes.io/managed-by": "infleet"}


def _conditions(body: Mapping[str, Any], type_: str) -> tuple[Any, ...]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return (cond.get("status"), cond.get("reason"))
    return ()


def _node_print(body: Mapping[str, Any]) -> Any:
    return (
        dict(body.get("metadata", {}).get("labels") or {}),
        (body.get("spec") or {}).get("unschedulable", False),
        _conditions(body, "Ready")[:1],
        dict((body.get("status") or {}).get("allocatable") or {}),
    )


def _pod_print(body: Mapping[str, Any]) -> Any:
    return (
        (body.get("status") or {}).get("phase"),
        (body.get("spec") or {}).get("nodeName"),
        _conditions(body, "PodScheduled"),
        _conditions(body, "Ready")[:1],
    )


def _deployment_print(body: Mapping[str, Any]) -> Any:
    return (
        (body.get("spec") or {}).get("replicas"),
        (body.get("status") or {}).get("readyReplicas"),
    )


def _spec_print(body: Mapping[str, Any]) -> Any:
    meta = body.get("metadata") or {}
    return (meta.get("generation"), meta.get("deletionTimestamp"))


class Fingerprints:
    """Last fingerprint per object; says whether an event changed anything relevant."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, str], str] = {}

    def changed(
        self, kind: str, event: Mapping[str, Any], print_: Callable[[Mapping[str, Any]], Any]
    ) -> bool:
        """True for a relevant change (or a deletion); remembers the new fingerprint."""
        body = event.get("object") or {}
        meta = body.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event.get("type") == "DELETED":
            self.seen.pop(key, None)
            return True
        value = json.dumps(print_(body), sort_keys=True, default=str)
        if self.seen.get(key) == value:
            return False
        self.seen[key] = value
        return True


def build_registry() -> kopf.OperatorRegistry:
    """A registry with infleet's handlers (a fresh one, so tests can run several)."""
    registry = kopf.OperatorRegistry()
    prints = Fingerprints()

    def watcher(kind: str, print_: Callable[[Mapping[str, Any]], Any]) -> Callable[..., None]:
        def on_event(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
            fleet: FleetLoop | None = memo.get("fleet")
            if fleet is not None and prints.changed(kind, event, print_):
                fleet.trigger(kind)

        return on_event

    kopf.on.event("infleet.io", "v1alpha1", "modeldeployments", registry=registry)(
        watcher("mdep", _spec_print)
    )
    kopf.on.event("infleet.io", "v1alpha1", "acceleratorpools", registry=registry)(
        watcher("apool", _spec_print)
    )
    kopf.on.event("", "v1", "nodes", registry=registry)(watcher("nodes", _node_print))
    kopf.on.event("", "v1", "pods", labels=MANAGED, registry=registry)(watcher("pods", _pod_print))
    kopf.on.event("apps", "v1", "deployments", labels=MANAGED, registry=registry)(
        watcher("deploy", _deployment_print)
    )

    # A registry of our own has none of Kopf's default login handlers: log in through the
    # kubernetes client (in-cluster service account, or $KUBECONFIG set by `run_operator`).
    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        ours: OperatorSettings = memo["settings"]
        configure_kopf(settings, ours)
        metrics = OperatorMetrics()
        kube = connect(memo.get("kubeconfig"), ours.retry)
        if ours.peering:
            # Kopf pauses every watch while its peering CRDs are missing: install them (and the
            # peering object) first; Kopf notices the new CRDs and starts.
            await asyncio.to_thread(ensure_peering, kube, ours.peering_name, list(ours.namespaces))
        fleet = FleetLoop(FleetReconciler(kube, ours, metrics), ours, metrics)
        memo["fleet"] = fleet
        memo["task"] = asyncio.get_running_loop().create_task(fleet.run(), name="infleet-fleet")
        if ours.metrics_port:
            server = MetricsServer(metrics, ours.metrics_port, fleet.healthy)
            server.start()
            memo["server"] = server
            log.info("metrics and /healthz on port %d", server.port)

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("task")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        fleet: FleetLoop | None = memo.get("fleet")
        if fleet is not None:
            await asyncio.to_thread(fleet.reconciler.close)
        server: MetricsServer | None = memo.get("server")
        if server is not None:
            server.stop()

    return registry


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    """Kopf's own settings: infleet.io annotations, peering, quiet event posting."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{ANNOTATION_PREFIX}/kopf-finalizer"
    # infleet posts its own decision Events; Kopf's per-handler log events would be noise.
    settings.posting.level = logging.WARNING
    settings.peering.name = ours.peering_name
    settings.peering.clusterwide = ours.all_namespaces
    settings.peering.standalone = not ours.peering
    settings.peering.mandatory = ours.peering
    settings.peering.priority = ours.peering_priority
    settings.watching.server_timeout = 300


def run_operator(
    settings: OperatorSettings, *, kubeconfig: Path | None, log_format: str, verbose: bool
) -> None:
    """Run until interrupted (what `infleet run` does)."""
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,
    )
    if not verbose:
        # Kopf logs every handled watch event at INFO ("Handler ... succeeded"): thousands of
        # lines per minute on a large cluster. Its warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if kubeconfig is not None:
        # Kopf's login (through the kubernetes client) reads the kubeconfig from $KUBECONFIG.
        os.environ["KUBECONFIG"] = str(kubeconfig)
    if not settings.peering_identity:
        # Unique per process (Kopf's rule compares identities): pod name or host, pid, nonce.
        host = os.environ.get("POD_NAME") or socket.gethostname()
        identity = f"{host}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
        settings = replace(settings, peering_identity=identity)
    memo = kopf.Memo(settings=settings, kubeconfig=kubeconfig)
    kopf.run(
        registry=build_registry(),
        memo=memo,
        clusterwide=settings.all_namespaces,
        namespaces=list(settings.namespaces),
        standalone=not settings.peering,
        peering_name=settings.peering_name,
        priority=settings.peering_priority,
        identity=cast(Any, settings.peering_identity),
    )
