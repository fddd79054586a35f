"""The exceptions mnp raises, one tree so callers can catch at the right depth:

MnpError
├── ConfigError          a configuration (CNI config, daemon flags) that cannot be used
├── NetnsGone            the pod's network namespace no longer exists (the pod is gone: log and drop)
│   └── NotANetns        the path exists but is no network namespace (a bad entry, not a gone pod: reported)
├── StateError           the node-local state dir cannot be read or written
└── shared.nft.errors.NftError   nft refused a transaction (NotFoundError, ExistsError, BusyError)
"""

from __future__ import annotations


class MnpError(Exception):
    """Base of every error mnp raises on purpose."""


class ConfigError(MnpError):
    """A configuration that cannot be used; the message names every problem."""


class NetnsGone(MnpError):
    """The network namespace path does not exist (any more)."""


class NotANetns(NetnsGone):
    """The path exists but is not a network namespace: nothing can be programmed there, and nothing is gone."""


class StateError(MnpError):
    """The state dir or one of its entries cannot be written or read."""
