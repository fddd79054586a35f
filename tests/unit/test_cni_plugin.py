"""The verbs of the `mnp` plugin against FakeNft and a tmp state dir: what ends up in the pod's table and in the
state dir after ADD, DEL, CHECK, GC and STATUS — and what is left after every way they can fail (nothing half-done).

Address plan: pods on 10.200.0.0/24 (the macvlan test network), IPv6 on 2001:db8::/32 (RFC 3849).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import cni
from cni.config import PluginConf, parse_config, result_for
from cni.errors import (
    CHECK_FAILED,
    INTERFACE_MISSING,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_NETNS,
    IO_FAILURE,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
)
from shared.errors import NetnsGone, StateError
from shared.nft.errors import BusyError, NftError, NotFoundError
from shared.nft.render import chain_name, render_interface
from shared.nft.transaction import Transaction
from shared.rules import InterfaceRules
from shared.state import StateEntry, StateStore
from tests.support.cnifake import FakeNode, JsonFakeNft, prev_result

ROOT = Path(__file__).resolve().parents[2]
POD_A = "/run/netns/pod-a"
POD_B = "/run/netns/pod-b"


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path / "state")


def tables(node: FakeNode, netns: str = POD_A) -> list[tuple[str, str]]:
    return node.nfts[netns].list_tables() if netns in node.nfts else []


def map_entries(node: FakeNode, netns: str = POD_A) -> dict[str, dict[str, str | None]]:
    view = node.nfts[netns].list_table()
    return {
        name: {f"{e.comment}@{e.key}": e.value for e in view.sets[name].elements}  # ifname@index
        for name in ("ingress_ifindex", "egress_ifindex")
    }


def chains(node: FakeNode, netns: str = POD_A) -> set[str]:
    return set(node.nfts[netns].list_table().chains)


def interface_chains(ifname: str) -> set[str]:
    return {chain_name("Ingress", ifname), chain_name("Egress", ifname)}


def entries(node: FakeNode) -> list[StateEntry]:
    return node.store.entries()[0]


# ----------------------------------------------------------------------------------------------- ADD


def test_add_closes_the_interface_in_one_transaction_and_records_it(node: FakeNode) -> None:
    conf = node.conf()
    out = node.call("ADD", conf)
    assert out.rc == 0, out
    assert out.stdout == json.dumps(conf["prevResult"]) + "\n"  # prevResult unchanged
    fake = node.nfts[POD_A]
    assert fake.transactions == 1
    assert chains(node) == {"input", "output", "ingress_net1", "egress_net1"}
    assert map_entries(node) == {
        "ingress_ifindex": {"net1@2": "jump ingress_net1"},
        "egress_ifindex": {"net1@2": "jump egress_net1"},
    }
    view = fake.list_table()
    for chain in ("ingress_net1", "egress_net1"):
        rules = [r.text for r in view.chains[chain].rules]
        assert rules[-1] == "counter drop"  # closed: nothing but established/ND passes
        assert not any("@" in r for r in rules)
    assert node.host.transactions == 0 and node.host.list_tables() == []  # the node's own netns untouched
    (entry,) = entries(node)
    assert entry == StateEntry(
        container_id="c1",
        ifname="net1",
        netns=POD_A,
        pod_namespace="ns1",
        pod_name="web-0",
        pod_uid="uid-1",
        network="net-a",
        ips=("10.200.0.10/24",),
        mac="52:54:00:12:34:56",
        created="2026-05-09T07:35:25Z",
        plugin=cni.__version__,
        ifindex=2,  # net1's index inside the pod netns (the FakeNode's first interface)
    )
    assert (node.state_dir / "c1_net1.json").exists()


def without_interface(node: FakeNode, pod_netns: str, missing: str) -> None:
    """`missing` is not (any more) in `pod_netns`: the lookup raises as _socket.if_nametoindex does."""
    found = node.ifindex

    def lookup(netns: str, ifname: str) -> int:
        if (netns, ifname) == (pod_netns, missing):
            raise OSError("no interface with this name")
        return found(netns, ifname)

    node.ifindex = lookup  # type: ignore[method-assign]


def test_add_of_an_interface_missing_in_the_netns_answers_interface_missing(node: FakeNode) -> None:
    """The table dispatches on the interface index: an interface not found inside the netns (the plugin before mnp
    did not create CNI_IFNAME) cannot be closed, so ADD fails with code 101 and a message that says so — not the
    catch-all 999 — before nft, and the pod's table and the state dir stay exactly as they were."""
    assert node.call("ADD", ifname="net2").rc == 0  # another interface of the pod, already closed
    table, before = node.dump(), [(p.name, p.read_bytes()) for p in sorted(node.state_dir.iterdir())]
    transactions = node.transactions()
    without_interface(node, POD_A, "net1")
    out = node.call("ADD")
    assert (out.rc, out.code) == (1, INTERFACE_MISSING), out
    assert out.json["msg"].startswith("no interface net1 (CNI_IFNAME) in the pod network namespace")
    assert out.json["details"] == f"{POD_A}: no interface with this name"
    assert len(out.stdout.splitlines()) == 1 and "Traceback" not in out.stderr
    assert node.transactions() == transactions and node.dump() == table
    assert [(p.name, p.read_bytes()) for p in sorted(node.state_dir.iterdir())] == before


