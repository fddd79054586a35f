"""The manifests source with a large directory: the first load, a reload after one file changed, and peak RSS.

    .venv/bin/python -m tests.bench.bench_manifests [--mb 5] [--changes 5]

Writes a directory of about `--mb` megabytes of realistic manifests (300 files of 10 Pods with network-status
annotations, 30 files of MultiNetworkPolicies) to a temporary directory, then in a fresh process: one
`ManifestsSource.reload()` (the start), and `--changes` times: rewrite one policy file, reload. Prints one JSON
line: sizes, the first load and the median reload after a change in seconds, and the process's peak RSS in MB
(ru_maxrss, so it includes the interpreter). Runs against whatever tree is on sys.path first, so the same script
measures an older checkout (copy it there). Needs no root. Results: docs/benchmarks.md, "Manifests directory".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

__test__ = False

NETWORK = "default/mnpb-net"


def pod(i: int) -> dict[str, Any]:
    status = [
        {"name": "cbr0", "interface": "eth0", "ips": [f"172.16.{i // 250}.{i % 250 + 1}"], "default": True},
        {"name": NETWORK, "interface": "net1", "ips": [f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"]},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"pod-{i}",
            "namespace": f"ns-{i % 20}",
            "uid": f"00000000-0000-0000-0000-{i:012d}",
            "labels": {"app": f"app-{i % 50}", "tier": ("web", "db", "cache")[i % 3], "team": f"team-{i % 7}"},
            "annotations": {
                "k8s.v1.cni.cncf.io/networks": "mnpb-net@net1",
                "k8s.v1.cni.cncf.io/network-status": json.dumps(status, indent=2),
                "description": "a pod of the manifests benchmark " * 8,
            },
        },
        "spec": {
            "nodeName": f"node-{i % 10}",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.example/app:1.0",
                    "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                }
            ],
        },
        "status": {"phase": "Running"},
    }


def policy(i: int, version: int = 0) -> dict[str, Any]:
    rules = [
        {
            "from": [
                {"podSelector": {"matchLabels": {"app": f"app-{(i + k) % 50}"}}},
                {"namespaceSelector": {"matchLabels": {"team": f"team-{k}"}}},
                {"ipBlock": {"cidr": f"192.0.{k}.0/24", "except": [f"192.0.{k}.128/25"]}},
            ],
            "ports": [{"protocol": "TCP", "port": 8080 + version}, {"protocol": "UDP", "port": 5353}],
        }
        for k in range(4)
    ]
    return {
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {
            "name": f"policy-{i}",
            "namespace": f"ns-{i % 20}",
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": NETWORK},
        },
        "spec": {"podSelector": {"matchLabels": {"app": f"app-{i % 50}"}}, "ingress": rules},
    }


def write_dir(directory: Path, megabytes: float) -> int:
    """Files of pods until the directory holds `megabytes`, then 30 policy files; returns its size in bytes."""
    size, i, f = 0, 0, 0
    while size < megabytes * 1_000_000:
        text = yaml.safe_dump_all([pod(i + k) for k in range(10)])
        (directory / f"pods-{f:04d}.yaml").write_text(text)
        size += len(text)
        i, f = i + 10, f + 1
    for p in range(30):
        text = yaml.safe_dump_all([policy(p * 5 + k) for k in range(5)])
        (directory / f"policies-{p:02d}.yaml").write_text(text)
        size += len(text)
    return size


def measure(directory: Path, changes: int) -> dict[str, Any]:
    from daemon.clock import SystemClock
    from daemon.sources.manifests import ManifestsSource
    from daemon.store import Store

    source = ManifestsSource(Store(SystemClock()), str(directory))
    started = time.perf_counter()
    source.reload()
    first = time.perf_counter() - started
    after_change = []
    for n in range(changes):
        target = directory / "policies-00.yaml"
        tmp = directory / ".policies-00.yaml.tmp"
        tmp.write_text(yaml.safe_dump_all([policy(k, version=n + 1) for k in range(5)]))
        os.replace(tmp, target)
        started = time.perf_counter()
        source.reload()
        after_change.append(time.perf_counter() - started)
    loader = getattr(__import__("shared.manifests", fromlist=["LOADER"]), "LOADER", None)
    return {
        "first_load_s": round(first, 3),
        "reload_after_one_change_s": round(statistics.median(after_change), 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loader": getattr(loader, "__name__", "SafeLoader (pure Python)"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=5.0)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child: measure this directory
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.changes)))
        return 0
    with tempfile.TemporaryDirectory(prefix="mnpb-manifests-") as tmp:
        size = write_dir(Path(tmp), args.mb)
        files = len(list(Path(tmp).iterdir()))
        child = [sys.executable, "-m", "tests.bench.bench_manifests", "--measure", tmp, "--changes", str(args.changes)]
        done = subprocess.run(child, capture_output=True, text=True, check=True, cwd=os.getcwd())
        result = {"files": files, "bytes": size, **json.loads(done.stdout.splitlines()[-1])}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
