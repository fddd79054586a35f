"""The actuator (daemon.apply.Applier) on its own: the namespace a path names, and the contexts it keeps."""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.apply import Applier, Work
from shared.errors import NetnsGone
from shared.netns import netns_identity
from shared.nft.fake import FakeNft
from shared.nft.pool import ContextPool
from shared.nft.render import RenderOptions, render_interface
from shared.nft.trace import TraceError
from shared.nft.transaction import Transaction
from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange


class Closable(FakeNft):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.closed = False
        self.identity = netns_identity(path)

    def close(self) -> None:
        self.closed = True


class Namespaces:
    """Files standing in for namespace files (a namespace's identity is its (st_dev, st_ino)), and the factory
    an Applier opens them with, remembering the latest object made per path."""

    def __init__(self, tmp_path: Path, count: int) -> None:
        self.tmp_path = tmp_path
        self.paths = [tmp_path / f"ns{i}" for i in range(count)]
        for path in self.paths:
            path.touch()
        self.made: dict[str, Closable] = {}
        self.opened = 0

    def __call__(self, path: str) -> Closable:
        self.opened += 1
        self.made[path] = Closable(path)
        return self.made[path]

    def nft(self, i: int) -> Closable:
        return self.made[str(self.paths[i])]

    def replace(self, i: int) -> None:
        """The same path, another file (another namespace)."""
        other = self.tmp_path / "other"
        other.touch()
        os.replace(other, self.paths[i])


def test_a_path_that_names_another_namespace_now_is_refused(tmp_path: Path) -> None:
    """A netns path can come to name another pod's namespace (a reused /proc/PID): this interface's rules must
    not land there."""
    ns = Namespaces(tmp_path, 1)
    path = str(ns.paths[0])
    identity = netns_identity(path)
    applier = Applier(ns, RenderOptions())
    rules = InterfaceRules.pending("net1", ifindex=2)
    applier.apply(path, rules, None, identity)
    assert ns.nft(0).transactions == 1
    ns.replace(0)
    assert netns_identity(path) != identity
    with pytest.raises(NetnsGone, match="another network namespace"):
        applier.apply(path, rules, None, identity)
    (outcome,) = applier.apply_all([Work(path, rules, None, identity)])
    assert isinstance(outcome, NetnsGone)
    applier.close()
    assert ns.nft(0).closed and ns.opened == 1  # its context was let go, nothing new was opened or run
    assert ns.nft(0).transactions == 1


def test_contexts_of_vanished_paths_are_released(tmp_path: Path) -> None:
    ns = Namespaces(tmp_path, 3)
    applier = Applier(ns, RenderOptions())
    outcomes = applier.apply_all([Work(str(p), InterfaceRules.pending("net1", ifindex=2)) for p in ns.paths])
    assert outcomes == [None, None, None]
    os.unlink(ns.paths[0])  # gone without a DEL
    ns.replace(1)
    applier.release_missing()
    assert [ns.nft(i).closed for i in range(3)] == [True, True, False]
    applier.close()
    assert ns.nft(2).closed


def test_only_the_most_recently_used_contexts_stay_open(tmp_path: Path) -> None:
    """The libnftables contexts (shared.nft.ContextPool): at most `keep` open, least recently used closed
    first, one in use never closed meanwhile, reopened on demand."""
    ns = Namespaces(tmp_path, 10)
    pool = ContextPool(ns, keep=3)  # type: ignore[arg-type]  # Closable stands in for a libnftables context
    for p in ns.paths:
        with pool.use(str(p)) as nft:
            nft.run(render_interface(InterfaceRules.pending("net1", ifindex=2)))
    pool.wait_closed()
    assert [ns.nft(i).closed for i in range(10)] == [True] * 7 + [False] * 3
    with pool.use(str(ns.paths[0])) as first:  # reopened on demand
        for p in ns.paths[1:5]:
            with pool.use(str(p)):
                pass
        assert not first.closed  # in use: not closed, although the least recently used
    assert ns.opened == 15
    pool.close()
    assert all(nft.closed for nft in ns.made.values())


