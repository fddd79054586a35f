"""What one large API object costs mnpd (docs/benchmarks.md, "Large objects from the API").

Any tenant can write tens of thousands of labels, or 256 KiB of network-status, on its own pods (etcd's 1.5 MiB
holds 60,000 labels) and create MultiNetworkPolicies of thousands of rules or networks in its namespace, and
every node's mnpd keeps every pod that has a secondary network and every policy. This converts N such objects
(daemon.sources.convert, what a reflector does per event), each different, and reports the memory they retain
(tracemalloc) and the time per conversion.

    python -m tests.bench.bench_large_objects [--labels 60000] [--rules 12000] [--addresses 16000]
        [--networks 40000] [-n 3]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from typing import Any

from daemon.sources.convert import API_KINDS, convert
from shared.model import NETWORK_STATUS, POLICY_FOR
from tests.unit.test_daemon_builders import pod, policy

__test__ = False


def measure(label: str, objects: list[dict[str, Any]]) -> None:
    kind = API_KINDS[objects[0]["kind"]]
    size = len(json.dumps(objects[0]))
    tracemalloc.start()
    started = time.perf_counter()
    kept = [convert(kind, obj) for obj in objects]
    elapsed = (time.perf_counter() - started) / len(objects)
    retained = tracemalloc.get_traced_memory()[0] / len(objects)
    tracemalloc.stop()
    print(f"{label} ({size / 1024:.0f} KB of JSON): {retained / 1024:.0f} KB retained and {elapsed * 1000:.1f} ms "
          f"per object ({len(kept)} objects)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=60000)
    parser.add_argument("--rules", type=int, default=12000)
    parser.add_argument("--addresses", type=int, default=16000)
    parser.add_argument("--networks", type=int, default=40000)
    parser.add_argument("-n", type=int, default=3)
    args = parser.parse_args()
    pods = []
    for i in range(args.n):
        obj = pod(f"many-{i}", nets=[("default/net-a", "net1", "10.10.0.9")])
        obj["metadata"]["labels"] = {f"k{j:06d}": f"v{j:06d}-{i}" for j in range(args.labels)}
        pods.append(obj)
    measure(f"a pod of {args.labels} labels", pods)
    policies = []
    for i in range(args.n):
        rules = [
            {"from": [{"podSelector": {"matchLabels": {f"k{j}": f"v{j}-{i}"}}}], "ports": [{"port": 1 + j % 60000}]}
            for j in range(args.rules)
        ]
        policies.append(policy(f"large-{i}", ingress=rules))
    measure(f"a policy of {args.rules} rules", policies)
    statuses = []
    for i in range(args.n):
        obj = pod(f"addresses-{i}", nets=[("default/net-a", "net1", "10.10.0.9")])
        entries = json.loads(obj["metadata"]["annotations"][NETWORK_STATUS])
        entries[1]["ips"] = [f"10.{i}.{j // 256}.{j % 256}" for j in range(args.addresses)]
        obj["metadata"]["annotations"][NETWORK_STATUS] = json.dumps(entries)
        statuses.append(obj)
    measure(f"a pod whose network-status holds {args.addresses} addresses", statuses)
    named = []
    for i in range(args.n):
        obj = policy(f"networks-{i}")
        obj["metadata"]["annotations"][POLICY_FOR] = ",".join(f"N{j}-{i}" for j in range(args.networks))
        named.append(obj)
    measure(f"a policy whose policy-for names {args.networks} invalid networks", named)


if __name__ == "__main__":
    main()
