"""Store → controller → exactly which interfaces get a transaction, with FakeNft and a fake clock.

Each pod netns is a FakeNft that starts with the CNI plugin's pending table, as on a real node. Behaviour is
checked with the packet tracer (shared.nft.trace) and the Fakes' transaction counters.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from daemon.apply import Applier
from daemon.clock import FakeClock
from daemon.controller import Controller, SyncReport
from daemon.events import LogEvents
from daemon.metrics import Metrics
from daemon.records import FAILED, PENDING, PROGRAMMED, TERMINATED, IfaceKey, InterfaceRecord
from daemon.store import NAD, NAMESPACE, POD, POLICY, STATE, Store
from shared.model import NETWORK_STATUS
from shared.netns import identity_if_usable, netns_identity
from shared.nft.errors import NftError
from shared.nft.fake import ElementView, FakeNft, TableView
from shared.nft.objects import Chain, Element
from shared.nft.render import RenderOptions, render_interface, render_remove_table
from shared.nft.trace import Packet, trace
from shared.nft.transaction import Transaction
from shared.rules import InterfaceRules
from shared.state import StateEntry
from tests.unit.test_daemon_builders import NET_A, attach, entry, from_pods, namespace, pod, policy, put, remove


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = Store(self.clock)
        self.store.register_source("objects", [NAMESPACE, POD, NAD, POLICY])
        self.store.register_source("state-dir", [STATE])
        self.nfts: dict[str, FakeNft] = {}
        self.broken: dict[str, int] = defaultdict(int)  # netns → how many more runs fail
        self.sent: dict[str, list[Transaction]] = defaultdict(list)  # netns → transactions run (ok or not)
        self.closed: list[str] = []  # netns whose nft the applier released
        self.events = LogEvents()
        self.metrics = Metrics()
        self.applier = Applier(self.nft_for, RenderOptions())
        self.controller = Controller(self.store, self.applier, self.clock, events=self.events, metrics=self.metrics)

    def nft_for(self, netns: str) -> FakeNft:
        nft = self.nfts[netns]
        harness = self

        class Flaky:
            def close(self) -> None:
                harness.closed.append(netns)

            def list_table(self) -> TableView:
                return nft.list_table()

            def run(self, tx: Transaction) -> None:
                harness.sent[netns].append(tx)
                if harness.broken[netns] > 0:
                    harness.broken[netns] -= 1
                    nft.transactions += 1
                    raise NftError("Error: Could not process rule: Cannot allocate memory")
                nft.run(tx)

            apply_delta = run

        return Flaky()  # type: ignore[return-value]

    def attach(self, *entries: StateEntry) -> None:
        """What the CNI plugin does at ADD: the pending table, then the state entry."""
        for e in entries:
            self.nfts.setdefault(
                e.netns, FakeNft.from_transaction(render_interface(InterfaceRules.pending(e.ifname, ifindex=e.ifindex)))
            )
        attach(self.store, *entries)

    def ready(self) -> None:
        self.store.mark_synced("objects")
        self.store.mark_synced("state-dir")

    def sync(self, periodic: bool = False) -> SyncReport:
        self.controller.sync(periodic)
        return self.controller.last_report

    def transactions(self) -> dict[str, int]:
        return {ns: nft.transactions for ns, nft in self.nfts.items() if nft.transactions}

    def reset_counters(self) -> None:
        for nft in self.nfts.values():
            nft.transactions = nft.operations = 0

    def ingress(self, e: StateEntry, src: str, dst: str, port: int, proto: str = "tcp") -> str:
        packet = Packet("input", e.ifname, src, dst, proto, port)
        return trace(self.nfts[e.netns].list_table(), packet).verdict

    def egress(self, e: StateEntry, src: str, dst: str, port: int, proto: str = "tcp") -> str:
        packet = Packet("output", e.ifname, src, dst, proto, port)
        return trace(self.nfts[e.netns].list_table(), packet).verdict


# Local pods: server (10.10.0.1) and db (10.10.0.2); remote peers: client (10.10.0.10), other (10.10.0.11).
SERVER = entry("c-server", "server", ip="10.10.0.1")
DB = entry("c-db", "db", ip="10.10.0.2")


def cluster(h: Harness) -> None:
    put(
        h.store,
        namespace("default"),
        pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")]),
        pod("db", labels={"app": "db"}, nets=[(NET_A, "net1", "10.10.0.2")]),
        pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b"),
        pod("other", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.11")], node="node-b"),
        policy("server-from-clients", select={"app": "server"}, ingress=[from_pods({"role": "client"}, [("TCP", 80)])]),
        policy("db-from-others", select={"app": "db"}, ingress=[from_pods({"role": "other"}, [("TCP", 5432)])]),
    )
    h.attach(SERVER, DB)


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    cluster(harness)
    return harness


def test_nothing_is_programmed_until_every_source_has_synced(h: Harness) -> None:
    assert h.sync(periodic=True).ran is False
    h.store.mark_synced("objects")
    assert h.sync().ran is False
    assert h.transactions() == {}
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"  # still the plugin's pending table
    h.store.mark_synced("state-dir")
    report = h.sync()
    assert report.ran and report.transactions == 2
    assert h.transactions() == {SERVER.netns: 1, DB.netns: 1}
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 81) == "drop"
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5432) == "accept"
    assert {r.state for r in h.controller.records.values()} == {PROGRAMMED}


def test_a_no_op_resync_issues_no_transaction(h: Harness) -> None:
    h.ready()
    h.sync()
    h.reset_counters()
    for _ in range(3):
        h.clock.advance(60)
        report = h.sync(periodic=True)
        assert report.dirty == 2 and report.transactions == 0
    assert h.transactions() == {}
    put(h.store, pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b"))
    assert h.sync().dirty == 0  # an update that changes nothing the daemon keeps is not even a change


def test_a_label_change_on_one_pod_only_touches_the_interfaces_that_refer_to_it(h: Harness) -> None:
    h.ready()
    h.sync()
    h.reset_counters()
    put(h.store, pod("client", labels={"role": "gone"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b"))
    report = h.sync()
    assert report.dirty == 1  # only the server's rules refer to the client: db is not even recomputed
    assert h.transactions() == {SERVER.netns: 1}
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"
    # a pod that starts to match a peer selector is found too
    put(h.store, pod("newcomer", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.12")], node="node-b"))
    report = h.sync()
    assert report.dirty == 1 and report.keys == [DB.key]
    assert h.ingress(DB, "10.10.0.12", "10.10.0.2", 5432) == "accept"


def test_removing_and_adding_a_peer_updates_existing_pods(h: Harness) -> None:
    h.ready()
    h.sync()
    remove(h.store, pod("other"))
    assert h.sync().keys == [DB.key]
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5432) == "drop"
    put(h.store, pod("other", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.11")], node="node-b"))
    assert h.sync().keys == [DB.key]
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5432) == "accept"


def only_elements(tx: Transaction) -> bool:
    return all(isinstance(op.obj, Element) for op in tx.operations)


SPARE = pod("spare", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.14")], node="node-b")


def test_a_peer_change_is_sent_as_a_delta_of_set_elements(h: Harness) -> None:
    put(h.store, SPARE)  # db's ingress set never runs empty (an empty set has no lookup rule: a chain change)
    h.ready()
    h.sync()
    assert not only_elements(h.sent[DB.netns][-1])  # the first programming replaces the pending chains
    remove(h.store, pod("other"))
    assert h.sync().keys == [DB.key]
    (delta,) = h.sent[DB.netns][-1:]
    assert only_elements(delta) and [op.verb for op in delta.operations] == ["delete"]
    assert h.applier.deltas == 1
    put(h.store, pod("other", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.11")], node="node-b"))
    h.sync()
    assert only_elements(h.sent[DB.netns][-1])
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5432) == "accept"
    assert h.ingress(DB, "10.10.0.12", "10.10.0.2", 5432) == "drop"


PEERS = "ingress_net1_v4_peers"  # DB's peer map (shared/nft/README.md)


def peer_element(h: Harness, address: str) -> ElementView:
    """The element of DB's peer map that holds `address` (its verdict: the port group that admits it)."""
    found = h.nfts[DB.netns].list_table().sets[PEERS].lookup([address])
    assert found is not None
    return found