def test_add_on_a_fresh_node_with_the_interface_missing_leaves_nothing(node: FakeNode) -> None:
    without_interface(node, POD_A, "net1")
    out = node.call("ADD")
    assert (out.rc, out.code) == (1, INTERFACE_MISSING), out
    assert node.transactions() == 0 and tables(node) == [] and not node.state_dir.exists()


def test_check_of_an_interface_gone_from_the_netns_answers_interface_missing(node: FakeNode) -> None:
    assert node.call("ADD").rc == 0
    table, (entry,) = node.dump(), entries(node)
    without_interface(node, POD_A, "net1")
    out = node.call("CHECK")
    assert (out.rc, out.code) == (1, INTERFACE_MISSING), out
    assert "no interface net1" in out.json["msg"]
    assert node.dump() == table and entries(node) == [entry]


def test_check_finds_another_interface_under_the_name_add_closed(node: FakeNode) -> None:
    """net1 was deleted (or renamed) and another interface now has its name: the table guards ADD's index."""
    assert node.call("ADD").rc == 0
    node.indexes[POD_A]["net1"] = 7
    out = node.call("CHECK")
    assert (out.rc, out.code) == (1, CHECK_FAILED), out
    assert "net1 is interface index 7, ADD closed index 2" in out.json["details"]


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_netns_lost_during_the_interface_lookup_answers_code_8(node: FakeNode, command: str) -> None:
    from shared.errors import NetnsUnusable

    if command == "CHECK":
        assert node.call("ADD").rc == 0
    transactions, stored = node.transactions(), entries(node)
    for error in (NetnsGone(f"network namespace {POD_A} does not exist"), NetnsUnusable("Permission denied")):

        def lookup(netns: str, ifname: str, error: Exception = error) -> int:
            raise error

        node.ifindex = lookup  # type: ignore[method-assign]
        out = node.call(command)
        assert (out.rc, out.code) == (1, INVALID_NETNS), out
        assert node.transactions() == transactions and entries(node) == stored


def test_add_renders_exactly_the_pending_table(node: FakeNode) -> None:
    from shared.nft.render import render_interface
    from shared.rules import InterfaceRules

    node.call("ADD")
    expected = JsonFakeNft()
    expected.run(render_interface(InterfaceRules.pending("net1", ifindex=2)))
    assert node.dump() == expected.dump()


def test_second_interface_joins_without_disturbing_the_first(node: FakeNode) -> None:
    assert node.call("ADD").rc == 0
    before = {c: node.nfts[POD_A].list_table().chains[c] for c in interface_chains("net1")}
    conf = node.conf(name="net-b", prevResult=prev_result("net2", "10.201.0.7/24"))
    assert node.call("ADD", conf, ifname="net2").rc == 0
    after = node.nfts[POD_A].list_table()
    assert {c: after.chains[c] for c in interface_chains("net1")} == before
    assert map_entries(node)["ingress_ifindex"] == {"net1@2": "jump ingress_net1", "net2@3": "jump ingress_net2"}
    assert sorted((e.ifname, e.network, e.ips) for e in entries(node)) == [
        ("net1", "net-a", ("10.200.0.10/24",)),
        ("net2", "net-b", ("10.201.0.7/24",)),
    ]


def test_add_records_only_this_interfaces_addresses(node: FakeNode) -> None:
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "br0", "mac": "02:00:00:00:00:01"},
            {"name": "net1", "mac": "02:00:00:00:00:02", "sandbox": POD_A},
        ],
        "ips": [
            {"interface": 1, "address": "10.200.0.10/24"},
            {"interface": 0, "address": "10.200.0.1/24"},
            {"address": "2001:db8::10/64"},  # no interface: the attachment's own
        ],
    }
    assert node.call("ADD", node.conf(prevResult=prev)).rc == 0
    (entry,) = entries(node)
    assert entry.ips == ("10.200.0.10/24", "2001:db8::10/64")
    assert entry.mac == "02:00:00:00:00:02"


def test_add_without_the_interface_in_prev_result_still_closes_it(node: FakeNode) -> None:
    assert node.call("ADD", node.conf(prevResult={"cniVersion": "1.0.0"})).rc == 0
    assert interface_chains("net1") <= chains(node)
    (entry,) = entries(node)
    assert (entry.ips, entry.mac) == ((), "")


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_prints_prev_result_unchanged_in_every_version(node: FakeNode, version: str) -> None:
    conf = node.conf(cniVersion=version, prevResult=prev_result(version=version))
    out = node.call("ADD", conf)
    assert out.rc == 0 and out.json == conf["prevResult"]


def test_prev_result_in_another_version_is_converted() -> None:
    old = prev_result(version="0.4.0")
    new = result_for(old, "1.0.0")
    assert new["cniVersion"] == "1.0.0" and "version" not in new["ips"][0]
    back = result_for(new, "0.3.1")
    assert back["cniVersion"] == "0.3.1" and back["ips"][0]["version"] == "4"
    assert result_for({"ips": [{"address": "2001:db8::1/64"}]}, "0.4.0")["ips"][0]["version"] == "6"


@pytest.mark.parametrize(
    "args",
    ["IgnoreUnknown=1", "", "IgnoreUnknown=1;K8S_POD_NAME=web", "IgnoreUnknown=1;K8S_POD_NAME=a=b;;FOO=bar"],
)
def test_add_outside_kubernetes_records_what_is_known(node: FakeNode, args: str) -> None:
    # podman passes IgnoreUnknown=1 and maybe a pod name, nothing else
    assert node.call("ADD", args=args).rc == 0
    assert interface_chains("net1") <= chains(node)
    (entry,) = entries(node)
    assert entry.pod_namespace == "" and entry.pod_uid == ""
    assert entry.pod_name == ("web" if "K8S_POD_NAME=web" in args else "a=b" if "a=b" in args else "")


