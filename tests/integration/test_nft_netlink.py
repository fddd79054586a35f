"""The netlink backend (shared.nft.backend.NetlinkNft, shared.nft.netlink) against the real kernel, in throwaway
namespaces: element deltas sent as one nfnetlink batch leave exactly what the full transaction leaves, a batch
the kernel refuses changes nothing, and the daemon's actuator falls back to the full form when a delta is refused
or the table is gone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from daemon.apply import Applier, real_nft
from shared.nft import libnft
from shared.nft.backend import NetlinkNft
from shared.nft.errors import ExistsError, NotFoundError
from shared.nft.fake import FakeNft
from shared.nft.objects import Element
from shared.nft.render import RenderOptions, render_interface, render_remove_table, render_update
from shared.nft.transaction import Transaction
from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange
from tests.integration.test_render_kernel import delta_pair
from tests.support.host import host_untouched
from tests.support.netns import NetNS

pytestmark = [pytest.mark.netns, pytest.mark.skipif(not libnft.available(), reason="no libnftables.so.1")]


@pytest.fixture(scope="module")
def pod() -> Iterator[NetNS]:
    with host_untouched(), NetNS.create("nl") as ns:
        yield ns


@pytest.fixture
def nft(pod: NetNS) -> Iterator[NetlinkNft]:
    pool = libnft.ContextPool(keep=1)
    backend = NetlinkNft(pod.path, pool)
    try:
        pod.run("nft", "flush", "ruleset")
        yield backend
    finally:
        backend.close()
        pool.close()


def rules(
    v4_all: list[str], v4_ports: list[str], ports: tuple[PortRange, ...] = (PortRange("tcp", 80, 90),)
) -> InterfaceRules:
    def nets(texts: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(t) for t in texts)

    allows = (Allow("ns/all ingress[0]", nets(v4_all), None), Allow("ns/ports ingress[0]", nets(v4_ports), ports))
    return InterfaceRules("ns/pod", "net1", "ns/net", DirectionRules(True, allows, ("ns/all", "ns/ports")))


OLD = rules(["10.0.1.0/24", "10.0.3.7/32", "fd00::1/128"], ["10.1.0.0/16", "fd01::/64"])
NEW = rules(
    ["10.0.1.0/24", "10.0.4.0/30", "255.255.255.0/24", "fd00::2/128"], ["10.1.0.0/16", "10.2.0.1/32", "fd01::/64"]
)


def expected(rules: InterfaceRules) -> object:
    return FakeNft.from_transaction(render_interface(rules)).list_table()


def test_full_then_delta_over_netlink(nft: NetlinkNft) -> None:
    """The full form goes through libnftables, the delta as one netlink batch; the table is then exactly what
    the full form of the new rules would be — keys, ranges, comments, an interval reaching the top address."""
    nft.run(render_interface(OLD))
    assert nft.list_table() == expected(OLD)
    delta = render_update(OLD, NEW, priced=False)
    assert delta is not None and len(delta)
    nft.apply_delta(delta)
    assert nft.list_table() == expected(NEW)
    nft.apply_delta(render_update(NEW, OLD, priced=False) or Transaction())  # and back
    assert nft.list_table() == expected(OLD)


def test_a_refused_batch_changes_nothing(nft: NetlinkNft) -> None:
    """An addition that the kernel accepts, then a deletion of an element that is not there: the batch is one
    kernel transaction, so the addition is not applied either, and the error is typed as nft's would be."""
    nft.run(render_interface(OLD))
    before = nft.list_table()
    tx = Transaction().add(Element("ingress_net1_v4_all", "192.0.2.0/24", comment="x"))
    tx.delete(Element("ingress_net1_v4_all", "198.51.100.7"))
    with pytest.raises(NotFoundError):
        nft.apply_delta(tx)
    assert nft.list_table() == before
    overlap = Transaction().add(Element("ingress_net1_v4", "10.1.2.0/24 . tcp . 85"))
    with pytest.raises(ExistsError):
        nft.apply_delta(overlap)
    assert nft.list_table() == before


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delta_pair())
def test_generated_deltas_leave_what_the_full_form_leaves(nft: NetlinkNft, pair: tuple[InterfaceRules, ...]) -> None:
    old, new = pair
    delta = render_update(old, new, priced=False)
    assert delta is not None
    nft.run(render_remove_table())
    nft.run(render_interface(old))
    nft.apply_delta(delta)
    assert nft.list_table() == expected(new)


def test_the_applier_falls_back_to_the_full_form(pod: NetNS) -> None:
    """A delta refused because someone removed an element, then because the whole table is gone: each time the
    actuator applies the full form, and the table ends as the full form of the new rules."""
    pod.run("nft", "flush", "ruleset")
    applier = Applier(real_nft, RenderOptions())
    try:
        applier.apply(pod.path, OLD)
        applier.apply(pod.path, NEW, OLD)
        assert applier.deltas == 1
        pod.run("nft", "delete", "element", "inet", "mnp", "ingress_net1_v4_all", "{ 10.0.4.0/30 }")
        applier.apply(pod.path, OLD, NEW)  # the delta deletes 10.0.4.0/30: refused, full form instead
        assert applier.deltas == 1
        assert listed(pod) == expected(OLD)
        pod.run("nft", "delete", "table", "inet", "mnp")
        applier.apply(pod.path, NEW, OLD)
        assert applier.deltas == 1
        assert listed(pod) == expected(NEW)
        applier.apply(pod.path, OLD, NEW)
        assert applier.deltas == 2 and listed(pod) == expected(OLD)
    finally:
        applier.close()


def listed(pod: NetNS) -> object:
    from shared.nft.trace import table_from_nft_json

    return table_from_nft_json(pod.run("nft", "-j", "list", "table", "inet", "mnp").stdout)
