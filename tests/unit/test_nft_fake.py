"""`FakeNft` refuses what the kernel refuses, atomically, and the renderer's transactions are idempotent on it.

Each rule here was checked against nft 1.0.6 (tests/integration/test_render_kernel.py repeats the interesting ones
on the real kernel). Address plan: RFC 5737 (192.0.2.0/24, 198.51.100.0/24) and RFC 3849 (2001:db8::/32).
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.nft.errors import BusyError, ExistsError, NftError, NotFoundError, error_from_stderr
from shared.nft.fake import ElementView, FakeNft, SetView, parse_transactions
from shared.nft.objects import Chain, Element, Rule, Set, Table
from shared.nft.render import owned_view, render_interface, render_remove_interface
from shared.nft.transaction import Transaction
from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange

PAIRS = Set("pairs", "ipv4_addr . inet_proto . inet_service", ("interval",))
PREFIXES = Set("prefixes", "ipv4_addr", ("interval",))
IFACES = Set("ifaces", "ifname", value_type="verdict")


def tx(*ops: tuple[str, object]) -> Transaction:
    out = Transaction()
    for verb, obj in ops:
        getattr(out, verb)(obj)
    return out


def add(*objects: object) -> Transaction:
    return tx(*(("add", obj) for obj in objects))


def base_fake() -> FakeNft:
    """A table with a jump chain, a verdict map entry, a rule using a set, and a few elements."""
    return FakeNft.from_transaction(
        add(
            Table(),
            Chain("input", hook="input"),
            Chain("target"),
            PAIRS,
            PREFIXES,
            IFACES,
            Rule("input", "iifname vmap @ifaces"),
            Rule("target", "ip saddr @prefixes accept"),
            Rule("target", "counter drop", "default deny"),
            Element("ifaces", '"net1"', "jump target"),
            Element("pairs", "192.0.2.0/24 . tcp . 80-90", comment="web"),
            Element("prefixes", "198.51.100.0/25"),
        )
    )


def ruleset(ifname: str, *allows: Allow) -> InterfaceRules:
    index = {"net1": 2, "net2": 3}.get(ifname, 4)
    return InterfaceRules("ns1/pod", ifname, "ns1/net", DirectionRules(True, allows, ("ns1/policy",)), ifindex=index)


WEB = Allow("ns1/web ingress[0]", (ipaddress.ip_network("192.0.2.0/28"),), (PortRange("tcp", 80, 80),))


# ----------------------------------------------------------------------------------------- transactions


def test_failing_operation_leaves_state_unchanged() -> None:
    fake = base_fake()
    before = fake.dump()
    with pytest.raises(NotFoundError):
        fake.run(add(Chain("new"), Element("prefixes", "192.0.2.1"), Rule("new", "jump missing")))
    assert fake.dump() == before
    assert "new" not in fake.list_table().chains
    fake.check(add(Chain("new")))  # like nft --check: fine, but nothing changes
    assert fake.dump() == before


def test_counts_transactions_and_operations() -> None:
    fake = base_fake()
    assert (fake.transactions, fake.operations, fake.last_transaction) == (0, 0, None), "seeding does not count"
    change = add(Element("prefixes", "192.0.2.1"), Element("prefixes", "192.0.2.2"))
    fake.run(change)
    assert (fake.transactions, fake.operations) == (1, 2)
    assert fake.last_transaction is change
    with pytest.raises(ExistsError):
        fake.run(change.add(Element("prefixes", "192.0.2.0/30")))
    assert (fake.transactions, fake.operations) == (2, 5), "a refused transaction was still issued"


def test_table_must_exist() -> None:
    fake = FakeNft()
    for operation in (Chain("c"), Set("s", "ipv4_addr"), Rule("c", "accept"), Element("s", "192.0.2.1")):
        with pytest.raises(NotFoundError):
            fake.run(add(operation))
    with pytest.raises(NotFoundError):
        fake.run(tx(("delete", Table())))
    fake.run(add(Table(), Table()))
    fake.run(tx(("delete", Table())))
    assert fake.list_tables() == []
    with pytest.raises(NotFoundError):
        fake.list_table()


def test_tables_are_separate() -> None:
    fake = FakeNft()
    fake.run(Transaction("inet", "mnp").add(Table()).add(Chain("c")))
    fake.run(Transaction("ip", "other").add(Table()).add(Chain("c")).add(Rule("c", "drop")))
    assert fake.list_tables() == [("inet", "mnp"), ("ip", "other")]
    assert fake.list_table().chains["c"].rules == ()
    assert fake.dump().count("add table") == 2
    assert FakeNft.from_text(fake.dump()).dump() == fake.dump()


# ----------------------------------------------------------------------------------------- existence rules


def test_add_existing_object_is_a_noop() -> None:
    fake = base_fake()
    before = fake.dump()
    fake.run(add(Table(), Chain("target"), Chain("input", hook="input"), PAIRS, IFACES))
    fake.run(add(Set("prefixes", "ipv4_addr", ("interval",), comment="another comment")))
    assert fake.dump() == before


@pytest.mark.parametrize(
    "redeclared",
    [
        Set("prefixes", "ipv6_addr", ("interval",)),
        Set("prefixes", "ipv4_addr"),
        Set("prefixes", "ipv4_addr", ("interval",), value_type="verdict"),
        Set("ifaces", "ifname"),
    ],
)
def test_set_redeclared_with_another_type_exists(redeclared: Set) -> None:
    with pytest.raises(ExistsError):
        base_fake().run(add(redeclared))


def test_chain_redeclared() -> None:
    fake = base_fake()
    with pytest.raises(NftError, match="Operation not supported"):
        fake.run(add(Chain("target", hook="input")))
    with pytest.raises(NftError, match="Operation not supported"):
        fake.run(add(Chain("input", hook="output")))
    fake.run(add(Chain("input", hook="input", policy="drop")))
    assert fake.list_table().chains["input"].policy == "drop", "a base chain takes the new policy"


@pytest.mark.parametrize(
    "operation",
    [
        ("delete", Chain("missing")),
        ("flush", Chain("missing")),
        ("delete", Set("missing", "ipv4_addr")),
        ("flush", Set("missing", "ipv4_addr")),
        ("add", Element("missing", "192.0.2.1")),
        ("delete", Element("prefixes", "192.0.2.1")),
        ("delete", Element("prefixes", "198.51.100.0/24")),  # overlaps an element, but is not one
        ("delete", Element("pairs", "192.0.2.0/24 . tcp . 80")),  # (the kernel would delete 80-90 here)
        ("add", Rule("missing", "accept")),
        ("add", Rule("target", "ip saddr @missing accept")),
        ("add", Rule("input", "iifname vmap @missing")),
        ("add", Rule("input", "jump missing")),
        ("add", Element("ifaces", '"net2"', "jump missing")),
    ],
)
def test_missing_object_is_not_found(operation: tuple[str, object]) -> None:
    with pytest.raises(NotFoundError, match="No such file or directory"):
        base_fake().run(tx(operation))


@pytest.mark.parametrize(
    ("operation", "why"),
    [
        (("delete", PREFIXES), "referenced by a rule"),
        (("delete", IFACES), "referenced by a vmap rule"),
        (("delete", Chain("target")), "has rules and is referenced by a map element"),
        (("delete", Chain("input")), "has rules"),
    ],
)
def test_deleting_what_is_in_use_is_busy(operation: tuple[str, object], why: str) -> None:
    with pytest.raises(BusyError, match="Device or resource busy"):
        base_fake().run(tx(operation))


def test_chain_referenced_by_map_element_or_jump_is_busy_even_when_empty() -> None:
    fake = base_fake()
    with pytest.raises(BusyError):
        fake.run(tx(("flush", Chain("target")), ("delete", Chain("target"))))
    fake.run(add(Chain("other"), Rule("input", "jump other")))
    with pytest.raises(BusyError):
        fake.run(tx(("delete", Chain("other"))))
    # dropping the references first makes both deletable, in one transaction
    fake.run(
        tx(
            ("flush", Chain("input")),
            ("delete", Element("ifaces", '"net1"')),
            ("flush", Chain("target")),
            ("delete", Chain("target")),
            ("delete", Chain("other")),
            ("delete", PREFIXES),
        )
    )
    assert sorted(fake.list_table().chains) == ["input"]


def test_flush_set_empties_it_even_when_referenced() -> None:
    fake = base_fake()
    fake.run(tx(("flush", PREFIXES)))
    assert fake.list_table().sets["prefixes"].elements == ()


def test_rules_cannot_jump_to_base_chains_or_use_maps_as_sets() -> None:
    for rule in (
        Rule("target", "jump input"),
        Rule("target", "ip saddr @ifaces accept"),
        Rule("target", "iifname vmap @prefixes"),
    ):
        with pytest.raises(NftError):
            base_fake().run(add(rule))
    with pytest.raises(NftError, match="Operation not supported"):
        base_fake().run(add(Element("ifaces", '"net2"', "jump input")))


# ----------------------------------------------------------------------------------------- elements


def test_same_element_again_is_a_noop_and_keeps_its_comment() -> None:
    fake = base_fake()
    before = fake.dump()
    fake.run(
        add(
            Element("pairs", "192.0.2.0/24 . tcp . 80-90", comment="another"),
            Element("prefixes", "198.51.100.0-198.51.100.127"),  # the same interval, spelled as a range
            Element("ifaces", '"net1"', "jump target"),
        )
    )
    assert fake.dump() == before


def test_element_key_with_another_value_exists() -> None:
    with pytest.raises(ExistsError, match="File exists"):
        base_fake().run(add(Chain("other"), Element("ifaces", '"net1"', "jump other")))


@pytest.mark.parametrize(
    "element",
    [
        Element("prefixes", "198.51.100.64/26"),  # inside
        Element("prefixes", "198.51.100.0/24"),  # around
        Element("prefixes", "198.51.100.127-198.51.100.200"),  # straddling the end
        Element("pairs", "192.0.2.0/25 . tcp . 80"),  # a point inside the box
        Element("pairs", "192.0.2.128 . tcp . 90-100"),  # overlapping in every field
        Element("pairs", "192.0.0.0/16 . tcp . 0-65535"),  # around
    ],
)
def test_overlapping_interval_exists(element: Element) -> None:
    with pytest.raises(ExistsError):
        base_fake().run(add(element))


@pytest.mark.parametrize(
    "element",
    [
        Element("prefixes", "198.51.100.128/25"),  # adjacent
        Element("pairs", "192.0.2.0/24 . udp . 80-90"),  # another protocol
        Element("pairs", "192.0.2.0/24 . tcp . 91"),  # adjacent ports
        Element("pairs", "192.0.3.0/24 . tcp . 80-90"),  # adjacent prefix
    ],
)
def test_disjoint_interval_is_added(element: Element) -> None:
    fake = base_fake()
    fake.run(add(element))
    assert len(fake.list_table().sets[element.set].elements) == 2


def test_overlap_within_one_transaction_is_refused_too() -> None:
    with pytest.raises(ExistsError):
        base_fake().run(add(Element("prefixes", "192.0.2.0/24"), Element("prefixes", "192.0.2.128/25")))


boxes = st.tuples(
    st.integers(0, 32), st.integers(29, 32), st.sampled_from(["tcp", "udp"]), st.integers(0, 20), st.integers(0, 5)
)


@given(st.lists(boxes, max_size=30))
def test_overlap_check_agrees_with_its_definition(added: list[tuple[int, int, str, int, int]]) -> None:
    """Elements overlap iff they intersect in every field, whatever the index the Fake keeps to find that fast."""
    fake = FakeNft.from_transaction(add(Table(), PAIRS))
    for host, length, proto, port, width in added:
        element = ElementView.parse(
            PAIRS.key_type, f"192.0.2.{host}/{length} . {proto} . {port}-{port + width}", interval=True
        )
        present = fake.list_table().sets["pairs"].elements
        clash = any(
            all(lo <= o_hi and o_lo <= hi for (lo, hi), (o_lo, o_hi) in zip(element.fields, other.fields, strict=True))
            for other in present
            if other.fields != element.fields
        )
        try:
            fake.run(add(Element("pairs", element.key)))
        except ExistsError:
            assert clash
        else:
            assert not clash
        if present and host % 3 == 0:  # deletions keep the index right too
            fake.run(tx(("delete", Element("pairs", present[host % len(present)].key))))


@pytest.mark.parametrize(
    "element",
    [
        Element("ifaces", '"net2"'),  # a map element needs a value
        Element("prefixes", "192.0.2.1", "accept"),  # a set element has none
        Element("ifaces", '"net2"', "jump"),  # not a verdict
        Element("prefixes", "2001:db8::1"),  # wrong family
        Element("prefixes", "192.0.2.0/33"),
        Element("pairs", "192.0.2.1 . tcp"),  # missing field
        Element("pairs", "192.0.2.1 . tcp . 65536"),
        Element("pairs", "192.0.2.1 . tcp . 90-80"),
        Element("pairs", "192.0.2.1 . http . 80"),
        Element("ifaces", '"a-name-too-long-for-linux"', "accept"),
    ],
)
def test_malformed_element_is_refused(element: Element) -> None:
    with pytest.raises(NftError):
        base_fake().run(add(element))


def test_prefix_needs_the_interval_flag() -> None:
    fake = base_fake()
    fake.run(add(Set("plain", "ipv4_addr")))
    with pytest.raises(NftError, match="flags interval"):
        fake.run(add(Element("plain", "192.0.2.0/24")))
    fake.run(add(Element("plain", "192.0.2.7"), Element("plain", "192.0.2.0/32")))
    assert [e.key for e in fake.list_table().sets["plain"].elements] == ["192.0.2.0", "192.0.2.7"]


def test_element_view_is_canonical_and_looks_up_points() -> None:
    key_type = "ipv6_addr . inet_proto . inet_service"
    element = ElementView.parse(key_type, "2001:db8::1/64 . 6 . 80-80", interval=True, comment="")
    assert (element.key, element.comment) == ("2001:db8::/64 . tcp . 80", None)
    table = SetView("s", key_type, flags=("interval",), elements=(element,))
    assert table.lookup(["2001:db8::ffff", "tcp", "80"]) == element
    assert table.lookup(["2001:db8:0:1::", "tcp", "80"]) is None
    with pytest.raises(NftError):
        table.lookup(["2001:db8::/64", "tcp", "80"])


# ----------------------------------------------------------------------------------------- the renderer on the Fake


def test_render_interface_twice_is_idempotent() -> None:
    rules = ruleset("net1", WEB)
    fake = FakeNft.from_transaction(render_interface(rules))
    once = fake.dump()
    fake.run(render_interface(rules))  # add; delete; add of every set, flush and refill of every chain
    assert fake.dump() == once


def test_render_replaces_the_previous_rules_of_the_interface() -> None:
    """The full form replaces what it writes; the port groups of the old rules stay (the full form does not
    know their names), referenced by nothing, until a delta or the plugin's DEL removes them."""
    fake = FakeNft.from_transaction(render_interface(ruleset("net1", WEB)))
    old_groups = {name for name in fake.list_table().chains if name.startswith("g_")}
    other = Allow("ns1/db ingress[0]", (ipaddress.ip_network("198.51.100.0/24"),), (PortRange("tcp", 5432, 5432),))
    fake.run(render_interface(ruleset("net1", other)))
    fresh = FakeNft.from_transaction(render_interface(ruleset("net1", other)))
    assert owned_view(fake.list_table(), "net1", 2) == owned_view(fresh.list_table(), "net1", 2)
    left = fake.list_table()
    assert set(left.chains) - set(fresh.list_table().chains) == old_groups
    listed = [*left.chains, *left.sets]
    fake.run(render_remove_interface("net1", 2, listed))
    assert not [name for name in [*fake.list_table().chains, *fake.list_table().sets] if "net1" in name]