def test_a_path_that_cannot_be_checked_any_more_is_released_without_stopping_the_resync(tmp_path: Path) -> None:
    """release_missing runs at the start of every periodic resync: a kept path that now fails with anything but
    ENOENT (NetnsUnusable: a symlink loop here, EACCES alike) must not raise out of it — that skipped the whole
    resync, the changes it had drained and the tamper repair, every time."""
    ns = Namespaces(tmp_path, 2)
    applier = Applier(ns, RenderOptions())
    assert applier.apply_all([Work(str(p), InterfaceRules.pending("net1", ifindex=2)) for p in ns.paths]) == [None] * 2
    os.unlink(ns.paths[0])
    ns.paths[0].symlink_to(ns.paths[0])
    applier.release_missing()
    assert [ns.nft(i).closed for i in range(2)] == [True, False]
    applier.close()


def test_the_rendered_full_forms_kept_are_the_most_recently_used() -> None:
    """At most RENDER_CACHE full transactions are kept (each ≈ 190 KB at 300 peers), the least recently used
    dropped first: a group of pods rendered over and over keeps its transaction while one-off rule sets pass."""
    applier = Applier(lambda path: FakeNft(), RenderOptions(), workers=1)
    often = InterfaceRules("ns/often", "net1", "default/net-a", DirectionRules(True), DirectionRules(False), 3)
    first = applier.render(often)
    for ifindex in range(10, 10 + 3 * Applier.RENDER_CACHE):
        applier.render(
            InterfaceRules("ns/once", "net1", "default/net-a", DirectionRules(True), DirectionRules(True), ifindex)
        )
        assert applier.render(often) is first
    assert len(applier._rendered) == Applier.RENDER_CACHE


def test_apply_all_programs_each_interface_as_soon_as_it_is_handed_over(tmp_path: Path) -> None:
    """Pipelined: the first interface is programmed while the caller still computes the second (the generator
    does not hand the second over until the first has landed), and the outcomes come back in the given order."""
    ns = Namespaces(tmp_path, 2)
    applier = Applier(ns, RenderOptions(), workers=4)
    landed = threading.Event()

    class Signalling(Closable):
        def run(self, tx: Transaction) -> None:
            super().run(tx)
            landed.set()

    applier.nft_for = Signalling

    def work() -> Iterator[Work]:
        yield Work(str(ns.paths[0]), InterfaceRules.pending("net1", ifindex=2))
        assert landed.wait(timeout=30), "the first interface was not programmed before the second was compiled"
        yield Work("", InterfaceRules.pending("net1", ifindex=2))  # no netns: NetnsGone, handed back

    first, second = applier.apply_all(work())
    applier.close()
    assert first is None and isinstance(second, NetnsGone)


def test_apply_all_programs_one_namespaces_interfaces_in_the_order_given(tmp_path: Path) -> None:
    """Two interfaces of one netns are programmed one after the other by one thread, in the order handed over,
    however the other namespaces' work interleaves."""
    ns = Namespaces(tmp_path, 3)
    order: list[tuple[str, Transaction]] = []

    class Recording(Closable):
        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.path = path

        def run(self, tx: Transaction) -> None:
            super().run(tx)
            order.append((self.path, tx))

    applier = Applier(Recording, RenderOptions(), workers=4)
    work = [Work(str(ns.paths[i % 3]), InterfaceRules.pending(f"net{i}", ifindex=i + 2)) for i in range(1, 7)]
    assert applier.apply_all(iter(work)) == [None] * 6
    for path in map(str, ns.paths):
        expected = [applier.render(w.rules) for w in work if w.netns == path]  # the memoised transactions
        assert [tx for p, tx in order if p == path] == expected
    applier.close()


