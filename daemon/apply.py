"""The one place the daemon changes a pod: render an interface's rules and run them as one nft transaction.

Everything before this point is pure (store → compiler → renderer); this module is the actuator. Its contract:

* One `InterfaceRules` → one `nft -f -` transaction (shared.nft.render: the skeleton re-asserted, the
  interface's chains and sets replaced). nft applies a file atomically, so a failure changes nothing and the
  pod keeps its previous — never a wider — rule set; the controller retries.
* The daemon's threads never enter a pod's namespace. The real backend is `RealNft(netns=path)`, which runs
  `nsenter --net=PATH nft -f -` as a child process (shared.netns explains why).
* Before touching a netns path the real factory checks that it still exists (`NetnsGone`: the pod is gone, the
  state-dir source will drop its entry) and that it is not the daemon's own namespace (programming the host's
  own table would close the node).

Tests pass a factory returning `shared.nft.fake.FakeNft` instances instead (one per netns path).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from shared.compiler import InterfaceRules
from shared.errors import NetnsGone
from shared.netns import check_netns, is_own_netns
from shared.nft.errors import NftError
from shared.nft.exec import RealNft
from shared.nft.render import RenderOptions, render_interface
from shared.nft.transaction import Transaction


class Nft(Protocol):
    def run(self, tx: Transaction) -> None: ...


NftFactory = Callable[[str], Nft]  # netns path → the nft of that namespace


class GuardedNft:
    """`RealNft` in a pod netns, refusing paths that are gone or that are the daemon's own namespace."""

    def __init__(self, netns: str, nft: str = "nft") -> None:
        self.netns = netns
        self.real = RealNft(netns=netns, nft=nft)

    def run(self, tx: Transaction) -> None:
        check_netns(self.netns)
        if is_own_netns(self.netns):
            raise NftError(f"refusing to program {self.netns}: it is the daemon's own network namespace")
        self.real.run(tx)


def real_nft(netns: str) -> Nft:
    return GuardedNft(netns)


class Applier:
    """Renders and runs; counts the transactions it ran (successful or not).

    The pods of one Deployment usually get equal rules on equally named interfaces, and rendering a direction
    with a thousand peers costs tens of milliseconds, so the last RENDER_CACHE renderings are kept (the text
    depends only on the interface name and the two directions' rules, never on the pod)."""

    RENDER_CACHE = 128

    def __init__(self, nft_for: NftFactory, options: RenderOptions) -> None:
        self.nft_for = nft_for
        self.options = options
        self.transactions = 0
        self._rendered: dict[tuple[object, ...], Transaction] = {}

    def apply(self, netns: str, rules: InterfaceRules) -> None:
        """Program `rules` into `netns`. Raises NftError, TransactionError or NetnsGone; then nothing changed."""
        if not netns:
            raise NetnsGone("the state entry has no netns path")
        tx = self.render(rules)
        nft = self.nft_for(netns)
        self.transactions += 1
        nft.run(tx)

    def render(self, rules: InterfaceRules) -> Transaction:
        key = (rules.ifname, rules.ingress, rules.egress)
        tx = self._rendered.get(key)
        if tx is None:
            if len(self._rendered) >= self.RENDER_CACHE:
                self._rendered.clear()
            tx = self._rendered[key] = render_interface(rules, self.options)
        return tx
