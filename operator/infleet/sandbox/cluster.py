"""A real Kubernetes control plane on this machine: etcd, kube-apiserver (RBAC on),
kube-controller-manager, kube-scheduler, kwok for fake nodes, and Prometheus.

Everything lives in one state directory: certificates, kubeconfigs, ports, logs, PIDs, etcd's
data and Prometheus's configuration and data. Processes are started detached and recorded by
PID, so `up`, `status` and `down` may run in different commands. Every port is picked free on
127.0.0.1 and recorded, so several sandboxes can coexist.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from infleet.api.pool import AcceleratorPool
from infleet.sandbox import certs, kwok, prometheus
from infleet.sandbox.binaries import REPO_ROOT, Binaries, ensure_binaries
from infleet.sandbox.nodes import all_nodes
from infleet.sandbox.processes import ProcessTable, rss_bytes

SERVICE_CIDR = "10.96.0.0/16"
"""Virtual Service addresses (allocated by the API server, never routed: there is no proxy)."""
SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.1/16"
"""Pod IPs kwok writes into pod status; nothing listens there and nothing must connect."""
NODE_LEASE_SECONDS = 600
"""Lease duration of the fake nodes; kwok renews every quarter of it (150 s). A kubelet renews
every 10 s: at 2,000 fake nodes that alone is 200 writes a second, more than an API server on
two shared cores absorbs beside the workload (it fell behind at ~64/s and every other request
queued). The controller-manager's grace period follows, so nodes stay Ready."""
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "prometheus",
)
"""Start order; `down` stops them in reverse."""
ENGINE = "engine"
"""The simulated inference engines (infleet.sandbox.engine); started last, stopped first."""

Echo = Callable[[str], None]


