"""The tests' CNI runtime: a re-export of `daemon.testbed.cniruntime` (the lab's libcni-exact conflist runtime).

The runtime is product code because `mnpctl lab` runs real CNI chains with it; the tests import it from here so
that they keep one stable import path. See daemon/testbed/cniruntime.py for what it reproduces of libcni and where it
deliberately differs.
"""

from __future__ import annotations

from daemon.testbed.cniruntime import *  # noqa: F403
from daemon.testbed.cniruntime import __all__ as __all__