def test_add_when_the_netns_is_gone(node: FakeNode) -> None:
    out = node.call("ADD", netns="/run/netns/gone")
    assert (out.rc, out.code) == (1, INVALID_NETNS)
    assert node.transactions() == 0 and entries(node) == []


def test_add_with_an_unwritable_state_dir_touches_nothing(node: FakeNode, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = node.call("ADD", node.conf(stateDir=str(blocker / "state")))
    assert (out.rc, out.code) == (1, IO_FAILURE)
    assert node.transactions() == 0


class FailingWrites(StateStore):
    def write(self, entry: StateEntry) -> str:
        raise StateError(f"cannot write {self.path(*entry.key)}: No space left on device")


def test_add_undoes_the_rules_when_the_entry_cannot_be_written(node: FakeNode) -> None:
    node.store_factory = FailingWrites
    out = node.call("ADD")
    assert (out.rc, out.code) == (1, IO_FAILURE)
    assert "rules removed again" in out.json["details"]
    assert tables(node) == []  # the only interface: the whole table went
    assert node.nfts[POD_A].transactions == 2


def test_add_undo_keeps_the_other_interface(node: FakeNode) -> None:
    assert node.call("ADD").rc == 0
    node.store_factory = FailingWrites
    out = node.call("ADD", node.conf(prevResult=prev_result("net2")), ifname="net2")
    assert (out.rc, out.code) == (1, IO_FAILURE)
    assert chains(node) == {"input", "output"} | interface_chains("net1")
    assert map_entries(node)["egress_ifindex"] == {"net1@2": "jump egress_net1"}


def test_repeated_add_that_fails_keeps_the_interface_closed(node: FakeNode) -> None:
    assert node.call("ADD").rc == 0
    node.store_factory = FailingWrites
    out = node.call("ADD")
    assert (out.rc, out.code) == (1, IO_FAILURE)
    assert "rules kept" in out.json["details"]
    assert interface_chains("net1") <= chains(node)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BusyError("Error: Could not process rule: Device or resource busy"), TRY_AGAIN_LATER),
        (NftError("Error: syntax error"), INTERNAL),
        (OSError(7, "Argument list too long"), INTERNAL),
    ],
)
def test_add_when_nft_refuses(node: FakeNode, error: Exception, code: int) -> None:
    node.nft(POD_A).fail.append(error)  # type: ignore[union-attr]
    out = node.call("ADD")
    assert (out.rc, out.code) == (1, code)
    assert tables(node) == [] and entries(node) == []


def test_add_when_the_netns_vanishes_under_nft(node: FakeNode) -> None:
    fake = node.nft(POD_A)
    fake.fail.append(NotFoundError("nsenter: cannot open /run/netns/pod-a: No such file or directory"))  # type: ignore[union-attr]
    node.netns.discard(POD_A)
    out = node.call("ADD")
    assert (out.rc, out.code) == (1, INVALID_NETNS)
    assert entries(node) == []


@pytest.mark.parametrize(("netns_stays", "code"), [(False, INVALID_NETNS), (True, INTERNAL)])
def test_add_when_libnftables_cannot_enter_the_netns(node: FakeNode, netns_stays: bool, code: int) -> None:
    """libnftables' way in (shared.netns.in_netns) raises NetnsGone; like nsenter's "No such file", that is code 8
    when the netns is really gone, and an internal error when it is still there (setns refused)."""
    node.nft(POD_A).fail.append(NetnsGone(f"cannot enter network namespace {POD_A}: Operation not permitted"))  # type: ignore[union-attr]
    if not netns_stays:
        node.netns.discard(POD_A)
    out = node.call("ADD")
    assert (out.rc, out.code) == (1, code)
    assert entries(node) == []


def test_on_error_ignore_passes_through_and_says_so(node: FakeNode) -> None:
    node.nft(POD_A).fail.append(NftError("Error: syntax error"))  # type: ignore[union-attr]
    conf = node.conf(onError="ignore")
    out = node.call("ADD", conf)
    assert out.rc == 0 and out.json == conf["prevResult"]
    assert "OPEN" in out.stderr and "level=error" in out.stderr
    assert entries(node) == []


def test_on_error_ignore_does_not_excuse_a_bad_config(node: FakeNode) -> None:
    out = node.call("ADD", node.conf(onError="ignore", prevResult=None))
    assert (out.rc, out.code) == (1, INVALID_CONFIG)


# ----------------------------------------------------------------------------------------------- DEL


def test_del_of_the_last_interface_removes_the_table_and_the_entry(node: FakeNode) -> None:
    node.call("ADD")
    out = node.call("DEL")
    assert (out.rc, out.stdout) == (0, "")
    assert tables(node) == [] and entries(node) == []


def test_del_of_one_interface_keeps_the_other(node: FakeNode) -> None:
    node.call("ADD")
    node.call("ADD", node.conf(name="net-b", prevResult=prev_result("net2")), ifname="net2")
    assert node.call("DEL", node.conf(name="net-b"), ifname="net2").rc == 0
    assert chains(node) == {"input", "output"} | interface_chains("net1")
    assert map_entries(node) == {
        "ingress_ifindex": {"net1@2": "jump ingress_net1"},
        "egress_ifindex": {"net1@2": "jump egress_net1"},
    }
    assert not any(name.startswith(("ingress_net2", "egress_net2")) for name in node.nfts[POD_A].list_table().sets)
    assert [e.ifname for e in entries(node)] == ["net1"]
    assert node.call("DEL").rc == 0
    assert tables(node) == []


