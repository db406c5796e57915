"""The simulated-engines process of the sandbox: ``python -m infleet.sandbox.engine --dir DIR``.

One process simulates every model replica of the sandbox (:mod:`infleet.sandbox.engine_sim`)
and serves their metrics in vLLM's names on a loopback port, which it registers as a target
of the ``infleet-engines`` scrape job (``<dir>/prometheus/targets/infleet-engines/engine.json``;
the port is also written to ``<dir>/engine/port``). Three loops:

* every ``--tick`` (0.1 s) of wall time, the simulation advances (catching up after a stall,
  at most 10 s at once);
* every second, ``<dir>/engine/settings.json`` is re-read when it changed (loads, perf
  factors, start-up scale; see :mod:`infleet.sandbox.load_settings`);
* every ``--discover-interval`` (2 s), in a thread, pods and ModelDeployments are listed
  through the API server with the sandbox's admin kubeconfig.

SIGTERM or SIGINT stops it and removes its scrape target.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, cast

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infleet.sandbox import prometheus
from infleet.sandbox.engine_exporter import EngineCollector
from infleet.sandbox.engine_sim import ReplicaSpec
from infleet.sandbox.engine_state import POD_SELECTOR, EngineState, discover
from infleet.sandbox.load_settings import SettingsError, TraceReplay, read_settings, settings_path
from infleet.sandbox.load_trace import TraceError, TraceRow, read_trace

JOB = "infleet-engines"
TARGET_NAME = "engine"
MAX_CATCH_UP_SECONDS = 10.0

log = logging.getLogger("infleet.sandbox.engine")


def port_path(state_dir: Path) -> Path:
    """Where the running engine writes its metrics port."""
    return state_dir / "engine" / "port"


def _serve(registry: CollectorRegistry, port: int) -> http.server.ThreadingHTTPServer:
    # Always the classic text format: prometheus_client's OpenMetrics output (which Prometheus
    # asks for first) writes `vllm:x_total` samples as `vllm_x_total`, breaking vLLM's names.
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics")
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # a scrape every 2 s would flood the log

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _load_trace(setting: TraceReplay) -> list[TraceRow]:
    try:
        return read_trace(Path(setting.trace), speedup=setting.speedup, scale=setting.scale)
    except TraceError as exc:
        log.error("replay not started: %s", exc)
        return []


class _Discovery(threading.Thread):
    def __init__(self, kubeconfig: Path, state: EngineState, interval: float) -> None:
        super().__init__(name="discovery", daemon=True)
        self.kubeconfig = kubeconfig
        self.state = state
        self.interval = interval
        self.stopping = threading.Event()
        self._cache: dict[tuple[str, str, int, str], ReplicaSpec] = {}
        self._last_error = ""
        self._api: Any = None

    def _list(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        from infleet.sandbox.kube import client_for

        if self._api is None:
            self._api = client_for(self.kubeconfig)
        api = self._api
        pods = client.CoreV1Api(api).list_pod_for_all_namespaces(label_selector=POD_SELECTOR)
        serialized = api.sanitize_for_serialization(pods)
        raw_pods = cast(list[dict[str, Any]], serialized.get("items") or [])
        try:
            models = client.CustomObjectsApi(api).list_cluster_custom_object(
                "infleet.io", "v1alpha1", "modeldeployments"
            )
        except ApiException as exc:
            if exc.status != 404:  # no CRD yet: no models
                raise
            return raw_pods, []
        return raw_pods, list(cast(dict[str, Any], models).get("items") or [])

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                pods, models = self._list()
                self.state.apply_discovery(discover(pods, models, self._cache))
                self._last_error = ""
            except Exception as exc:  # keep simulating with what we know; say it once
                message = f"listing pods failed: {exc}"
                if message != self._last_error:
                    log.warning("%s", message)
                    self._last_error = message
            self.stopping.wait(self.interval)


def run(state_dir: Path, *, tick: float, discover_interval: float, seed: int, port: int) -> None:
    """Run the engine until SIGTERM/SIGINT."""
    from infleet.sandbox.cluster import Sandbox

    box = Sandbox(state_dir)
    state = EngineState(_load_trace)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(state))
    server = _serve(registry, port)
    bound = int(server.server_port)
    port_path(box.dir).parent.mkdir(parents=True, exist_ok=True)
    port_path(box.dir).write_text(f"{bound}\n")
    prometheus.register_targets(box.targets_dir, JOB, TARGET_NAME, [f"127.0.0.1:{bound}"])
    log.info("serving metrics on 127.0.0.1:%d", bound)

    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    discovery = _Discovery(box.kubeconfig, state, discover_interval)
    discovery.start()

    rng = np.random.default_rng(seed)
    path = settings_path(box.dir)
    seen: tuple[float, int] | None = None
    next_read = 0.0
    clock = time.time()
    try:
        while not stop.is_set():
            now = time.time()
            if now >= next_read:
                next_read = now + 1.0
                try:
                    stat = path.stat()
                    mark: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
                except FileNotFoundError:
                    mark = None
                if mark != seen:
                    seen = mark
                    try:
                        state.apply_settings(read_settings(path), now)
                    except SettingsError as exc:
                        log.error("settings ignored: %s", exc)
            if now - clock > MAX_CATCH_UP_SECONDS:
                clock = now - tick  # stalled too long: skip ahead rather than burst
            while clock + tick <= now:
                state.tick(clock, tick, rng)
                clock += tick
            stop.wait(max(0.0, clock + tick - time.time()))
    finally:
        discovery.stopping.set()
        prometheus.unregister_targets(box.targets_dir, JOB, TARGET_NAME)
        port_path(box.dir).unlink(missing_ok=True)
        server.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dir", required=True, type=Path, help="sandbox state directory")
    parser.add_argument("--tick", type=float, default=0.1, help="simulation step, seconds")
    parser.add_argument(
        "--discover-interval", type=float, default=2.0, help="seconds between pod listings"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the arrivals")
    parser.add_argument("--port", type=int, default=0, help="metrics port (0: any free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    run(
        args.dir,
        tick=args.tick,
        discover_interval=args.discover_interval,
        seed=args.seed,
        port=args.port,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