def test_apply_all_raises_what_the_work_raised_only_after_what_was_handed_over_has_run(tmp_path: Path) -> None:
    ns = Namespaces(tmp_path, 1)
    applier = Applier(ns, RenderOptions(), workers=4)

    def work() -> Iterator[Work]:
        yield Work(str(ns.paths[0]), InterfaceRules.pending("net1", ifindex=2))
        raise RuntimeError("a compiler bug")

    with pytest.raises(RuntimeError, match="a compiler bug"):
        applier.apply_all(work())
    assert ns.nft(0).transactions == 1  # landed before apply_all let the error out
    applier.close()


def test_an_element_delta_over_a_kept_netlink_socket_is_sent_by_the_calling_thread(tmp_path: Path) -> None:
    """An element delta for a namespace whose socket is open, with nothing of that namespace queued, is sent by
    the caller (no hand-over); a first programming (the full form), a delta queued behind its namespace's other
    work and a backend without a kept socket go to the workers — one namespace's interfaces still in order."""
    ns = Namespaces(tmp_path, 2)
    sent: list[tuple[str, bool, bool]] = []  # path, by the calling thread, as a delta
    caller = threading.current_thread()

    class Socketed(Closable):
        socket: object | None = object()  # what NetlinkNft keeps per namespace

        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.path = path

        def run(self, tx: Transaction) -> None:
            super().run(tx)
            sent.append((self.path, threading.current_thread() is caller, False))

        def apply_delta(self, tx: Transaction) -> None:
            FakeNft.run(self, tx)
            sent.append((self.path, threading.current_thread() is caller, True))

    def rules(peer: str) -> InterfaceRules:
        allow = Allow("default/p ingress[0]", (ipaddress.ip_network(peer),), (PortRange("tcp", 80, 80),))
        closed = DirectionRules(True, (allow,), ("default/p",))
        return InterfaceRules("default/web", "net1", "default/net-a", closed, DirectionRules(True), 2)

    first, second = rules("10.0.0.1/32"), rules("10.0.0.2/32")
    one, two = map(str, ns.paths)
    applier = Applier(Socketed, RenderOptions(), workers=4)
    assert applier.apply_all([Work(one, first), Work(two, first)]) == [None, None]
    assert sorted(sent) == [(one, False, False), (two, False, False)]  # full forms: the workers
    sent.clear()
    assert applier.apply_all([Work(one, second, first), Work(two, second, first)]) == [None, None]
    assert sent == [(one, True, True), (two, True, True)]  # element deltas: the caller, in order
    sent.clear()
    assert applier.apply_all([Work(one, first, None), Work(one, second, first)]) == [None, None]
    assert sent == [(one, False, False), (one, False, True)]  # behind its namespace's full form: same worker
    expected = FakeNft.from_transaction(render_interface(second)).list_table()
    assert all(nft.list_table() == expected for nft in applier._nft.values())
    applier.close()
    Socketed.socket = None  # a backend without a kept socket (the nft command): every delta to the workers
    sent.clear()
    other = Applier(Socketed, RenderOptions(), workers=4)
    assert other.apply_all([Work(one, first)]) == [None]
    assert other.apply_all([Work(one, second, first)]) == [None]
    assert sent == [(one, False, False), (one, False, True)]
    other.close()


def test_a_table_the_reader_cannot_read_is_restored_not_skipped(tmp_path: Path) -> None:
    """Someone with NET_ADMIN in the pod edits the table into something the one reader refuses: the periodic check
    must not give up on that interface ("could not check") and leave the edit in force — an unreadable table is not
    what mnpd programmed, so the full form goes in."""
    ns = Namespaces(tmp_path, 1)
    applier = Applier(ns, RenderOptions(), workers=1)
    rules = InterfaceRules.pending("net1", ifindex=2)
    path = str(ns.paths[0])
    applier.apply(path, rules, None, netns_identity(path))
    nft = ns.nft(0)

    def unreadable(family: str = "inet", table: str = "mnp") -> object:
        raise TraceError("a rule of a shape mnp does not write")

    nft.list_table = unreadable  # type: ignore[method-assign,assignment]
    before = nft.transactions
    assert applier.repair(Work(path, rules, None, netns_identity(path)))
    assert nft.transactions == before + 1
    applier.close()
