"""The one interface-name rule (shared.ifname) and the quoting of every string mnp writes into nft text.

The kernel side — a refused name is never rendered, an accepted one becomes exactly its objects in nft 1.0.6 —
is tests/integration/test_render_kernel.py (hostile names)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ifname import InvalidInterfaceName, check_ifname, ifname_problem
from shared.nft.objects import comment, quote, quote_ifname
from shared.nft.render import drop_log_rule, render_direction, render_interface, render_remove_interface
from shared.nft.transaction import TransactionError
from shared.rules import CLOSED, InterfaceRules


@pytest.mark.parametrize(
    "name", ["net1", "eth0.100", "a", "x" * 15, "veth-a@b", "a#b;c{d}", "'quoted'", "~!%^&()+=[]|<>?"]
)
def test_accepted(name: str) -> None:
    assert ifname_problem(name) is None
    assert check_ifname(name) == name
    assert quote_ifname(name) == f'"{name}"'


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("x" * 16, "longer than 15 bytes"),
        ("é" * 8, "longer than 15 bytes"),  # 16 bytes in UTF-8
        (".", "is not a name"),
        ("..", "is not a name"),
        ("a/b", "'/'"),
        ("a:b", "':'"),
        ("a b", "' '"),
        ("a\tb", "'\\t'"),
        ("a\nb", "'\\n'"),
        ("a\x0bb", "'\\x0b'"),
        ("a\xa0b", "'\\xa0'"),  # whitespace in the kernel's Latin-1 ctype table
        ("a\x00b", "'\\x00'"),
        ("a\x7fb", "'\\x7f'"),
        ("né", "'é'"),
        ('z" : accept }', "'\"'"),
        ("a\\*", "'\\\\'"),
        ("net*", "'*'"),
        ("a$b", "'$'"),
        (None, "not a string"),
        (1, "not a string"),
    ],
)
def test_refused(name: object, why: str) -> None:
    problem = ifname_problem(name)
    assert problem is not None and why in problem
    with pytest.raises(InvalidInterfaceName, match="invalid interface name"):
        check_ifname(name)


@given(st.text(max_size=20))
def test_an_accepted_name_cannot_end_or_bend_its_quoted_string(name: str) -> None:
    if ifname_problem(name) is not None:
        with pytest.raises(InvalidInterfaceName):
            quote_ifname(name)
        return
    assert re.fullmatch(r'"[\x21\x23\x25-\x29\x2b-\x2e\x30-\x39\x3b-\x5b\x5d-\x7e]{1,15}"', quote_ifname(name))


@given(st.text())
def test_free_text_is_one_printable_quoted_string(text: str) -> None:
    """Comments and log prefixes (from policy names: anything a manifest holds): no `"` inside, no `\\` (nft reads
    an escape), no `$` (a variable in a log prefix), only printable characters."""
    for quoted in (quote(text), comment(text).removeprefix(" comment ") or '""'):
        inside = quoted[1:-1]
        assert quoted[0] == quoted[-1] == '"' and inside.isprintable()
        assert not {'"', "\\", "$"} & set(inside)
    assert len(quote(text)) == len(text) + 2
    assert len(comment(text).encode()) <= len(' comment ""') + 120


@pytest.mark.parametrize("name", ['z" : accept }\nflush chain inet mnp ingress_net1', "a b", "x" * 16, ".."])
def test_the_renderer_refuses_an_invalid_name(name: str) -> None:
    with pytest.raises(TransactionError, match="refusing to render: invalid interface name"):
        render_interface(InterfaceRules.pending(name))
    with pytest.raises(TransactionError, match="refusing to render"):
        render_remove_interface(name)
    with pytest.raises(TransactionError, match="refusing to render"):
        render_direction(name, "Ingress", CLOSED, render_interface.__defaults__[0])  # type: ignore[index]


def test_a_policy_name_in_a_comment_cannot_end_it() -> None:
    hostile = 'ns/p" accept\ncomment "x $y \\'
    rules = InterfaceRules("ns/pod", "net1", "n", CLOSED.__class__(True, (), (hostile,)), CLOSED, ifindex=2)
    text = str(render_interface(rules))
    assert "comment \"default deny (ns/p' accept?comment 'x _y /)\"" in text
    assert drop_log_rule("a$b", "Ingress").count('"') == 2 and "$" not in drop_log_rule("a$b", "Ingress")
