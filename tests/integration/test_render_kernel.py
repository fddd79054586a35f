"""The real-kernel tier: the golden transactions on real nftables, and `FakeNft` agreeing with the kernel.

The unit tests trust the Fake; this is where that trust is earned. In a throwaway network namespace
(`mnpt-nft-<pid>-<hex>`, deleted pass or fail) every golden file is applied twice with `nft -f -` (the renderer's
transactions must be idempotent), the live table read back with `nft -j list table inet mnp` must equal the
Fake's view of the same transactions, the Fake's `dump()` must recreate it, and transactions the kernel refuses
the Fake must refuse with the same error. The root network namespace is never touched: its `nft list tables`
is compared before and after.

Needs root, `ip` and `nft`; skipped otherwise. Address plan as in tests/unit/test_render_golden.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.testbed.netns import NetNS, NetnsError
from shared.nft.errors import BusyError, ExistsError, NftError, NotFoundError, error_from_stderr
from shared.nft.fake import FakeNft, TableView, parse_transactions
from shared.nft.objects import Chain, Element, Rule, Set
from shared.nft.render import render_interface, render_update
from shared.nft.trace import Packet, table_from_nft_json, trace
from shared.nft.transaction import Transaction
from shared.rules import InterfaceRules
from tests.unit.test_render_update import directions, interface

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"), reason="needs root, ip and nft"
    ),
]

GOLDEN = Path(__file__).parents[1] / "golden"
# What each golden file is applied on top of: a removal needs something to remove.
SETUP = {"remove_ifname_hash": ["ifname_hash"]}


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False, timeout=60)


@dataclass(frozen=True)
class Netns:
    name: str

    def nft(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.name, "nft", *args], stdin)

    def apply(self, text: str) -> NftError | None:
        """`nft -f -` of `text`: None if the kernel took it, else the error it gave, classified."""
        done = self.nft("-f", "-", stdin=text)
        return None if done.returncode == 0 else error_from_stderr(done.stderr)

    def view(self) -> TableView:
        done = self.nft("-j", "list", "table", "inet", "mnp")
        assert done.returncode == 0, done.stderr
        return table_from_nft_json(done.stdout)


def root_tables() -> str:
    return _run(["nft", "list", "tables"]).stdout


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    before = root_tables()
    try:
        created = NetNS.create("nft")
    except NetnsError as exc:
        pytest.skip(f"cannot create a network namespace: {exc}")
    try:
        yield Netns(created.name)
    finally:
        created.delete()
    assert root_tables() == before, "the root network namespace's nftables changed"


@pytest.fixture
def ns(netns: Netns) -> Netns:
    """The module's namespace with an empty ruleset."""
    assert netns.nft("flush", "ruleset").returncode == 0
    return netns


def golden(name: str) -> str:
    return (GOLDEN / f"{name}.nft").read_text()


def run_both(ns: Netns, fake: FakeNft, text: str) -> tuple[NftError | None, NftError | None]:
    """Apply `text` to the kernel and to the Fake: the error each gave, or None."""
    kernel = ns.apply(text)
    try:
        for tx in parse_transactions(text):
            fake.run(tx)
    except NftError as exc:
        return kernel, exc
    return kernel, None


# ----------------------------------------------------------------------------------------- golden transactions


@pytest.mark.parametrize("name", sorted(path.stem for path in GOLDEN.glob("*.nft")))
def test_golden_applies_twice_and_the_fake_agrees(ns: Netns, name: str) -> None:
    fake = FakeNft()
    for step in [*SETUP.get(name, []), name]:
        for attempt in ("first", "second"):
            kernel, faked = run_both(ns, fake, golden(step))
            assert (kernel, faked) == (None, None), f"{step}.nft, {attempt} time"
    live = ns.view()
    assert live == fake.list_table()
    # the Fake's dump, fed to the kernel, recreates the same table
    assert ns.nft("flush", "ruleset").returncode == 0
    assert ns.apply(fake.dump()) is None
    assert ns.view() == live


