"""The one place the daemon changes a pod: render an interface's rules and run them as one nft transaction.

Everything before this point is pure (store → compiler → renderer); this module is the actuator. Its contract:

* One `InterfaceRules` change → one nft transaction (shared.nft.render). When the daemon knows what it last
  programmed on the interface, the transaction is the delta (`render_update`: only the set elements that
  changed); otherwise, or when the delta is refused (the table does not hold what we believed), the full form
  (the skeleton re-asserted, the interface's chains and sets replaced). nft applies a transaction atomically,
  so a failure changes nothing and the pod keeps its previous — never a wider — rule set; the controller retries.
* The real backend (shared.nft.backend.NetlinkNft) keeps one NETLINK_NETFILTER socket per pod netns, opened
  inside it (no thread the daemon keeps changes namespace): element deltas go over it as one nfnetlink batch;
  full transactions and the repair's listing go through a libnftables context from a bounded pool
  (shared.nft.pool.ContextPool). Where libnftables cannot be loaded, `nsenter --net=PATH nft -f -` does all.
  A socket or context keeps its namespace alive, so the controller `release()`s a netns when its last state
  entry goes.
* Before opening a netns the real factory checks that it still exists (`NetnsGone`: the pod is gone, the
  state-dir source will drop its entry) and that it is not the daemon's own namespace (programming the host's
  own table would close the node); the backend then refuses a path that comes to name another namespace.

Tests pass a factory returning `shared.nft.fake.FakeNft` instances instead (one per netns path).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, NamedTuple

from daemon import keeper
from shared.errors import NetnsGone, NetnsUnusable
from shared.netns import check_netns, is_own_netns, netns_identity
from shared.nft import libnft, netlink
from shared.nft.backend import NetlinkNft, NftBackend
from shared.nft.errors import NftError, NotFoundError, TableTooLarge
from shared.nft.exec import RealNft
from shared.nft.objects import Element
from shared.nft.pool import ContextPool
from shared.nft.render import (
    RenderOptions,
    expected_view,
    owned_view,
    referenced_elsewhere,
    remove_groups,
    render_interface,
    render_remove_table,
    render_update,
    unused_groups,
)
from shared.nft.trace import TraceError
from shared.nft.transaction import Transaction, TransactionError
from shared.rules import InterfaceRules

if TYPE_CHECKING:
    from shared.nft.fake import TableView

log = logging.getLogger(__name__)

# Threads programming namespaces at once. The work is mostly the kernel's and libnftables' (no GIL); more
# threads than this gained nothing on the 2-core benchmark machine (docs/benchmarks.md).
WORKERS = 4

NftFactory = Callable[[str], NftBackend]  # netns path → the nft of that namespace


class TamperUnrestored(NftError):
    """The repair found the table tampered with and could neither apply the full form nor replace the table: a
    pod with NET_ADMIN can hold a table of mnp's name with the `owner` flag, which only its own process may change
    or delete. The interface is open until that process goes; the controller reports it failed and retries."""


class Work(NamedTuple):
    """One interface to program: `rules` into `netns`, where this daemon last programmed `previous` (None:
    unknown), the path naming the namespace `identity` ((st_dev, st_ino); None: not checked)."""

    netns: str
    rules: InterfaceRules
    previous: InterfaceRules | None = None
    identity: tuple[int, int] | None = None


class GuardedNft(RealNft):
    """`RealNft` (nsenter nft) in a pod netns, refusing paths that are gone or the daemon's own namespace."""

    def __init__(self, netns: str, nft: str = "nft") -> None:
        super().__init__(netns=netns, nft=nft)

    def _call(self, args: Sequence[str], stdin: str = "") -> str:
        _guard(self.netns)
        return super()._call(args, stdin)


def _guard(netns: str | None) -> None:
    if netns is None:
        raise NftError("refusing to program the daemon's own network namespace")
    check_netns(netns)
    if is_own_netns(netns):
        raise NftError(f"refusing to program {netns}: it is the daemon's own network namespace")


