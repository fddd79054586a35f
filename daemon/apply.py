"""The one place the daemon changes a pod: render an interface's rules and run them as one nft transaction.

Everything before this point is pure (store → compiler → renderer); this module is the actuator. Its contract:

* One `InterfaceRules` change → one nft transaction (shared.nft.render). When the daemon knows what it last
  programmed on the interface, the transaction is the delta (`render_update`: only the set elements that
  changed); otherwise, or when the delta is refused (the table does not hold what we believed), the full form
  (the skeleton re-asserted, the interface's chains and sets replaced). nft applies a transaction atomically,
  so a failure changes nothing and the pod keeps its previous — never a wider — rule set; the controller retries.
* The real backend keeps one libnftables context per pod netns (shared.nft.libnft: opened on a short-lived
  thread inside the netns, then used from the sync thread — no thread the daemon keeps changes namespace),
  and falls back to `nsenter --net=PATH nft -f -` where libnftables cannot be loaded. A context keeps its
  namespace alive, so the controller `release()`s a netns when its last state entry goes.
* Before opening a netns the real factory checks that it still exists (`NetnsGone`: the pod is gone, the
  state-dir source will drop its entry) and that it is not the daemon's own namespace (programming the host's
  own table would close the node); the context then refuses a path that comes to name another namespace.

Tests pass a factory returning `shared.nft.fake.FakeNft` instances instead (one per netns path).
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from shared.compiler import InterfaceRules
from shared.errors import NetnsGone
from shared.netns import check_netns, is_own_netns
from shared.nft import libnft
from shared.nft.errors import NftError
from shared.nft.exec import RealNft
from shared.nft.render import RenderOptions, render_interface, render_update
from shared.nft.transaction import Transaction

log = logging.getLogger(__name__)

# Threads programming namespaces at once. The work is mostly the kernel's and libnftables' (no GIL); more
# threads than this gained nothing on the 2-core benchmark machine (docs/benchmarks.md).
WORKERS = 4


class Nft(Protocol):
    def run(self, tx: Transaction) -> None: ...


NftFactory = Callable[[str], Nft]  # netns path → the nft of that namespace


class GuardedNft:
    """`RealNft` (nsenter nft) in a pod netns, refusing paths that are gone or the daemon's own namespace."""

    def __init__(self, netns: str, nft: str = "nft") -> None:
        self.netns = netns
        self.real = RealNft(netns=netns, nft=nft)

    def run(self, tx: Transaction) -> None:
        _guard(self.netns)
        self.real.run(tx)


def _guard(netns: str) -> None:
    check_netns(netns)
    if is_own_netns(netns):
        raise NftError(f"refusing to program {netns}: it is the daemon's own network namespace")


def real_nft(netns: str) -> Nft:
    """libnftables in-process when it loads here, else the nft command under nsenter."""
    if not libnft.available():
        return GuardedNft(netns)
    _guard(netns)
    return libnft.NetnsNft(netns)


class Applier:
    """Renders and runs; counts the transactions it ran (successful or not) and how many were deltas.

    The pods of one Deployment usually get equal rules on equally named interfaces, and rendering a direction
    with a thousand peers costs tens of milliseconds, so the last RENDER_CACHE full renderings are kept (the text
    depends only on the interface name and the two directions' rules, never on the pod; render_update memoises
    per direction). The nft of each netns is made once and kept until `release`."""

    RENDER_CACHE = 128

    def __init__(self, nft_for: NftFactory, options: RenderOptions, workers: int = WORKERS) -> None:
        self.nft_for = nft_for
        self.options = options
        self.workers = workers
        self.transactions = 0
        self.deltas = 0
        self._lock = threading.Lock()  # the counters and the caches, shared by the workers
        self._pool: ThreadPoolExecutor | None = None
        self._rendered: dict[tuple[object, ...], Transaction] = {}
        self._nft: dict[str, Nft] = {}

    def apply(self, netns: str, rules: InterfaceRules, previous: InterfaceRules | None = None) -> None:
        """Program `rules` into `netns`, where this daemon last programmed `previous` (None: unknown).

        Raises NftError, TransactionError or NetnsGone; then nothing changed."""
        if not netns:
            raise NetnsGone("the state entry has no netns path")
        nft = self._nft_of(netns)
        try:
            delta = render_update(previous, rules, self.options) if previous is not None else None
            if delta is not None and not len(delta):
                return  # the rules differ only in what the table does not show (a pod's name, a provenance)
            if delta is not None:
                self._count(delta=False)
                try:
                    nft.run(delta)
                    self._count(delta=True)
                    return
                except NftError as exc:  # the table is not what we last programmed: replace it as a whole
                    log.warning("delta refused, applying the full transaction: %s", exc.message.splitlines()[0])
            self._count(delta=False)
            nft.run(self.render(rules))
        except NetnsGone:
            self.release(netns)
            raise

    def apply_all(
        self, work: Sequence[tuple[str, InterfaceRules, InterfaceRules | None]]
    ) -> list[BaseException | None]:
        """`apply(netns, rules, previous)` for each item; for each, None or the exception it raised.

        libnftables does its parsing, netlink and the kernel's commit without the GIL (ctypes releases it), so
        the namespaces are programmed concurrently by up to `workers` threads; the interfaces of one namespace
        are programmed in order by one thread (they share its context and skeleton)."""
        outcomes: list[BaseException | None] = [None] * len(work)
        by_netns: dict[str, list[int]] = defaultdict(list)
        for i, (netns, _, _) in enumerate(work):
            by_netns[netns].append(i)

        def program(indexes: list[int]) -> None:
            for i in indexes:
                try:
                    self.apply(*work[i])
                except Exception as exc:  # handed back to the controller, which classifies it
                    outcomes[i] = exc

        groups = list(by_netns.values())
        if self.workers <= 1 or len(groups) <= 1:
            for group in groups:
                program(group)
            return outcomes
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mnpd-apply")
        for future in [self._pool.submit(program, group) for group in groups]:
            future.result()
        return outcomes

    def _nft_of(self, netns: str) -> Nft:
        nft = self._nft.get(netns)
        if nft is None:  # one worker per netns: no other thread creates this one
            nft = self.nft_for(netns)
            with self._lock:
                self._nft[netns] = nft
        return nft

    def _count(self, delta: bool) -> None:
        with self._lock:
            if delta:
                self.deltas += 1
            else:
                self.transactions += 1

    def release(self, netns: str) -> None:
        """Forget (and close) the nft of a netns no state entry uses any more."""
        with self._lock:
            nft = self._nft.pop(netns, None)
        close = getattr(nft, "close", None)
        if close is not None:
            close()

    def close(self) -> None:
        """Stop the workers and close every namespace's nft (the rules stay: they are the kernel's)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for netns in list(self._nft):
            self.release(netns)

    def render(self, rules: InterfaceRules) -> Transaction:
        key = (rules.ifname, rules.ingress, rules.egress)
        tx = self._rendered.get(key)
        if tx is None:
            tx = render_interface(rules, self.options)
            with self._lock:
                if len(self._rendered) >= self.RENDER_CACHE:
                    self._rendered.clear()
                self._rendered[key] = tx
        return tx