def test_remove_leaves_only_the_skeleton(ns: Netns) -> None:
    for step in ("pending", "ifname_hash", "remove_ifname_hash"):
        assert ns.apply(golden(step)) is None
    assert ns.view() == FakeNft.from_text(golden("pending")).list_table()


# ----------------------------------------------------------------------------------------- what both refuse

ISOLATED = "ingress_ports_dual_stack"  # net1: 192.0.2.10/31 . tcp . 8000-8079, 198.51.100.7 for everything, …
V4 = Set("ingress_net1_v4", "ipv4_addr . inet_proto . inet_service", ("interval",))
V4_ALL = Set("ingress_net1_v4_all", "ipv4_addr", ("interval",))
IFACES = Set("ingress_ifaces", "ifname", value_type="verdict")


def tx(*ops: tuple[str, object]) -> Transaction:
    out = Transaction()
    for verb, obj in ops:
        getattr(out, verb)(obj)
    return out


@pytest.mark.parametrize(
    ("case", "change", "error"),
    [
        ("overlapping concatenation", tx(("add", Element(V4.name, "192.0.2.11 . tcp . 8070-8200"))), ExistsError),
        ("overlapping prefix", tx(("add", Element(V4_ALL.name, "198.51.100.0/24"))), ExistsError),
        (
            "overlap inside one transaction",
            tx(("add", Element(V4_ALL.name, "203.0.113.0/24")), ("add", Element(V4_ALL.name, "203.0.113.128/25"))),
            ExistsError,
        ),
        ("map key with another verdict", tx(("add", Element(IFACES.name, '"net1"', "jump egress_net1"))), ExistsError),
        ("set redeclared", tx(("add", Set(V4_ALL.name, "ipv6_addr", ("interval",)))), ExistsError),
        ("referenced set deleted", tx(("delete", V4)), BusyError),
        ("referenced map deleted", tx(("delete", IFACES)), BusyError),
        ("chain with rules deleted", tx(("delete", Chain("egress_net1"))), BusyError),
        (
            "chain of a map element deleted",
            tx(("flush", Chain("ingress_net1")), ("delete", Chain("ingress_net1"))),
            BusyError,
        ),
        ("missing set deleted", tx(("delete", Set("nope", "ipv4_addr"))), NotFoundError),
        ("missing chain flushed", tx(("flush", Chain("nope"))), NotFoundError),
        ("missing map key deleted", tx(("delete", Element(IFACES.name, '"net9"'))), NotFoundError),
        ("rule on a missing set", tx(("add", Rule("ingress_net1", "ip saddr @nope accept"))), NotFoundError),
        ("jump to a missing chain", tx(("add", Element(IFACES.name, '"net9"', "jump nope"))), NotFoundError),
        (
            "good, then bad: nothing applied",
            tx(("add", Element(V4_ALL.name, "203.0.113.1")), ("delete", Set("nope", "ipv4_addr"))),
            NotFoundError,
        ),
        # and what both accept
        ("same element, another comment", tx(("add", Element(V4_ALL.name, "198.51.100.7", comment="x"))), None),
        ("same interval spelled as a range", tx(("add", Element(V4_ALL.name, "198.51.100.7-198.51.100.7"))), None),
        (
            "adjacent elements",
            tx(("add", Element(V4_ALL.name, "198.51.100.6")), ("add", Element(V4_ALL.name, "198.51.100.8/29"))),
            None,
        ),
        ("unreferenced empty chain deleted", tx(("add", Chain("spare")), ("delete", Chain("spare"))), None),
    ],
)
def test_kernel_and_fake_refuse_the_same(
    ns: Netns, case: str, change: Transaction, error: type[NftError] | None
) -> None:
    fake = FakeNft()
    assert run_both(ns, fake, golden(ISOLATED)) == (None, None)
    before = ns.view()
    kernel, faked = run_both(ns, fake, str(change))
    assert type(kernel) is type(faked), f"kernel: {kernel!r}, fake: {faked!r}"
    assert kernel is None if error is None else isinstance(kernel, error), repr(kernel)
    if error is not None:
        assert ns.view() == before, "a refused transaction changed the kernel's table"
    assert ns.view() == fake.list_table()


