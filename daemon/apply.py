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
from collections.abc import Callable
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

    def __init__(self, nft_for: NftFactory, options: RenderOptions) -> None:
        self.nft_for = nft_for
        self.options = options
        self.transactions = 0
        self.deltas = 0
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
                self.transactions += 1
                try:
                    nft.run(delta)
                    self.deltas += 1
                    return
                except NftError as exc:  # the table is not what we last programmed: replace it as a whole
                    log.warning("delta refused, applying the full transaction: %s", exc.message.splitlines()[0])
            self.transactions += 1
            nft.run(self.render(rules))
        except NetnsGone:
            self.release(netns)
            raise

    def _nft_of(self, netns: str) -> Nft:
        nft = self._nft.get(netns)
        if nft is None:
            nft = self._nft[netns] = self.nft_for(netns)
        return nft

    def release(self, netns: str) -> None:
        """Forget (and close) the nft of a netns no state entry uses any more."""
        nft = self._nft.pop(netns, None)
        close = getattr(nft, "close", None)
        if close is not None:
            close()

    def render(self, rules: InterfaceRules) -> Transaction:
        key = (rules.ifname, rules.ingress, rules.egress)
        tx = self._rendered.get(key)
        if tx is None:
            if len(self._rendered) >= self.RENDER_CACHE:
                self._rendered.clear()
            tx = self._rendered[key] = render_interface(rules, self.options)
        return tx
