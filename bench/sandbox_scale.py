"""Scale check for `infleet sandbox up`: 10 pools, 2,000 kwok nodes, ready within 120 s.

Starts a fresh sandbox in a temporary directory, times `up` (control plane start, CRDs, node
creation and every node Ready), prints the figure and the API server's resident memory, then
stops and wipes the sandbox. Usage: python bench/sandbox_scale.py [--pools 10] [--nodes 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from infleet.api.pool import AcceleratorPool
from infleet.sandbox.cluster import Sandbox

ACCELERATORS = [
    ("nvidia-h100-80gb", "nvidia.com/gpu", 8),
    ("nvidia-a100-80gb", "nvidia.com/gpu", 8),
    ("nvidia-l4", "nvidia.com/gpu", 4),
    ("amd-mi300x", "amd.com/gpu", 8),
    ("google-tpu-v5e", "google.com/tpu", 4),
    ("cerebras-cs3", "cerebras.net/wse", 1),
]
LIMIT_SECONDS = 120.0


def make_pools(count: int, nodes: int) -> list[AcceleratorPool]:
    """`count` pools sharing `nodes` nodes as evenly as possible."""
    pools = []
    for index in range(count):
        accelerator, resource, per_node = ACCELERATORS[index % len(ACCELERATORS)]
        share = nodes // count + (1 if index < nodes % count else 0)
        spec = {
            "acceleratorType": accelerator,
            "resourceName": resource,
            "acceleratorsPerNode": per_node,
            "nodeSelector": {"bench.infleet.io/pool": f"p{index}"},
            "costPerAcceleratorHour": 1.0,
            "maxAccelerators": share * per_node,
        }
        if index % 3 == 1:
            spec["tolerations"] = [{"key": "spot", "value": "true", "effect": "NoSchedule"}]
        pools.append(
            AcceleratorPool.model_validate(
                {"kind": "AcceleratorPool", "metadata": {"name": f"bench-{index}"}, "spec": spec}
            )
        )
    return pools


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=2000)
    args = parser.parse_args()
    pools = make_pools(args.pools, args.nodes)
    with tempfile.TemporaryDirectory(prefix="infleet-scale-") as tmp:
        box = Sandbox(Path(tmp) / "sandbox")
        box.binaries  # noqa: B018 -- build or find the binaries outside the timed part
        try:
            started = time.monotonic()
            box.up(pools, echo=lambda line: print(f"  {line}", flush=True), timeout=300)
            seconds = time.monotonic() - started
            rss = box.rss("kube-apiserver") or 0
            etcd = box.rss("etcd") or 0
            again = box.up(pools, timeout=300)
            print(
                f"sandbox up with {args.pools} pools / {args.nodes} nodes: {seconds:.1f} s "
                f"(limit {LIMIT_SECONDS:.0f} s); kube-apiserver RSS {rss / 2**20:.0f} MiB, "
                f"etcd RSS {etcd / 2**20:.0f} MiB; a second up (all running): {again:.1f} s"
            )
        finally:
            box.down(wipe=True)
    return 0 if seconds <= LIMIT_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
