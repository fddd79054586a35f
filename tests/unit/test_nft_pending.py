"""The plugin's light pending table (shared.nft.pending) is exactly the renderer's pending form.

The CNI plugin builds its ADD transaction with `render_pending` so that it does not import the renderer; the
daemon, the tracer and the tests read the table through `render_interface`. One description, checked here: for any
interface name mnp accepts (plain ones, and the ones written as a hash token) and any index, both give the same
Transaction, line for line — and both refuse the same names and indexes.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import rules
from shared.ifname import ifname_problem
from shared.nft import pending
from shared.nft.pending import render_pending
from shared.nft.render import render_interface
from shared.nft.transaction import TransactionError
from shared.rules import InterfaceRules

# printable ASCII and a few bytes beyond, so that names mnp refuses are drawn too
NAME_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7F) | st.sampled_from("éñ\t\n")
NAMES = st.text(NAME_CHARS, min_size=0, max_size=17) | st.sampled_from(["net1", "eth0", "a.b", "x$y", "v@l-1"])
INDEXES = st.integers(min_value=-1, max_value=2**31) | st.sampled_from([1, 2, 3, 2**31 - 1])


def _pending_of(ifname: str, ifindex: int) -> str:
    return str(render_interface(InterfaceRules.pending(ifname, "ns/pod", "net", ifindex)))


@given(NAMES, INDEXES)
def test_render_pending_is_the_renderers_pending_form(ifname: str, ifindex: int) -> None:
    try:
        expected = _pending_of(ifname, ifindex)
    except TransactionError:
        with pytest.raises(TransactionError):
            render_pending(ifname, ifindex)
        return
    assert ifname_problem(ifname) is None
    tx = render_pending(ifname, ifindex)
    assert str(tx) == expected
    assert tx == render_interface(InterfaceRules.pending(ifname, "ns/pod", "net", ifindex))


def test_a_plain_name_and_a_hashed_one() -> None:
    """The examples spelled out: both forms of chain name occur, and the drop log names the interface."""
    plain, hashed = str(render_pending("net1", 3)), str(render_pending("a.b", 4))
    assert "add chain inet mnp ingress_net1" in plain
    assert 'log prefix "mnp drop net1 ingress: "' in plain
    assert "ingress_if_" in hashed
    assert plain == _pending_of("net1", 3)


def test_the_directions_are_the_rules_irs() -> None:
    """shared.nft.pending spells the directions itself (importing shared.rules would load the rules IR on ADD)."""
    assert (pending.INGRESS, pending.EGRESS) == (rules.INGRESS, rules.EGRESS)
