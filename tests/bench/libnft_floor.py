"""Diagnostic for part 2: what the same transactions cost without a process per transaction.

mnpd applies each interface's transaction with `nsenter --net=PATH nft -f -` (two execs, a fresh libnftables
context, the ruleset cache, then the kernel's commit). This child process instead enters each pod netns in turn
with setns(2) — it is single-threaded and exits afterwards, so nothing else can end up in the wrong netns — and
runs the very same transaction text through libnftables (`nft_run_cmd_from_buffer`, via ctypes) with a context
created inside that netns: the floor an in-process actuator would have. Also timed per netns: a no-op
transaction (`add table inet mnp`), the floor of any round trip, and a one-element delta (add and delete one
element of the ingress set), what a peer change would cost if it were sent as a delta instead of a replacement.
Then the same full transaction and delta again through a context kept per netns from the first pass (warm): what
a long-lived actuator holding one libnftables context per pod netns would pay.

    python -m tests.bench.libnft_floor WORK.json   (a list of [netns path, transaction text])
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__test__ = False

CLONE_NEWNET = 0x40000000
ROOT = Path(__file__).resolve().parents[2]


def child(path: str) -> int:
    work = json.loads(Path(path).read_text())
    libc = ctypes.CDLL(None, use_errno=True)
    nft = ctypes.CDLL("libnftables.so.1")
    nft.nft_ctx_new.restype = ctypes.c_void_p
    nft.nft_ctx_new.argtypes = [ctypes.c_uint32]
    nft.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    nft.nft_ctx_free.argtypes = [ctypes.c_void_p]
    nft.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    nft.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    one = "inet mnp ingress_net1_v4 { 192.0.2.1 . tcp . 9 }"
    delta_text = f"add element {one}\ndelete element {one}\n"
    times: dict[str, list[float]] = {k: [] for k in ("full", "noop", "delta", "warm_full", "warm_delta")}
    contexts: dict[str, int] = {}
    failures = 0

    def timed(kind: str, ctx: int | None, data: str) -> None:
        nonlocal failures
        t0 = time.perf_counter()
        fresh = ctx is None
        if fresh:
            ctx = nft.nft_ctx_new(0)
            nft.nft_ctx_buffer_error(ctx)
            nft.nft_ctx_buffer_output(ctx)
        rc = nft.nft_run_cmd_from_buffer(ctx, data.encode())
        if fresh:
            nft.nft_ctx_free(ctx)
        times[kind].append(time.perf_counter() - t0)
        failures += rc != 0

    for rnd in range(2):
        for netns, text in work:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            if rnd == 0:  # a fresh context per transaction, as a fresh `nft` process has
                timed("full", None, text)
                timed("noop", None, "add table inet mnp\n")
                timed("delta", None, delta_text)
                ctx = nft.nft_ctx_new(0)  # kept: its netlink socket belongs to this netns
                nft.nft_ctx_buffer_error(ctx)
                nft.nft_ctx_buffer_output(ctx)
                nft.nft_run_cmd_from_buffer(ctx, b"list table inet mnp\n")
                contexts[netns] = ctx
            else:  # the same context, warm, as a long-lived actuator would hold per pod netns
                timed("warm_full", contexts[netns], text)
                timed("warm_delta", contexts[netns], delta_text)
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    result: dict[str, Any] = {f"{k}_s": sum(v) for k, v in times.items()}
    result.update(n=len(work), failures=failures)
    print(json.dumps(result))
    return 0


def measure(work: list[tuple[str, str]], scratch: Path) -> dict[str, Any]:
    path = scratch / "libnft-work.json"
    path.write_text(json.dumps(work))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.bench.libnft_floor", str(path)],
            capture_output=True, text=True, timeout=300, check=True, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )  # fmt: skip
    finally:
        path.unlink(missing_ok=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


if __name__ == "__main__":
    sys.exit(child(sys.argv[1]))
