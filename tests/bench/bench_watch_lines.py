"""What splitting a watch stream into events costs when the server cuts it into large chunks (docs/benchmarks.md,
"Watch streams in large chunks").

A real API server flushes a watch stream event by event, but a proxy in between, or a hostile or buggy server,
may send thousands of events in one chunk. daemon.sources.kube.iter_lines reads each byte once; the reader before
(kept here as `before`) re-split the rest of the chunk for every event: quadratic in the chunk. This times both on
N events of 1 KB in one chunk, in this process.

    python -m tests.bench.bench_watch_lines [--events 16000] [-n 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

from daemon.sources.kube import iter_lines

__test__ = False


def before(response: Any) -> Iterator[bytes]:
    """The reader before: `pending.split` per event copies the rest of the chunk each time."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


class OneChunk:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        yield self.data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=16000)
    parser.add_argument("-n", type=int, default=3)
    args = parser.parse_args()
    data = (b"x" * 1000 + b"\n") * args.events
    for label, reader in (("iter_lines", iter_lines), ("before", before)):
        times = []
        for _ in range(args.n):
            started = time.perf_counter()
            count = sum(1 for _ in reader(OneChunk(data)))
            times.append(time.perf_counter() - started)
            assert count == args.events
        print(f"{label}: {args.events} events of 1 KB in one chunk: best {min(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
