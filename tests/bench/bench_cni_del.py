"""What CNI DEL's table decision costs with many state entries (docs/benchmarks.md, "CNI DEL reads the whole state
dir").

DEL removes a pod's `inet mnp` table only when no other interface — of any container — is recorded in that netns
(cni/plugin.py), so it reads every entry of the state dir. This times, in this process, on a tmpfs state dir
under /run (like /run/mnp/state on a node) holding N entries:

* `StateStore.entries()` — the bounded, regular-file-only read of every entry (shared/state.py);
* the same files with plain `open` + `json.loads`, the floor of any reader;
* the whole DEL decision (`cni.plugin._others`) for the last interface of a pod;
* when one interface of several goes, reading the table's chain and set names from its `nft -j` listing through
  the one reader (`cni.plugin._listed_names` → shared.nft.trace.NftListing; a two-interface table, nft 1.0.6's
  output canned in tests/unit/test_ctl_inspect.py), and what importing that reader adds to a fresh interpreter
  that already imported what DEL imports (a new `python` process each round, with and without the reader).

    python -m tests.bench.bench_cni_del [--entries 200] [-n 30]

Prints the best and the median of n rounds, in ms.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from cni.log import Log
from cni.plugin import _others
from shared.nft.trace import NftListing
from shared.state import StateEntry, StateStore
from tests.unit.test_ctl_inspect import TABLE_JSON_ITEMS

__test__ = False


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return min(samples), statistics.median(samples)


DEL_IMPORTS = "import cni.plugin, shared.nft.libnft, shared.nft.render, shared.nft.errors, shared.nft.transaction"


def interpreter(code: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", code], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("-n", type=int, default=30)
    args = parser.parse_args(argv)
    root = tempfile.mkdtemp(prefix="mnpt-bench-del-", dir="/run" if os.access("/run", os.W_OK) else None)
    try:
        store = StateStore(os.path.join(root, "state"))
        for i in range(args.entries):
            store.write(StateEntry(f"c{i:05d}", "net1", f"/run/netns/mnpt-none-{i}", "ns", f"p{i}", "u", "net-a"))
        paths = [os.path.join(store.directory, n) for n in sorted(os.listdir(store.directory)) if n.endswith(".json")]

        def plain() -> None:
            for path in paths:
                with open(path, "rb") as fh:
                    json.loads(fh.read())

        log = Log(io.StringIO())
        listing = json.dumps({"nftables": TABLE_JSON_ITEMS})
        rows = {
            "StateStore.entries()": timed(store.entries, args.n),
            "plain open + json.loads": timed(plain, args.n),
            "DEL decision (_others)": timed(lambda: _others(store, "c00001", "net1", "/run/netns/x", log), args.n),
            "listed names (NftListing)": timed(lambda: NftListing.parse(listing).names(), args.n),
            "python + DEL's imports": timed(interpreter(DEL_IMPORTS), args.n),
            "  + the reader": timed(interpreter(f"{DEL_IMPORTS}, shared.nft.trace"), args.n),
        }
        print(f"{args.entries} entries, {args.n} rounds, load average {os.getloadavg()[0]:.1f}")
        for name, (best, median) in rows.items():
            print(f"  {name:26} best {best:6.2f} ms   median {median:6.2f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