@pytest.mark.parametrize(
    "listing", ["{not json", '{"nftables": {}}', '{"nftables": [{"chain": {"family": "inet", "table": "mnp"}}]}']
)
def test_del_of_one_interface_whose_listing_cannot_be_read_still_removes_it(node: FakeNode, listing: str) -> None:
    """A listing the one reader cannot read (shared.nft.trace.TraceError: a broken nft, a table mnp did not
    write) names no port groups: the interface's chains, maps and dispatch elements go all the same, the other
    interface stays guarded, and the DEL succeeds — as mnpd's remove_interface does."""
    node.call("ADD")
    node.call("ADD", node.conf(name="net-b", prevResult=prev_result("net2")), ifname="net2")
    node.nfts[POD_A].list_table_json = lambda family="inet", table="mnp": listing  # type: ignore[method-assign]
    assert node.call("DEL", node.conf(name="net-b"), ifname="net2").rc == 0
    assert chains(node) == {"input", "output"} | interface_chains("net1")
    assert map_entries(node) == {
        "ingress_ifindex": {"net1@2": "jump ingress_net1"},
        "egress_ifindex": {"net1@2": "jump egress_net1"},
    }
    assert [e.ifname for e in entries(node)] == ["net1"]


def test_del_twice(node: FakeNode) -> None:
    node.call("ADD")
    assert node.call("DEL").rc == 0
    assert node.call("DEL").rc == 0
    assert tables(node) == [] and entries(node) == []


def test_del_without_any_add(node: FakeNode) -> None:
    assert node.call("DEL", node.conf(prevResult=None)).rc == 0
    assert tables(node) == []


def test_containerds_second_del(node: FakeNode) -> None:
    node.call("ADD")
    assert node.call("DEL").rc == 0
    before = node.transactions()
    # containerd repeats DEL with an empty CNI_NETNS and no prevResult
    out = node.call("DEL", node.conf(prevResult=None), netns="")
    assert (out.rc, out.stdout) == (0, "")
    assert node.transactions() == before


def test_del_with_an_empty_netns_still_drops_the_entry(node: FakeNode) -> None:
    node.call("ADD")
    assert node.call("DEL", node.conf(prevResult=None), netns="").rc == 0
    assert entries(node) == []


def test_del_after_the_netns_is_gone(node: FakeNode) -> None:
    node.call("ADD")
    node.netns.discard(POD_A)
    assert node.call("DEL").rc == 0
    assert entries(node) == []


@pytest.mark.parametrize(
    "error",
    [NotFoundError("nsenter: cannot open: No such file or directory"), NetnsGone("network namespace gone")],
    ids=["nsenter", "libnftables"],
)
def test_del_when_the_netns_vanishes_under_nft(node: FakeNode, error: Exception) -> None:
    node.call("ADD")
    node.nft(POD_A).fail.append(error)  # type: ignore[union-attr]
    node.netns.discard(POD_A)
    assert node.call("DEL").rc == 0
    assert entries(node) == []


def test_del_that_nft_refuses_keeps_the_entry_for_the_retry(node: FakeNode) -> None:
    node.call("ADD")
    node.nft(POD_A).fail.append(NftError("Error: something"))  # type: ignore[union-attr]
    out = node.call("DEL")
    assert (out.rc, out.code) == (1, INTERNAL)
    assert [e.ifname for e in entries(node)] == ["net1"]
    assert node.call("DEL").rc == 0  # the runtime retries
    assert tables(node) == [] and entries(node) == []


def test_del_with_a_corrupt_entry_of_another_interface_keeps_the_table(node: FakeNode) -> None:
    node.call("ADD")
    node.call("ADD", node.conf(prevResult=prev_result("net2")), ifname="net2")
    (node.state_dir / "c1_net2.json").write_text("{garbage")
    assert node.call("DEL").rc == 0
    assert interface_chains("net2") <= chains(node)  # it may still be in use: never open it blindly


