"""Operator at scale on the sandbox: 10 pools, 2,000 kwok nodes, N ModelDeployments.

For N = 100 (baseline) and N = 1,000 it reports, in one run:
* seconds from applying the models to every model `Ready` (target <= 60 s at 1,000);
* the operator's peak RSS (VmHWM; target <= 300 MiB);
* the operator's CPU over 30 s once converged (target < 5 % of a core);
and the 1,000 / 100 ratios.

Usage: python bench/operator_scale.py [--models 1000] [--baseline 100] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

TIMEOUT = 900
"""Seconds to wait for every model Ready before giving up (and still measuring RSS, CPU)."""
POOLS = 10
NODES_PER_POOL = 200
PER_NODE = 8
TYPES = ["nvidia-h100-80gb", "nvidia-a100-80gb", "nvidia-l4", "amd-mi300x", "cerebras-cs3"]


def pools() -> list[dict[str, Any]]:
    out = []
    for i in range(POOLS):
        out.append(
            {
                "apiVersion": "infleet.io/v1alpha1",
                "kind": "AcceleratorPool",
                "metadata": {"name": f"bench-{i}"},
                "spec": {
                    "acceleratorType": TYPES[i % len(TYPES)],
                    "acceleratorsPerNode": PER_NODE,
                    "nodeSelector": {"infleet.io/bench-pool": str(i)},
                    "costPerAcceleratorHour": 1.0 + 0.25 * i,
                    "maxAccelerators": NODES_PER_POOL * PER_NODE,
                },
            }
        )
    return out


def models(count: int, namespace: str) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        a, b = TYPES[i % len(TYPES)], TYPES[(i + 2) % len(TYPES)]
        out.append(
            {
                "apiVersion": "infleet.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": f"m{i}", "namespace": namespace},
                "spec": {
                    "model": f"org/m{i}",
                    "slo": {"timeToFirstTokenMs": 800},
                    "traffic": {"requestsPerSecond": 2 + i % 7},
                    "variants": [
                        {"acceleratorType": a, "maxRequestsPerSecond": 4},
                        {"acceleratorType": b, "maxRequestsPerSecond": 3},
                    ],
                    "template": {"spec": {"containers": [{"name": "server", "image": "x:1"}]}},
                },
            }
        )
    return out


def kubectl(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        ["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, check=True
    ).stdout


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def api_requests(env: dict[str, str]) -> dict[tuple[str, str], float]:
    """The API server's own request counters, summed by (verb, resource)."""
    totals: dict[tuple[str, str], float] = {}
    for line in kubectl(env, "get", "--raw", "/metrics").splitlines():
        match = REQUEST_LINE.match(line)
        if match:
            labels = dict(LABEL.findall(match["labels"]))
            key = (labels.get("verb", "?"), labels.get("resource", "?"))
            totals[key] = totals.get(key, 0.0) + float(match["value"])
    return totals


def print_request_delta(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], top: int = 14
) -> None:
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    rows = sorted(((n, k) for k, n in delta.items() if n >= 1), reverse=True)[:top]
    print("  API requests during the run (all clients), by verb and resource:")
    for n, (verb, resource) in rows:
        print(f"    {n:>8.0f}  {verb:<7} {resource}")


CYCLE_LINE = re.compile(r"fleet cycle (?P<s>[\d.]+)s \(planner (?P<p>[\d.]+)s\): (?P<rest>.*)")


def print_cycles(log: Path, top: int = 12) -> None:
    """The operator's own account of its cycles: seconds, planner seconds and writes."""
    lines = [m for m in map(CYCLE_LINE.search, log.read_text().splitlines()) if m]
    print(f"  operator cycles: {len(lines)}; the first {top}:")
    for m in lines[:top]:
        print(f"    {float(m['s']):6.2f}s planner {float(m['p']):5.2f}s  {m['rest']}")


def ready_count(env: dict[str, str], namespace: str) -> int:
    out = kubectl(
        env, "get", "mdep", "-n", namespace, "-o",
        'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
    )  # fmt: skip
    return out.split().count("True")


CREATORS = 8
"""`kubectl create` processes at once. One process POSTs one object at a time (1,000 models
took 108 s that way, ~0.1 s a round trip on the loaded API server); a GitOps tool applies many
objects concurrently. Client-side `kubectl apply` also reads each object first (241 s)."""


