"""The one reader of `nft -j` (shared.nft.trace.NftListing, table_from_nft_json): what it carries beside the
tracer's rule text — rule handles, counters' packets and bytes, the table's object names, an interface's items as
nft printed them, the other tables' base chains — read from real nft 1.0.6 output (test_ctl_inspect's canned
listing, kept equal to the renderer's tables there), and the pin that no other module reads nft's JSON items.
The kernel's own listing is read in tests/integration/test_render_kernel.py."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.nft.backend import interface_view
from shared.nft.render import interface_names, owned_view, reachable
from shared.nft.trace import BaseChain, NftListing, TraceError, table_from_nft_json
from tests.unit.test_ctl_inspect import DNS_GROUP, TABLE_JSON_ITEMS, WEB_GROUP, with_counters

ROOT = Path(__file__).parents[2]


def listing(items: list[dict[str, Any]]) -> str:
    return json.dumps({"nftables": items})


def rules_json(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if "rule" in item:
            out.setdefault(item["rule"]["chain"], []).append(item["rule"])
    return out


def test_every_rule_carries_its_handle_and_its_counter() -> None:
    items = with_counters(TABLE_JSON_ITEMS, {"ingress_net1": (7, 420), "egress_net2": (3, 180)})
    view = table_from_nft_json(listing(items))
    listed = rules_json(items)
    assert set(listed) <= set(view.chains)
    for name, chain in view.chains.items():
        assert [r.handle for r in chain.rules] == [r["handle"] for r in listed.get(name, [])]
    counted = {(name, r.text, r.packets, r.bytes) for name, c in view.chains.items() for r in c.rules if r.packets}
    assert counted == {("ingress_net1", "counter drop", 7, 420), ("egress_net2", "counter drop", 3, 180)}
    uncounted = view.chains["ingress_net1"].rules[0]  # ct state established,related accept: no counter
    assert (uncounted.packets, uncounted.bytes) == (None, None) and uncounted.handle is not None


def test_handles_and_counters_stay_out_of_the_repairs_comparisons() -> None:
    before = table_from_nft_json(listing(TABLE_JSON_ITEMS))
    items = with_counters(TABLE_JSON_ITEMS, {"ingress_net1": (7, 420), "egress_net1": (1, 60)})
    for item in items:
        for obj in item.values():
            if "handle" in obj:
                obj["handle"] += 1000  # the same rules written again: new handles
    after = table_from_nft_json(listing(items))
    assert before != after  # the packets differ (the Fake counts them too)
    assert after.chains["input"].rules == before.chains["input"].rules  # handles alone compare equal
    for ifname, ifindex in (("net1", 2), ("net2", 3)):
        assert owned_view(after, ifname, ifindex) == owned_view(before, ifname, ifindex)
        assert interface_view(after, ifname) == interface_view(before, ifname)
    assert reachable(after, "ingress_net1") == reachable(before, "ingress_net1")


def test_an_unreadable_rule_kept_opaque_still_has_its_counter_and_handle() -> None:
    items = copy.deepcopy(TABLE_JSON_ITEMS)
    rule = next(
        i["rule"]
        for i in items
        if "rule" in i and i["rule"]["chain"] == "ingress_net2" and any("counter" in e for e in i["rule"]["expr"])
    )
    rule["expr"] = [{"match": {"op": "!=", "left": {"meta": {"key": "mark"}}, "right": 1}}, *rule["expr"]]
    with pytest.raises(TraceError):
        table_from_nft_json(listing(items))
    view = NftListing.parse(listing(with_counters(items, {"ingress_net2": (5, 300)}))).view(opaque=True)
    kept = next(r for r in view.chains["ingress_net2"].rules if r.text.startswith("["))
    assert (kept.packets, kept.bytes, kept.handle) == (5, 300, rule["handle"])


def test_names_and_one_interfaces_items_as_nft_printed_them() -> None:
    found = NftListing.parse(listing(TABLE_JSON_ITEMS))
    names = found.names()
    assert {"input", "output", "ingress_ifindex", "ingress_net1", WEB_GROUP, f"{WEB_GROUP}_ports"} <= set(names)
    assert found.names("ip", "filter") == []
    kept = found.items_of("inet", "mnp", interface_names("net1", names))
    assert kept[0] == TABLE_JSON_ITEMS[0] and kept[1] == TABLE_JSON_ITEMS[1]  # metainfo, the table
    assert all(item in TABLE_JSON_ITEMS for item in kept)  # untouched: what nft printed
    chains = {obj.get("chain", obj.get("name")) for item in kept[2:] for obj in item.values()}
    assert chains == {
        "ingress_net1", "ingress_net1_v4_peers", "ingress_net1_v6_peers", WEB_GROUP, f"{WEB_GROUP}_ports",
        "egress_net1", "egress_net1_v4_peers", DNS_GROUP, f"{DNS_GROUP}_ports",
    }  # fmt: skip


def test_other_tables_base_chains_from_a_listed_ruleset() -> None:
    other = [
        {"table": {"family": "ip", "name": "filter", "handle": 1}},
        {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter",
                   "hook": "input", "prio": 0, "policy": "drop"}},
        {"chain": {"family": "ip", "table": "filter", "name": "helper", "handle": 2}},
        {"chain": {"family": "inet", "table": "fw", "name": "out", "handle": 1, "type": "filter",
                   "hook": "output", "prio": -150}},
    ]  # fmt: skip
    found = NftListing.parse(listing([*TABLE_JSON_ITEMS, *other]))
    assert found.has_table() and not found.has_table("ip", "nat")
    assert found.base_chains() == [
        BaseChain("ip", "filter", "INPUT", "input", 0, "drop"),
        BaseChain("inet", "fw", "out", "output", -150, None),
    ]
    assert found.view() == table_from_nft_json(listing(TABLE_JSON_ITEMS))  # the other tables are not in the view


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"nftables": {}}', '{"other": []}', '{"nftables": ' + "[" * 100_000 + "]" * 100_000 + "}"]
)
def test_what_is_not_nft_json_is_refused(text: str) -> None:
    with pytest.raises(TraceError, match="gave no nftables JSON"):
        NftListing.parse(text)


# ----------------------------------------------------------------------------------------------- the pin

READER = Path("shared/nft/trace.py")
NFT_JSON_KEYS = {"nftables", "expr", "elem", "metainfo"}  # keys only nft's JSON listing has


def _reads_nft_json(tree: ast.AST) -> list[int]:
    """Lines where a module indexes (`x["expr"]`) or gets (`x.get("elem")`) a key of nft's JSON items."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr):
            continue
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            if node.args and isinstance(node.args[0], ast.Constant):
                key = node.args[0].value
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant):
            key = node.left.value  # `"nftables" in doc`
        if key in NFT_JSON_KEYS:
            lines.append(node.lineno)
    return lines