# ----------------------------------------------------------------------------------------- tracing the live table


@pytest.mark.parametrize(
    ("packet", "verdict"),
    [
        (Packet("input", "net1", "192.0.2.10", "192.0.2.1", "tcp", 8000), "accept"),
        (Packet("input", "net1", "192.0.2.3", "192.0.2.1", "tcp", 9090), "accept"),
        (Packet("input", "net1", "192.0.2.16", "192.0.2.1", "tcp", 9090), "drop"),
        (Packet("input", "net1", "192.0.2.10", "192.0.2.1", "tcp", 9091), "drop"),
        (Packet("input", "net1", "198.51.100.7", "192.0.2.1", "sctp", 7), "accept"),
        (Packet("input", "net1", "2001:db8:1::10", "2001:db8:1::1", "udp", 53), "accept"),
        (Packet("input", "net1", "2001:db8:1::11", "2001:db8:1::1", "udp", 53), "drop"),
        (Packet("input", "net1", "fe80::2", "fe80::1", "ipv6-icmp", icmpv6_type="nd-neighbor-advert"), "accept"),
        (Packet("input", "net1", "192.0.2.16", "192.0.2.1", "tcp", 22, ct_state="established"), "accept"),
        (Packet("input", "eth0", "203.0.113.9", "192.0.2.1", "tcp", 22), "accept"),
        (Packet("output", "net1", "192.0.2.1", "203.0.113.9", "tcp", 22), "accept"),
    ],
)
def test_tracer_reads_the_live_table_like_the_fake(ns: Netns, packet: Packet, verdict: str) -> None:
    assert ns.apply(golden(ISOLATED)) is None
    live, faked = trace(ns.view(), packet), trace(FakeNft.from_text(golden(ISOLATED)).list_table(), packet)
    assert live == faked
    assert live.verdict == verdict, str(live)


def test_fake_refuses_concatenation_overlaps_the_kernel_misses(ns: Netns) -> None:
    """nft_pipapo_insert only looks for the new element's first and last points in the existing ones, so an
    element around the inside of another goes in. The Fake refuses every overlap: mnp's sets must be disjoint."""
    fake = FakeNft()
    assert run_both(ns, fake, golden(ISOLATED)) == (None, None)
    around = tx(("add", Element(V4.name, "192.0.2.8/29 . tcp . 8000")))  # 192.0.2.10/31 . tcp . 8000-8079 exists
    kernel, faked = run_both(ns, fake, str(around))
    assert isinstance(faked, ExistsError)
    assert kernel is None or isinstance(kernel, ExistsError)


# ----------------------------------------------------------------------------------------- deltas


def delta_pair() -> st.SearchStrategy[tuple[InterfaceRules, InterfaceRules]]:
    pairs = st.tuples(directions, directions, directions, directions).map(
        lambda d: (interface(d[0], d[1]), interface(d[2], d[3]))
    )
    return pairs.filter(lambda pair: render_update(*pair) is not None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delta_pair())
def test_a_delta_leaves_what_the_full_transaction_leaves(ns: Netns, pair: tuple[InterfaceRules, ...]) -> None:
    """On the kernel: full(old) then render_update(old, new) == what the Fake holds after full(new). The
    generated pairs delete and re-add elements with changed comments and swap overlapping intervals in one
    transaction, which the kernel must take in order (deletions first)."""
    old, new = pair
    delta = render_update(old, new)
    assert delta is not None
    assert ns.nft("flush", "ruleset").returncode == 0
    assert ns.apply(str(render_interface(old))) is None
    assert ns.apply(str(delta)) is None, str(delta)
    assert ns.view() == FakeNft.from_transaction(render_interface(new)).list_table()