def test_a_table_edited_behind_the_daemons_back_gets_the_full_transaction(h: Harness) -> None:
    put(h.store, SPARE)
    h.ready()
    h.sync()
    other = peer_element(h, "10.10.0.11")
    hand = Transaction().delete(Element(PEERS, other.key))
    hand.add(Element(PEERS, "10.10.0.99", other.value))
    h.nfts[DB.netns].run(hand)  # someone edits the table
    remove(h.store, pod("other"))  # the delta would delete 10.10.0.11, which is not there any more
    report = h.sync()
    assert report.keys == [DB.key] and report.failed == 0
    delta, full = h.sent[DB.netns][-2:]
    assert only_elements(delta) and not only_elements(full)
    assert h.applier.deltas == 0
    assert h.ingress(DB, "10.10.0.99", "10.10.0.2", 5432) == "drop"  # the hand's element is gone with the rest
    assert h.ingress(DB, "10.10.0.14", "10.10.0.2", 5432) == "accept"


def test_a_policy_change_only_touches_the_interfaces_it_selects(h: Harness) -> None:
    h.ready()
    h.sync()
    put(
        h.store, policy("db-from-others", select={"app": "db"}, ingress=[from_pods({"role": "other"}, [("TCP", 5433)])])
    )
    report = h.sync()
    assert report.dirty == 1 and report.keys == [DB.key]
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5433) == "accept"
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5432) == "drop"
    remove(h.store, policy("db-from-others"))
    assert h.sync().keys == [DB.key]
    assert h.ingress(DB, "192.0.2.1", "10.10.0.2", 1) == "accept"  # no policy selects it: open


