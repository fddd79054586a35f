"""shared.nft.batch without a kernel: what it encodes and what it refuses to (tests/integration/test_nft_batch.py
compares its result with libnftables' in a real namespace)."""

from __future__ import annotations

import struct

import pytest

from shared.nft import nfnl
from shared.nft.batch import (
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSET,
    NFT_MSG_NEWSETELEM,
    NFT_MSG_NEWTABLE,
    NotEncodable,
    encode,
)
from shared.nft.objects import Chain, Element, Rule, Set, Table
from shared.nft.render import render_interface
from shared.nft.transaction import Transaction
from shared.rules import InterfaceRules


def decoded(data: bytes) -> list[tuple[int, int, int, dict[int, bytes]]]:
    return [(kind, flags, seq, nfnl.attributes(payload, 4)) for kind, flags, seq, payload in nfnl.messages(data)]


def test_the_pending_table_is_one_framed_batch_acknowledged_once() -> None:
    tx = render_interface(InterfaceRules.pending("net1", "ns/pod", "n", 7))
    rules = [op.obj for op in tx.operations if isinstance(op.obj, Rule)]
    data, last = encode(tx, first_seq=40)
    messages = decoded(data)
    assert messages[0][0] == nfnl.NFNL_MSG_BATCH_BEGIN and messages[-1][0] == nfnl.NFNL_MSG_BATCH_END
    body = messages[1:-1]
    assert [seq for _, _, seq, _ in body] == list(range(41, 41 + len(body))) and last == body[-1][2]
    assert [flags & nfnl.NLM_F_ACK for _, flags, _, _ in body] == [0] * (len(body) - 1) + [nfnl.NLM_F_ACK]
    kinds = [kind & 0xFF for kind, _, _, _ in body]
    assert kinds[0] == NFT_MSG_NEWTABLE and kinds.count(NFT_MSG_NEWRULE) == len(rules)
    assert all(attrs[1] == b"mnp\0" for _, _, _, attrs in body)  # every message names the table
    # the dispatch elements: index 7 in host order, the name as comment; the old name-map element deleted
    index_adds = [a for k, _, _, a in body if k & 0xFF == NFT_MSG_NEWSETELEM and a[2].startswith(b"ingress_ifindex")]
    assert len(index_adds) == 1 and struct.pack("=I", 7) in index_adds[0][3] and b"net1\0" in index_adds[0][3]
    assert sum(1 for k, _, _, _ in body if k & 0xFF == NFT_MSG_DELSETELEM) == 2
    nd_sets = sum(1 for k, _, _, a in body if k & 0xFF == NFT_MSG_NEWSET and a[2] == b"__set%d\0")
    assert nd_sets == sum(rule.text.startswith("icmpv6 type {") for rule in rules) > 0  # one anonymous set each


@pytest.mark.parametrize(
    "operation",
    [
        lambda tx: tx.delete(Table()),
        lambda tx: tx.delete(Chain("ingress_net1")),
        lambda tx: tx.add(Rule("ingress_net1", "ip saddr @ingress_net1_v4_all accept")),
        lambda tx: tx.add(Rule("ingress_net1", "meta l4proto icmp accept", "--accept-icmp")),
        lambda tx: tx.add(Set("allow_src_v4", "ipv4_addr", ("interval",), comment="x")),
        lambda tx: tx.add(Element("ingress_net1_v4_all", "10.0.0.0/8")),
        lambda tx: tx.add(Element("ingress_ifindex", '" 0"', "jump ingress_net1")),
        lambda tx: tx.add(Element("ingress_ifindex", '" 3"', "goto ingress_net1")),
        lambda tx: tx.add(Chain("input", hook="forward")),
    ],
)
def test_what_the_pending_table_does_not_hold_is_not_encoded(operation: object) -> None:
    tx = Transaction()
    operation(tx)  # type: ignore[operator]
    with pytest.raises(NotEncodable):
        encode(tx)


def test_a_transaction_error_is_raised_not_encoded() -> None:
    tx = Transaction().add(Rule("bad name", "accept"))
    with pytest.raises(ValueError, match="not a valid name"):
        encode(tx)
