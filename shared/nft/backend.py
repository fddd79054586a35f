"""The one nft backend interface, its netlink implementation, and the one per-interface slice of a listed table.

Every backend of one network namespace does four things (`NftBackend`):

* `run(tx)` — a full transaction (rules, chains, sets, elements), atomically;
* `apply_delta(tx)` — a delta (`render_update`): element additions and deletions, and the port groups they
  need or leave, atomically;
* `list_table()` — the live table as one `TableView` (shared.nft.fake), the structure the tracer walks;
* `close()` — let the namespace go.

Implementations: `FakeNft` (in memory, shared.nft.fake), `RealNft` (the nft command under nsenter,
shared.nft.exec), `NetnsNft` (libnftables in-process, shared.nft.libnft), and `NetlinkNft` here — the daemon's:
element deltas as one nfnetlink batch on a socket kept per pod netns (shared.nft.netlink: no table re-read, no
text), full transactions and listings through a libnftables context from a bounded `ContextPool`. Which path a
change takes: an element delta → netlink; a delta that adds or removes a port group, the first programming of
an interface, a refused delta's fallback, a repair, a change of chain rules → libnftables.

The backends' listings are read by one reader, shared.nft.trace's `NftListing` / `table_from_nft_json` (`nft -j`
→ TableView, with rule handles and counters; also `mnpctl`'s LiveTable and the plugin's CHECK and DEL), and
`interface_view` is the one definition of what belongs to one interface in it (the daemon's repair, the lab,
the plugin's CHECK), `dispatch_elements` the one reading of the dispatch maps (the slice, CHECK, `mnpctl`'s
LiveTable).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Protocol

from shared.errors import NetnsGone
from shared.nft import netlink
from shared.nft.errors import TableTooLarge
from shared.nft.fake import TableView
from shared.nft.objects import Element
from shared.nft.render import (
    chain_name,
    element_key_type,
    legacy_map_name,
    map_name,
    reachable,
    render_remove_interface,
)
from shared.nft.transaction import Transaction
from shared.rules import EGRESS, INGRESS

# The most chains, rules, sets and set elements a pod's table may hold to be listed (the tamper check): libnftables
# holds all of a listing in memory, about 1 KB an element with its reading (docs/benchmarks.md, "Listing a
# table"). mnp's own tables hold far fewer; a larger one is replaced whole, unread (daemon/apply.py `repair`).
MAX_LISTED_OBJECTS = 100_000

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shared.nft.libnft import NetnsNft
    from shared.nft.pool import ContextPool


class NftBackend(Protocol):
    def run(self, tx: Transaction) -> None: ...

    def apply_delta(self, tx: Transaction) -> None: ...

    def list_table(self, family: str = "inet", table: str = "mnp") -> TableView: ...

    def close(self) -> None: ...


InterfaceSlice = tuple[tuple[object, ...], ...]


def interface_view(view: TableView, ifname: str) -> InterfaceSlice:
    """What one interface owns in a table, per direction: the verdict-map keys that jump to its chain, its
    chain's rules (text and comment, without counters; None: no chain) and what the chain reaches — its peer
    maps, the port groups' chains their elements jump to and the port sets (`render.reachable`: name and
    content, None for a missing one). Two tables enforce the same on the interface when their slices are equal.
    Used by the daemon's repair (shared.nft.backend's users), the lab (daemon/lab/enforcer.py) and the CNI
    plugin's CHECK."""
    parts = []
    for direction in (INGRESS, EGRESS):
        chain = chain_name(direction, ifname)
        jumps = tuple(
            sorted(name for _, name, verdict in dispatch_elements(view, direction) if verdict == f"jump {chain}")
        )
        found = view.chains.get(chain)
        rules = None if found is None else tuple((r.text, r.comment) for r in found.rules)
        reached = tuple((name, content) for _, name, content in reachable(view, chain) if name != chain)
        parts.append((direction, jumps, rules, reached))
    return tuple(parts)


