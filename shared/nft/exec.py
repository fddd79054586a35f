"""The real nftables backend: pipes a Transaction's text to `nft -f -`, inside a pod netns when given one.

The command runner is a seam (knftables' `execer`): tests pass a scripted runner and assert the exact argv and
stdin, so this code path is covered without nft; production uses `subprocess_runner`. nft's error text is English
whatever the locale (it never calls setlocale), so its first line is mapped to typed errors.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from shared.netns import netns_command
from shared.nft.errors import NftError, error_from_stderr
from shared.nft.transaction import Transaction

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shared.nft.fake import TableView

Runner = Callable[[Sequence[str], str], tuple[int, str, str]]
TIMEOUT_S = 30.0


def subprocess_runner(argv: Sequence[str], stdin: str) -> tuple[int, str, str]:
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        return 127, "", f"{argv[0]}: not found ({exc.strerror})"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv)}: timed out after {TIMEOUT_S:.0f} s"
    return done.returncode, done.stdout, done.stderr


def wrap_error(stderr: str, rc: int) -> NftError:
    text = stderr.strip() or f"nft exited with {rc}"
    if rc in (126, 127):
        # nft (or nsenter) could not be executed at all: "failed to execute nft: No such file or directory" must
        # not read as NotFoundError, which callers take for "the table or netns is not there".
        return NftError(text)
    return error_from_stderr(text)


class RealNft:
    """nft in one network namespace (`netns` path; None = this process's own)."""

    def __init__(self, netns: str | None = None, runner: Runner = subprocess_runner, nft: str = "nft") -> None:
        self.netns = netns
        self.runner = runner
        self.nft = nft

    def _call(self, args: Sequence[str], stdin: str = "") -> str:
        rc, out, err = self.runner(netns_command(self.netns, [self.nft, *args]), stdin)
        if rc != 0:
            raise wrap_error(err, rc)
        return out

    def run(self, tx: Transaction) -> None:
        """Apply `tx` atomically: all of it or, on any error, none of it."""
        if tx.error is not None:
            raise tx.error
        self._call(["-f", "-"], str(tx))

    apply_delta = run  # the command takes an element delta as any other transaction

    def check(self, tx: Transaction) -> None:
        """Ask nft (and the kernel) whether `tx` would apply, changing nothing."""
        if tx.error is not None:
            raise tx.error
        self._call(["--check", "-f", "-"], str(tx))

    def list_table_json(self, family: str = "inet", table: str = "mnp") -> str:
        """`nft -j list table`: raises NotFoundError when the table does not exist."""
        return self._call(["-j", "list", "table", family, table])

    def list_table(self, family: str = "inet", table: str = "mnp") -> TableView:
        """The live table as one TableView (the one reader: shared.nft.trace.table_from_nft_json)."""
        from shared.nft.trace import table_from_nft_json

        return table_from_nft_json(self.list_table_json(family, table), family, table)

    def close(self) -> None:
        """Nothing to let go: every call is its own process."""