def default_state_dir() -> Path:
    """$INFLEET_SANDBOX_DIR, else ${XDG_STATE_HOME:-~/.local/state}/infleet/sandbox."""
    explicit = os.environ.get("INFLEET_SANDBOX_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "infleet" / "sandbox"


def default_crd_dir() -> Path:
    """$INFLEET_SANDBOX_CRDS, else the checkout's crds/ directory."""
    return Path(os.environ.get("INFLEET_SANDBOX_CRDS") or REPO_ROOT / "crds")


class SandboxError(RuntimeError):
    """The sandbox could not be brought up or inspected."""


@dataclass
class Ports:
    """Loopback ports of one sandbox."""

    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int
    prometheus: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ComponentStatus:
    """What `status` reports about one component."""

    name: str
    pid: int | None
    healthy: bool
    detail: str


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Sandbox:
    """One sandbox, identified by its state directory."""

    def __init__(self, directory: Path, binaries: Binaries | None = None) -> None:
        self.dir = directory.resolve()
        self._binaries = binaries
        self.processes = ProcessTable(self.dir / "pids")

    # -- paths ---------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user in group system:masters)."""
        return self.dir / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def prometheus_dir(self) -> Path:
        return self.dir / "prometheus"

    @property
    def targets_dir(self) -> Path:
        """Where scrape targets are registered (see infleet.sandbox.prometheus)."""
        return self.prometheus_dir / "targets"

    @property
    def pki(self) -> certs.Pki:
        return certs.Pki(self.dir / "pki")

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = ensure_binaries()
        return self._binaries

    def ports(self) -> Ports:
        """Recorded ports; picks and records free ones on first use."""
        path = self.dir / "ports.json"
        if path.exists():
            data = json.loads(path.read_text())
            return Ports(**{f.name: int(data[f.name]) for f in fields(Ports)})
        chosen: set[int] = set()
        values: dict[str, int] = {}
        for field in fields(Ports):
            port = _free_port()
            while port in chosen:
                port = _free_port()
            chosen.add(port)
            values[field.name] = port
        ports = Ports(**values)
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(ports), indent=2) + "\n")
        return ports

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports().prometheus}"

    @property
    def server_url(self) -> str:
        return f"https://127.0.0.1:{self.ports().apiserver}"

    # -- configuration files ------------------------------------------------------------

    def _write_kubeconfig(self, path: Path, client: str) -> None:
        pki = self.pki
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "infleet-sandbox",
                    "cluster": {
                        "server": self.server_url,
                        "certificate-authority": str(pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": client,
                    "user": {
                        "client-certificate": str(pki.client_cert(client)),
                        "client-key": str(pki.client_key(client)),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "infleet-sandbox",
                    "context": {"cluster": "infleet-sandbox", "user": client},
                }
            ],
            "current-context": "infleet-sandbox",
        }
        prometheus.write_if_changed(path, yaml.safe_dump(config, sort_keys=False))

    def _component_kubeconfig(self, client: str) -> Path:
        return self.dir / "kubeconfigs" / f"{client}.yaml"

    def prepare(self) -> bool:
        """Create the state directory's certificates, kubeconfigs and configuration files.

        Returns whether kwok's configuration changed (a running kwok must then restart to
        read it: it loads its Stages once, at start)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ports()
        certs.ensure_pki(self.dir / "pki", SERVICE_IP)
        self._write_kubeconfig(self.kubeconfig, "admin")
        for client in ("controller-manager", "scheduler", "kwok"):
            self._write_kubeconfig(self._component_kubeconfig(client), client)
        kwok_changed = prometheus.write_if_changed(
            self.dir / "kwok.yaml", kwok.config_for(self.dir)
        )
        for job in prometheus.JOBS:
            (self.targets_dir / job).mkdir(parents=True, exist_ok=True)
        return kwok_changed

    def _write_prometheus_config(self) -> bool:
        text = prometheus.config_text(self.targets_dir, f"127.0.0.1:{self.ports().prometheus}")
        return prometheus.write_if_changed(self.prometheus_dir / "prometheus.yml", text)

    # -- processes ------------------------------------------------------------------------

    def argv(self, component: str) -> list[str]:
        """Command line of one component."""
        p = self.ports()
        pki = self.pki
        b = self.binaries
        if component == "etcd":
            peer = f"http://127.0.0.1:{p.etcd_peer}"
            client = f"http://127.0.0.1:{p.etcd}"
            return [
                str(b.path("etcd")),
                "--name=sandbox",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=sandbox={peer}",
                "--auto-compaction-retention=1",
                # A throwaway cluster: skipping fsync makes it far faster on shared disks.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]
        if component == "kube-apiserver":
            return [
                str(b.path("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{p.etcd}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p.apiserver}",
                f"--cert-dir={self.dir / 'pki' / 'apiserver-generated'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # The `kubernetes` Service would get 127.0.0.1 as endpoint, which is invalid;
                # nothing in the sandbox reaches the API server through that Service.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--event-ttl=1h",
            ]
        if component == "kube-controller-manager":
            kubeconfig = self._component_kubeconfig("controller-manager")
            return [
                str(b.path("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.controller_manager}",
                f"--cert-dir={self.dir / 'pki' / 'controller-manager-generated'}",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--leader-elect=false",
                # Fake nodes renew their leases every NODE_LEASE_SECONDS / 4 (see kwok below);
                # a node is unreachable only once it missed about three renewals.
                f"--node-monitor-grace-period={NODE_LEASE_SECONDS * 3 // 4}s",
                "--kube-api-qps=400",
                "--kube-api-burst=800",
                "--profiling=false",
            ]
        if component == "kube-scheduler":
            kubeconfig = self._component_kubeconfig("scheduler")
            return [
                str(b.path("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p.scheduler}",
                f"--cert-dir={self.dir / 'pki' / 'scheduler-generated'}",
                "--leader-elect=false",
                "--profiling=false",
            ]
        if component == "kwok":
            return [
                str(b.path("kwok")),
                f"--kubeconfig={self._component_kubeconfig('kwok')}",
                f"--config={self.dir / 'kwok.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--server-address=127.0.0.1:{p.kwok}",
                "--node-ip=127.0.0.1",
                f"--cidr={POD_CIDR}",
                f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                "--v=WARN",  # INFO logs every lease renewal: thousands of lines a minute
            ]
        if component == "prometheus":
            return [
                str(b.path("prometheus")),
                f"--config.file={self.prometheus_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.prometheus_dir / 'data'}",
                "--storage.tsdb.retention.time=6h",
                f"--web.listen-address=127.0.0.1:{p.prometheus}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ]
        raise ValueError(f"unknown component {component!r}")

    def _health_url(self, component: str) -> str:
        p = self.ports()
        return {
            "etcd": f"http://127.0.0.1:{p.etcd}/health",
            "kube-apiserver": f"https://127.0.0.1:{p.apiserver}/readyz",
            "kube-controller-manager": f"https://127.0.0.1:{p.controller_manager}/healthz",
            "kube-scheduler": f"https://127.0.0.1:{p.scheduler}/healthz",
            "kwok": f"http://127.0.0.1:{p.kwok}/healthz",
            "prometheus": f"http://127.0.0.1:{p.prometheus}/-/ready",
        }[component]

    def _ssl_context(self, component: str) -> ssl.SSLContext:
        if component == "kube-apiserver":
            context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
            context.load_cert_chain(
                str(self.pki.client_cert("admin")), str(self.pki.client_key("admin"))
            )
            return context
        # The controller manager and scheduler serve with self-signed certificates made at
        # start; their health endpoints carry no secrets.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context

    def healthy(self, component: str) -> tuple[bool, str]:
        """Probe a component's health endpoint: (ok, short detail)."""
        url = self._health_url(component)
        request = urllib.request.Request(url)
        try:
            if url.startswith("https"):
                handler = urllib.request.HTTPSHandler(context=self._ssl_context(component))
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), handler)
            else:
                opener = _NO_PROXY
            with opener.open(request, timeout=3) as response:
                body = response.read(200).decode(errors="replace").strip()
                return response.status == 200, body or str(response.status)
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            return False, str(getattr(exc, "reason", exc))

    def _wait_healthy(self, components: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(components)
        while pending:
            for component in list(pending):
                if self.processes.running(component) is None:
                    raise SandboxError(
                        f"{component} exited during start-up; last log lines:\n"
                        + self._log_tail(component)
                    )
                if self.healthy(component)[0]:
                    pending.remove(component)
            if not pending:
                return
            if time.monotonic() > deadline:
                details = "; ".join(f"{c}: {self.healthy(c)[1]}" for c in pending)
                raise SandboxError(
                    f"not healthy after {timeout:.0f}s: {details}; logs in {self.logs}"
                )
            time.sleep(0.2)

    def _log_tail(self, component: str, lines: int = 15) -> str:
        try:
            return "\n".join(
                (self.logs / f"{component}.log").read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def _ensure_running(self, components: Sequence[str], echo: Echo) -> list[str]:
        started: list[str] = []
        for component in components:
            record = self.processes.running(component)
            if record is not None:
                echo(f"{component}: already running (pid {record.pid})")
                continue
            record = self.processes.start(
                component, self.argv(component), self.logs / f"{component}.log", cwd=self.dir
            )
            echo(f"{component}: started (pid {record.pid})")
            started.append(component)
        return started

    # -- lifecycle ------------------------------------------------------------------------

    def up(
        self,
        pools: Sequence[AcceleratorPool],
        crd_paths: Iterable[Path] | None = None,
        nodes_without_quota: int = 2,
        echo: Echo | None = None,
        timeout: float = 120.0,
    ) -> float:
        """Start (or keep) every component, install the CRDs and create the pools' nodes.

        Idempotent: running components are kept, CRDs and nodes are applied with server-side
        apply, and sandbox nodes of pools no longer given are deleted. Returns seconds taken.
        """
        say: Echo = echo or (lambda line: None)
        started = time.monotonic()
        self.binaries  # noqa: B018 -- builds or finds the binaries before anything starts
        kwok_changed = self.prepare()
        config_changed = self._write_prometheus_config()
        self._ensure_running(["etcd"], say)
        self._wait_healthy(["etcd"], timeout)
        self._ensure_running(["kube-apiserver"], say)
        self._wait_healthy(["kube-apiserver"], timeout)
        say(f"kube-apiserver: ready at {self.server_url} ({time.monotonic() - started:.1f}s)")
        rest = ["kube-controller-manager", "kube-scheduler", "kwok", "prometheus"]
        if kwok_changed and self.processes.stop("kwok"):
            say("kwok: configuration changed, restarting")
        if self.processes.running("kwok") is None:
            self._release_node_leases()
        newly = self._ensure_running(rest, say)
        if config_changed and "prometheus" not in newly:
            self.reload_prometheus()
        self._wait_healthy(rest, timeout)
        from infleet.sandbox import kube  # the kubernetes client is slow to import

        api = kube.client_for(self.kubeconfig)
        crds = kube.read_crds(crd_paths if crd_paths is not None else [default_crd_dir()])
        kube.apply_crds(api, crds, timeout)
        say(f"CRDs: {len(crds)} established")
        manifests = all_nodes(pools, nodes_without_quota)
        t_nodes = time.monotonic()
        created, updated = kube.apply_nodes(api, manifests)
        removed = kube.delete_stale_nodes(api, {m["metadata"]["name"] for m in manifests})
        applied = time.monotonic() - t_nodes
        kube.wait_nodes_ready(api, [m["metadata"]["name"] for m in manifests], timeout)
        say(
            f"nodes: {len(manifests)} Ready for {len(pools)} pools "
            f"({created} created, {updated} updated, {removed} removed;"
            f" {applied:.1f}s to apply, {time.monotonic() - t_nodes:.1f}s to Ready)"
        )
        self.start_engine(say)
        elapsed = time.monotonic() - started
        say(f"sandbox up in {elapsed:.1f}s; state in {self.dir}")
        return elapsed

    def start_engine(self, echo: Echo | None = None) -> None:
        """Start the simulated engines (infleet.sandbox.engine) unless they run already."""
        argv = [sys.executable, "-m", "infleet.sandbox.engine", f"--dir={self.dir}"]
        say: Echo = echo or (lambda line: None)
        if self.processes.running(ENGINE) is not None:
            say(f"{ENGINE}: already running")
            return
        record = self.processes.start(ENGINE, argv, self.logs / f"{ENGINE}.log", cwd=self.dir)
        say(f"{ENGINE}: started (pid {record.pid})")

    def stop_component(self, component: str) -> bool:
        """Stop one component (e.g. Prometheus, to test a metrics outage); True when it ran."""
        return self.processes.stop(component)

    def start_component(self, component: str, timeout: float = 60.0) -> None:
        """Start one stopped component again with its recorded ports and data."""
        if component == ENGINE:
            self.start_engine()
            return
        if component == "kwok" and self.processes.running("kwok") is None:
            self._release_node_leases()
        self._ensure_running([component], lambda line: None)
        self._wait_healthy([component], timeout)

    def _release_node_leases(self) -> None:
        """Before kwok starts: drop the leases an earlier kwok process still holds."""
        from infleet.sandbox import kube  # the kubernetes client is slow to import

        kube.release_fake_node_leases(kube.client_for(self.kubeconfig))

    def reload_prometheus(self) -> None:
        """Ask Prometheus to re-read its configuration file."""
        request = urllib.request.Request(f"{self.prometheus_url}/-/reload", method="POST")
        try:
            with _NO_PROXY.open(request, timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise SandboxError(f"prometheus reload failed: {exc}") from exc

    def register_scrape_target(
        self, job: str, name: str, targets: Sequence[str], labels: dict[str, str] | None = None
    ) -> Path:
        """Make Prometheus scrape `targets` (host:port on loopback) under `job`."""
        return prometheus.register_targets(self.targets_dir, job, name, targets, labels)

    def status(self) -> list[ComponentStatus]:
        """Each component's PID and health."""
        report: list[ComponentStatus] = []
        for component in COMPONENTS:
            record = self.processes.running(component)
            if record is None:
                report.append(ComponentStatus(component, None, False, "not running"))
                continue
            ok, detail = self.healthy(component)
            rss = rss_bytes(record.pid)
            memory = f", {rss / 2**20:.0f} MiB" if rss else ""
            report.append(
                ComponentStatus(
                    component,
                    record.pid,
                    ok,
                    ("healthy" if ok else f"unhealthy: {detail}") + memory,
                )
            )
        return report

    def rss(self, component: str) -> int | None:
        """Resident memory in bytes of a running component."""
        record = self.processes.running(component)
        return rss_bytes(record.pid) if record else None

    def down(self, wipe: bool = False, echo: Echo | None = None) -> None:
        """Stop every recorded process (in reverse start order); `wipe` deletes the state."""
        say: Echo = echo or (lambda line: None)
        names = [c for c in reversed(COMPONENTS) if c in self.processes.names()]
        names += [n for n in self.processes.names() if n not in COMPONENTS]
        for name in names:
            if self.processes.stop(name):
                say(f"{name}: stopped")
        if wipe and self.dir.exists():
            shutil.rmtree(self.dir)
            say(f"removed {self.dir}")

    def env_lines(self) -> list[str]:
        """Shell lines that point kubectl, helm and infleet at this sandbox."""
        return [
            f"export KUBECONFIG={self.kubeconfig}",
            f"export INFLEET_PROMETHEUS_URL={self.prometheus_url}",
            f'export PATH="{self.binaries.directory}:$PATH"',
        ]


def echo_stderr(line: str) -> None:
    """Progress printer used by the CLI."""
    print(line, file=sys.stderr, flush=True)