def test_remove_interface_twice_and_on_an_empty_netns() -> None:
    fake = FakeNft.from_transaction(render_interface(InterfaceRules.pending("net1", ifindex=2)))
    skeleton = fake.dump()
    fake.run(render_interface(ruleset("eth0.100", WEB)))
    listed = [*fake.list_table().chains, *fake.list_table().sets]
    fake.run(render_remove_interface("eth0.100", 4, listed))
    assert fake.dump() == skeleton
    fake.run(render_remove_interface("eth0.100", 4, listed))
    assert fake.dump() == skeleton
    empty = FakeNft()
    empty.run(render_remove_interface("net1", 2))
    assert sorted(empty.list_table().sets) == ["egress_ifaces", "egress_ifindex", "ingress_ifaces", "ingress_ifindex"]
    assert empty.list_table().chains == {}


def test_second_interface_does_not_disturb_the_first() -> None:
    fake = FakeNft.from_transaction(render_interface(ruleset("net1", WEB)))
    first = fake.list_table()
    fake.run(render_interface(InterfaceRules.pending("net2", ifindex=3)))
    second = fake.list_table()
    for name, chain in first.chains.items():
        assert second.chains[name] == chain
    for name, s in first.sets.items():
        if name.endswith("_ifindex"):
            assert set(s.elements) < set(second.sets[name].elements), "net1's map entry stays"
        else:
            assert second.sets[name] == s


