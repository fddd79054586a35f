"""The tests' CNI runtime: a re-export of `daemon.lab.cniruntime` (the lab's libcni-exact conflist runtime).

The runtime is product code because `mnpctl lab` runs real CNI chains with it; the tests import it from here so
that they keep one stable import path. See daemon/lab/cniruntime.py for what it reproduces of libcni and where it
deliberately differs.
"""

from __future__ import annotations

from daemon.lab.cniruntime import *  # noqa: F403
from daemon.lab.cniruntime import (
    CACHE_KIND,
    NEWEST_VERSION,
    Attachment,
    CachedAttachment,
    CniError,
    CniFailure,
    CniResult,
    CniRuntime,
    Conflist,
    Interface,
    IPConfig,
    NetworkList,
    PluginCall,
    PodRef,
    VersionInfo,
    build_plugin_config,
    load_conflist,
    version_ge,
)

__all__ = [
    "CACHE_KIND",
    "NEWEST_VERSION",
    "Attachment",
    "CachedAttachment",
    "CniError",
    "CniFailure",
    "CniResult",
    "CniRuntime",
    "Conflist",
    "IPConfig",
    "Interface",
    "NetworkList",
    "PluginCall",
    "PodRef",
    "VersionInfo",
    "build_plugin_config",
    "load_conflist",
    "version_ge",
]
