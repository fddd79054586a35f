"""What one API object of many labels costs mnpd (docs/benchmarks.md, "Objects of many labels").

Any tenant can write tens of thousands of labels on its own pods (etcd's 1.5 MiB holds 60,000), and every node's
mnpd keeps every pod with a secondary network. This converts N such pods (daemon.sources.convert, what a
reflector does per event), each with its own label values, and reports the memory they retain (tracemalloc) and
the time per conversion.

    python -m tests.bench.bench_many_labels [--labels 60000] [-n 5]
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

from daemon.sources.convert import convert
from tests.unit.test_daemon_builders import pod

__test__ = False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", type=int, default=60000)
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    objects = []
    for i in range(args.n):
        obj = pod(f"many-{i}", nets=[("default/net-a", "net1", "10.10.0.9")])
        obj["metadata"]["labels"] = {f"k{j:06d}": f"v{j:06d}-{i}" for j in range(args.labels)}
        objects.append(obj)
    size = len(json.dumps(objects[0]))
    tracemalloc.start()
    started = time.perf_counter()
    kept = [convert("Pod", obj) for obj in objects]
    elapsed = (time.perf_counter() - started) / args.n
    retained = tracemalloc.get_traced_memory()[0] / args.n
    tracemalloc.stop()
    print(f"{args.labels} labels ({size / 1024:.0f} KB of JSON): {retained / 1024:.0f} KB retained and "
          f"{elapsed * 1000:.1f} ms per pod ({len(kept)} pods)")  # fmt: skip


if __name__ == "__main__":
    main()