@pytest.mark.parametrize("ifname", ["jump", "goto", "counter", "a@b", "x#y"])
def test_strings_in_rules_are_not_references_or_counters(ifname: str) -> None:
    """The drop log's prefix holds the interface name: `"mnp drop jump ingress: "` jumps nowhere, `a@b` names no
    set, `counter` counts nothing (checked on nft 1.0.6, which takes all five)."""
    fake = FakeNft.from_transaction(render_interface(InterfaceRules.pending(ifname, ifindex=5)))
    for chain in fake.list_table().chains.values():
        if chain.hook is None:
            assert [r.packets for r in chain.rules][-2:] == [None, 0]
    assert FakeNft.from_text(fake.dump()).list_table() == fake.list_table()
    fake.run(render_remove_interface(ifname, 5))
    assert fake.list_table().chains.keys() == {"input", "output"}


# ----------------------------------------------------------------------------------------- dump


def test_dump_is_sorted_and_recreates_the_table() -> None:
    fake = FakeNft.from_transaction(
        render_interface(ruleset("net1", WEB)), render_interface(InterfaceRules.pending("eth0.100", ifindex=4))
    )
    dump = fake.dump()
    kinds = [line.split()[1] for line in dump.splitlines() if line.startswith("add ")]
    order = ["table", "chain", "set", "rule", "element"]
    assert kinds == sorted(kinds, key=lambda kind: order.index(kind.replace("map", "set")))
    chains = [line.split()[4] for line in dump.splitlines() if line.startswith("add chain")]
    assert chains == sorted(chains)
    assert "flush" not in dump and "delete" not in dump
    again = FakeNft.from_text(dump)
    assert again.dump() == dump
    assert again.list_table() == fake.list_table()


