"""The CNI plugin's prebuilt nfnetlink batch (shared.nft.batch) against the real kernel, in a throwaway namespace:
whatever the table held before — nothing, another interface's pending form, a programmed interface, an old
table's name-dispatch element — the batch leaves exactly what libnftables leaves for the same Transaction
(`nft list table` and `nft -j list table`, handles aside), and a batch the kernel refuses changes nothing and
ends in the CNI error nft's own refusal gives.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cni.errors import INTERNAL
from daemon.testbed.netns import NetNS
from shared.netns import in_netns_here
from shared.nft import libnft
from shared.nft.batch import NotEncodable, encode
from shared.nft.errors import ExistsError
from shared.nft.nfnl import exchange, open_socket
from shared.nft.objects import Element
from shared.nft.render import render_interface
from shared.nft.transaction import Transaction
from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange
from shared.state import StateStore
from tests.support.host import host_untouched

pytestmark = [pytest.mark.netns, pytest.mark.skipif(not libnft.available(), reason="no libnftables.so.1")]


@pytest.fixture(scope="module")
def pod() -> Iterator[NetNS]:
    with host_untouched(), NetNS.create("batch") as ns:
        ns.add_veth("net1", "peer1")
        ns.add_veth("net2", "peer2")
        yield ns


def pending(pod: NetNS, ifname: str) -> Transaction:
    return render_interface(InterfaceRules.pending(ifname, "ns/pod", "ns/net", pod.ifindex(ifname)))


def programmed(pod: NetNS, ifname: str) -> Transaction:
    allows = (
        Allow("ns/a ingress[0]", (ipaddress.ip_network("10.0.1.0/24"),), None),
        Allow("ns/b ingress[0]", (ipaddress.ip_network("fd00::/64"),), (PortRange("tcp", 80, 90),)),
    )
    rules = DirectionRules(True, allows, ("ns/a", "ns/b"))
    return render_interface(InterfaceRules("ns/pod", ifname, "ns/net", rules, rules, pod.ifindex(ifname)))


def by_batch(pod: NetNS, tx: Transaction) -> None:
    data, last = encode(tx)
    sock = in_netns_here(pod.path, open_socket)
    try:
        exchange(sock, data, last, "test batch")
    finally:
        sock.close()


def by_libnftables(pod: NetNS, tx: Transaction) -> None:
    pod.run("nft", "-f", "-", input=str(tx))


def without_handles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_handles(v) for k, v in node.items() if k != "handle"}
    if isinstance(node, list):
        return [without_handles(v) for v in node]
    return node


def listed(pod: NetNS) -> tuple[str, Any]:
    text = pod.run("nft", "list", "table", "inet", "mnp").stdout
    return text, without_handles(json.loads(pod.run("nft", "-j", "list", "table", "inet", "mnp").stdout))


def old_name_dispatch(pod: NetNS) -> list[Transaction]:
    """A table written before index dispatch: net1 reached through the name map too."""
    tx = pending(pod, "net1")
    tx.add(Element("ingress_ifaces", '"net1"', "jump ingress_net1"))
    return [tx]


BEFORE: dict[str, Callable[[NetNS], list[Transaction]]] = {
    "empty netns": lambda pod: [],
    "another interface pending": lambda pod: [pending(pod, "net2")],
    "another interface programmed": lambda pod: [programmed(pod, "net2")],
    "the same interface programmed (a repeated ADD)": lambda pod: [programmed(pod, "net1")],
    "the same interface pending, twice": lambda pod: [pending(pod, "net1"), pending(pod, "net1")],
    "an old table's name dispatch": old_name_dispatch,
}


@pytest.mark.parametrize("before", list(BEFORE))
def test_the_batch_leaves_what_libnftables_leaves(pod: NetNS, before: str) -> None:
    results = []
    for apply in (by_batch, by_libnftables):
        pod.run("nft", "flush", "ruleset")
        for tx in BEFORE[before](pod):
            by_libnftables(pod, tx)
        apply(pod, pending(pod, "net1"))
        results.append(listed(pod))
    assert results[0][0] == results[1][0]
    assert results[0][1] == results[1][1]
    assert "chain ingress_net1" in results[0][0] and "drop comment" in results[0][0]
    pod.run("nft", "flush", "ruleset")


def test_what_the_pending_table_does_not_hold_is_not_encoded(pod: NetNS) -> None:
    """The daemon's programmed form (set elements, lookups of the peer sets) stays libnftables' business."""
    with pytest.raises(NotEncodable):
        encode(programmed(pod, "net1"))


def test_a_refused_batch_changes_nothing(pod: NetNS) -> None:
    """A table whose dispatch map has another type (EEXIST on NEWSET): the kernel refuses the whole batch."""
    pod.run("nft", "flush", "ruleset")
    pod.run("nft", "add table inet mnp; add map inet mnp ingress_ifindex { type ifname : verdict; }")
    before = listed(pod)
    with pytest.raises(ExistsError):
        by_batch(pod, pending(pod, "net1"))
    assert listed(pod) == before
    pod.run("nft", "flush", "ruleset")


def test_a_refused_batch_is_the_cni_error_nft_gives(pod: NetNS, tmp_path: Any) -> None:
    """Through the plugin's real dependencies: the refused batch goes to libnftables, which refuses it too, and ADD
    fails with code 7 (INTERNAL, "nft refused the transaction") and nft's explanation; nothing is recorded."""
    import io

    from cni.skel import Dispatcher

    pod.run("nft", "flush", "ruleset")
    pod.run("nft", "add table inet mnp; add map inet mnp ingress_ifindex { type ifname : verdict; }")
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "mnpt-batch", "type": "mnp"}
    conf["stateDir"] = str(tmp_path / "state")
    conf["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": pod.path}]}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr-batch", "CNI_NETNS": pod.path, "CNI_IFNAME": "net1"}
    out, err = io.StringIO(), io.StringIO()
    rc = Dispatcher(env | {"CNI_PATH": "/x"}, json.dumps(conf).encode(), out, err).run()
    answer = json.loads(out.getvalue())
    assert rc == 1 and answer["code"] == INTERNAL, answer
    assert "nft refused the transaction" in answer["msg"] and "datatype mismatch" in answer["details"], answer
    assert StateStore(str(tmp_path / "state")).entries() == ([], [])
    pod.run("nft", "flush", "ruleset")
