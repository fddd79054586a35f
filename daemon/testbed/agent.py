"""The test bed's agent: servers, probes and the `Hammer`, run in a child process inside a target netns.

`python -m daemon.testbed.agent NETNS_PATH MODE JSON` enters NETNS_PATH (empty: stay) with `setns(2)` before it
creates any thread — setns changes only the calling thread's namespace and new threads inherit the creator's —
then runs one of three modes:

* `serve` — TCP accept / UDP echo listeners; prints `READY [[proto, port] …]`, then one `CONN {…}` line per
  connection; answers `MNP-OK <label> <nonce>`. Lives as long as its stdin is open (also when the parent dies),
  or, with `linger`, until killed.
* `probe` — every probe at once, a thread each; prints one JSON list of `{outcome, detail, responder, elapsed}`.
* `hammer` — attempts every target every `interval` seconds until stdin closes; one `ATTEMPT {…}` line each, with
  CLOCK_MONOTONIC times the parent can compare.

Only the standard library, so that it starts fast; daemon/testbed/netns.py drives it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

CLONE_NEWNET = 0x40000000
Outcome = tuple[str, str, str | None]  # (outcome, detail, responder)


def enter(path: str) -> None:
    if not path:
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
    finally:
        os.close(fd)


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def unmapped(ip: str) -> str:
    return ip[7:] if ip.startswith("::ffff:") else ip


_out_lock = threading.Lock()


def emit(*parts: str) -> None:
    # A lingering server outlives its parent: a closed pipe must not stop it from answering.
    with _out_lock:
        try:
            sys.stdout.write(" ".join(parts) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass


def bind(proto: str, host: str, port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    if host == "":
        s = socket.socket(socket.AF_INET6, kind)
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            return s
        except OSError:
            s.close()
            host = "0.0.0.0"
    s = socket.socket(family(host), kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    return s


def _connection_line(proto: str, addr: Any, port: int, nonce: str) -> str:
    return json.dumps({"proto": proto, "peer": unmapped(addr[0]), "peer_port": addr[1], "port": port, "nonce": nonce})


def serve(spec: dict[str, Any]) -> None:
    label = spec["label"]
    socks: list[tuple[str, socket.socket]] = []
    for listener in spec["listeners"]:
        s = bind(listener["proto"], listener.get("host", ""), listener["port"])
        if listener["proto"] == "tcp":
            s.listen(128)
        socks.append((listener["proto"], s))

    def tcp_conn(c: socket.socket, addr: Any, lport: int) -> None:
        try:
            c.settimeout(5)
            buf = b""
            while b"\n" not in buf and len(buf) < 512:
                chunk = c.recv(512)
                if not chunk:
                    break
                buf += chunk
            nonce = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
            emit("CONN", _connection_line("tcp", addr, lport, nonce))
            c.sendall(f"MNP-OK {label} {nonce}\n".encode())
        except OSError:
            pass
        finally:
            c.close()

    def tcp_loop(s: socket.socket) -> None:
        lport = s.getsockname()[1]
        while True:
            c, addr = s.accept()
            threading.Thread(target=tcp_conn, args=(c, addr, lport), daemon=True).start()

    def udp_loop(s: socket.socket) -> None:
        lport = s.getsockname()[1]
        while True:
            data, addr = s.recvfrom(2048)
            nonce = data.decode(errors="replace").strip()
            with contextlib.suppress(OSError):
                s.sendto(f"MNP-OK {label} {nonce}".encode(), addr)
            emit("CONN", _connection_line("udp", addr, lport, nonce))

    for proto, s in socks:
        target = tcp_loop if proto == "tcp" else udp_loop
        threading.Thread(target=target, args=(s,), daemon=True).start()
    emit("READY", json.dumps([[p, s.getsockname()[1]] for p, s in socks]))
    # Live exactly as long as the parent keeps our stdin open (also covers parent death), or, lingering, until
    # killed (the netns is deleted with every process in it).
    while sys.stdin.buffer.read(4096):
        pass
    if spec.get("linger"):
        threading.Event().wait()
    os._exit(0)


def classify(exc: BaseException, connected: bool) -> tuple[str, str]:
    if isinstance(exc, socket.timeout):
        return ("no-reply" if connected else "timeout"), ""
    if isinstance(exc, ConnectionRefusedError):
        return "refused", str(exc)
    if isinstance(exc, PermissionError):
        return "eperm", str(exc)
    if isinstance(exc, ConnectionResetError):
        return "reset", str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable", str(exc)
    return "error", f"{type(exc).__name__}: {exc}"


def parse_reply(text: str, nonce: str) -> tuple[str, str | None]:
    parts = text.strip().split(" ")
    if len(parts) == 3 and parts[0] == "MNP-OK" and parts[2] == nonce:
        return "ok", parts[1]
    return "bad-reply", None


def probe_tcp(p: dict[str, Any], nonce: str) -> Outcome:
    deadline = time.monotonic() + p["timeout"]
    s = socket.socket(family(p["host"]), socket.SOCK_STREAM)
    connected = False
    try:
        if p.get("source"):
            s.bind((p["source"], 0))
        s.settimeout(p["timeout"])
        s.connect((p["host"], p["port"]))
        connected = True
        s.sendall((nonce + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            s.settimeout(remaining)
            chunk = s.recv(512)
            if not chunk:
                break
            buf += chunk
        outcome, who = parse_reply(buf.decode(errors="replace"), nonce)
        return outcome, buf.decode(errors="replace").strip(), who
    except OSError as e:
        o, d = classify(e, connected)
        return o, d, None
    finally:
        s.close()


def probe_udp(p: dict[str, Any], nonce: str) -> Outcome:
    deadline = time.monotonic() + p["timeout"]
    interval = max(p["timeout"] / 4.0, 0.05)
    s = socket.socket(family(p["host"]), socket.SOCK_DGRAM)
    try:
        if p.get("source"):
            s.bind((p["source"], 0))
        s.connect((p["host"], p["port"]))
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout", "", None
            if now >= next_send:
                s.send(nonce.encode())
                next_send = now + interval
            s.settimeout(max(min(next_send, deadline) - now, 0.001))
            try:
                data = s.recv(2048)
            except TimeoutError:
                continue
            outcome, who = parse_reply(data.decode(errors="replace"), nonce)
            if outcome == "ok":
                return outcome, data.decode(errors="replace"), who
    except OSError as e:
        o, d = classify(e, False)
        return o, d, None
    finally:
        s.close()


def attempt(p: dict[str, Any]) -> tuple[Outcome, float, float]:
    """One probe with a fresh nonce: its outcome and its CLOCK_MONOTONIC start and end."""
    nonce = os.urandom(6).hex()
    t0 = time.monotonic()
    fn = probe_tcp if p["proto"] == "tcp" else probe_udp
    try:
        result = fn(p, nonce)
    except Exception as e:  # reported as the probe's outcome, never lost
        result = "error", f"{type(e).__name__}: {e}", None
    return result, t0, time.monotonic()


def probe(probes: list[dict[str, Any]]) -> None:
    results: list[dict[str, Any] | None] = [None] * len(probes)

    def one(i: int, p: dict[str, Any]) -> None:
        (outcome, detail, who), t0, t1 = attempt(p)
        results[i] = {"outcome": outcome, "detail": detail, "responder": who, "elapsed": t1 - t0}

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(probes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.stdout.write(json.dumps(results))
    sys.stdout.flush()


def hammer(spec: dict[str, Any]) -> None:
    # Attempt every target every `interval` seconds (each attempt in its own thread, at most `inflight` at once
    # per target) until stdin closes; report every attempt with CLOCK_MONOTONIC times the parent can compare.
    stop = threading.Event()

    def report(t: dict[str, Any]) -> None:
        (outcome, _, who), t0, t1 = attempt(t)
        emit("ATTEMPT", json.dumps({"target": t["id"], "t0": t0, "t1": t1, "outcome": outcome, "responder": who}))

    def loop(t: dict[str, Any]) -> None:
        slots = threading.BoundedSemaphore(spec.get("inflight", 16))

        def run(t: dict[str, Any]) -> None:
            try:
                report(t)
            finally:
                slots.release()

        next_at = time.monotonic()
        while not stop.is_set():
            if slots.acquire(timeout=0.05):
                threading.Thread(target=run, args=(t,), daemon=True).start()
            next_at += spec["interval"]
            stop.wait(max(next_at - time.monotonic(), 0))

    for t in spec["targets"]:
        threading.Thread(target=loop, args=(t,), daemon=True).start()
    emit("READY", "[]")
    while sys.stdin.buffer.read(4096):
        pass
    stop.set()
    os._exit(0)


MODES: dict[str, Callable[[Any], None]] = {"serve": serve, "hammer": hammer, "probe": probe}


def main(argv: list[str]) -> None:
    netns, mode, arg = argv
    enter(netns)
    MODES[mode](json.loads(arg))


if __name__ == "__main__":
    main(sys.argv[1:])
