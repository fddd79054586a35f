"""mnpd's `/healthz` and `/readyz` as `mnpctl` asks them (short timeout), and what they say with the status file."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from daemon.cli.statusfile import StatusFile

HTTP_TIMEOUT = 1.0
HttpGet = Callable[[str, int, str, float], tuple[int, str]]  # (host, port, path, timeout) → (status, body); OSError


def http_get(host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(4096).decode("utf-8", "replace").strip()
    finally:
        conn.close()


def why_failed(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Endpoint:
    """One GET of a health endpoint: `code` None when nothing answered (`error` says why)."""

    url: str
    code: int | None = None
    body: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == 200

    def describe(self) -> str:
        if self.code is None:
            return f"{self.url}: {self.error}"
        return f"{self.url}: {self.code} {self.body}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "code": self.code, "body": self.body, "error": self.error, "ok": self.ok}


@dataclass(frozen=True)
class DaemonHealth:
    healthz: Endpoint | None  # None: --listen off, not asked
    readyz: Endpoint | None
    status: StatusFile

    @property
    def running(self) -> bool | None:
        """Whether mnpd answers; None when that cannot be told (endpoints off) — then the status file decides."""
        if self.healthz is None:
            return None if self.status.doc is None else not self.status.stale
        return self.healthz.code is not None

    @property
    def healthy(self) -> bool:
        return bool(self.running) and (self.healthz is None or self.healthz.ok) and not self.status.stale

    @property
    def ready(self) -> bool | None:
        if self.readyz is not None and self.readyz.code is not None:
            return self.readyz.ok
        value = self.status.doc.get("ready") if self.status.doc and not self.status.stale else None
        return value if isinstance(value, bool) else None

    def summary(self) -> str:
        """One line: `daemon: running …`, or `daemon: not running / status file stale (…)` when neither the
        endpoints nor a fresh status file show a live mnpd."""
        file_note = f"status file {self.status.describe()}"
        fresh = self.status.doc is not None and not self.status.stale
        if self.healthz is not None and self.healthz.code is None:
            if fresh:
                return f"daemon: health endpoint unreachable ({self.healthz.describe()}), but {file_note}"
            return f"daemon: not running / status file stale ({self.healthz.describe()}; {file_note})"
        if self.healthz is None and not fresh:
            return f"daemon: not running / status file stale (health endpoints not checked; {file_note})"
        words = ["running"]
        if self.healthz is not None and not self.healthz.ok:
            words = [f"running but unhealthy ({self.healthz.describe()})"]
        ready = self.ready
        words.append("ready" if ready else "not ready" if ready is False else "readiness unknown")
        if self.readyz is not None and self.readyz.code is not None and not self.readyz.ok and self.readyz.body:
            words[-1] += f" ({self.readyz.body})"
        return f"daemon: {', '.join(words)}; {file_note}"

    def to_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "healthy": self.healthy,
            "ready": self.ready,
            "summary": self.summary(),
            "healthz": self.healthz.to_json() if self.healthz else None,
            "readyz": self.readyz.to_json() if self.readyz else None,
            "statusFile": self.status.to_json(),
        }
