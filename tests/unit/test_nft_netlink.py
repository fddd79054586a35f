"""The nfnetlink encoding of element deltas (shared.nft.netlink), read back by an independent decoder: pyroute2's
nftables message classes. (That the kernel takes it and lists exactly the full form's elements is
tests/integration/test_nft_netlink.py.)"""

from __future__ import annotations

import struct

import pytest

from shared.nft import netlink
from shared.nft.errors import NftError
from shared.nft.objects import Element, Rule
from shared.nft.render import element_key_type
from shared.nft.transaction import Transaction

nftsocket = pytest.importorskip("pyroute2.netlink.nfnetlink.nftsocket")


def decoded(data: bytes) -> list[tuple[int, int, int, object]]:
    """(type, flags, seq, pyroute2's decoded message or None) of each message of a batch."""
    out = []
    for kind, flags, seq, payload in netlink.messages(data):
        msg = None
        if kind & 0xFF in (netlink.NFT_MSG_NEWSETELEM, netlink.NFT_MSG_DELSETELEM) and kind >> 8 == 10:
            header = struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0)
            msg = nftsocket.nft_set_elem_list_msg(header + payload)
            msg.decode()
        out.append((kind, flags, seq, msg))
    return out


def elements(msg: object) -> list[dict[str, object]]:
    out = []
    for element in msg.get_attr("NFTA_SET_ELEM_LIST_ELEMENTS"):  # type: ignore[attr-defined]
        key = element.get_attr("NFTA_SET_ELEM_KEY")
        end = element.get_attr("NFTA_SET_ELEM_KEY_END")
        out.append(
            {
                "key": bytes(key.get_attr("NFTA_DATA_VALUE")) if key else None,
                "end": bytes(end.get_attr("NFTA_DATA_VALUE")) if end else None,
                "flags": element.get_attr("NFTA_SET_ELEM_FLAGS"),
                "udata": element.get_attr("NFTA_SET_ELEM_USERDATA"),
                "verdict": verdict(element.get_attr("NFTA_SET_ELEM_DATA")),
            }
        )
    return out


PORTS = "g_ingress_net1_abcdefgh_ports"


def verdict(data: object) -> tuple[str, str | None] | None:
    """(verdict code's name, chain) of a verdict map element's data, as pyroute2 decodes it."""
    if data is None:
        return None
    decoded = data.get_attr("NFTA_DATA_VERDICT")  # type: ignore[attr-defined]
    return decoded.get_attr("NFTA_VERDICT_CODE"), decoded.get_attr("NFTA_VERDICT_CHAIN")


def test_a_delta_is_one_batch_deletions_then_additions_only_the_last_acknowledged() -> None:
    tx = Transaction()
    tx.delete(Element(PORTS, "tcp . 80-90"))
    tx.add(Element(PORTS, "udp . 53", comment="ns/p ingress[0]"))
    tx.add(Element("ingress_net1_v4_peers", "192.0.2.0/24", "jump g_ingress_net1_abcdefgh", "ns/q ingress[1]"))
    tx.add(Element("egress_net1_v6_peers", "ffff::/16", "accept"))  # reaches the top address: no end element
    data, last = netlink.element_batch(tx, element_key_type, 41)
    messages = decoded(data)
    assert [m[0] for m in messages] == [0x10, 0x0A0E, 0x0A0C, 0x0A0C, 0x0A0C, 0x11]
    assert [m[2] for m in messages] == [41, 42, 43, 44, 45, 46] and last == 45
    assert [bool(m[1] & netlink.NLM_F_ACK) for m in messages] == [False, False, False, False, True, False]
    assert [bool(m[1] & netlink.NLM_F_CREATE) for m in messages[1:5]] == [False, True, True, True]
    delete, add_ports, add_peers, add_v6 = (m[3] for m in messages[1:5])
    assert delete.get_attr("NFTA_SET_ELEM_LIST_TABLE") == "mnp"  # type: ignore[union-attr]
    assert delete.get_attr("NFTA_SET_ELEM_LIST_SET") == PORTS  # type: ignore[union-attr]
    # concatenation: every field in a 4-byte register; one element with the first and the last point
    assert elements(delete) == [
        {"key": bytes([6, 0, 0, 0, 0, 80, 0, 0]), "end": bytes([6, 0, 0, 0, 0, 90, 0, 0]), "flags": None,
         "udata": None, "verdict": None},
    ]  # fmt: skip
    (element,) = elements(add_ports)
    assert element["key"] == element["end"] == bytes([17, 0, 0, 0, 0, 53, 0, 0])
    assert element["udata"] == [("NFTNL_UDATA_SET_ELEM_COMMENT", b"ns/p ingress[0]")]
    # one field, an interval: the start with its verdict, and the first address after it flagged as an end
    start, end = elements(add_peers)
    assert start["key"] == bytes([192, 0, 2, 0]) and start["flags"] is None
    assert start["verdict"] == ("NFT_JUMP", "g_ingress_net1_abcdefgh")
    assert start["udata"] == [("NFTNL_UDATA_SET_ELEM_COMMENT", b"ns/q ingress[1]")]
    assert end["key"] == bytes([192, 0, 3, 0]) and end["flags"] == {netlink.NFT_SET_ELEM_INTERVAL_END}
    assert end["verdict"] is None
    (only,) = elements(add_v6)
    assert only["key"] == bytes([0xFF, 0xFF]) + bytes(14) and only["verdict"] == ("NF_ACCEPT", None)
    assert only["udata"] == [("NFTNL_UDATA_SET_ELEM_FLAGS", struct.pack("=I", 1))]  # an open interval


def test_a_verdict_must_be_one() -> None:
    for value in ("jump", "accept x", "jump a b", "queue"):
        with pytest.raises(NftError, match="not a verdict"):
            netlink.element_batch(
                Transaction().add(Element("ingress_net1_v4_peers", "10.0.0.1", value)), element_key_type, 1
            )


def test_only_element_operations_go_as_a_delta() -> None:
    with pytest.raises(NftError, match="not an element delta"):
        netlink.element_batch(Transaction().add(Rule("ingress_net1", "accept")), element_key_type, 1)
    assert netlink.element_batch(Transaction(), element_key_type, 1) == (b"", 1)


def test_kernel_errors_are_typed_like_nfts() -> None:
    import errno

    from shared.nft.errors import BusyError, ExistsError, NotFoundError

    assert isinstance(netlink.error_for(errno.ENOENT, "x"), NotFoundError)
    assert isinstance(netlink.error_for(errno.EEXIST, "x"), ExistsError)
    assert isinstance(netlink.error_for(errno.EBUSY, "x"), BusyError)
    assert "Operation not permitted" in netlink.error_for(errno.EPERM, "x").message