def test_del_with_an_unwritable_state_dir(node: FakeNode, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = node.call("DEL", node.conf(stateDir=str(blocker / "state")))
    assert (out.rc, out.code) == (1, IO_FAILURE)


# ----------------------------------------------------------------------------------------------- CHECK


def test_check_passes_after_add(node: FakeNode) -> None:
    node.call("ADD")
    out = node.call("CHECK")
    assert (out.rc, out.stdout) == (0, "")


def test_check_without_prev_result(node: FakeNode) -> None:
    node.call("ADD")
    assert node.call("CHECK", node.conf(prevResult=None)).rc == 0


def test_check_before_add(node: FakeNode) -> None:
    out = node.call("CHECK")
    assert (out.rc, out.code) == (1, CHECK_FAILED)
    assert "no state entry" in out.json["msg"]


def test_check_when_the_table_is_gone(node: FakeNode) -> None:
    from shared.nft.render import render_remove_table

    node.call("ADD")
    node.nfts[POD_A].run(render_remove_table())
    out = node.call("CHECK")
    assert (out.rc, out.code) == (1, CHECK_FAILED)
    assert "does not exist" in out.json["details"]


def test_check_when_the_interface_is_missing_from_the_table(node: FakeNode) -> None:
    from shared.nft.render import render_remove_interface

    node.call("ADD")
    node.call("ADD", node.conf(prevResult=prev_result("net2")), ifname="net2")
    node.nfts[POD_A].run(render_remove_interface("net1", 2))
    out = node.call("CHECK")
    assert (out.rc, out.code) == (1, CHECK_FAILED)
    assert "chain ingress_net1 missing" in out.json["details"]
    assert node.call("CHECK", node.conf(prevResult=prev_result("net2")), ifname="net2").rc == 0


@pytest.mark.parametrize(
    ("conf", "env", "problem"),
    [
        ({"prevResult": prev_result(address="10.200.0.99/24")}, {}, "ips"),
        ({"prevResult": prev_result(mac="02:00:00:00:00:99")}, {}, "mac"),
        ({"name": "net-z"}, {}, "network"),
        ({}, {"netns": POD_B}, "netns"),
    ],
)
def test_check_when_the_entry_does_not_match(
    node: FakeNode, conf: dict[str, Any], env: dict[str, str], problem: str
) -> None:
    node.call("ADD")
    node.call("ADD", container="c2", netns=POD_B)  # so pod-b's table exists too
    out = node.call("CHECK", node.conf(**conf), env=node.env("CHECK", **env))
    assert (out.rc, out.code) == (1, CHECK_FAILED)
    assert problem in out.json["details"]


def test_check_when_the_netns_is_gone(node: FakeNode) -> None:
    node.call("ADD")
    node.netns.discard(POD_A)
    assert node.call("CHECK").code == INVALID_NETNS


# ----------------------------------------------------------------------------------------------- GC


def gc_conf(
    node: FakeNode, valid: list[tuple[str, str]], name: str = "net-a", key: str = "cni.dev/valid-attachments"
) -> dict[str, Any]:
    conf = node.conf(cniVersion="1.1.0", name=name, prevResult=None)
    conf[key] = [{"containerID": c, "ifname": i} for c, i in valid]
    return conf


def gc(node: FakeNode, conf: dict[str, Any]) -> Any:
    return node.call("GC", conf, env={"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"})


def test_gc_removes_what_is_not_valid(node: FakeNode) -> None:
    node.call("ADD", container="c1", netns=POD_A)
    node.call("ADD", container="c2", netns=POD_B)
    node.call("ADD", node.conf(name="net-b", prevResult=prev_result("net2")), container="c1", ifname="net2")
    out = gc(node, gc_conf(node, [("c1", "net1")]))
    assert (out.rc, out.stdout) == (0, "")
    assert sorted(e.key for e in entries(node)) == [("c1", "net1"), ("c1", "net2")]  # net-b is another network
    assert tables(node, POD_B) == []  # c2's only interface: the whole table
    assert interface_chains("net1") | interface_chains("net2") <= chains(node)


def test_gc_of_one_of_two_interfaces_keeps_the_table(node: FakeNode) -> None:
    node.call("ADD")
    node.call("ADD", node.conf(name="net-b", prevResult=prev_result("net2")), ifname="net2")
    assert gc(node, gc_conf(node, [], name="net-b")).rc == 0
    assert chains(node) == {"input", "output"} | interface_chains("net1")


def test_gc_drops_entries_whose_netns_is_gone(node: FakeNode) -> None:
    node.call("ADD")
    node.netns.discard(POD_A)
    assert gc(node, gc_conf(node, [])).rc == 0
    assert entries(node) == []


def test_gc_never_acts_in_its_own_netns(node: FakeNode) -> None:
    node.store.write(StateEntry("c9", "net1", "/proc/1/ns/net", network="net-a"))
    node.netns.add("/proc/1/ns/net")
    assert gc(node, gc_conf(node, [])).rc == 0
    assert node.transactions() == 0 and entries(node) == []


def test_gc_leaves_a_proc_path_netns_alone(node: FakeNode) -> None:
    # /proc/PID/ns/net recorded at ADD may, by GC time, be another process's (another pod's) netns
    node.netns.add("/proc/4242/ns/net")
    node.call("ADD", netns="/proc/4242/ns/net")
    before = node.transactions()
    assert gc(node, gc_conf(node, [])).rc == 0
    assert node.transactions() == before and entries(node) == []
    assert interface_chains("net1") <= chains(node, "/proc/4242/ns/net")


def test_gc_accepts_the_old_key(node: FakeNode) -> None:
    node.call("ADD")
    assert gc(node, gc_conf(node, [("c1", "net1")], key="cni.dev/attachments")).rc == 0
    assert len(entries(node)) == 1


def test_gc_without_a_list_is_refused(node: FakeNode) -> None:
    node.call("ADD")
    assert gc(node, node.conf(cniVersion="1.1.0", prevResult=None)).code == INVALID_CONFIG
    assert len(entries(node)) == 1


def test_gc_reports_what_it_could_not_remove_and_goes_on(node: FakeNode) -> None:
    node.call("ADD", container="c1", netns=POD_A)
    node.call("ADD", container="c2", netns=POD_B)
    node.nft(POD_A).fail.append(NftError("Error: boom"))  # type: ignore[union-attr]
    out = gc(node, gc_conf(node, []))
    assert (out.rc, out.code) == (1, INTERNAL)
    assert "1 of 2" in out.json["msg"]
    assert [e.container_id for e in entries(node)] == ["c1"]
    assert tables(node, POD_B) == []


def test_gc_skips_corrupt_entries(node: FakeNode) -> None:
    node.state_dir.mkdir(parents=True)
    (node.state_dir / "junk_net1.json").write_text("[]")
    assert gc(node, gc_conf(node, [])).rc == 0
    assert (node.state_dir / "junk_net1.json").exists()


# ----------------------------------------------------------------------------------------------- STATUS


def status(node: FakeNode, **conf: Any) -> Any:
    return node.call(
        "STATUS",
        node.conf(cniVersion="1.1.0", prevResult=None, **conf),
        env={"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"},
    )


def test_status_ok(node: FakeNode) -> None:
    out = status(node)
    assert (out.rc, out.stdout) == (0, "")
    assert node.host.list_tables() == []  # only looked
    assert [p.name for p in node.state_dir.iterdir()] == []  # the probe file is gone


def test_status_when_nft_cannot_run(node: FakeNode) -> None:
    def broken(family: str = "inet", table: str = "mnp") -> str:
        raise NftError("nsenter: failed to execute nft: No such file or directory")

    node.host.list_table_json = broken  # type: ignore[method-assign]
    out = status(node)
    assert (out.rc, out.code) == (1, NOT_AVAILABLE)


def test_status_when_the_state_dir_is_not_writable(node: FakeNode, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = status(node, stateDir=str(blocker / "state"))
    assert (out.rc, out.code) == (1, NOT_AVAILABLE)


def test_status_with_the_real_nft_backend_and_a_missing_binary(tmp_path: Path) -> None:
    from cni.plugin import real_deps
    from tests.support.cnifake import FakeNode as Node

    node = Node(tmp_path / "state")
    out = node.call(
        "STATUS",
        node.conf(cniVersion="1.1.0", prevResult=None, nftPath="/nonexistent/nft"),
        env={"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"},
        deps=real_deps,
    )
    assert (out.rc, out.code) == (1, NOT_AVAILABLE)


# ----------------------------------------------------------------------------------------------- nft backend


def _conf(**keys: Any) -> PluginConf:
    return parse_config(json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "mnp", **keys}), "STATUS")


