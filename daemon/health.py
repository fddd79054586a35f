"""`/metrics`, `/healthz` and `/readyz` on one small HTTP server (the DaemonSet's probes and Prometheus' scrape).

* `/healthz` — liveness: 200 while the process is alive and its sync loop is not stuck (the loop thread is
  running, has woken recently, and no single sync has been running for longer than the stuck threshold);
  otherwise 503, and the kubelet restarts the pod, which is safe (rules stay in place, see docs/daemon.md).
* `/readyz` — readiness: 200 once every source has completed its first list and a sync has run since; 503
  with the sources still missing before that.
* `/metrics` — the Prometheus text format of daemon.metrics.

The bodies are one line of text saying why. Standard library only; one thread per connection, with bounds a
port reachable from the network needs: at most `MAX_CONNECTIONS` at once (more are closed at once, and counted),
`READ_TIMEOUT_S` for each read from a client and `CONNECTION_DEADLINE_S` for a whole connection (a client sending
one byte at a time is cut off), and every failure logged through the daemon's logger in one line, never as a raw
traceback on stderr. The default address is loopback; the DaemonSet binds the node's own address ($(HOST_IP)),
which may be IPv6 (daemon.config.parse_listen reads `--listen`; a host with a colon binds an AF_INET6 socket).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from daemon.logs import fields
from daemon.metrics import Metrics

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]


class HealthServer:
    def __init__(self, address: tuple[str, int], metrics: Metrics, healthy: Check, ready: Check) -> None:
        self.metrics = metrics
        self.healthy = healthy
        self.ready = ready
        self._server = _Server(address, _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mnpd-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("serving /metrics, /healthz and /readyz", extra=fields(source=f"{self._server.server_address}"))
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


MAX_CONNECTIONS = 16
READ_TIMEOUT_S = 5.0
CONNECTION_DEADLINE_S = 15.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: HealthServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        self.refused = 0  # connections closed at once because MAX_CONNECTIONS were open
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # http.server.HTTPServer.server_bind also resolves the bound address's name (socket.getfqdn, a reverse
        # DNS lookup) for a SERVER_NAME mnpd never uses: with the node's resolver down, mnpd's start waited on it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                log.warning(
                    "HTTP: %d connections open, closing new ones (%d so far)",
                    MAX_CONNECTIONS,
                    self.refused,
                    extra=fields(source=_peer(client_address)),
                )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # The whole connection has a deadline: a per-read timeout alone lets a client that sends one byte every
        # few seconds hold a slot for ever.
        cut = threading.Timer(CONNECTION_DEADLINE_S, _cut, (request,))
        cut.daemon = True
        cut.start()
        try:
            super().process_request_thread(request, client_address)
        finally:
            cut.cancel()
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        quiet = isinstance(error, ConnectionError | TimeoutError | OSError)
        (log.debug if quiet else log.warning)(
            "HTTP request failed: %s: %s", type(error).__name__, error, extra=fields(source=_peer(client_address))
        )


def _peer(client_address: Any) -> str:
    return str(client_address[0]) if isinstance(client_address, tuple) and client_address else "?"


def _cut(request: socket.socket) -> None:
    with contextlib.suppress(OSError):
        request.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    timeout = READ_TIMEOUT_S  # StreamRequestHandler: the socket timeout of every read and write

    def log_message(self, format: str, *args: Any) -> None:
        # http.server's own notes (a timed-out or malformed request): one debug line, not stderr
        log.debug("HTTP: " + format, *args, extra=fields(source=_peer(self.client_address)))

    def do_GET(self) -> None:
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, owner.metrics.exposition(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/livez"):
            self._check(owner.healthy)
        elif path == "/readyz":
            self._check(owner.ready)
        else:
            self._answer(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _check(self, check: Check) -> None:
        try:
            ok, why = check()
        except Exception as exc:  # a broken check is a failed check, not a dead server
            ok, why = False, f"check failed: {exc}"
        self._answer(200 if ok else 503, (why or ("ok" if ok else "not ok")).encode() + b"\n")

    def _answer(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
