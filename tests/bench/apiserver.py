"""FakeKubeAPI (tests/support/fakeapi.py) in a process of its own, driven over a pipe.

The daemon under test must not share an interpreter (a GIL, a heap) with the API server that feeds it: its CPU,
its RSS and its latencies would be the sum of both. So the benchmarks start the fake API server here, in a child
process, and drive it with one JSON line per command on its stdin; it answers one JSON line per command on its
stdout, with `t` = `time.monotonic()` right after the write was committed (CLOCK_MONOTONIC: comparable across
processes of one machine).

    python -m tests.bench.apiserver '{"history": 50000, "bookmark": 60}'
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__test__ = False

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------- server side


def serve(options: dict[str, Any]) -> int:
    from tests.bench import cluster as synth
    from tests.support.fakeapi import FakeKubeAPI

    api = FakeKubeAPI(
        history_size=int(options.get("history", 50_000)),
        bookmark_interval=float(options.get("bookmark", 60.0)),
        namespaces=(),
    ).start()
    out = sys.stdout
    remote: list[tuple[str, str]] = []

    def reply(**kw: Any) -> None:
        out.write(json.dumps(kw) + "\n")
        out.flush()

    reply(url=api.url, pid=os.getpid())
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            op = cmd.pop("op")
            try:
                if op == "build":
                    c = synth.build(cmd["pods"], cmd["policies"], cmd.get("local", 110), cmd.get("seed", 1))
                    for obj in c.objects():
                        api.create(obj)
                    remote = [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in c.pods]
                    reply(ok=True, rv=api.resource_version, objects=len(c.objects()), t=time.monotonic())
                elif op == "create":
                    obj = api.create(cmd["obj"])
                    reply(
                        ok=True, uid=obj["metadata"]["uid"], rv=obj["metadata"]["resourceVersion"], t=time.monotonic()
                    )
                elif op == "update":
                    obj = api.update(cmd["obj"])
                    reply(ok=True, rv=obj["metadata"]["resourceVersion"], t=time.monotonic())
                elif op == "patch":
                    obj = api.patch(cmd["kind"], cmd.get("namespace"), cmd["name"], cmd["patch"])
                    reply(ok=True, rv=obj["metadata"]["resourceVersion"], t=time.monotonic())
                elif op == "delete":
                    api.delete(cmd["kind"], cmd.get("namespace"), cmd["name"])
                    reply(ok=True, t=time.monotonic())
                elif op == "churn":
                    reply(ok=True, **churn(api, remote, cmd))
                elif op == "compact":
                    # Every open watch is cut and the history forgotten past one more write, all under the API's
                    # lock: a watch that resumes from its last resourceVersion gets 410 Expired and relists.
                    with api._cond:
                        dropped = api.drop_watches()
                        api.patch(
                            "namespace",
                            None,
                            "default",
                            {"metadata": {"annotations": {"mnpb/compacted": str(time.time())}}},
                        )
                        api.compact()
                    reply(ok=True, dropped=dropped, t=time.monotonic())
                elif op == "watches":
                    reply(ok=True, count=api.watch_count())
                elif op == "rv":
                    reply(ok=True, rv=api.resource_version)
                elif op == "stop":
                    reply(ok=True)
                    break
                else:
                    reply(ok=False, error=f"unknown op {op!r}")
            except Exception as exc:
                reply(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        api.stop()
    return 0


def churn(api: Any, remote: list[tuple[str, str]], cmd: dict[str, Any]) -> dict[str, Any]:
    """For `seconds`: label changes of random remote pods at `rate` per second (paced from the start: no catch-up
    bursts beyond the schedule) — a `rev` label that no policy selects on, so every event is a real change of the
    parsed pod that the daemon must take in and check, though most change no rule — and, every `marker_every`
    seconds on the same watch stream, a marker: the pod `marker_pod` gets label `mk: <n mod markers>` (n counting
    from `marker_start`). Returns the commit times of the markers."""
    rng = random.Random(cmd.get("seed", 7))
    rate, seconds = float(cmd.get("rate", 0.0)), float(cmd["seconds"])
    every, n = float(cmd.get("marker_every", 0.5)), int(cmd.get("marker_start", 0))
    modulo = int(cmd.get("markers", 10))
    ns_m, name_m = cmd["marker_pod"].split("/")
    start = time.monotonic()
    end = start + seconds
    events, first, last = 0, None, start
    next_event, next_marker = start, start
    markers: list[tuple[int, float]] = []
    while True:
        now = time.monotonic()
        if now >= end and next_marker > end:
            break
        if next_marker <= now:
            api.patch("pod", ns_m, name_m, {"metadata": {"labels": {"mk": str(n % modulo)}}})
            markers.append((n, time.monotonic()))
            n += 1
            next_marker += every
            continue
        if rate > 0 and next_event <= now and now < end:
            ns, name = remote[rng.randrange(len(remote))]
            api.patch("pod", ns, name, {"metadata": {"labels": {"rev": f"r{cmd.get('tag', 0)}-{events}"}}})
            last = time.monotonic()
            first = first or last
            events += 1
            next_event = start + events / rate
            continue
        wake = min(next_marker, next_event if rate > 0 and next_event < end else next_marker)
        time.sleep(max(0.0, min(wake, end) - time.monotonic()) if wake > time.monotonic() else 0)
    span = last - first if first is not None and events > 1 else 0.0
    return {"events": events, "achieved": events / span if span else 0.0, "markers": markers}


# ----------------------------------------------------------------------------------------------- client side


class ApiProcess:
    """The fake API server in a child process. `call(op, **args)` sends one command and returns its answer."""

    def __init__(self, *, history: int = 50_000, bookmark: float = 60.0) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.apiserver", json.dumps({"history": history, "bookmark": bookmark})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self._lock = threading.Lock()
        hello = self._read(30.0)
        self.url: str = hello["url"]
        self.pid: int = hello["pid"]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError(f"fake API process did not answer within {timeout:g} s (rc {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(result[0])
        return answer

    def call(self, op: str, timeout: float = 120.0, **args: Any) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
            answer = self._read(timeout)
        if not answer.get("ok"):
            raise RuntimeError(f"fake API {op}: {answer.get('error')}")
        return answer

    def kubeconfig(self, path: Path) -> Path:
        from tests.support.fakeapi import write_kubeconfig

        return write_kubeconfig(path, self.url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.call("stop", timeout=10.0)
            with contextlib.suppress(Exception):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]

    def __enter__(self) -> ApiProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(serve(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
