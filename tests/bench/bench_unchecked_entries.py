"""What state entries whose netns path cannot be checked cost each sync of mnpd (docs/benchmarks.md, "State
entries whose netns cannot be checked").

Whoever can write the state dir can leave entries naming paths that cannot be checked (a symlink loop here;
EACCES alike) and pods no one knows: they stay pending and reported (`mnp_state_entry_problems{kind=
"netns_unchecked"}`). The controller checks such a path again on a per-entry schedule (daemon/controller.py,
`_pin_identity`: 1 s doubling to 64 s); before, on every sync. This times, in this process, incremental syncs of
the unit tests' controller harness (FakeNft; tests/unit/test_daemon_controller.py) — a policy change every
0.2 s of its fake clock, the runner's minimum interval — with N such entries in a tmpfs directory under /run,
with the schedule and with the old behaviour (the schedule's delays set to 0: every sync checks every entry).

    python -m tests.bench.bench_unchecked_entries [--entries 5000] [-n 50]

Prints the best, the median and the worst of n syncs, in ms (and the same without such entries).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from daemon import controller
from shared.state import StateEntry
from tests.unit.test_daemon_builders import entry, from_pods, policy, put
from tests.unit.test_daemon_controller import Harness

__test__ = False


def syncs(directory: Path, entries: int, rounds: int) -> list[float]:
    h = Harness()
    put(h.store)
    planted = []
    for i in range(entries):
        path = directory / f"mnpb-loop-{i}"
        path.symlink_to(path)
        base = json.loads(entry(f"c-planted-{i}", f"nobody-{i}").to_json())
        planted.append(StateEntry.from_json(json.dumps({**base, "netns": str(path)})))
    h.attach(*planted)
    h.ready()
    h.sync()
    out = []
    for i in range(rounds):
        h.clock.advance(0.2)
        put(h.store, policy("p", ingress=[from_pods({"n": str(i)})]))
        started = time.perf_counter()
        h.sync()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("-n", type=int, default=50)
    args = parser.parse_args()
    schedule = (controller.IDENTITY_RECHECK_FIRST, controller.IDENTITY_RECHECK_MAX)
    runs = [
        ("no such entries", 0, schedule),
        (f"{args.entries} entries, checked on a schedule", args.entries, schedule),
        (f"{args.entries} entries, checked on every sync (before)", args.entries, (0.0, 0.0)),
    ]
    for label, entries, delays in runs:
        controller.IDENTITY_RECHECK_FIRST, controller.IDENTITY_RECHECK_MAX = delays
        directory = Path(tempfile.mkdtemp(prefix="mnpb-unchecked-", dir="/run"))
        try:
            times = syncs(directory, entries, args.n)
        finally:
            shutil.rmtree(directory)
        print(f"{label}: best {min(times) * 1000:.1f} ms, median {statistics.median(times) * 1000:.1f} ms, "
              f"worst {max(times) * 1000:.1f} ms")  # fmt: skip
    controller.IDENTITY_RECHECK_FIRST, controller.IDENTITY_RECHECK_MAX = schedule


if __name__ == "__main__":
    main()