def dispatch_elements(view: TableView, direction: str) -> list[tuple[str, str, str]]:
    """A direction's dispatch elements as (map, interface name, verdict): those of the index map by the name they
    record (their key, an index, is listed as a name of the lister's netns), and those of the name map of tables
    written before index dispatch by their key. The one reading of dispatch elements: the per-interface slice,
    the plugin's CHECK and `mnpctl`."""
    out = []
    for name in (map_name(direction), legacy_map_name(direction)):
        vmap = view.sets.get(name)
        for e in vmap.elements if vmap else ():
            key = e.key[1:-1] if len(e.key) > 1 and e.key[0] == e.key[-1] == '"' else e.key
            out.append((name, e.comment or key, e.value or ""))
    return out


def remove_interface(nft: NftBackend, ifname: str, ifindex: int) -> None:
    """Remove everything of one interface from the table of `nft` — its port groups, whose names depend on its
    rules, found by listing the table first (`render_remove_interface`); idempotent. A table that cannot be read
    (rules mnp does not write) or is too large to be listed still loses the interface's chains, maps and dispatch
    elements."""
    from shared.nft.errors import NotFoundError
    from shared.nft.trace import TraceError

    try:
        view = nft.list_table()
        names = [*view.chains, *view.sets]
    except (NotFoundError, TraceError, TableTooLarge):
        names = []
    nft.run(render_remove_interface(ifname, ifindex, names))


def is_guarded(part: InterfaceSlice) -> bool:
    """Whether the interface is in any direction's verdict map."""
    return any(jumps for _, jumps, _, _ in part)


class NetlinkNft:
    """nft of one pod netns for the daemon: a NETLINK_NETFILTER socket opened inside it and kept for element
    deltas; full transactions and listings through the libnftables context `pool` keeps for the path (opened
    on demand, closed when least recently used). `identity` is the namespace the path named when opened; every
    call refuses (NetnsGone) a path that names another one now."""

    def __init__(
        self, netns: str, pool: ContextPool, adopted: tuple[socket.socket, tuple[int, int]] | None = None
    ) -> None:
        self.netns = netns
        self.pool = pool
        self.socket = netlink.NfnetlinkSocket(netns, adopted)  # adopted: the CNI plugin's (daemon/keeper.py)
        self.identity = self.socket.identity

    def run(self, tx: Transaction) -> None:
        if tx.error is not None:
            raise tx.error
        with self._context() as nft:
            nft.run(tx)

    def apply_delta(self, tx: Transaction) -> None:
        """Element additions and deletions as one nfnetlink batch: all applied, or (a typed NftError) none. A
        delta that also adds or removes port groups (chains, rules, sets: `render_update`) goes through
        libnftables, as one transaction too."""
        if tx.error is not None:
            raise tx.error
        if not all(isinstance(op.obj, Element) for op in tx.operations):
            self.run(tx)
            return
        self.socket.batch(
            lambda seq: netlink.element_batch(tx, element_key_type, seq), f"element delta in {self.netns}"
        )

    def list_table(self, family: str = "inet", table: str = "mnp") -> TableView:
        """The live table (NetnsNft.list_table) — unless it holds more than MAX_LISTED_OBJECTS objects, counted
        over the kept socket first: TableTooLarge. A pod with NET_ADMIN can fill the table; libnftables would hold
        all of it in memory at once, and mnpd's memory limit would end mnpd, for every pod of the node."""
        size = netlink.table_objects(self.socket, family, table, MAX_LISTED_OBJECTS)
        if size > MAX_LISTED_OBJECTS:
            raise TableTooLarge(
                f"table {family} {table} in {self.netns} holds more than {MAX_LISTED_OBJECTS} chains, rules, sets "
                "and elements: not listed"
            )
        with self._context() as nft:
            return nft.list_table(family, table)

    @contextlib.contextmanager
    def _context(self) -> Iterator[NetnsNft]:
        """The pool's libnftables context for the path, refused unless it is in the socket's namespace."""
        self.socket.check()
        with self.pool.use(self.netns) as nft:
            if getattr(nft, "identity", self.identity) != self.identity:
                self.pool.discard(self.netns)
                raise NetnsGone(f"{self.netns} names another network namespace now")
            yield nft

    def close(self) -> None:
        self.pool.discard(self.netns)
        self.socket.close()
