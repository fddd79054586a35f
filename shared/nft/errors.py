"""Why nft refused a transaction, as exceptions both the real backend and `FakeNft` raise.

    shared.errors.MnpError
    └── NftError             nft refused the whole transaction; nothing of it was applied. `message` is nft's text.
        ├── NotFoundError    ENOENT: a table, chain, set, map or element that does not exist — deleted, flushed,
        │                    added to, or referenced by a rule (`@set`, `vmap @map`, `jump chain`)
        ├── ExistsError      EEXIST: an element key already present with another value, an interval overlapping
        │                    an existing one, a set or map declared again with another type
        └── BusyError        EBUSY: deleting a set, map or chain still in use — referenced by a rule or a
                             verdict map element, or a chain that still has rules

`shared.nft.transaction.TransactionError` is deliberately *not* an `NftError`: it is a programming error found
while building a transaction, before anything reached nft.

nft does not call setlocale(), so its messages are English whatever the environment, and `error_from_stderr` can
classify them by text (as knftables does).
"""

from __future__ import annotations

from shared.errors import MnpError


class NftError(MnpError):
    """nft refused a transaction; `message` is its explanation (for the real nft: its stderr)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(NftError):
    """ENOENT: an object the transaction deletes, flushes, fills or references does not exist."""


class ExistsError(NftError):
    """EEXIST: an element clashes with an existing one, or an object is redeclared with another type."""


class BusyError(NftError):
    """EBUSY: an object the transaction deletes is still referenced, or a deleted chain still has rules."""


class TableTooLarge(NftError):
    """The table holds more objects (chains, rules, sets, set elements) than a listing may: libnftables would
    hold every one in memory at once. mnp writes far fewer; someone with NET_ADMIN in the pod added them."""


# nft's own wording, kernel errno texts first. The interval messages come from nft's userspace overlap check,
# which runs before the kernel would answer EEXIST.
_MESSAGES: tuple[tuple[str, type[NftError]], ...] = (
    ("No such file or directory", NotFoundError),
    ("element does not exist", NotFoundError),
    ("File exists", ExistsError),
    ("interval overlaps with an existing one", ExistsError),
    ("conflicting intervals specified", ExistsError),
    ("Device or resource busy", BusyError),
)


def error_from_stderr(stderr: str) -> NftError:
    """The exception for a failed `nft -f`, chosen from the first error line of its stderr."""
    first = next((line for line in stderr.splitlines() if "Error:" in line), stderr)
    for text, cls in _MESSAGES:
        if text in first:
            return cls(stderr.strip())
    return NftError(stderr.strip())