def test_the_default_backend_is_the_netlink_batch_with_libnftables_behind_it() -> None:
    """ADD's pending table goes as a prebuilt netlink batch; libnftables is loaded only when something else —
    DEL's removals, CHECK's listing, a refused batch — needs it (shared.nft.batch)."""
    from cni.plugin import LibnftNft, NetlinkNft, real_deps

    loaded: list[bool] = []
    deps = real_deps(_conf(), load=lambda: loaded.append(True))
    nft = deps.nft("/run/netns/x")
    assert deps.nft_via == "netlink" and isinstance(nft, NetlinkNft) and loaded == []
    fallback = nft.fallback("/run/netns/x")
    assert loaded == [True] and isinstance(fallback, LibnftNft) and fallback.netns == "/run/netns/x"


def test_without_libnftables_the_nft_command_is_the_fallback() -> None:
    from cni.plugin import NetlinkNft, real_deps
    from shared.nft.exec import RealNft
    from shared.nft.libnft import LibnftUnavailable

    def missing() -> None:
        raise LibnftUnavailable("cannot load libnftables.so.1: libnftables.so.1: cannot open shared object file")

    deps = real_deps(_conf(), load=missing)
    nft = deps.nft("/run/netns/x")
    assert isinstance(nft, NetlinkNft)
    fallback = nft.fallback("/run/netns/x")
    assert isinstance(fallback, RealNft) and (fallback.netns, fallback.nft) == ("/run/netns/x", "nft")


class _Recorded:
    def __init__(self) -> None:
        self.ran: list[Transaction] = []

    def run(self, tx: Transaction) -> None:
        self.ran.append(tx)

    def list_table_json(self, family: str = "inet", table: str = "mnp") -> str:
        return ""


def test_what_the_batch_cannot_encode_goes_to_the_fallback() -> None:
    """DEL's removal (delete chain, delete table) is not a pending table: libnftables or nft applies it."""
    from cni.plugin import NetlinkNft
    from shared.nft.render import render_remove_interface, render_remove_table

    fallback = _Recorded()
    nft = NetlinkNft("/run/netns/x", lambda netns: fallback)
    for tx in (render_remove_table(), render_remove_interface("net1", 3)):
        nft.run(tx)
    assert len(fallback.ran) == 2