# The libnftables contexts the real backends share: full transactions and listings, a bounded number open.
CONTEXTS = ContextPool()


def real_nft(netns: str) -> NftBackend:
    """Netlink deltas + libnftables in-process when libnftables loads here, else the nft command under nsenter."""
    if not libnft.available():
        return GuardedNft(netns)
    _guard(netns)
    return NetlinkNft(netns, CONTEXTS, keeper.take(netns))  # the plugin's socket, when mnpd's keeper holds one


class Applier:
    """Renders and runs; counts the transactions it ran (successful or not) and how many were deltas.

    The pods of one Deployment usually get equal rules on equally named interfaces, and rendering a direction
    with a thousand peers costs tens of milliseconds, so each direction's rendering is memoised (render.py) and
    the last RENDER_CACHE full transactions are kept (the text depends on the interface name and index and the
    two directions' rules, never on the pod).

    The nft backend of a netns is kept until `release` (for the real one: a netlink socket; the libnftables
    contexts it borrows are bounded by their pool, shared.nft.pool.ContextPool)."""

    RENDER_CACHE = 16  # ≈ 190 KB each with 300 peers (the text and the operations): a node's groups

    def __init__(self, nft_for: NftFactory, options: RenderOptions, workers: int = WORKERS) -> None:
        self.nft_for = nft_for
        self.options = options
        self.workers = workers
        self.transactions = 0
        self.deltas = 0
        self._lock = threading.Lock()  # the counters and the caches, shared by the workers
        self._pool: ThreadPoolExecutor | None = None
        self._rendered: dict[tuple[object, ...], Transaction] = {}
        self._nft: dict[str, NftBackend] = {}

    def apply(
        self,
        netns: str,
        rules: InterfaceRules,
        previous: InterfaceRules | None = None,
        identity: tuple[int, int] | None = None,
    ) -> None:
        """Program `rules` into `netns`, where this daemon last programmed `previous` (None: unknown). With
        `identity`, refuse (NetnsGone) when the path names another namespace now: this interface's rules must
        never land in another pod that got the path (a reused /proc/PID).

        Raises NftError, TransactionError, NetnsGone or NetnsUnusable; then nothing changed."""
        if not netns:
            raise NetnsGone("the state entry has no netns path")
        self._check_identity(netns, identity)
        nft = self._nft_of(netns)
        try:
            delta = render_update(previous, rules, self.options) if previous is not None else None
            if delta is not None and not len(delta):
                return  # the rules differ only in what the table does not show (a pod's name, a provenance)
            if delta is not None:
                self._count(delta=False)
                try:
                    nft.apply_delta(delta)
                    self._count(delta=True)
                    return
                except NftError as exc:  # the table is not what we last programmed: replace it as a whole
                    first = (exc.message.splitlines() or [""])[0]
                    log.warning("delta refused, applying the full transaction: %s", first)
            self._count(delta=False)
            nft.run(self.render(rules))
        except NetnsGone:
            self.release(netns)
            raise

    def _check_identity(self, netns: str, identity: tuple[int, int] | None) -> None:
        """NetnsGone (and the path's nft let go) when `netns` no longer names the namespace `identity`."""
        if identity is not None and netns_identity(netns) != identity:
            self.release(netns)
            raise NetnsGone(f"{netns} names another network namespace than the one this interface was added in")

    def apply_all(self, work: Iterable[Work]) -> list[BaseException | None]:
        """`apply` for each item, in the order `work` yields them; for each, None or the exception it raised (never
        raised here).

        Pipelined: an item is handed to a worker as soon as `work` yields it, so the caller's generator computes
        the next interface's rules while the workers program the previous ones, and the first pod is programmed
        without waiting for the last one's compile. Up to `workers` threads; the interfaces of one namespace are
        programmed in the order given by one thread at a time (they share its socket, context and skeleton).
        What the threads overlap is the kernel's and libnftables' work (no GIL) and the waits on them.

        An element delta for a namespace whose netlink socket is open, and with nothing of it still queued, is
        sent by the calling thread itself (`_inline`): one send → ack of ≈ 0.1 ms, less than handing it over —
        a worker that holds the GIL keeps the caller waiting up to the switch interval (docs/benchmarks.md)."""
        if self.workers <= 1:
            return [self._outcome(item) for item in work]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mnpd-apply")
        pool = self._pool
        items: list[Work] = []
        outcomes: list[BaseException | None] = []
        queued: dict[str, deque[int]] = {}  # netns → its items not yet taken by the thread that drains it
        lock = threading.Lock()

        def drain(netns: str) -> None:
            while True:
                with lock:
                    queue = queued[netns]
                    if not queue:
                        del queued[netns]  # the next item of this netns starts a new drain
                        return
                    i = queue.popleft()
                    item = items[i]
                outcome = self._outcome(item)
                with lock:
                    outcomes[i] = outcome

        futures = []
        try:
            for item in work:
                with lock:
                    items.append(item)
                    outcomes.append(None)
                    queue = queued.get(item.netns)
                    if queue is not None:  # its namespace's thread takes it after the ones before it
                        queue.append(len(items) - 1)
                        continue
                    inline = self._inline(item)
                    if not inline:
                        queued[item.netns] = deque([len(items) - 1])
                if inline:  # nothing of its namespace is queued or running: the order holds
                    outcome = self._outcome(item)
                    with lock:
                        outcomes[len(items) - 1] = outcome
                    continue
                futures.append(pool.submit(drain, item.netns))
        finally:  # whatever `work` raised, nothing handed over is still running when this returns or raises
            wait(futures)
        for future in futures:
            future.result()
        return outcomes

    def _inline(self, item: Work) -> bool:
        """Whether `item` is an element delta sent over a netlink socket already open for its namespace: cheaper
        done at once than handed to a worker. Anything that may take libnftables (a full form, a delta that adds
        or removes port groups) or open a namespace goes to the workers."""
        if item.previous is None:
            return False
        with self._lock:
            nft = self._nft.get(item.netns)
        if nft is None or getattr(nft, "socket", None) is None:  # no kept socket: libnftables or the nft command
            return False
        try:
            delta = render_update(item.previous, item.rules, self.options)  # memoised: the worker's own lookup
        except TransactionError:
            return False  # the worker's apply raises it, and the controller books it
        return delta is not None and all(isinstance(op.obj, Element) for op in delta.operations)

    def _outcome(self, item: Work) -> BaseException | None:
        try:
            self.apply(*item)
        except Exception as exc:  # handed back to the controller, which classifies it
            return exc
        return None

    def _nft_of(self, netns: str) -> NftBackend:
        with self._lock:
            nft = self._nft.get(netns)
        if nft is None:
            nft = self.nft_for(netns)  # one worker per netns: no other thread creates this one
            with self._lock:
                self._nft[netns] = nft
        return nft

    def _count(self, delta: bool) -> None:
        with self._lock:
            if delta:
                self.deltas += 1
            else:
                self.transactions += 1

    def repair(self, work: Work) -> bool:
        """Check that the live table holds what the full form of `work.rules` defines for its interface — the
        base chains, its dispatch-map elements, its chains and sets (shared.nft.render.owned_view) — and apply the
        full form, atomically, when it does not; True then. The full form also runs, with the same transaction
        removing them, when the table holds port groups of the interface that it does not write (`unused_groups`:
        no tamper, False).

        The periodic resync calls it for every programmed interface: a pod with NET_ADMIN can delete the table or
        flush a chain in its own netns, and an element someone added by hand survives every delta (a delta
        assumes the table holds what this daemon programmed)."""
        nft = self._nft_of(work.netns)
        self._check_identity(work.netns, work.identity)
        names: list[str] = []
        view: TableView | None = None
        too_large = False
        try:
            view = nft.list_table()
            names = [*view.chains, *view.sets]
            live: tuple[object, ...] | None = owned_view(view, work.rules.ifname, work.rules.ifindex)
        except NotFoundError:
            live = None  # the table is gone
        except TableTooLarge as exc:
            # Filled by someone in the pod (mnp writes far fewer objects): not listed, so as not to hold it all in
            # memory, and replaced whole, which also drops what was added.
            live, too_large = ("too large", str(exc)), True
        except TraceError as exc:
            # A listing the one reader cannot read is not what this daemon programmed: restore it rather than
            # give up on the check and leave the edit in force.
            live = ("unreadable", str(exc))
        # Port groups of the interface that the full form does not write (a full form that did not know them
        # left them: after a restart with changed rules, a refused delta): referenced by nothing, so not a
        # tamper, and removed with the full form, in its transaction.
        unused = unused_groups(work.rules, names, self.options)
        if unused and view is not None:  # a lookalike something of the pod's refers to cannot go: left alone
            kept = referenced_elsewhere(view, work.rules.ifname, unused)
            unused = [group for group in unused if group not in kept]
        tampered = live != expected_view(work.rules, self.options)
        if not tampered and not unused:
            return False
        full = self.render(work.rules)
        tx = remove_groups(Transaction(full.family, full.table).extend(full), unused) if unused else full

        def whole() -> Transaction:
            """The whole table replaced, in one transaction: the netns' other interfaces get theirs back from
            their own checks in the same resync."""
            return render_remove_table().extend(full)

        try:
            self._count(delta=False)
            nft.run(whole() if too_large else tx)
        except NftError as exc:
            if not tampered:
                raise
            if too_large:
                raise TamperUnrestored(f"tampered, and the table could not be restored: {exc}") from exc
            # The table was edited so that the full form cannot apply (say, a base chain replaced by a regular
            # one of the same name): replace the whole table instead.
            self._count(delta=False)
            try:
                nft.run(whole())
            except NftError as again:
                raise TamperUnrestored(f"tampered, and the table could not be restored: {again}") from again
        except NetnsGone:
            self.release(work.netns)
            raise
        if unused:
            log.info("removed %d port groups of %s that its rules no longer use", len(unused), work.rules.ifname)
        return tampered

    @contextlib.contextmanager
    def netlink_socket(self, netns: str) -> Iterator[netlink.NfnetlinkSocket]:
        """The NETLINK_NETFILTER socket the backend of `netns` keeps (conntrack cleanup shares it), else one
        opened for this use."""
        with self._lock:
            kept = getattr(self._nft.get(netns), "socket", None)
        if isinstance(kept, netlink.NfnetlinkSocket):
            yield kept
            return
        with netlink.opened(netns) as sock:
            yield sock

    def release_missing(self) -> None:
        """Close every context whose path is gone or names another namespace now: without a state entry going
        (a runtime that never ran DEL), it would keep a dead pod's namespace alive. (Backends that pin no
        namespace — the nft command, the Fake — have no `identity` and are left alone.)"""
        for netns, nft in list(self._nft.items()):
            identity = getattr(nft, "identity", None)
            if identity is None:
                continue
            try:
                current: tuple[int, int] | None = netns_identity(netns)
            except (NetnsGone, NetnsUnusable):  # not ours to keep either way; raising here skipped the resync
                current = None
            if current != identity:
                self.release(netns)

    def release(self, netns: str) -> None:
        """Forget (and close) the nft of a netns no state entry uses any more."""
        with self._lock:
            nft = self._nft.pop(netns, None)
        if nft is not None:
            nft.close()

    def close(self) -> None:
        """Stop the workers and close every namespace's nft (the rules stay: they are the kernel's)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for netns in list(self._nft):
            self.release(netns)
        CONTEXTS.wait_closed()

    def render(self, rules: InterfaceRules) -> Transaction:
        key = (rules.ifname, rules.ifindex, rules.ingress, rules.egress)
        with self._lock:
            tx = self._rendered.pop(key, None)
            if tx is not None:
                self._rendered[key] = tx  # the most recently used last
        if tx is None:
            tx = render_interface(rules, self.options)
            with self._lock:
                self._rendered[key] = tx
                while len(self._rendered) > self.RENDER_CACHE:
                    del self._rendered[next(iter(self._rendered))]  # the least recently used
        return tx
