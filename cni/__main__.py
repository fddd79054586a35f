"""`mnp` / `python -m cni`: the CNI plugin executable (everything is in cni/skel.py and cni/plugin.py)."""

import os
import sys

from cni.skel import Dispatcher


def main() -> None:
    if getattr(sys, "frozen", False):
        # PyInstaller's bootloader re-executes itself with its bundle first in LD_LIBRARY_PATH (and _PYI_* set);
        # nsenter and nft, started from here, must run with the host's libraries and environment.
        original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
        for key in [k for k in os.environ if k.startswith("_PYI_") or k == "LD_LIBRARY_PATH"]:
            del os.environ[key]
        if original is not None:
            os.environ["LD_LIBRARY_PATH"] = original
    rc = Dispatcher(os.environ, sys.stdin.buffer.read(), sys.stdout, sys.stderr).run()
    # Exit without the interpreter's finalization (module teardown, garbage collection): CPU of every call spent
    # on nothing (docs/benchmarks.md, CNI ADD). Nothing is lost: the dispatcher has written and flushed its
    # answer and closed its log file, and no thread is left (in_netns joins its own).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