def test_a_namespace_label_change_touches_policies_with_namespace_selectors(h: Harness) -> None:
    rule = {"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}
    put(h.store, namespace("blue", {"team": "blue"}), pod("b1", "blue", nets=[(NET_A, "net1", "10.10.0.20")]))
    put(h.store, policy("server-from-clients", select={"app": "server"}, ingress=[rule]))
    h.ready()
    h.sync()
    assert h.ingress(SERVER, "10.10.0.20", "10.10.0.1", 80) == "accept"
    put(h.store, namespace("blue", {"team": "red"}))
    report = h.sync()
    assert report.dirty == 1 and report.keys == [SERVER.key]
    assert h.ingress(SERVER, "10.10.0.20", "10.10.0.1", 80) == "drop"


def test_an_invalid_policy_posts_an_event_once_and_fails_closed(h: Harness) -> None:
    bad = policy(
        "server-from-clients", select={"app": "server"}, ingress=[{"from": [{"ipBlock": {"cidr": "10.10.0.300/24"}}]}]
    )
    put(h.store, bad)
    h.ready()
    h.sync()
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"  # isolated, nothing allowed
    assert h.ingress(SERVER, "10.10.0.77", "10.10.0.1", 80) == "drop"
    assert [(ref.key, reason) for ref, reason, _ in h.events.posted] == [
        ("MultiNetworkPolicy default/server-from-clients", "InvalidPolicy")
    ]
    assert "10.10.0.300/24" in h.events.posted[0][2]
    assert h.metrics.invalid_policies._value.get() == 1
    h.sync(periodic=True)
    assert len(h.events.posted) == 1  # deduplicated
    put(h.store, policy("server-from-clients", select={"app": "server"}, ingress=[from_pods({"role": "client"})]))
    h.sync()
    assert h.metrics.invalid_policies._value.get() == 0
    put(h.store, bad)
    h.sync()
    assert len(h.events.posted) == 2  # invalid again after having been fixed: a new Event


def test_a_failed_transaction_changes_nothing_and_is_retried(h: Harness) -> None:
    h.ready()
    h.broken[SERVER.netns] = 1
    assert h.controller.sync() is False
    assert h.controller.records[SERVER.key].state == FAILED
    assert h.controller.records[DB.key].state == PROGRAMMED
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"  # still pending: never less restricted
    assert [(ref.key, reason) for ref, reason, _ in h.events.posted] == [("Pod default/server", "RulesNotApplied")]
    assert h.metrics.apply_errors._value.get() == 1
    h.reset_counters()
    assert h.controller.sync() is True  # the runner's retry
    assert h.transactions() == {SERVER.netns: 1}  # only the failed one
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    h.broken[SERVER.netns] = 1
    put(h.store, pod("client", labels={"role": "x"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b"))
    h.controller.sync()
    assert len(h.events.posted) == 2  # failing again after a success: a new Event


def test_an_interface_missing_from_network_status_stays_pending(h: Harness) -> None:
    late = entry("c-late", "late", ip="10.10.0.3")
    put(h.store, pod("late", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.3")], status=False))
    h.attach(late)
    h.ready()
    h.sync()
    assert h.controller.records[late.key].state == PENDING
    assert "network-status" in h.controller.records[late.key].reason
    assert late.netns not in h.transactions()
    put(h.store, pod("late", labels={"app": "server"}, nets=[(NET_A, "net2", "10.10.0.3")]))
    h.sync()
    assert h.controller.records[late.key].state == PENDING  # net1 is not in the status
    put(h.store, pod("late", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.3")]))
    assert h.sync().keys == [late.key]
    assert h.ingress(late, "10.10.0.10", "10.10.0.3", 80) == "accept"


def test_unknown_pods_and_other_incarnations_stay_pending(h: Harness) -> None:
    stale = entry("c-old", "server", uid="uid-of-an-older-pod", ip="10.10.0.1")
    orphan = entry("c-orphan", "nobody")
    h.attach(stale, orphan)
    h.ready()
    h.sync()
    assert h.controller.records[stale.key].state == PENDING
    assert "UID" in h.controller.records[stale.key].reason
    assert h.controller.records[orphan.key].state == PENDING
    assert set(h.transactions()) == {SERVER.netns, DB.netns}


def test_a_terminated_pod_keeps_its_rules(h: Harness) -> None:
    h.ready()
    h.sync()
    put(h.store, pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")], phase="Succeeded"))
    h.reset_counters()
    h.sync()
    assert h.transactions() == {}
    assert h.controller.records[SERVER.key].state == TERMINATED
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"


def test_state_entries_come_and_go(h: Harness) -> None:
    h.ready()
    h.sync()
    h.store.delete(STATE, DB.key)
    assert h.sync().transactions == 0
    assert DB.key not in h.controller.records
    h.applier.close()  # waits for the closer threads
    assert DB.netns in h.closed  # the applier let go of the namespace
    h.attach(DB)
    assert h.sync().keys == [DB.key]


def test_a_restarted_daemon_adopts_the_rules_with_one_transaction_per_interface(h: Harness) -> None:
    h.ready()
    h.sync()
    before = {ns: nft.dump() for ns, nft in h.nfts.items()}
    h.reset_counters()
    restarted = Controller(h.store, h.applier, h.clock, events=h.events)  # same netns contents, empty memory
    restarted.sync(periodic=True)
    assert h.transactions() == {SERVER.netns: 1, DB.netns: 1}
    assert {ns: nft.dump() for ns, nft in h.nfts.items()} == before  # idempotent
    h.reset_counters()
    restarted.sync(periodic=True)
    assert h.transactions() == {}


def test_metrics_follow_the_interfaces(h: Harness) -> None:
    h.ready()
    h.clock.advance(0.5)
    h.sync()
    text = h.metrics.exposition().decode()
    assert 'mnp_managed_interfaces{state="programmed"} 2.0' in text
    assert "mnp_managed_pods 2.0" in text
    assert 'mnp_nft_transactions_total{result="ok"} 2.0' in text
    assert "mnp_programming_latency_seconds_count 2.0" in text
    assert 'mnp_source_synced{source="state-dir"} 1.0' in text


def test_namespaces_are_programmed_concurrently_and_reported_in_order() -> None:
    """Ten pods, four workers: every interface programmed once, the report in key order, a failure in one
    namespace not touching the others."""
    h = Harness()
    entries = [entry(f"c-{i:02d}", f"p{i:02d}", ip=f"10.10.1.{i + 1}") for i in range(10)]
    put(
        h.store,
        namespace("default"),
        *(pod(f"p{i:02d}", labels={"app": "db"}, nets=[(NET_A, "net1", f"10.10.1.{i + 1}")]) for i in range(10)),
        policy("db", select={"app": "db"}, ingress=[from_pods({"role": "client"}, [("TCP", 5432)])]),
    )
    h.attach(*entries)
    h.broken[entries[3].netns] = 1
    h.ready()
    report = h.sync()
    assert report.keys == sorted(e.key for e in entries if e is not entries[3])
    assert report.failed == 1 and h.controller.records[entries[3].key].state == FAILED
    assert h.applier.workers > 1 and h.applier._pool is not None  # the concurrent path ran
    assert h.sync().keys == [entries[3].key]  # retried
    h.applier.close()


def test_an_unexpected_error_in_one_namespace_loses_no_other_outcome(h: Harness) -> None:
    """The transactions of a sync all run before their bookkeeping: one that raises something unexpected must
    not leave later interfaces' records behind their tables (they would keep allowing what they allowed)."""
    h.ready()
    h.sync()
    nft_db = h.nfts[DB.netns]
    original = nft_db.run

    def explode(tx: Transaction) -> None:
        raise RuntimeError("libnftables crashed")

    nft_db.run = explode  # type: ignore[method-assign]
    put(h.store, pod("x", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.20")], node="node-b"))
    put(h.store, pod("y", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.21")], node="node-b"))
    report = h.sync()  # must not raise
    assert report.keys == [SERVER.key] and report.failed == 1
    assert h.controller.records[DB.key].state == FAILED and h.controller.records[DB.key].applied is None
    nft_db.run = original  # type: ignore[method-assign]
    remove(h.store, pod("x"))
    h.sync()
    assert h.ingress(SERVER, "10.10.0.20", "10.10.0.1", 80) == "drop"  # SERVER's record followed its table
    assert h.ingress(DB, "10.10.0.21", "10.10.0.2", 5432) == "accept"  # DB retried with the full form


def test_canonical_rules_keep_only_what_interfaces_hold(h: Harness) -> None:
    h.ready()
    h.sync()
    for i in range(20):  # peer churn: every sync compiles new rules for DB
        put(
            h.store,
            pod(f"churn{i}", labels={"role": "other"}, nets=[(NET_A, "net1", f"10.10.2.{i + 1}")], node="node-b"),
        )
        h.sync()
    live = {
        d
        for r in h.controller.records.values()
        for rules in (r.applied, r.desired)
        if rules
        for d in (rules.ingress, rules.egress)
    }
    assert set(h.controller._canonical_rules) == live and len(live) <= 4


def test_an_element_added_by_hand_survives_deltas_until_the_periodic_resync(h: Harness) -> None:
    """Deltas only delete what mnpd added: an element someone added by hand is found and removed by the check
    the periodic resync runs on interfaces programmed by deltas — and only on those."""
    put(h.store, SPARE)
    h.ready()
    h.sync()
    by_hand = Element(PEERS, "10.10.0.99", peer_element(h, "10.10.0.11").value)
    h.nfts[DB.netns].run(Transaction().add(by_hand))
    remove(h.store, pod("other"))
    h.sync()
    assert only_elements(h.sent[DB.netns][-1])
    assert h.ingress(DB, "10.10.0.99", "10.10.0.2", 5432) == "accept"  # the delta could not know
    report = h.sync(periodic=True)
    assert report.repaired == 1 and not only_elements(h.sent[DB.netns][-1])
    assert h.ingress(DB, "10.10.0.99", "10.10.0.2", 5432) == "drop"
    assert h.ingress(DB, "10.10.0.14", "10.10.0.2", 5432) == "accept"
    sent = {ns: len(txs) for ns, txs in h.sent.items()}
    assert h.sync(periodic=True).repaired == 0  # checked once per delta, not on every resync
    assert {ns: len(txs) for ns, txs in h.sent.items()} == sent


class CountingConntrack:
    def __init__(self) -> None:
        self.cleaned: list[str] = []

    def clean(self, netns: str, rules: InterfaceRules, addresses: object) -> int:
        self.cleaned.append(netns)
        return 0


def test_a_pod_added_while_running_needs_no_conntrack_pass_for_its_first_rules(h: Harness) -> None:
    """Interfaces found at start may carry a previous daemon's wider rules: their first programming lists
    conntrack. One whose state entry appears later still has the plugin's closed table: nothing to withdraw."""
    conntrack = CountingConntrack()
    h.controller.conntrack = conntrack  # type: ignore[assignment]
    h.ready()
    h.sync()
    assert sorted(conntrack.cleaned) == sorted([SERVER.netns, DB.netns])
    conntrack.cleaned.clear()
    late = entry("c-late", "late", ip="10.10.0.3")
    put(h.store, pod("late", labels={"app": "db"}, nets=[(NET_A, "net1", "10.10.0.3")]))
    h.attach(late)
    assert h.sync().keys == [late.key]
    assert conntrack.cleaned == []
    remove(h.store, pod("other"))  # a real withdrawal for db and late
    h.sync()
    assert sorted(conntrack.cleaned) == sorted([DB.netns, late.netns])


def test_the_periodic_resync_restores_a_table_removed_or_edited_in_the_pod(h: Harness) -> None:
    """A pod with NET_ADMIN can delete the table or flush a chain in its own netns: whatever reached the
    interface (a full form here, no delta), the periodic resync reads every table back, restores the full form
    and reports it (Event, counter, log)."""
    h.ready()
    h.sync()
    h.nfts[SERVER.netns].run(render_remove_table())
    h.nfts[DB.netns].run(Transaction().flush(Chain("ingress_net1")))
    assert h.nfts[SERVER.netns].list_tables() == []  # no table: open
    assert h.ingress(DB, "10.10.0.10", "10.10.0.2", 5432) == "accept"  # empty chain: open
    assert h.sync().repaired == 0  # only the periodic resync reads the tables back
    report = h.sync(periodic=True)
    assert report.repaired == 2 and report.transactions == 2
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(DB, "10.10.0.10", "10.10.0.2", 5432) == "drop"
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5432) == "accept"
    assert sorted((ref.key, reason) for ref, reason, _ in h.events.posted) == [
        ("Pod default/db", "RulesTampered"),
        ("Pod default/server", "RulesTampered"),
    ]
    assert "tampered, restored" in h.events.posted[0][2]
    assert h.metrics.tamper_repairs._value.get() == 2
    assert h.sync(periodic=True).repaired == 0


def test_the_resync_restores_a_pending_table_deleted_before_mnpd_knew_the_pod(h: Harness) -> None:
    """An interface added while mnpd runs holds the plugin's pending table, which mnpd knows: deleting it before
    the pod's network-status arrives does not leave it open past the next periodic resync."""
    h.ready()
    h.sync()
    late = entry("c-late", "late", ip="10.10.0.3")
    h.attach(late)
    h.sync()
    h.nfts[late.netns].run(render_remove_table())
    assert h.sync(periodic=True).repaired == 1
    assert h.ingress(late, "10.10.0.10", "10.10.0.3", 80) == "drop"


def test_the_resync_rebuilds_a_table_the_full_form_cannot_repair(h: Harness) -> None:
    """A base chain replaced by a regular chain of the same name cannot be redeclared as a base chain: the repair
    replaces the whole table, and every interface of the netns gets its full form back."""
    h.ready()
    h.sync()
    fake = h.nfts[SERVER.netns]
    fake.run(Transaction().flush(Chain("input")).delete(Chain("input")).add(Chain("input")))
    assert h.sync(periodic=True).repaired == 1
    assert [c.hook for c in fake.list_table().chains.values() if c.name == "input"] == ["input"]
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"


def test_a_tampered_table_the_resync_cannot_restore_is_reported_failed_not_left_programmed(h: Harness) -> None:
    """A pod with NET_ADMIN replaces mnp's table by one the repair can neither rewrite nor delete (a table with
    the `owner` flag, held by a process in the pod: only that process may change it; the kernel test has the real
    one, here both transactions fail). The interface is open while that lasts: it must not be shown `programmed`
    with nothing but a log line. It is failed (Event, apply error counted, the status' reason), retried with the
    full form, and enforced again once the table can be written."""
    h.ready()
    h.sync()
    h.nfts[SERVER.netns].run(render_remove_table())
    h.broken[SERVER.netns] = 2  # the full form and the table's replacement are both refused
    report = h.sync(periodic=True)
    record = h.controller.records[SERVER.key]
    assert record.state == FAILED and "could not be restored" in record.reason
    assert report.repaired == 0 and report.failed == 1
    assert h.metrics.apply_errors._value.get() == 1
    assert [(ref.key, reason) for ref, reason, _ in h.events.posted] == [("Pod default/server", "RulesNotApplied")]
    assert "tampered" in h.events.posted[0][2]
    assert h.nfts[SERVER.netns].list_tables() == []  # open: what the failure reports
    h.clock.advance(60)
    h.sync()  # the retry: the full form
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"


def test_two_entries_of_different_pods_naming_one_interface_close_it_until_one_goes(h: Harness) -> None:
    """Two state entries of different pods name the same interface of one netns (a stale entry whose
    `/proc/PID/ns/net` path a new pod's sandbox reuses, read after a restart; an entry written by hand): each
    interface's full form rewrote the one chain with its own pod's rules, so the resync flipped the interface
    between the two, opening it to what only the other pod is allowed. Neither pod's rules may go there: the
    interface is closed and both are pending with the conflict as reason and an Event, until one entry goes."""
    cluster(h)
    put(h.store, pod("open", labels={"app": "open"}, nets=[(NET_A, "net1", "10.10.0.5")]))  # no policy: open
    claim = json.loads(entry("c-open", "open", ip="10.10.0.5").to_json())
    same_path = StateEntry.from_json(json.dumps({**claim, "netns": SERVER.netns}))
    h.attach(SERVER, same_path)
    h.ready()
    for periodic in (False, True, True):
        h.sync(periodic)
        assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
        assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"  # closed: whose rules is not known
        for key in (SERVER.key, same_path.key):
            record = h.controller.records[key]
            assert record.state == PENDING and "names the same interface" in record.reason, record
    posted = sorted((ref.key, reason) for ref, reason, text in h.events.posted if "same interface" in text)
    assert posted == [("Pod default/open", "RulesNotApplied"), ("Pod default/server", "RulesNotApplied")]
    h.store.delete(STATE, same_path.key)
    h.sync()
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"


def test_entries_of_one_pod_or_of_other_interfaces_of_one_netns_are_no_conflict(h: Harness) -> None:
    """Two interfaces of one pod netns (net1, net2), and a second entry of the same pod for net1 (another
    container ID of its sandbox), claim nothing of another pod: programmed as usual."""
    cluster(h)
    put(
        h.store,
        pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1"), (NET_A, "net2", "10.10.0.7")]),
    )
    second = entry("c-server", "server", ifname="net2")
    again = StateEntry.from_json(
        json.dumps({**json.loads(entry("c-again", "server").to_json()), "netns": SERVER.netns})
    )
    h.attach(SERVER, second, again)
    h.ready()
    h.sync()
    assert {h.controller.records[k.key].state for k in (SERVER, second, again)} == {PROGRAMMED}
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"


def test_conflicts_are_looked_for_again_only_when_an_entry_changed(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sync whose state entries did not change does not walk their claims again; an entry that comes while the
    daemon runs, naming another pod's interface, is still found at the next sync and closes both."""
    import daemon.controller as controller_module

    searched: list[int] = []
    original = controller_module.find_conflicts

    def counted(records: dict[IfaceKey, InterfaceRecord]) -> dict[IfaceKey, str]:
        searched.append(len(records))
        return original(records)

    monkeypatch.setattr(controller_module, "find_conflicts", counted)
    cluster(h)
    put(h.store, pod("open", labels={"app": "open"}, nets=[(NET_A, "net1", "10.10.0.5")]))
    h.attach(SERVER)
    h.ready()
    h.sync()
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    searched.clear()
    for periodic in (False, True, False):
        h.sync(periodic)
    assert searched == []
    claim = json.loads(entry("c-open", "open", ip="10.10.0.5").to_json())
    same_path = StateEntry.from_json(json.dumps({**claim, "netns": SERVER.netns}))
    h.attach(same_path)
    h.sync()
    assert len(searched) == 1  # once, for the new entry
    for key in (SERVER.key, same_path.key):
        record = h.controller.records[key]
        assert record.state == PENDING and "names the same interface" in record.reason, record
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "drop"


def test_a_netns_path_that_could_not_be_checked_at_first_sight_still_never_programs_another_namespace(
    tmp_path: Path,
) -> None:
    """The namespace a path names is recorded when mnpd first sees the entry, so that a reused path (/proc/PID)
    never gets this interface's rules. A path that could not be checked then (NetnsUnusable: a loop here, EACCES
    alike) must be recorded once it can be, not left unchecked for the interface's lifetime."""
    import json
    import os

    from daemon.records import GONE

    h = Harness()
    path = tmp_path / "mnpt-ns"
    path.symlink_to(path)  # ELOOP: cannot be checked
    server = StateEntry.from_json(json.dumps({**json.loads(SERVER.to_json()), "netns": str(path)}))
    cluster(h)
    h.attach(server)
    h.broken[str(path)] = 1  # the first programming fails (as it does where the path cannot be used)
    h.ready()
    h.sync()
    assert h.controller.records[server.key].state == FAILED
    path.unlink()
    path.touch()  # now a namespace: the retry programs it
    h.clock.advance(60)
    h.sync()
    record = h.controller.records[server.key]
    assert record.state == PROGRAMMED
    sent = len(h.sent[str(path)])
    other = tmp_path / "mnpt-other"
    other.touch()
    os.replace(other, path)  # the path names another namespace now
    put(h.store, policy("server-from-clients", select={"app": "server"}, ingress=[from_pods({"role": "other"})]))
    h.sync()
    assert record.state == GONE and len(h.sent[str(path)]) == sent


def test_an_error_compiling_one_interface_keeps_the_ones_already_programmed_booked(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The applier programs each interface as soon as it is compiled: when compiling a later one fails, the
    earlier ones' transactions have landed and are recorded as what is programmed (a later delta starts from
    them); the error reaches the runner (backoff) and the next sync programs the rest."""
    import daemon.controller

    h.ready()
    compile_one = daemon.controller.rules_for
    seen: list[str] = []

    def failing_second(*args: object, **kwargs: object) -> InterfaceRules:
        seen.append("x")
        if len(seen) == 2:
            raise RuntimeError("a compiler bug")
        return compile_one(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.controller, "rules_for", failing_second)
    with pytest.raises(RuntimeError, match="a compiler bug"):
        h.controller.sync()
    first, second = (h.controller.records[k] for k in sorted(h.controller.records))
    assert first.state == PROGRAMMED and first.applied is not None and first.applied == first.desired
    assert second.applied is None and second.state != PROGRAMMED
    assert sum(h.transactions().values()) == 1
    monkeypatch.setattr(daemon.controller, "rules_for", compile_one)
    report = h.sync()
    assert report.transactions == 1 and {r.state for r in h.controller.records.values()} == {PROGRAMMED}
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(DB, "10.10.0.11", "10.10.0.2", 5432) == "accept"


def test_a_network_status_entry_of_the_wrong_types_leaves_its_interface_closed_and_the_rest_enforced(
    h: Harness,
) -> None:
    """`"default": "false"` (a string: truthy) must not pass the interface off as the primary network, nor
    anything else garbled in the entry stop the other pods' enforcement: the interface stays in the plugin's
    closed table, the others are programmed."""
    odd = entry("c-odd", "odd", ip="10.10.0.4")
    obj = pod("odd", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.4")])
    status = json.loads(obj["metadata"]["annotations"][NETWORK_STATUS])
    status[1]["default"] = "false"
    obj["metadata"]["annotations"][NETWORK_STATUS] = json.dumps(status)
    put(h.store, obj)
    h.attach(odd)
    h.ready()
    h.sync()
    assert h.controller.records[odd.key].state == PENDING
    assert "not in pod default/odd's network-status" in h.controller.records[odd.key].reason
    assert h.ingress(odd, "10.10.0.10", "10.10.0.4", 80) == "drop"
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"


def _unchecked_entry(tmp_path: Path, container: str, pod_name: str, ip: str = "") -> StateEntry:
    """A state entry whose netns path cannot be checked (ELOOP: a symlink to itself; EACCES alike)."""
    path = tmp_path / f"mnpt-{container}"
    path.symlink_to(path)
    base = entry(container, pod_name, ip=ip)
    return StateEntry.from_json(json.dumps({**json.loads(base.to_json()), "netns": str(path)}))


def test_entries_whose_netns_cannot_be_checked_are_rechecked_on_a_schedule_not_on_every_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever can write the state dir can leave thousands of entries whose netns path cannot be checked: each
    is checked again with a per-entry backoff (1 s doubling to 64 s), not on every sync. 100 incremental syncs
    0.2 s apart (the runner's minimum interval, 20 s) check each at most at 0, 1, 3, 7 and 15 s; they were
    checked 101 times each."""
    from daemon import controller as controller_module

    checks: Counter[str] = Counter()

    def counted(path: str) -> tuple[int, int] | None:
        checks[path] += 1
        return identity_if_usable(path)

    monkeypatch.setattr(controller_module, "identity_if_usable", counted)
    h = Harness()
    cluster(h)
    planted = [_unchecked_entry(tmp_path, f"c-planted-{i}", f"nobody-{i}") for i in range(50)]
    h.attach(*planted)
    h.ready()
    h.sync()
    for i in range(100):
        h.clock.advance(0.2)
        put(h.store, policy("server-from-clients", select={"app": "server"}, ingress=[from_pods({"n": str(i)})]))
        h.sync()
    assert all(h.controller.records[e.key].state == PENDING for e in planted)
    assert {checks[e.netns] for e in planted} == {5}


def test_a_pending_entry_whose_netns_turns_checkable_is_pinned_and_never_programs_another_namespace(
    tmp_path: Path,
) -> None:
    """The backoff delays when an entry's namespace is pinned, never past its programming: an entry whose pod
    appears right after its path turned usable, before its next scheduled check, is checked before its first
    transaction, and the path naming another namespace after that gets nothing; a pending entry whose path turns
    usable is pinned on a later sync (polled on the fake clock, with a deadline)."""
    import os

    from daemon.records import GONE

    h = Harness()
    cluster(h)
    waiting = _unchecked_entry(tmp_path, "c-waiting", "nobody")
    server = _unchecked_entry(tmp_path, "c-server", "server", ip="10.10.0.1")
    for e in (waiting, server):
        h.nfts[e.netns] = FakeNft.from_transaction(render_interface(InterfaceRules.pending("net1", ifindex=2)))
    remove(h.store, pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")]))
    attach(h.store, waiting, server)
    h.ready()
    h.sync()
    h.clock.advance(1.5)
    h.sync()  # both checked again, still unusable: the next check is 2 s away
    Path(server.netns).unlink()
    Path(server.netns).touch()  # a namespace file now
    put(h.store, pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")]))
    h.sync()
    record = h.controller.records[server.key]
    assert record.state == PROGRAMMED and record.identity == netns_identity(server.netns)
    sent = len(h.sent[server.netns])
    other = tmp_path / "mnpt-other"
    other.touch()
    os.replace(other, server.netns)  # the path names another namespace now
    put(h.store, policy("server-from-clients", select={"app": "server"}, ingress=[from_pods({"role": "other"})]))
    h.sync()
    assert record.state == GONE and len(h.sent[server.netns]) == sent

    Path(waiting.netns).unlink()
    Path(waiting.netns).touch()
    deadline = h.clock.now() + 2 * 64
    while h.controller.records[waiting.key].identity is None and h.clock.now() < deadline:
        h.clock.advance(0.2)
        h.sync()
    assert h.controller.records[waiting.key].identity == netns_identity(waiting.netns)
    assert h.controller.records[waiting.key].state == PENDING


def _groups(h: Harness, e: StateEntry) -> list[str]:
    table = h.nfts[e.netns].list_table()
    return sorted(n for n in [*table.chains, *table.sets] if n.startswith("g_"))


def test_a_port_group_lookalike_the_pod_refers_to_is_left_alone_and_trips_nothing(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A pod with NET_ADMIN adds, in mnp's table, a chain named like one of its interface's port groups and a
    chain of its own that jumps to it: the stale-group cleanup cannot delete a chain in use, so the check's one
    transaction failed on every resync ("could not check the interface's table", a warning each time) though the
    table held exactly the interface's full form. Nothing the pod added there changes what is enforced (a chain
    nothing of mnp's reaches): the check passes, the lookalike stays, and a real edit is still restored."""
    from shared.nft.objects import Rule

    h.ready()
    h.sync()
    fake = h.nfts[SERVER.netns]
    lookalike = "g_ingress_net1_aaaaaaaa"
    fake.run(Transaction().add(Chain(lookalike)).add(Chain("mine")).add(Rule("mine", f"jump {lookalike}")))
    with caplog.at_level("WARNING"):
        assert h.sync(periodic=True).repaired == 0
        assert h.sync(periodic=True).repaired == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    assert {lookalike, "mine"} <= set(fake.list_table().chains)
    fake.run(Transaction().flush(Chain("ingress_net1")))
    assert h.sync(periodic=True).repaired == 1
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"


def test_port_groups_a_restarted_daemon_no_longer_uses_are_removed_by_the_resync_without_a_tamper_report(
    h: Harness,
) -> None:
    """After a restart with changed rules the full form replaces the interface's chains and maps but cannot know
    the old port groups (their names hash the rules that made them): they stay, referenced by nothing. The
    periodic resync, which lists the table, removes them in the same transaction as the full form — no tamper
    reported, the same verdicts — and the check after that finds nothing to do."""
    h.ready()
    h.sync()
    (old,) = {g.removesuffix("_ports") for g in _groups(h, SERVER)}
    assert old.startswith("g_ingress_net1_")
    # mnpd restarts with changed rules: another rule name, so another port group
    h.controller = Controller(h.store, Applier(h.nft_for, RenderOptions()), h.clock, metrics=h.metrics)
    remove(h.store, policy("server-from-clients", select={"app": "server"}))
    put(h.store, policy("server-web", select={"app": "server"}, ingress=[from_pods({"role": "client"}, [("TCP", 80)])]))
    h.sync()
    (new,) = {g.removesuffix("_ports") for g in _groups(h, SERVER)} - {old}
    assert _groups(h, SERVER) == sorted([old, f"{old}_ports", new, f"{new}_ports"])  # the stale group stays
    sent = len(h.sent[SERVER.netns])
    report = h.sync(periodic=True)
    assert _groups(h, SERVER) == sorted([new, f"{new}_ports"])
    assert report.repaired == 0 and h.metrics.tamper_repairs._value.get() == 0
    (tx,) = h.sent[SERVER.netns][sent:]  # one transaction: the full form, then the removal
    assert str(tx).splitlines()[-5:] == [
        f"add chain inet mnp {old}",
        f"flush chain inet mnp {old}",
        f"delete chain inet mnp {old}",
        f"add set inet mnp {old}_ports {{ type inet_proto . inet_service; flags interval; }}",
        f"delete set inet mnp {old}_ports",
    ]
    assert h.ingress(SERVER, "10.10.0.10", "10.10.0.1", 80) == "accept"
    assert h.ingress(SERVER, "10.10.0.11", "10.10.0.1", 80) == "drop"
    sent = len(h.sent[SERVER.netns])
    assert h.sync(periodic=True).repaired == 0 and len(h.sent[SERVER.netns]) == sent  # nothing left to do
