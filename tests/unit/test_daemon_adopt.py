"""Adoption (daemon.sources.adopt) with FakeNft, a fake clock and stand-in namespace files.

The node's "namespaces" are plain files in tmp_path (the scanner only stats and lists them); what each holds is
a table of links the test sets; the controller programs each through a FakeNft that starts *empty* — an
interface no mnp plugin closed has no table — and the packet tracer says what a packet meets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.controller import PENDING, PROGRAMMED, Controller
from daemon.events import ObjectRef
from daemon.sources.adopt import ADOPTION_OFF, AMBIGUOUS, NETNS_NOT_FOUND, NOT_ADOPTED_TYPE, Adopter, Link, NetnsScanner
from daemon.status import status_document
from daemon.store import NAD, POD, STATE
from shared.nft.fake import FakeNft
from shared.state import StateEntry, StateStore
from tests.unit.test_daemon_builders import NET_A, from_pods, nad, pod, policy, put, remove
from tests.unit.test_daemon_controller import Harness, namespace

NET_C = "default/net-c"  # a NAD that chains mnp


class Recorder:
    def __init__(self) -> None:
        self.active: dict[tuple[str, str], str] = {}

    def warn(self, ref: ObjectRef, reason: str, message: str) -> None:
        self.active[(ref.key, reason)] = message

    def clear(self, ref: ObjectRef, reason: str) -> None:
        self.active.pop((ref.key, reason), None)


class Node:
    """Namespace files, their links, and an Adopter + Controller over one store."""

    def __init__(self, tmp: Path, h: Harness, *, enabled: bool = True) -> None:
        self.h = h
        self.dir = tmp / "netns"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = tmp / "state"
        self.links: dict[str, tuple[Link, ...]] = {}
        self.listed: list[str] = []
        self.events = Recorder()
        self.scanner = NetnsScanner(h.clock, (str(self.dir),), proc=None, links_of=self.links_of)
        self.adopter = Adopter(
            h.store,
            str(self.state_dir),
            h.clock,
            enabled=enabled,
            node_name="node-a",
            scanner=self.scanner,
            nft_for=h.nft_for,
            events=self.events,
            metrics=h.metrics,
        )
        h.controller = Controller(h.store, h.applier, h.clock, events=h.events, metrics=h.metrics, adopter=self.adopter)

    def links_of(self, path: str) -> tuple[Link, ...]:
        self.listed.append(path)
        return self.links.get(path, ())

    def netns(self, name: str, *links: Link) -> str:
        path = str(self.dir / name)
        Path(path).touch()
        self.links[path] = links
        self.h.nfts[path] = FakeNft()  # no table: no plugin ran
        return path

    def entries(self) -> dict[tuple[str, str], Any]:
        return {e.key: e for e in StateStore(str(self.state_dir)).entries()[0]}


def net1(ip: str, mac: str = "") -> Link:
    return Link("net1", mac, frozenset({ip}), 2)  # net1 is index 2 in its pod netns


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    put(harness.store, namespace("default"), nad("net-a"))
    chained = nad("net-c")
    chained["spec"]["config"] = json.dumps({"cniVersion": "1.0.0", "name": "net-c", "plugins": [
        {"type": "macvlan"}, {"type": "mnp"}]})  # fmt: skip
    put(harness.store, chained)
    put(
        harness.store,
        pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b"),
        pod("other", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.11")], node="node-b"),
        policy("web-from-clients", select={"app": "web"}, ingress=[from_pods({"role": "client"}, [("TCP", 80)])]),
    )
    harness.ready()
    return harness


def web(ip: str = "10.10.0.1", net: str = NET_A, node: str = "node-a", **kw: Any) -> dict[str, Any]:
    return pod("web", labels={"app": "web"}, nets=[(net, "net1", ip)], node=node, **kw)


def test_an_existing_pod_on_a_nad_that_does_not_chain_mnp_is_adopted_and_programmed(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    node.netns("cni-else", net1("10.10.0.99"))
    put(h.store, web())
    h.sync()
    (entry,) = node.entries().values()
    assert entry.adopted and entry.netns == path and entry.pod == "default/web" and entry.ifname == "net1"
    assert h.store.get(STATE, entry.key) == entry
    record = h.controller.records[entry.key]
    assert record.state == PROGRAMMED
    fake = h.nfts[path]
    assert h.ingress(entry, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(entry, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert fake.transactions == 1
    doc = status_document(h.controller, h.store.source_status(), "node-a")
    assert doc["interfaces"][0]["origin"] == "adopted" and doc["unguarded"] == []
    # nothing changed: no scan, no transaction
    listed = len(node.listed)
    h.sync()
    assert len(node.listed) == listed and fake.transactions == 1


def test_first_programming_of_an_adopted_interface_counts_as_a_withdrawal(h: Harness, tmp_path: Path) -> None:
    """It was open: established flows must be checked (rules unknown), unlike a plugin's pending table."""
    node = Node(tmp_path, h)
    node.netns("cni-web", net1("10.10.0.1"))
    h.sync()  # synced once: a plugin's entry appearing now would count as pending-closed
    put(h.store, web())
    h.sync()
    (record,) = h.controller.records.values()
    assert record.entry.adopted and record.state == PROGRAMMED and record.last_programmed is not None