def test_no_module_but_the_reader_reads_nft_json() -> None:
    """Everything that reads `nft -j` goes through shared.nft.trace (NftListing, table_from_nft_json)."""
    found = {}
    for top in ("cni", "daemon", "shared"):
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative != READER and (lines := _reads_nft_json(ast.parse(path.read_text(), str(path)))):
                found[str(relative)] = lines
    assert found == {}
    assert _reads_nft_json(ast.parse((ROOT / READER).read_text()))  # the pin sees the reader's own reads


@pytest.mark.parametrize("ifname", ["net1", "net2"])
def test_the_two_slices_of_an_interface_agree(ifname: str) -> None:
    """What an interface enforces (its chains and what they reach: the repair's, the lab's and CHECK's slice) is
    made of objects of its own names (render.interface_names: what DEL removes and `mnpctl rules --iface` shows)."""
    view = table_from_nft_json(listing(TABLE_JSON_ITEMS))
    names = interface_names(ifname, NftListing.parse(listing(TABLE_JSON_ITEMS)).names())
    reached = {name for chain in names & set(view.chains) for _, name, _ in reachable(view, chain)}
    assert reached and reached <= names


def test_items_that_are_not_nft_objects_are_passed_over() -> None:
    junk: list[Any] = [{}, {"rule": "x"}, {"chain": ["y"]}, 7, "z"]
    found, clean = NftListing.parse(listing([*TABLE_JSON_ITEMS, *junk])), NftListing.parse(listing(TABLE_JSON_ITEMS))
    assert len(found.items) == len(TABLE_JSON_ITEMS) + 3  # the objects are kept (printed by `rules -o json`)
    assert found.names() == clean.names() and found.has_table() and found.base_chains() == []
    assert found.items_of("inet", "mnp", {"ingress_net2"}) == clean.items_of("inet", "mnp", {"ingress_net2"})


MNP = {"family": "inet", "table": "mnp"}
# Items of the table that no reading of nft's JSON expects, and what each reader's error says (the Python error
# each once was: a key, an attribute, a type, an exhausted iterator).
GARBLED: list[tuple[Any, str]] = [
    ({"chain": dict(MNP)}, "'name'"),  # a chain without a name
    ({"rule": {**MNP, "chain": "nochain", "expr": []}}, "'nochain'"),  # a rule of a chain not listed
    ({"chain": {**MNP, "name": ["x"]}}, "unhashable type: 'list'"),
    ({"chain": "x"}, "'str' object has no attribute 'get'"),
    ({}, ""),  # an item naming no kind
]


@pytest.mark.parametrize(("item", "message"), GARBLED, ids=["no name", "no chain", "list name", "str", "empty"])
@pytest.mark.parametrize("opaque", [False, True])
def test_a_listing_the_reader_cannot_read_raises_its_one_error(item: Any, message: str, opaque: bool) -> None:
    """Whatever is wrong in a listing, the reader raises TraceError (saying what the underlying error said): its
    callers — the daemon's repair, the plugin's CHECK and DEL, `mnpctl` — catch that one type."""
    found = NftListing.parse(listing([*TABLE_JSON_ITEMS, item]))
    with pytest.raises(TraceError) as raised:
        found.view(opaque=opaque)
    assert str(raised.value) == message


def test_names_of_a_listing_with_a_nameless_chain_raise_the_readers_error() -> None:
    with pytest.raises(TraceError, match="'name'"):
        NftListing.parse(listing([*TABLE_JSON_ITEMS, {"chain": dict(MNP)}])).names()