def test_a_refused_batch_is_retried_through_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel refusing the batch (here: the commit raises NftError) hands the transaction to nft, whose own
    error — or success — then decides, exactly as without the batch."""
    from cni.plugin import NetlinkNft

    def refused(self: NetlinkNft, data: bytes, last: int) -> None:
        raise NftError("closing the interface: Invalid argument")

    monkeypatch.setattr(NetlinkNft, "_commit", refused)
    fallback = _Recorded()
    tx = render_interface(InterfaceRules.pending("net1", "ns/pod", "n", 3))
    NetlinkNft("/run/netns/x", lambda netns: fallback).run(tx)
    assert fallback.ran == [tx]


def test_an_explicit_nft_path_is_always_the_command() -> None:
    from cni.plugin import real_deps
    from shared.nft.exec import RealNft

    def never() -> None:
        raise AssertionError("libnftables must not even be loaded")

    deps = real_deps(_conf(nftPath="/usr/local/sbin/nft"), load=never)
    nft = deps.nft(None)
    assert deps.nft_via == "/usr/local/sbin/nft"
    assert isinstance(nft, RealNft) and (nft.netns, nft.nft) == (None, "/usr/local/sbin/nft")


def test_add_logs_which_nft_ran(node: FakeNode) -> None:
    out = node.call("ADD")
    assert out.rc == 0 and "nft=nft" in out.stderr  # FakeNode's deps keep the default: the command


# ----------------------------------------------------------------------------------------------- misc


def test_cni_never_imports_the_daemon_or_the_kubernetes_client() -> None:
    import subprocess
    import sys

    code = (
        "import sys, cni.__main__, cni.skel, cni.plugin, cni.config;"
        "from cni.plugin import cmd_add, cmd_check;"
        "import shared.nft.render, shared.nft.exec, shared.compiler;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('daemon', 'kubernetes', 'yaml', 'watchdog', 'pyroute2',"
        " 'prometheus_client', 'asyncio', 'logging')];"
        "print(','.join(sorted(bad)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_version_stays_cheap() -> None:
    """VERSION — every runtime's first call — must not pay for the verbs' imports (docs/benchmarks.md)."""
    import subprocess
    import sys

    code = (
        "import sys, io, cni.skel;"
        "cni.skel.Dispatcher({'CNI_COMMAND': 'VERSION'}, b'', io.StringIO(), io.StringIO()).run();"
        "heavy = ('dataclasses', 'typing', 'subprocess', 'ipaddress', 'cni.config', 'cni.plugin');"
        "light = ('shared', 'shared.version', 'shared.cjson');"  # the version source, and JSON over _json
        "print(','.join(sorted(m for m in sys.modules if m in heavy or m.startswith('shared') and m not in light)))"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == ""


ADD_CONFIG = json.dumps(
    {
        "cniVersion": "1.0.0",
        "name": "n",
        "type": "mnp",
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "net1", "sandbox": "/run/netns/x", "mac": "0a:58:0a:00:00:02"}],
            "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}],
        },
    }
)


def test_add_path_stays_light() -> None:
    """What ADD imports (frozen: every one is paid on every pod ADD) has none of the expensive stdlib modules:
    dataclasses (→ inspect, ast, dis, tokenize), typing, subprocess (only for the nft command fallback), and —
    the pending table going as a prebuilt netlink batch — neither libnftables' binding nor the daemon's netlink
    module (socket, threading), nor `json` and the `re`, `enum` … it brings (shared.cjson), nor functools,
    collections, contextlib or — for IPv4 addresses — ipaddress (cni.config.normal_interface), nor
    the renderer and the rules IR (the pending table comes from shared.nft.pending)."""
    import subprocess
    import sys

    code = (
        "import sys, cni.__main__, cni.skel, cni.config, cni.plugin, shared.nft.pending, shared.nft.batch\n"
        "from shared.netns import interface_index_here\n"
        "try:\n    interface_index_here('/proc/self/ns/net', 'lo')\nexcept Exception:\n    pass\n"  # ADD's lookup
        "shared.nft.batch.encode(shared.nft.pending.render_pending('net1', 2))\n"  # ADD's batch
        "cni.config.parse_config(" + repr(ADD_CONFIG) + ", 'ADD', 'net1')\n"  # ADD's config, IPv4 addresses
        "heavy = ('dataclasses', 'inspect', 'typing', 'subprocess', 'socket', 'threading', 'shared.model',"
        " 'shared.nft.exec', 'shared.nft.libnft', 'shared.nft.netlink', 'json', 're', 'enum', 'functools',"
        " 'collections', 'contextlib', 'ipaddress', 'shared.nft.fake', 'bisect', 'shared.nft.render',"
        " 'shared.rules', 'shared.lean', 'shared.memo', 'itertools');"
        "print(','.join(sorted(m for m in sys.modules if m in heavy)))"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == ""


def test_a_plain_file_is_no_netns(tmp_path: Path) -> None:
    """A file left under /run/netns after its nsfs mount went away must read as "gone" (DEL then succeeds)."""
    from shared.errors import NetnsGone
    from shared.netns import check_netns

    leftover = tmp_path / "cni-1234"
    leftover.write_text("")
    with pytest.raises(NetnsGone, match="not on nsfs"):
        check_netns(str(leftover))
    with pytest.raises(NetnsGone):
        check_netns(str(tmp_path / "missing"))
    check_netns("/proc/self/ns/net")


# ------------------------------------------------------------------------------------ one netns, many containers


def test_del_of_another_containers_interface_keeps_the_shared_table(node: FakeNode) -> None:
    """Issue 11, item 1: the containers of a pod share its netns and its one table. DEL of container B's net2
    removes only B's objects while A's net1 is recorded there, and CHECK of A still passes."""
    node.call("ADD", container="ctr-a")
    node.call("ADD", node.conf(name="net-b", prevResult=prev_result("net2")), container="ctr-b", ifname="net2")
    assert node.call("DEL", node.conf(name="net-b"), container="ctr-b", ifname="net2").rc == 0
    assert chains(node) == {"input", "output"} | interface_chains("net1")
    assert map_entries(node) == {
        "ingress_ifindex": {"net1@2": "jump ingress_net1"},
        "egress_ifindex": {"net1@2": "jump egress_net1"},
    }
    assert [e.key for e in entries(node)] == [("ctr-a", "net1")]
    assert node.call("CHECK", container="ctr-a").rc == 0
    assert node.call("DEL", container="ctr-a").rc == 0
    assert tables(node) == []


def test_del_counts_an_interface_recorded_under_another_path_of_the_same_netns(node: FakeNode, tmp_path: Path) -> None:
    """`/proc/PID/ns/net` and `/run/netns/x` name one namespace: the same (st_dev, st_ino) is the same table."""
    pinned = tmp_path / "pinned"
    pinned.write_text("")
    alias = tmp_path / "alias"
    alias.symlink_to(pinned)
    node.netns |= {str(pinned), str(alias)}
    node.call("ADD", container="ctr-a", netns=str(pinned))
    node.call(
        "ADD",
        node.conf(name="net-b", prevResult=prev_result("net2")),
        container="ctr-b",
        ifname="net2",
        netns=str(pinned),
    )
    node.nfts[str(alias)] = node.nfts[str(pinned)]  # one namespace, one table, whatever path reaches it
    # B's DEL comes with the other path of the same namespace
    assert node.call("DEL", node.conf(name="net-b"), container="ctr-b", ifname="net2", netns=str(alias)).rc == 0
    assert chains(node, str(pinned)) == {"input", "output"} | interface_chains("net1")


def test_gc_of_another_containers_interface_keeps_the_shared_table(node: FakeNode) -> None:
    node.call("ADD", container="ctr-a")
    node.call("ADD", container="ctr-b", ifname="net2", conf=node.conf(prevResult=prev_result("net2")))
    assert gc(node, gc_conf(node, [("ctr-a", "net1")])).rc == 0
    assert chains(node) == {"input", "output"} | interface_chains("net1")
    assert node.call("CHECK", container="ctr-a").rc == 0


def test_an_unreadable_entry_anywhere_keeps_the_table(node: FakeNode) -> None:
    """It may be another container's interface in this netns: never remove the table on a guess."""
    node.call("ADD")
    node.state_dir.joinpath("other_net9.json").write_text("{garbage")
    assert node.call("DEL").rc == 0
    assert chains(node) == {"input", "output"}  # the interface's objects went, the (now empty) table stays


