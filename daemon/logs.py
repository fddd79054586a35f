"""Structured logs: one line per event, with the pod, interface, policy or netns it concerns as fields.

Modules log with the standard `logging` API and put their key/value context under `extra={"mnp": {...}}`
(`fields(pod=..., ifname=...)` builds that). The two formats render the same record:

    text:  2026-05-09T07:35:25.123Z INFO daemon.controller programmed pod=ns1/web-0 ifname=net1 netns=/run/netns/x
    json:  {"time": "...", "level": "info", "logger": "daemon.controller", "msg": "programmed", "pod": "ns1/web-0", ...}

Logs go to stderr (a DaemonSet's container log). Whole nft transactions are logged only at debug level.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

FIELD_ORDER = ("pod", "ifname", "policy", "netns", "container", "network", "source", "kind")


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: `log.info("programmed", extra=fields(pod=key, ifname="net1"))`."""
    return {"mnp": {k: v for k, v in values.items() if v is not None and v != ""}}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    raw = getattr(record, "mnp", None)
    if not isinstance(raw, dict):
        return {}
    ordered = {k: raw[k] for k in FIELD_ORDER if k in raw}
    ordered.update({k: v for k, v in raw.items() if k not in ordered})
    return ordered


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=\n')) else text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={_quote(v)}" for k, v in _record_fields(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        if extra:
            line += " " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _record_fields(record).items():
            doc.setdefault(key, value if isinstance(value, int | float | bool) else str(value))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Configure the root logger once for the process (mnpd's main only; tests use caplog)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # the official client logs every request at debug; keep its noise out unless asked for at debug
    logging.getLogger("urllib3").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    logging.getLogger("kubernetes").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
