"""The engine process's state: which replicas exist, what load each model gets (pure).

:func:`discover` turns the API server's pods and ModelDeployments (plain JSON dicts, as
``kubectl get -o json`` prints them) into the replicas to simulate;
:class:`EngineState` holds one :class:`~infleet.sandbox.engine_sim.ModelSim` per model and
applies discoveries, settings and ticks under one lock (the metrics endpoint reads it from
another thread).

Which pods are replicas: pods labelled ``app.kubernetes.io/managed-by=infleet`` with
``infleet.io/model``, ``infleet.io/variant`` and ``infleet.io/pool`` labels, in phase Running
with condition Ready=True and no deletion timestamp, whose model label matches a
ModelDeployment in the same namespace and whose variant label matches one of its variants.

**Start-up delay.** A real server loads weights for ``startupSeconds`` before its readiness
probe passes. The sandbox's kwok holds infleet's model pods Running but not Ready for
``startupSeconds * startupScale`` after they start (:mod:`infleet.sandbox.kwok`), and the
engine serves only Ready pods, so a replica takes traffic once it is Ready. The engine also
waits until ``startTime + startupSeconds * startupScale`` itself (reporting
``infleet_sandbox_replica_ready 0`` meanwhile): a no-op when kwok runs with the same scale,
and the delay still holds for pods kwok made Ready at once (no annotation, or the settings
file changed without restarting kwok).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from infleet.api import ModelDeployment
from infleet.core.children import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MODEL_LABEL,
    POOL_LABEL,
    VARIANT_LABEL,
    label_value,
)
from infleet.sandbox.engine_replicas import replica_spec
from infleet.sandbox.engine_sim import ModelLoad, ModelSim, ReplicaSim, ReplicaSpec, Rng
from infleet.sandbox.load_settings import EngineSettings, SteadyLoad, TraceReplay
from infleet.sandbox.load_trace import TraceRow

ModelKey = tuple[str, str]
POD_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY},{MODEL_LABEL}"
"""Label selector of the pods the engine lists."""


@dataclass(frozen=True)
class DiscoveredReplica:
    """One Running and Ready model pod."""

    spec: ReplicaSpec
    pool: str
    variant: str
    ready_since: float
    """Unix time of its Ready transition (or start time)."""
    startup_seconds: float
    started_at: float | None = None
    """Unix time the pod started running (``status.startTime``); ``None``: unknown."""


@dataclass(frozen=True)
class DiscoveredModel:
    """A ModelDeployment and its replicas."""

    served_model: str
    """``spec.model``: the ``model_name`` label of its metrics."""
    replicas: Mapping[str, DiscoveredReplica]


def ready_at(replica: DiscoveredReplica, startup_scale: float) -> float:
    """When the replica takes traffic: once Ready, and not before ``startupSeconds x scale``
    after it started (see the module docs)."""
    started = replica.ready_since if replica.started_at is None else replica.started_at
    return max(replica.ready_since, started + replica.startup_seconds * startup_scale)


def _time(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _ready_since(pod: Mapping[str, Any]) -> float | None:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            if condition.get("status") != "True":
                return None
            return _time(condition.get("lastTransitionTime")) or _time(status.get("startTime"))
    return None


def discover(
    pods: Sequence[Mapping[str, Any]],
    models: Sequence[Mapping[str, Any]],
    spec_cache: dict[tuple[str, str, int, str], ReplicaSpec] | None = None,
) -> dict[ModelKey, DiscoveredModel]:
    """The replicas to simulate, per model (see the module docs). ``spec_cache`` (keyed by
    namespace, name, generation, variant) avoids recomputing replica specs every second."""
    cache = spec_cache if spec_cache is not None else {}
    by_label: dict[tuple[str, str], tuple[ModelDeployment, int]] = {}
    for raw in models:
        body = {k: v for k, v in raw.items() if k != "status"}
        try:
            model = ModelDeployment.model_validate(body)
        except ValidationError:
            continue  # the operator reports it; the engine just does not serve it
        namespace = model.metadata.namespace or "default"
        generation = int((raw.get("metadata") or {}).get("generation") or 0)
        by_label[(namespace, label_value(model.metadata.name))] = (model, generation)

    found: dict[ModelKey, dict[str, DiscoveredReplica]] = {}
    served: dict[ModelKey, str] = {}
    for model, _ in by_label.values():
        key = (model.metadata.namespace or "default", model.metadata.name)
        found[key] = {}
        served[key] = model.spec.model
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if metadata.get("deletionTimestamp") or labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        namespace = metadata.get("namespace") or "default"
        entry = by_label.get((namespace, labels.get(MODEL_LABEL, "")))
        since = _ready_since(pod)
        if entry is None or since is None:
            continue
        model, generation = entry
        variant = next(
            (
                v
                for v in model.spec.variants
                if label_value(v.resolved_name) == labels.get(VARIANT_LABEL)
            ),
            None,
        )
        if variant is None:
            continue
        cache_key = (namespace, model.metadata.name, generation, variant.resolved_name)
        spec = cache.get(cache_key)
        if spec is None:
            spec = cache[cache_key] = replica_spec(model, variant)
        key = (namespace, model.metadata.name)
        found[key][str(metadata.get("name"))] = DiscoveredReplica(
            spec=spec,
            pool=str(labels.get(POOL_LABEL, "")),
            variant=variant.resolved_name,
            ready_since=since,
            startup_seconds=float(variant.startup_seconds),
            started_at=_time((pod.get("status") or {}).get("startTime")),
        )
    return {key: DiscoveredModel(served[key], replicas) for key, replicas in found.items()}


@dataclass(frozen=True)
class ReplicaView:
    """What the metrics endpoint needs about one replica."""

    labels: Mapping[str, str]
    replica: ReplicaSim
    ready: bool


TraceLoader = Callable[[TraceReplay], Sequence[TraceRow]]


class EngineState:
    """All simulated models (see the module docs)."""

    def __init__(self, trace_loader: TraceLoader) -> None:
        self.lock = threading.Lock()
        self.sims: dict[ModelKey, ModelSim] = {}
        self.discovered: dict[ModelKey, DiscoveredModel] = {}
        self.settings = EngineSettings()
        self._trace_loader = trace_loader
        self._replays: dict[ModelKey, TraceReplay] = {}
        self.now = 0.0

    def _sim(self, key: ModelKey) -> ModelSim:
        sim = self.sims.get(key)
        if sim is None:
            sim = self.sims[key] = ModelSim()
        return sim

    def _sync_replicas(self, key: ModelKey) -> None:
        model = self.discovered.get(key)
        if model is None:
            self._sim(key).set_replicas({})
            return
        scale = self.settings.startup_scale
        wanted = {
            pod: (r.spec, self.settings.perf.get(r.pool, 1.0), ready_at(r, scale))
            for pod, r in model.replicas.items()
        }
        self._sim(key).set_replicas(wanted)

    def apply_discovery(self, discovered: Mapping[ModelKey, DiscoveredModel]) -> None:
        """Make the replica sets those discovered; models gone and without load are dropped."""
        with self.lock:
            self.discovered = dict(discovered)
            for key in list(self.sims):
                if key not in self.discovered and key not in self.settings.models:
                    del self.sims[key]
            for key in self.discovered:
                self._sync_replicas(key)

    def apply_settings(self, settings: EngineSettings, now: float) -> None:
        """Take new loads, perf factors and start-up scale."""
        with self.lock:
            self.settings = settings
            for key, setting in settings.models.items():
                sim = self._sim(key)
                if isinstance(setting, SteadyLoad):
                    self._replays.pop(key, None)
                    sim.load = ModelLoad(
                        rate=setting.requests_per_second,
                        input_tokens=setting.input_tokens,
                        output_tokens=setting.output_tokens,
                    )
                elif self._replays.get(key) != setting:
                    self._replays[key] = setting
                    sim.load = ModelLoad()
                    sim.replay(self._trace_loader(setting), setting.started_at, now)
            for key in list(self.sims):
                if key not in settings.models:
                    self._replays.pop(key, None)
                    self.sims[key].load = ModelLoad()
                    if key not in self.discovered:
                        del self.sims[key]
            for key in self.discovered:
                self._sync_replicas(key)

    def tick(self, start: float, dt: float, rng: Rng) -> None:
        """Advance every model by ``dt`` from ``start``."""
        with self.lock:
            for sim in self.sims.values():
                sim.tick(start, dt, rng)
            self.now = start + dt

    def replicas(self) -> Iterator[ReplicaView]:
        """Every replica with its metric labels; call with :attr:`lock` held."""
        for key, sim in self.sims.items():
            model = self.discovered.get(key)
            if model is None:
                continue
            for pod, replica in sim.replicas.items():
                found = model.replicas.get(pod)
                labels = {
                    "namespace": key[0],
                    "pod": pod,
                    "model_name": model.served_model,
                    "variant": found.variant if found else "",
                    "pool": found.pool if found else "",
                }
                yield ReplicaView(labels, replica, replica.ready(self.now))