# ----------------------------------------------------------------------------------------------- not a netns


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_a_netns_path_that_cannot_be_used_is_refused_before_nft_and_keeps_the_entry(
    node: FakeNode, command: str
) -> None:
    """Issue 11, items 9 and 13: EACCES, another kind of namespace … is not "gone" — code 8, nft never called,
    the entry (if any) stays."""
    node.call("ADD")
    before = node.transactions()
    node.unusable[POD_A] = "Permission denied"
    out = node.call(command)
    assert (out.rc, out.code) == (1, INVALID_NETNS), out
    assert "Permission denied" in out.json["details"]
    assert node.transactions() == before
    assert [e.key for e in entries(node)] == [("c1", "net1")]


def test_check_whose_listing_cannot_enter_the_netns_answers_code_8(node: FakeNode) -> None:
    """The listing enters the netns itself (in_netns_here): a setns refused there is NetnsUnusable, code 8 as for
    ADD and DEL, not the catch-all's 999."""
    from shared.errors import NetnsUnusable

    node.call("ADD")

    def refused(family: str = "inet", table: str = "mnp") -> str:
        raise NetnsUnusable(f"cannot enter network namespace {POD_A}: Operation not permitted")

    node.nfts[POD_A].list_table_json = refused  # type: ignore[method-assign]
    out = node.call("CHECK")
    assert (out.rc, out.code) == (1, INVALID_NETNS), out
    assert "Operation not permitted" in out.json["details"]


def test_gc_keeps_the_entry_of_a_netns_it_cannot_use(node: FakeNode) -> None:
    node.call("ADD")
    node.unusable[POD_A] = "Permission denied"
    out = gc(node, gc_conf(node, []))
    assert (out.rc, out.code) == (1, INTERNAL)
    assert len(entries(node)) == 1 and tables(node) != []


def real_netns_deps(node: FakeNode) -> Any:
    """The fake node's nft and store with the REAL netns checks (shared.netns.check_netns)."""
    from cni.plugin import Deps
    from shared.netns import check_netns, is_own_netns

    return lambda conf: Deps(nft=node.nft, store=node.store_factory, own_netns=is_own_netns, check_netns=check_netns)


@pytest.mark.parametrize("kind", ["mount namespace", "file with content", "directory", "fifo", "device"])
@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_a_path_that_is_no_network_namespace_is_refused_before_nft(
    node: FakeNode, tmp_path: Path, kind: str, command: str
) -> None:
    """Issue 11, item 13: with the real checks, `/proc/self/ns/mnt`, a regular file with content, a directory, a
    FIFO or a device as CNI_NETNS is code 8 on ADD, CHECK and DEL, before any nft call."""
    import os

    paths = {"mount namespace": "/proc/self/ns/mnt", "device": "/dev/null"}
    if kind == "file with content":
        paths[kind] = str(tmp_path / "file")
        (tmp_path / "file").write_text("not a namespace")
    elif kind == "directory":
        paths[kind] = str(tmp_path)
    elif kind == "fifo":
        paths[kind] = str(tmp_path / "fifo")
        os.mkfifo(paths[kind])
    netns = paths[kind]
    node.netns.add(netns)  # the fake nft would act there: the real check must stop it first
    conf = node.conf(prevResult=prev_result(sandbox=netns))
    out = node.call(command, conf, netns=netns, deps=real_netns_deps(node))
    assert (out.rc, out.code) == (1, INVALID_NETNS), out
    assert node.transactions() == 0 and entries(node) == []
    assert "Traceback" not in out.stderr
