"""Log lines of the CNI plugin: key=value text on stderr or in the configured `logFile`, never on stdout.

stdout is the CNI protocol (the result or the error JSON), so nothing else may ever reach it. The stdlib
`logging` package is not used: one plugin call writes a handful of lines, and every millisecond of start-up is
paid on every pod ADD (see docs/benchmarks.md).
"""

from __future__ import annotations

import time

from shared import cjson

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def _quote(value: object) -> str:
    """A value as it appears in a line: bare when plainly printable, else a JSON string — every control character
    and undecodable byte (a surrogate-escaped CNI_IFNAME) escaped, so no value can break or forge a line."""
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return cjson.dumps(text)


class Log:
    """`log.info("closed interface", netns=…)` → `2026-05-09T07:35:25.123Z level=info cmd=ADD … msg="…" netns=…`."""

    def __init__(
        self,
        stream: TextIO,
        level: str = "info",
        clock: Callable[[], float] = time.time,
        **context: object,
    ) -> None:
        self.stream = stream
        self.threshold = LEVELS.get(level, LEVELS["info"])
        self.clock = clock
        self.context = {k: v for k, v in context.items() if v not in (None, "")}

    def bind(self, **context: object) -> None:
        """Add fields to every later line."""
        self.context.update({k: v for k, v in context.items() if v not in (None, "")})

    def _emit(self, level: str, msg: str, fields: dict[str, object]) -> None:
        if LEVELS[level] < self.threshold:
            return
        now = self.clock()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        parts = [stamp, f"level={level}"]
        parts += [f"{k}={_quote(v)}" for k, v in self.context.items()]
        parts.append(f"msg={_quote(msg)}")
        parts += [f"{k}={_quote(v)}" for k, v in fields.items()]
        try:
            self.stream.write(" ".join(parts) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a log that cannot be written must never change the outcome of the CNI call

    def debug(self, msg: str, **fields: object) -> None:
        self._emit("debug", msg, fields)

    def info(self, msg: str, **fields: object) -> None:
        self._emit("info", msg, fields)

    def warning(self, msg: str, **fields: object) -> None:
        self._emit("warning", msg, fields)

    def error(self, msg: str, **fields: object) -> None:
        self._emit("error", msg, fields)