def test_reason_says_open_until_programmed(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    h.broken[path] = 1
    put(h.store, web())
    h.sync()
    (record,) = h.controller.records.values()
    assert record.state != PROGRAMMED and record.reason.startswith("adopted: open until programmed")


def test_pods_of_other_nodes_chained_nads_and_plugin_entries_are_not_adopted(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    node.netns("cni-web", net1("10.10.0.1"))
    put(h.store, web(node="node-b"))
    put(h.store, pod("chained", labels={"app": "web"}, nets=[(NET_C, "net1", "10.10.0.5")]))
    h.attach(StateEntry("c-chained", "net1", "/run/netns/x", "default", "chained", "uid-default-chained", ifindex=2))
    h.sync()
    assert node.entries() == {} and node.listed == []  # nothing wanted: nothing scanned


def test_attachment_removed_and_pod_deleted_remove_rules_and_entry(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"), Link("net2", "", frozenset({"10.20.0.1"}), 3))
    both = web()
    status = json.loads(both["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
    status.append({"name": "default/net-b", "interface": "net2", "ips": ["10.20.0.1"]})
    both["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] = json.dumps(status)
    put(h.store, nad("net-b", subnet="10.20.0.0/24"), both)
    h.sync()
    assert sorted(k[1] for k in node.entries()) == ["net1", "net2"]
    assert "ingress_net2" in h.nfts[path].list_table().chains
    put(h.store, web())  # net2 left the network-status
    h.sync()
    assert sorted(k[1] for k in node.entries()) == ["net1"]
    table = h.nfts[path].list_table()
    assert "ingress_net2" not in table.chains and "ingress_net1" in table.chains
    remove(h.store, web())
    h.sync()
    assert node.entries() == {} and h.controller.records == {}
    assert "ingress_net1" not in h.nfts[path].list_table().chains


def test_a_path_that_names_another_namespace_now_is_never_touched(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    put(h.store, web())
    h.sync()
    Path(path + ".new").touch()
    Path(path + ".new").replace(path)  # another namespace (inode) under the same path
    transactions = h.nfts[path].transactions
    remove(h.store, web())
    h.sync()
    assert node.entries() == {} and h.nfts[path].transactions == transactions


def test_adoption_off_reports_unguarded_with_event_metric_and_status(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h, enabled=False)
    node.netns("cni-web", net1("10.10.0.1"))
    put(h.store, web(), pod("idle", labels={"app": "idle"}, nets=[(NET_A, "net1", "10.10.0.3")]))
    h.sync()
    assert node.entries() == {} and node.listed == []
    (u,) = node.adopter.unguarded  # idle is selected by no policy: open by policy, nothing to say
    assert (u.pod, u.ifname, u.reason) == ("default/web", "net1", ADOPTION_OFF)
    assert u.message == "NAD does not chain mnp and adoption is off"
    assert "NAD does not chain mnp and adoption is off" in node.events.active[("Pod default/web", "Unguarded")]
    assert "default/web net1" in node.events.active[("MultiNetworkPolicy default/web-from-clients", "Unguarded")]
    assert h.metrics.unguarded.labels(ADOPTION_OFF)._value.get() == 1
    doc = status_document(h.controller, h.store.source_status(), "node-a")
    assert doc["unguarded"][0]["message"] == "NAD does not chain mnp and adoption is off"
    put(h.store, web(net=NET_C))  # moved to a chained network: no longer unguarded
    h.sync()
    assert node.adopter.unguarded == [] and node.events.active == {}


def test_a_policy_change_alone_judges_the_unguarded_again_without_walking_the_pods(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pass walks every pod of the cluster; which attachments are wanted and found does not depend on the
    policies, so a change of policies alone only re-judges the unguarded ones — with the answer a full pass gives."""
    node = Node(tmp_path, h, enabled=False)
    put(h.store, web(), pod("idle", labels={"app": "idle"}, nets=[(NET_A, "net1", "10.10.0.3")]))
    h.sync()
    walks: list[int] = []
    full_pass = Adopter._wants

    def counted(self: Adopter, snap: Any) -> Any:
        walks.append(1)
        return full_pass(self, snap)

    monkeypatch.setattr(Adopter, "_wants", counted)

    def fresh() -> list[tuple[str, str, str]]:
        other = Adopter(h.store, str(tmp_path / "state"), h.clock, enabled=False, node_name="node-a")
        other.reconcile()
        return [(u.pod, u.ifname, u.reason) for u in other.unguarded]

    def seen() -> list[tuple[str, str, str]]:
        return [(u.pod, u.ifname, u.reason) for u in node.adopter.unguarded]

    idle_policy = policy("idle-closed", select={"app": "idle"}, ingress=[])
    put(h.store, idle_policy)  # now idle is selected: unguarded too
    h.sync()
    assert walks == [] and seen() == [("default/idle", "net1", ADOPTION_OFF), ("default/web", "net1", ADOPTION_OFF)]
    assert "default/idle net1" in node.events.active[("MultiNetworkPolicy default/idle-closed", "Unguarded")]
    walks.clear()
    assert seen() == fresh() and len(walks) == 1
    walks.clear()
    remove(h.store, idle_policy)
    h.sync()
    assert walks == [] and seen() == [("default/web", "net1", ADOPTION_OFF)] == fresh()
    walks.clear()
    put(h.store, web(net=NET_C))  # a pod change: the whole pass again
    h.sync()
    assert walks == [1] and seen() == [] == fresh()


def test_plugin_type_outside_the_filter_is_unguarded(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    node.adopter.plugins = frozenset({"ipvlan"})
    put(h.store, web())
    h.sync()
    (u,) = node.adopter.unguarded
    assert u.reason == NOT_ADOPTED_TYPE and "'macvlan' is not in --network-plugins (ipvlan)" in u.message


def test_netns_not_found_is_retried_and_adopted_once_it_appears(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    node.netns("cni-else", net1("10.10.0.99"))
    put(h.store, web())
    assert h.controller.sync() is False  # the runner retries with backoff
    (u,) = node.adopter.unguarded
    assert u.reason == NETNS_NOT_FOUND and u.message.startswith("netns not found: no network namespace")
    assert h.metrics.unguarded.labels(NETNS_NOT_FOUND)._value.get() == 1
    listed = len(node.listed)
    h.clock.advance(1.0)
    assert h.controller.sync() is False
    assert len(node.listed) == listed  # "cni-else" was listed after the pod was wanted: not again
    node.netns("cni-web", net1("10.10.0.1"))
    h.clock.advance(1.0)
    assert h.controller.sync() is True  # only the new namespace is listed
    assert node.listed[listed:] == [str(node.dir / "cni-web")]
    assert len(node.entries()) == 1 and node.adopter.unguarded == []


def test_a_namespace_listed_before_the_interface_was_wanted_is_listed_again(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    path = node.netns("cni-web")  # created, interface not moved in yet
    put(h.store, web(node="node-b"))
    h.sync()
    node.adopter.reconcile(periodic=True)  # lists cni-web (empty) for nobody
    node.links[path] = (net1("10.10.0.1"),)
    h.clock.advance(1.0)
    put(h.store, web())
    h.sync()
    assert len(node.entries()) == 1


def test_ambiguous_matches_are_not_adopted(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    node.netns("cni-web", net1("10.10.0.1"))
    node.netns("cni-spoof", net1("10.10.0.1"))
    put(h.store, web())
    assert h.controller.sync() is False
    (u,) = node.adopter.unguarded
    assert u.reason == AMBIGUOUS and "cni-spoof" in u.message and "cni-web" in u.message
    assert node.entries() == {}


def test_a_restarted_daemon_keeps_its_adopted_entries_without_scanning_the_node(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    for i in range(5):
        node.netns(f"cni-{i}", net1(f"10.10.0.{50 + i}"))
    put(h.store, web())
    h.sync()
    before = node.entries()
    # restart: a new store and daemon, the state dir and the namespaces as they were
    h2 = Harness()
    put(h2.store, namespace("default"), nad("net-a"), web())
    h2.nfts = h.nfts
    node2 = Node(tmp_path, h2)
    node2.links = node.links
    for e in before.values():
        h2.store.upsert(STATE, e.key, e)  # what the state-dir source reads at start
    h2.ready()
    h2.sync()
    assert node2.entries() == before and node2.listed == [path]  # only its own namespace, to check it
    assert h2.controller.records[next(iter(before))].state == PROGRAMMED


def test_unknown_nad_and_pending_status(h: Harness, tmp_path: Path) -> None:
    node = Node(tmp_path, h)
    h.store.delete(NAD, NET_A)
    put(h.store, web())
    h.sync()
    assert [u.reason for u in node.adopter.unguarded] == ["nad-unknown"]
    h.store.delete(POD, "default/web")
    put(h.store, web(status=False))
    h.sync()
    assert node.adopter.unguarded == [] and node.entries() == {}
    assert all(r.state == PENDING for r in h.controller.records.values())


def test_a_plugin_entry_wins_and_its_chains_are_never_removed_by_adoption(h: Harness, tmp_path: Path) -> None:
    """The plugin's entry reaches the directory before the store (inotify lag): nothing is adopted; and when a
    plugin entry shows up for an adopted interface, the adopted entry goes without touching the chains."""
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    plugin = StateEntry("c-web", "net1", path, "default", "web", "uid-default-web", "net-a", ("10.10.0.1",))
    StateStore(str(node.state_dir)).write(plugin)  # on disk, not yet in the store
    put(h.store, web())
    h.sync()
    assert [e.adopted for e in node.entries().values()] == [False]
    StateStore(str(node.state_dir)).delete(*plugin.key)
    h.clock.advance(1.0)
    h.sync(periodic=True)
    (adopted,) = node.entries().values()
    assert adopted.adopted and "ingress_net1" in h.nfts[path].list_table().chains
    h.store.upsert(STATE, plugin.key, plugin)  # the plugin's own entry for the same interface
    h.sync()
    assert plugin.key in h.store.snapshot().entries and adopted.key not in h.store.snapshot().entries
    assert "ingress_net1" in h.nfts[path].list_table().chains


def test_pods_from_before_a_nad_chained_mnp_stay_or_become_adopted(h: Harness, tmp_path: Path) -> None:
    """Chaining mnp in a NAD (the migration's step 2) must not open the pods that started before the edit."""
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    put(h.store, web())
    h.sync()
    (before,) = node.entries().values()
    chained = nad("net-a")
    chained["spec"]["config"] = json.dumps({"cniVersion": "1.0.0", "name": "net-a", "plugins": [
        {"type": "macvlan"}, {"type": "mnp"}]})  # fmt: skip
    put(h.store, chained)
    h.sync()
    assert node.entries() == {before.key: before} and "ingress_net1" in h.nfts[path].list_table().chains
    # a pod of the chained NAD without a plugin entry (it started before the edit) is adopted too …
    other = node.netns("cni-old", net1("10.10.0.7"))
    put(h.store, pod("old", labels={"app": "web"}, nets=[(NET_A, "net1", "10.10.0.7")]))
    h.sync()
    assert {e.netns for e in node.entries().values()} == {path, other}
    # … and with adoption off, what was adopted stays; a new one is reported for what it is
    node2 = Node(tmp_path, h, enabled=False)
    node2.links = node.links
    put(h.store, pod("older", labels={"app": "web"}, nets=[(NET_A, "net1", "10.10.0.8")]))
    h.sync(periodic=True)
    assert {e.netns for e in node2.entries().values()} == {path, other}
    messages = {u.pod: u.message for u in node2.adopter.unguarded}
    assert messages == {"default/older": "started before its NAD chained mnp and adoption is off"}


def test_mnpctl_lines_for_unguarded_and_open_adopted_interfaces() -> None:
    from daemon.cli.pods import _adopted_open
    from daemon.cli.status import unguarded_lines

    doc = {"unguarded": [{"pod": "ns/db", "ifname": "net1", "network": "ns/legacy", "reason": "adoption-off",
                          "message": "NAD does not chain mnp and adoption is off"}, "junk"]}  # fmt: skip
    assert unguarded_lines(doc) == [
        "ns/db net1 (network ns/legacy) unguarded: NAD does not chain mnp and adoption is off"
    ]
    assert unguarded_lines(None) == [] and unguarded_lines({"unguarded": "x"}) == []
    adopted = StateEntry("adopted-u", "net1", "/run/netns/x", origin="adopted")
    assert _adopted_open(adopted, "no such table", {"state": "pending"})
    assert not _adopted_open(adopted, "no such table", {"state": "programmed"})
    assert not _adopted_open(adopted, "netns gone: /run/netns/x", None)


def test_a_namespace_file_that_cannot_be_checked_is_no_candidate_and_stops_nothing(tmp_path: Path) -> None:
    """EACCES on one namespace file (seen for /proc/1/ns/net in a sandbox) is neither "gone" nor fatal: the scan
    skips it and lists the others."""
    import daemon.sources.adopt as adopt

    (tmp_path / "locked").write_text("")
    (tmp_path / "pod").write_text("")
    real = adopt.netns_identity

    def identity(path: str) -> tuple[int, int]:
        if path.endswith("locked"):
            raise adopt.NetnsUnusable(f"cannot check network namespace {path}: Permission denied")
        return real(path)

    scanner = NetnsScanner(Harness().clock, (str(tmp_path),), proc=None, links_of=lambda path: ())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(adopt, "netns_identity", identity)
        assert list(scanner.namespaces().values()) == [str(tmp_path / "pod")]


def test_a_forged_network_status_never_adopts_another_pods_interface(h: Harness, tmp_path: Path) -> None:
    """Who can edit a pod's annotations can write any network-status on it: a pod that no policy selects (open)
    claiming the interface of a guarded pod on the same node must not get that interface programmed with its own
    rules. A namespace that holds another pod's interfaces is no candidate: nothing is adopted, it is reported."""
    node = Node(tmp_path, h)
    path = node.netns("cni-web", net1("10.10.0.1"))
    victim = StateEntry("c-web", "net1", path, "default", "web", "uid-default-web", "net-c", ("10.10.0.1",), ifindex=2)
    StateStore(str(node.state_dir)).write(victim)
    h.store.upsert(STATE, victim.key, victim)
    put(h.store, web(net=NET_C))
    put(h.store, policy("web-c", select={"app": "web"}, policy_for=NET_C, ingress=[from_pods({"role": "client"})]))
    h.sync()
    assert h.ingress(victim, "10.10.0.11", "10.10.0.1", 80) == "drop"
    put(h.store, pod("mallory", nets=[(NET_A, "net1", "10.10.0.1")]))  # the victim's address, forged
    h.clock.advance(1.0)
    h.sync(periodic=True)
    assert h.ingress(victim, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert [e.key for e in node.entries().values()] == [victim.key]


@pytest.mark.parametrize("uid", ["", "not a/uid"])
def test_an_adopted_entry_of_a_pod_without_a_usable_uid_can_be_read_back(h: Harness, tmp_path: Path, uid: str) -> None:
    """A pod from the manifests directory may have no uid, or any string: the entry's containerID is built from it
    and must still be one the state dir's readers (mnpd's own state-dir source after a restart or a rescan, the
    plugin's DEL and GC, mnpctl) accept — else the entry is 'unreadable', the rescan drops it from the store and
    nothing ever removes it."""
    node = Node(tmp_path, h)
    node.netns("cni-web", net1("10.10.0.1"))
    put(h.store, pod("web", labels={"app": "web"}, nets=[(NET_A, "net1", "10.10.0.1")], uid=uid))
    h.sync()
    entries, problems = StateStore(str(node.state_dir)).entries()
    assert problems == [] and [e.pod for e in entries] == ["default/web"] and entries[0].adopted
