"""libnftables in-process (shared.nft.libnft) against the real kernel, in throwaway namespaces.

What the daemon relies on: a context opened on a thread inside a pod netns programs that netns from any thread
(the netlink socket stays bound to it), errors come back typed as from `nft -f`, no thread of this process is
left in a pod namespace, and a path that comes to name another namespace is refused instead of programmed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from pyroute2 import netns as pyroute2_netns

from daemon.testbed.netns import NetNS
from shared.errors import NetnsGone
from shared.netns import in_netns
from shared.nft import libnft
from shared.nft.errors import NotFoundError
from shared.nft.objects import Table
from shared.nft.transaction import Transaction
from tests.support.host import host_untouched

pytestmark = [pytest.mark.netns, pytest.mark.skipif(not libnft.available(), reason="no libnftables.so.1")]


@pytest.fixture
def pod() -> Iterator[NetNS]:
    with host_untouched(), NetNS.create("libnft") as ns:
        yield ns


def tables(ns: NetNS) -> str:
    return ns.run("nft", "list", "tables").stdout


def own_netns() -> tuple[int, int]:
    st = os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net")
    return st.st_dev, st.st_ino


def test_context_programs_its_namespace_from_any_thread(pod: NetNS) -> None:
    home = own_netns()
    nft = libnft.NetnsNft(pod.path)
    try:
        assert own_netns() == home
        nft.run(Transaction("inet", "mnp").add(Table()))
        assert "table inet mnp" in tables(pod)
        other: list[BaseException] = []

        def from_another_thread() -> None:
            try:
                nft.run(Transaction("inet", "mnp").add(Table()).delete(Table()))
            except BaseException as exc:
                other.append(exc)

        t = threading.Thread(target=from_another_thread)
        t.start()
        t.join()
        assert not other
        assert "table inet mnp" not in tables(pod)
    finally:
        nft.close()


def test_errors_are_typed_and_change_nothing(pod: NetNS) -> None:
    nft = libnft.NetnsNft(pod.path)
    try:
        with pytest.raises(NotFoundError, match="No such file or directory"):
            nft.run(Transaction("inet", "mnp").add(Table()).delete(Table()).delete(Table()))
        assert "mnp" not in tables(pod)  # the add of the failed transaction did not happen either
    finally:
        nft.close()


def test_in_netns_runs_on_a_thread_of_its_own(pod: NetNS) -> None:
    home = own_netns()
    inside = in_netns(pod.path, own_netns)
    assert inside != home
    assert inside == (os.stat(pod.path).st_dev, os.stat(pod.path).st_ino)
    assert own_netns() == home
    with pytest.raises(ZeroDivisionError):
        in_netns(pod.path, lambda: 1 // 0)


def test_gone_or_replaced_namespace_is_refused(pod: NetNS) -> None:
    path = pod.path
    nft = libnft.NetnsNft(path)
    try:
        pyroute2_netns.remove(pod.name)
        with pytest.raises(NetnsGone):
            nft.run(Transaction("inet", "mnp").add(Table()))
        pyroute2_netns.create(pod.name)  # the same path, another namespace
        with pytest.raises(NetnsGone, match="another network namespace"):
            nft.run(Transaction("inet", "mnp").add(Table()))
        assert "mnp" not in tables(pod)
    finally:
        nft.close()
    with pytest.raises(NetnsGone):
        libnft.NetnsNft("/run/netns/mnpt-does-not-exist")


def test_in_netns_here_switches_the_calling_thread_in_and_back(pod: NetNS) -> None:
    from shared.netns import in_netns_here

    home = own_netns()
    before = threading.active_count()
    inside = in_netns_here(pod.path, own_netns)
    assert inside == (os.stat(pod.path).st_dev, os.stat(pod.path).st_ino)
    assert own_netns() == home and threading.active_count() == before  # back, and no thread was started
    context = in_netns_here(pod.path, libnft.Context)
    try:
        context.command(str(Transaction("inet", "mnp").add(Table())))
        assert "table inet mnp" in tables(pod)  # the context stays bound to the pod's namespace
    finally:
        context.close()
    with pytest.raises(ZeroDivisionError):
        in_netns_here(pod.path, lambda: 1 // 0)
    assert own_netns() == home  # back after an exception too
    with pytest.raises(NetnsGone):
        in_netns_here("/run/netns/mnpt-does-not-exist", own_netns)
    assert own_netns() == home


def test_the_applier_repairs_a_table_edited_behind_its_deltas(pod: NetNS) -> None:
    """daemon.apply end to end on the kernel: full form, a delta, an element added by hand, then the periodic
    check finds it (reading the live table back as JSON) and re-applies the full form."""
    import ipaddress

    from daemon.apply import Applier, Work, real_nft
    from shared.nft.render import RenderOptions
    from shared.rules import Allow, DirectionRules, InterfaceRules, collapse

    def rules(*peers: str) -> InterfaceRules:
        allow = Allow("ns/p ingress[0]", collapse(ipaddress.ip_network(p) for p in peers), None)
        return InterfaceRules("ns/pod", "net1", "ns/net", DirectionRules(True, (allow,), ("ns/p",)), ifindex=2)

    applier = Applier(real_nft, RenderOptions())
    try:
        work = Work(pod.path, rules("192.0.2.1", "192.0.2.3"))
        assert applier.apply_all([work]) == [None]
        assert applier.repair(work) is False  # a full form: nothing to check
        changed = Work(pod.path, rules("192.0.2.1", "192.0.2.5"), work.rules)
        assert applier.apply_all([changed]) == [None] and applier.deltas == 1
        pod.run("nft", "add", "element", "inet", "mnp", "ingress_net1_v4_peers", "{ 198.51.100.9 : accept }")
        assert "198.51.100.9" in pod.run("nft", "list", "map", "inet", "mnp", "ingress_net1_v4_peers").stdout
        assert applier.repair(changed) is True
        listed = pod.run("nft", "list", "map", "inet", "mnp", "ingress_net1_v4_peers").stdout
        assert "198.51.100.9" not in listed and "192.0.2.5" in listed and "192.0.2.3" not in listed
        assert applier.repair(changed) is False
    finally:
        applier.close()


def test_contexts_of_two_namespaces_keep_their_own_index_under_concurrent_commands() -> None:
    """libnftables' interface cache is one global list, built and freed by every command that parses or prints an
    index (shared/nft/libnft.py): two pods, each with an interface of the same name at another index, programmed
    and listed by two threads at the same time, many times — each writes and lists the index it was given, and
    the process lives. (The two contexts ran on two memfd copies of the library before: the process aborted in
    about one run in ten, in a JSON listing. One library, one lock: every call queues.)"""
    from shared.nft.objects import Chain, Element
    from shared.nft.render import dispatch_key, map_name, skeleton
    from shared.rules import INGRESS

    with host_untouched(), NetNS.create("libnft-a") as a, NetNS.create("libnft-b") as b:
        a.add_veth("mnpt0", "mnpt0p")  # net1 gets another index in a than in b
        for ns in (a, b):
            ns.add_veth("net1", "mnpt1p")
        wanted = {}
        for ns in (a, b):
            link = ns.link("net1")
            assert link is not None
            wanted[ns.path] = link.index
        assert wanted[a.path] != wanted[b.path]
        nfts = [libnft.NetnsNft(ns.path) for ns in (a, b)]
        try:
            assert nfts[0].context._instance is nfts[1].context._instance  # one library, one interface cache
            failures: list[BaseException] = []
            start = threading.Barrier(2)

            def program(nft: libnft.NetnsNft) -> None:
                index = wanted[nft.netns]
                try:
                    start.wait(timeout=30)
                    for _ in range(300):
                        tx = skeleton()
                        tx.add(Chain("ingress_net1"))
                        tx.add(Element(map_name(INGRESS), dispatch_key(index), "jump ingress_net1", comment="net1"))
                        nft.run(tx)
                        listed = nft.list_table().sets[map_name(INGRESS)].elements
                        assert [(e.key, e.value, e.comment) for e in listed] == [
                            (str(index), "jump ingress_net1", "net1")
                        ], listed
                except BaseException as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=program, args=(nft,)) for nft in nfts]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not failures, failures
        finally:
            for nft in nfts:
                nft.close()


def test_the_stale_group_cleanup_removes_mnps_own_and_leaves_a_lookalike_the_pod_refers_to(pod: NetNS) -> None:
    """On the kernel: a full form with a port group, then other rules (the old group is stale: referenced by
    nothing), and a pod with NET_ADMIN adding a chain named like one of the interface's groups with a chain of its
    own that jumps to it. The kernel refuses to delete a chain in use (EBUSY): the repair's one transaction failed
    on every resync before. Now the stale group goes, the lookalike stays, and the check passes."""
    import ipaddress

    from daemon.apply import Applier, Work, real_nft
    from shared.nft.render import RenderOptions
    from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange

    def rules(port: int) -> InterfaceRules:
        policy = f"ns/p{port}"  # a group's name hashes the policies that made it
        allow = Allow(f"{policy} ingress[0]", (ipaddress.ip_network("192.0.2.1"),), (PortRange("tcp", port, port),))
        return InterfaceRules("ns/pod", "net1", "ns/net", DirectionRules(True, (allow,), (policy,)), ifindex=2)

    def groups() -> set[str]:
        listed = pod.run("nft", "list", "table", "inet", "mnp").stdout
        return {w for line in listed.splitlines() for w in line.split() if w.startswith("g_ingress_net1_")}

    applier = Applier(real_nft, RenderOptions())
    try:
        assert applier.apply_all([Work(pod.path, rules(80))]) == [None]
        stale = groups()
        applier.close()  # a restart: the next full form does not know the old group
        applier = Applier(real_nft, RenderOptions())
        now = Work(pod.path, rules(81))
        assert applier.apply_all([now]) == [None]
        lookalike = "g_ingress_net1_aaaaaaaa"
        pod.run(
            "nft", f"add chain inet mnp {lookalike}; add chain inet mnp mine; add rule inet mnp mine jump {lookalike}"
        )
        assert stale and stale <= groups()
        assert applier.repair(now) is False  # raised NftError (EBUSY) before
        assert not stale & groups() and lookalike in groups()
        assert applier.repair(now) is False
    finally:
        applier.close()


def test_a_table_filled_past_the_listing_limit_is_replaced_unread(pod: NetNS, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod with NET_ADMIN fills mnp's table (a set of its own there, with many elements): the tamper check listed
    it whole through libnftables, which holds every element in memory at once (200,000 elements: 221 MB peak, past
    mnpd's 256 Mi limit with its own memory: docs/benchmarks.md), so the pod could end mnpd for every pod of the
    node. The objects are counted over netlink first (nothing kept); past the limit (lowered here) the table is
    not listed but replaced whole, which drops what was added, and the interface's rules are back."""
    import ipaddress

    from daemon.apply import Applier, Work, real_nft
    from shared.nft import backend
    from shared.nft.render import RenderOptions
    from shared.rules import Allow, DirectionRules, InterfaceRules, collapse

    monkeypatch.setattr(backend, "MAX_LISTED_OBJECTS", 2_000)
    allow = Allow("ns/p ingress[0]", collapse([ipaddress.ip_network("192.0.2.1")]), None)
    rules = InterfaceRules("ns/pod", "net1", "ns/net", DirectionRules(True, (allow,), ("ns/p",)), ifindex=2)
    applier = Applier(real_nft, RenderOptions())
    try:
        work = Work(pod.path, rules)
        assert applier.apply_all([work]) == [None]
        assert applier.repair(work) is False
        junk = ", ".join(str(ipaddress.IPv4Address(0x0A000000 + i)) for i in range(3_000))
        pod.run(
            "nft",
            "-f",
            "-",
            input=f"add set inet mnp junk {{ type ipv4_addr; }}\nadd element inet mnp junk {{ {junk} }}\n",
        )
        assert applier.repair(work) is True  # not listed: replaced whole
        listed = pod.run("nft", "list", "table", "inet", "mnp").stdout
        assert "junk" not in listed and "192.0.2.1" in listed
        assert applier.repair(work) is False
    finally:
        applier.close()