def create_all(env: dict[str, str], objects: list[dict[str, Any]]) -> None:
    """Create ``objects`` with CREATORS concurrent `kubectl create` processes."""
    chunks = [objects[i::CREATORS] for i in range(CREATORS)]
    procs = [
        subprocess.Popen(
            ["kubectl", "create", "-f", "-"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for chunk in chunks
        if chunk
    ]
    for proc, chunk in zip(procs, chunks, strict=False):
        assert proc.stdin is not None
        proc.stdin.write(yaml.safe_dump_all(chunk))
        proc.stdin.close()
    failed = [proc.stderr.read() for proc in procs if proc.wait() != 0 and proc.stderr]
    if failed:
        raise SystemExit("kubectl create failed:\n" + "\n".join(failed))


def run(count: int, env: dict[str, str], work: Path) -> dict[str, float]:
    namespace = f"bench-{count}-{os.getpid() % 10000}"
    kubectl(env, "create", "namespace", namespace)
    log = (work / f"operator-{count}.log").open("w")
    op = subprocess.Popen(
        [sys.executable, "-m", "infleet.cli", "run", "-n", namespace, "--metrics-port", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(3)
        requests_before = api_requests(env)
        start = time.monotonic()
        create_all(env, models(count, namespace))
        applied = time.monotonic() - start
        print(f"{count} models: created ({CREATORS} creators) in {applied:.1f} s", flush=True)
        while (ready := ready_count(env, namespace)) < count:
            if time.monotonic() - start > TIMEOUT:
                print(f"{count} models: only {ready} Ready after {TIMEOUT} s", flush=True)
                converge = float("inf")
                break
            time.sleep(2)
        else:
            converge = time.monotonic() - start
        busy = proc_cpu_seconds(op.pid)
        time.sleep(5)
        cpu0, t0 = proc_cpu_seconds(op.pid), time.monotonic()
        time.sleep(30)
        idle = (proc_cpu_seconds(op.pid) - cpu0) / (time.monotonic() - t0)
        result = {
            "models": count,
            "seconds": converge,
            "rss": peak_rss_mib(op.pid),
            "idle": idle,
            "cpu": busy,
        }
        print_request_delta(requests_before, api_requests(env))
        log.flush()
        print_cycles(work / f"operator-{count}.log")
        print(f"{count} models: {result}", flush=True)
        return result
    finally:
        op.send_signal(signal.SIGINT)
        try:
            op.wait(timeout=30)
        except subprocess.TimeoutExpired:
            op.kill()
            op.wait()
        kubectl(env, "delete", "namespace", namespace, "--wait=false")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None, help="sandbox state directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="infleet-bench-"))
    pool_file = work / "pools.yaml"
    pool_file.write_text(yaml.safe_dump_all(pools()))
    up = [sys.executable, "-m", "infleet.cli", "sandbox", "up", "--pools", str(pool_file)]
    if args.dir:
        up += ["--dir", str(args.dir)]
    last = subprocess.run(up, check=True, capture_output=True, text=True).stdout.strip()
    kubeconfig = last.splitlines()[-1].split("=", 1)[1]
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    # Nothing here reads live metrics: the simulated engines (one process serving every Running
    # pod; ~60 % of a core with thousands of pods) and the Prometheus scraping them would only
    # compete with the control plane and the operator for the two cores.
    for component in ("engine", "prometheus"):
        stop = [sys.executable, "-m", "infleet.cli", "sandbox", "stop", component]
        subprocess.run([*stop, *(["--dir", str(args.dir)] if args.dir else [])], check=True)
    kubectl(env, "apply", "-f", str(pool_file))
    results = [run(args.baseline, env, work), run(args.models, env, work)]
    print(
        f"{'models':>7} {'apply->Ready s':>15} {'operator CPU s':>15} {'peak RSS MiB':>13} "
        f"{'idle CPU':>9}"
    )
    for r in results:
        print(
            f"{r['models']:>7} {r['seconds']:>15.1f} {r['cpu']:>15.1f} {r['rss']:>13.0f} "
            f"{r['idle']:>8.1%}"
        )
    base, big = results
    print(
        f"ratio {big['models'] / base['models']:.0f}x models: "
        f"time {big['seconds'] / base['seconds']:.1f}x, RSS {big['rss'] / base['rss']:.2f}x; "
        f"targets: <=60 s {'met' if big['seconds'] <= 60 else 'MISSED'}, "
        f"<=300 MiB {'met' if big['rss'] <= 300 else 'MISSED'}, "
        f"<5% idle {'met' if big['idle'] < 0.05 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