def test_parse_refuses_text_mnp_does_not_write() -> None:
    for text in (
        "insert rule inet mnp c accept",
        "add chain inet mnp c { type nat hook prerouting priority 0; }",
        "flush table inet mnp",
    ):
        with pytest.raises(ValueError, match="mnp writes"):
            parse_transactions(text)


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("stderr", "cls"),
    [
        (
            "/dev/stdin:1:21-24: Error: Could not process rule: No such file or directory\ndelete set inet mnp x",
            NotFoundError,
        ),
        ("/dev/stdin:1:47-57: Error: element does not exist", NotFoundError),
        ("/dev/stdin:1:40-61: Error: Could not process rule: File exists", ExistsError),
        ("/dev/stdin:1:44-54: Error: interval overlaps with an existing one", ExistsError),
        ("/dev/stdin:1:57-67: Error: conflicting intervals specified", ExistsError),
        ("/dev/stdin:1:21-35: Error: Could not process rule: Device or resource busy", BusyError),
        ("/dev/stdin:1:1-5: Error: syntax error, unexpected junk", NftError),
    ],
)
def test_error_from_stderr(stderr: str, cls: type[NftError]) -> None:
    error = error_from_stderr(stderr)
    assert type(error) is cls
    assert error.message == stderr


def _table_before_index_dispatch(*ifnames: str) -> Transaction:
    """What mnp wrote before it dispatched on the interface index: maps by name, closed chains."""
    tx = Transaction().add(Table())
    for direction, hook, match in (("ingress", "input", "iifname"), ("egress", "output", "oifname")):
        tx.add(Set(f"{direction}_ifaces", "ifname", value_type="verdict")).add(Chain(hook, hook=hook))
        tx.add(Rule(hook, f"{match} vmap @{direction}_ifaces"))
        for ifname in ifnames:
            tx.add(Chain(f"{direction}_{ifname}")).add(Rule(f"{direction}_{ifname}", "counter drop"))
            tx.add(Element(f"{direction}_ifaces", f'"{ifname}"', f"jump {direction}_{ifname}"))
    return tx


def test_a_table_written_before_index_dispatch_stays_guarded_while_reprogrammed() -> None:
    """The first full form of net1 moves it to the index map and out of the name map; net2, not reprogrammed
    yet, stays dispatched by its name meanwhile — an upgrade opens nothing."""
    from shared.nft.trace import Packet, trace

    fake = FakeNft.from_transaction(_table_before_index_dispatch("net1", "net2"))
    fake.run(render_interface(InterfaceRules.pending("net1", ifindex=2)))
    view = fake.list_table()
    assert [e.key for e in view.sets["ingress_ifaces"].elements] == ['"net2"']
    assert [(e.key, e.comment) for e in view.sets["ingress_ifindex"].elements] == [("2", "net1")]
    for ifname, ifindex in (("net1", 2), ("net2", 3), ("x", 2)):  # x: net1 renamed
        packet = Packet("input", ifname, "192.0.2.1", "192.0.2.2", "tcp", 80, ifindex=ifindex)
        assert trace(view, packet).verdict == "drop", ifname
    assert trace(view, Packet("input", "eth0", "192.0.2.1", "192.0.2.2", "tcp", 80, ifindex=5)).verdict == "accept"
