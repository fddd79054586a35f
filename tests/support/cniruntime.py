"""The tests' CNI runtime: a re-export of `daemon.lab.cniruntime` (the lab's libcni-exact conflist runtime).

The runtime is product code because `mnpctl lab` runs real CNI chains with it; the tests import it from here so
that they keep one stable import path. See daemon/lab/cniruntime.py for what it reproduces of libcni and where it
deliberately differs.
"""

from __future__ import annotations

from daemon.lab.cniruntime import *  # noqa: F403
from daemon.lab.cniruntime import __all__ as __all__
