"""`Transaction`: its text is exactly what `nft -f -` reads, and its validation error is deferred and sticky."""

from __future__ import annotations

import pytest

from shared.nft.fake import FakeNft, parse_transactions
from shared.nft.objects import Chain, Element, Rule, Set, Table
from shared.nft.transaction import Transaction, TransactionError

PEERS = Set("peers", "ipv4_addr . inet_proto . inet_service", ("interval",), "who may connect")
IFACES = Set("ifaces", "ifname", value_type="verdict")


@pytest.mark.parametrize(
    ("verb", "obj", "text"),
    [
        ("add", Table(), "add table inet mnp"),
        ("delete", Table(), "delete table inet mnp"),
        ("add", Chain("ingress_net1"), "add chain inet mnp ingress_net1"),
        (
            "add",
            Chain("input", hook="input"),
            "add chain inet mnp input { type filter hook input priority filter; policy accept; }",
        ),
        ("flush", Chain("input", hook="input"), "flush chain inet mnp input"),
        ("delete", Chain("ingress_net1"), "delete chain inet mnp ingress_net1"),
        (
            "add",
            PEERS,
            "add set inet mnp peers { type ipv4_addr . inet_proto . inet_service; flags interval;"
            ' comment "who may connect" }',
        ),
        ("add", IFACES, "add map inet mnp ifaces { type ifname : verdict; }"),
        ("flush", PEERS, "flush set inet mnp peers"),
        ("delete", IFACES, "delete map inet mnp ifaces"),
        ("add", Rule("input", "iifname vmap @ifaces"), "add rule inet mnp input iifname vmap @ifaces"),
        ("add", Rule("c", "counter drop", 'say "no"'), "add rule inet mnp c counter drop comment \"say 'no'\""),
        (
            "add",
            Element("peers", "192.0.2.0/24 . tcp . 80-90", comment="ns1/web"),
            'add element inet mnp peers { 192.0.2.0/24 . tcp . 80-90 comment "ns1/web" }',
        ),
        (
            "add",
            Element("ifaces", '"net1"', "jump ingress_net1"),
            'add element inet mnp ifaces { "net1" : jump ingress_net1 }',
        ),
        # deleting an element names its key only
        (
            "delete",
            Element("ifaces", '"net1"', "jump ingress_net1", "x"),
            'delete element inet mnp ifaces { "net1" }',
        ),
    ],
)
def test_operation_text(verb: str, obj: object, text: str) -> None:
    tx = Transaction()
    getattr(tx, verb)(obj)
    assert tx.error is None
    assert str(tx) == text + "\n"
    # the text parses back into the same operations (how golden files and dumps seed a FakeNft)
    assert [str(parsed) for parsed in parse_transactions(str(tx))] == [str(tx)]


def test_consecutive_elements_of_one_set_are_one_command() -> None:
    tx = Transaction("inet", "mnp")
    tx.add(Element("a", "192.0.2.1", comment="one"))
    tx.add(Element("a", "192.0.2.2"))
    tx.delete(Element("a", "192.0.2.3"))
    tx.add(Element("b", "192.0.2.4"))
    assert str(tx) == (
        "add element inet mnp a {\n"
        '\t192.0.2.1 comment "one",\n'
        "\t192.0.2.2\n"
        "}\n"
        "delete element inet mnp a { 192.0.2.3 }\n"
        "add element inet mnp b { 192.0.2.4 }\n"
    )
    assert len(tx) == 4  # operations, not lines
    assert str(parse_transactions(str(tx))[0]) == str(tx)


def test_comments_are_truncated_to_fit_the_kernel() -> None:
    tx = Transaction().add(Rule("c", "accept", "é" * 100))
    written = str(tx).split('comment "')[1].rstrip('"\n')
    assert len(written.encode()) <= 120
    assert written == "é" * 60


@pytest.mark.parametrize(
    ("verb", "obj", "problem"),
    [
        ("add", Chain("bad name"), "'bad name' is not a valid name"),
        ("add", Set("x" * 65, "ipv4_addr"), "is not a valid name"),
        ("add", Rule("c", "accept\ndrop"), "one non-empty line"),
        ("add", Rule("c", "  "), "one non-empty line"),
        ("delete", Rule("c", "accept"), "rules can only be added"),
        ("flush", Table(), "only chains and sets can be flushed"),
        ("add", Element("s", ""), "element needs a key"),
    ],
)
def test_invalid_operation_is_recorded(verb: str, obj: object, problem: str) -> None:
    tx = Transaction()
    getattr(tx, verb)(obj)
    assert isinstance(tx.error, TransactionError)
    assert problem in str(tx.error)
    assert len(tx) == 0


def test_error_is_sticky_and_raised_when_run() -> None:
    tx = Transaction().add(Table()).add(Chain("bad-name")).add(Chain("good"))
    first = tx.error
    tx.add(Chain("also bad"))
    assert tx.error is first, "the first error is kept"
    assert [str(op.obj) for op in tx.operations] == [str(Table())], "operations after the error are ignored"
    fake = FakeNft()
    with pytest.raises(TransactionError, match="bad-name"):
        fake.run(tx)
    assert fake.list_tables() == []
    assert fake.transactions == 1


def test_extend_carries_operations_and_error() -> None:
    good = Transaction().add(Table())
    bad = Transaction().add(Chain("no good"))
    combined = Transaction().extend(good).extend(bad)
    assert len(combined) == 1
    assert combined.error is bad.error
    assert bool(Transaction()), "an empty transaction is still a transaction"
