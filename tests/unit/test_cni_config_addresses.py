"""cni.config's address normal forms: the IPv4 fast path (no `ipaddress` import on ADD) says exactly what
`ipaddress` says, for whatever text it gets."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cni.config import normal_address, normal_interface

OCTET = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "010", "0x1", "", " 1", "1 ", "٣", "+1"]))
PREFIX = st.one_of(st.integers(0, 40).map(str), st.sampled_from(["", "024", "00", "255.255.255.0", "-1", "3 "]))


def reference(function: object, text: str) -> str | type[ValueError]:
    try:
        return str(function(text))  # type: ignore[operator]
    except ValueError:
        return ValueError


@given(st.lists(OCTET, min_size=3, max_size=5).map(".".join), PREFIX)
def test_ipv4_like_text(address: str, prefix: str) -> None:
    text = f"{address}/{prefix}"
    for ours, theirs, given_text in (
        (normal_interface, ipaddress.ip_interface, text),
        (normal_address, ipaddress.ip_address, address),
    ):
        expected = reference(theirs, given_text)
        if expected is ValueError:
            with pytest.raises(ValueError):
                ours(given_text)
        else:
            assert ours(given_text) == expected


@pytest.mark.parametrize("text", ["fd00::1/64", "FD00:0::1/64", "::ffff:10.0.0.1/128", "10.0.0.1/255.255.255.0"])
def test_other_forms_go_through_ipaddress(text: str) -> None:
    assert normal_interface(text) == str(ipaddress.ip_interface(text))
