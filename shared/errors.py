"""The exceptions mnp raises, one tree so callers can catch at the right depth:

MnpError
├── ConfigError          a configuration (CNI config, daemon flags) that cannot be used
├── NetnsGone            the pod's network namespace no longer exists (the pod is gone: log and drop)
├── NetnsUnusable        the path exists, or cannot be checked, but is no network namespace this process can use
│   └── NetnsInvisible   the path is missing, but so is its directory from this process's view: it cannot tell
├── StateError           the node-local state dir cannot be read or written
└── shared.nft.errors.NftError   nft refused a transaction (NotFoundError, ExistsError, BusyError)
"""

from __future__ import annotations


class MnpError(Exception):
    """Base of every error mnp raises on purpose."""


class ConfigError(MnpError):
    """A configuration that cannot be used; the message names every problem."""


class NetnsGone(MnpError):
    """The network namespace path does not exist (any more): ENOENT, or a plain file left where a namespace was
    mounted. Only this means "the pod is gone"."""


class NetnsUnusable(MnpError):
    """The path is there, or cannot be checked, but is no network namespace this process may enter: permission
    denied (EACCES), another kind of namespace (`/proc/self/ns/mnt`), a directory, FIFO or device. Never read as
    "gone" — nothing is removed because of it; it is reported and nothing is done in that path."""


class NetnsInvisible(NetnsUnusable):
    """The path is missing (ENOENT) and so is its directory, from this process's mount view (mnpd or mnpctl in a
    container without the host's netns directory mounted): nothing can be told about the namespace. Raised only
    where asked for (shared.netns.netns_path_error, gone_needs_visible_dir)."""


class StateError(MnpError):
    """The state dir or one of its entries cannot be written or read."""
