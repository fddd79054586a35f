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

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.testbed.netns import NetNS, NetnsError
from shared.ifname import ifname_problem
from shared.nft.errors import BusyError, ExistsError, NftError, NotFoundError, error_from_stderr
from shared.nft.fake import FakeNft, TableView, parse_transactions
from shared.nft.objects import Chain, Element, Rule, Set
from shared.nft.render import group_chain_name, peer_map_name, port_set_name, render_interface, render_update
from shared.nft.trace import BaseChain, NftListing, Packet, table_from_nft_json, trace
from shared.nft.transaction import Transaction, TransactionError
from shared.rules import INGRESS, InterfaceRules
from shared.state import StateStore, entry_name
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


def test_the_first_full_form_replaces_a_table_of_the_older_layout(ns: Netns) -> None:
    """Upgrade: a pod netns programmed by an mnpd from before port groups (`addr . proto . port` and `_all`
    sets, lookup rules on them). The new full form of the same interface leaves exactly what it leaves in an
    empty netns: no set of the older layout survives, and the tracer's verdicts are the new table's."""
    assert ns.apply((Path(__file__).parent / "old_layout.nft").read_text()) is None
    assert "ingress_net1_v4_all" in ns.view().sets
    assert ns.apply(golden(ISOLATED)) is None
    assert ns.view() == FakeNft.from_text(golden(ISOLATED)).list_table()


def test_remove_leaves_only_the_skeleton(ns: Netns) -> None:
    for step in ("pending", "ifname_hash", "remove_ifname_hash"):
        assert ns.apply(golden(step)) is None
    assert ns.view() == FakeNft.from_text(golden("pending")).list_table()


# ----------------------------------------------------------------------------------------- what both refuse

ISOLATED = "ingress_ports_dual_stack"  # net1: 192.0.2.10/31 → a group with tcp . 8000-8079, 198.51.100.7 : accept
# the port set of the group of both allows (web and monitoring), and the IPv4 peer map
V4 = Set(port_set_name(group_chain_name(INGRESS, "net1", "qne35q4a")), "inet_proto . inet_service", ("interval",))
PEERS = Set(peer_map_name(INGRESS, "net1", 4), "ipv4_addr", ("interval",), value_type="verdict")


def peer(key: str, comment: str | None = None) -> Element:
    return Element(PEERS.name, key, "accept", comment)


IFACES = Set("ingress_ifindex", "iface_index", value_type="verdict")  # net1 is index 2 in the golden files


def tx(*ops: tuple[str, object]) -> Transaction:
    out = Transaction()
    for verb, obj in ops:
        getattr(out, verb)(obj)
    return out


@pytest.mark.parametrize(
    ("case", "change", "error"),
    [
        ("overlapping concatenation", tx(("add", Element(V4.name, "tcp . 8070-8200"))), ExistsError),
        ("overlapping prefix", tx(("add", peer("198.51.100.0/24"))), ExistsError),
        (
            "overlap inside one transaction",
            tx(("add", peer("203.0.113.0/24")), ("add", peer("203.0.113.128/25"))),
            ExistsError,
        ),
        ("peer key with another verdict", tx(("add", Element(PEERS.name, "198.51.100.7", "drop"))), ExistsError),
        ("map key with another verdict", tx(("add", Element(IFACES.name, '" 2"', "jump egress_net1"))), ExistsError),
        ("map redeclared", tx(("add", Set(PEERS.name, "ipv6_addr", ("interval",), value_type="verdict"))), ExistsError),
        ("referenced map deleted", tx(("delete", PEERS)), BusyError),
        ("referenced set deleted", tx(("delete", V4)), BusyError),
        ("referenced map deleted", tx(("delete", IFACES)), BusyError),
        ("chain with rules deleted", tx(("delete", Chain("egress_net1"))), BusyError),
        (
            "chain of a map element deleted",
            tx(("flush", Chain("ingress_net1")), ("delete", Chain("ingress_net1"))),
            BusyError,
        ),
        (
            "port group jumped to deleted",
            tx(("flush", Chain("g_ingress_net1_qne35q4a")), ("delete", Chain("g_ingress_net1_qne35q4a"))),
            BusyError,
        ),
        ("missing set deleted", tx(("delete", Set("nope", "ipv4_addr"))), NotFoundError),
        ("missing chain flushed", tx(("flush", Chain("nope"))), NotFoundError),
        ("missing map key deleted", tx(("delete", Element(IFACES.name, '" 9"'))), NotFoundError),
        ("rule on a missing set", tx(("add", Rule("ingress_net1", "ip saddr @nope accept"))), NotFoundError),
        ("jump to a missing chain", tx(("add", Element(IFACES.name, '" 9"', "jump nope"))), NotFoundError),
        (
            "good, then bad: nothing applied",
            tx(("add", peer("203.0.113.1")), ("delete", Set("nope", "ipv4_addr"))),
            NotFoundError,
        ),
        # and what both accept
        ("same element, another comment", tx(("add", peer("198.51.100.7", comment="x"))), None),
        ("same interval spelled as a range", tx(("add", peer("198.51.100.7-198.51.100.7"))), None),
        ("adjacent elements", tx(("add", peer("198.51.100.6")), ("add", peer("198.51.100.8/29"))), None),
        (
            "adjacent elements, other verdicts",
            tx(("add", Element(PEERS.name, "192.0.2.16-192.0.2.20", "jump g_ingress_net1_qne35q4a"))),
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
    around = tx(("add", Element(V4.name, "tcp . 7000-9500")))  # tcp . 8000-9090 (three elements) exist
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


# ----------------------------------------------------------------------------------------- hostile names

# nft 1.0.6's quoted strings end at the next `"`, whatever comes before it: written as a map key unchecked, this
# name adds `"z" : accept`, flushes net1's ingress chain (net1 then passes everything) and ends in a `redefine`
# that swallows the rest of the line — a transaction nft takes as a whole (checked on main before the fix).
HOSTILE = 'z" : accept }\nflush chain inet mnp ingress_net1\nredefine mnpt_absorb = { "y'


def test_a_hostile_state_entry_flushes_nothing(ns: Netns, tmp_path: Path) -> None:
    """A state entry whose ifname would end the quoted map key: the state dir reports it and the renderer refuses
    it, so whatever mnpd would render for the entries it reads leaves net1's closed table exactly as it was."""
    assert ns.apply(str(render_interface(InterfaceRules.pending("net1", ifindex=2)))) is None
    before = ns.view()
    entry = {"schema": 1, "containerID": "c0ffee", "ifname": HOSTILE, "netns": "/run/netns/x"}
    (tmp_path / entry_name("c0ffee", HOSTILE)).write_text(json.dumps(entry))
    entries, problems = StateStore(str(tmp_path)).entries()
    for read in entries:  # what mnpd renders for an entry it has read
        try:
            tx = render_interface(InterfaceRules.pending(read.ifname, ifindex=3))
        except TransactionError:
            continue
        ns.apply(str(tx))
    assert ns.view() == before
    assert entries == [] and len(problems) == 1 and "not a valid interface name" in problems[0].reason
    with pytest.raises(TransactionError, match="invalid interface name"):
        render_interface(InterfaceRules.pending(HOSTILE, ifindex=3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=16),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=15),
        st.text(st.sampled_from('"\\*$ :/{};#@.-_\n\tab1'), min_size=1, max_size=15),
    )
)
def test_a_name_is_refused_or_becomes_exactly_its_objects(ns: Netns, name: str) -> None:
    """Any name: the renderer refuses it (TransactionError), or nft reads the transaction into exactly the table
    the typed transaction describes (the Fake's view of it), with `name` the comment of the one element of both
    dispatch maps."""
    try:
        tx = render_interface(InterfaceRules.pending(name, ifindex=2))
    except TransactionError:
        assert ifname_problem(name) is not None
        return
    assert ns.nft("flush", "ruleset").returncode == 0
    assert ns.apply(str(tx)) is None, str(tx)
    live = ns.view()
    assert live == FakeNft.from_transaction(tx).list_table()
    dispatch = [[(e.key, e.comment) for e in live.sets[f"{d}_ifindex"].elements] for d in ("ingress", "egress")]
    assert dispatch == [[("2", name)]] * 2


def test_the_reader_carries_handles_counters_and_other_tables_base_chains(ns: Netns) -> None:
    """The one reader (shared.nft.trace.NftListing) on the kernel's `nft -j list ruleset`: every rule's handle as
    `nft -a` prints it, the counters' packets and bytes, and another table's base chain (not in the view)."""
    assert ns.apply(golden(ISOLATED)) is None
    assert (
        ns.apply(
            "table ip mnpt_other {\n\tchain in {\n\t\ttype filter hook input priority -5; policy accept;\n\t}\n}\n"
        )
        is None
    )
    ruleset = ns.nft("-j", "list", "ruleset")
    assert ruleset.returncode == 0, ruleset.stderr
    listed = NftListing.parse(ruleset.stdout)
    assert listed.base_chains() == [BaseChain("ip", "mnpt_other", "in", "input", -5, "accept")]
    view = listed.view()
    assert view == ns.view()  # the other table changes nothing in the view of inet mnp
    with_handles = ns.nft("-a", "list", "table", "inet", "mnp")
    assert with_handles.returncode == 0, with_handles.stderr
    chain, handles = "", {}
    for line in with_handles.stdout.splitlines():
        if found := re.match(r"^\tchain (\w+) \{", line):
            chain, handles[found[1]] = found[1], []
        elif (found := re.search(r" # handle (\d+)$", line)) and chain and line.startswith("\t\t"):
            handles[chain].append(int(found[1]))  # a rule: nft -a prints a chain's type line without a handle
        if line == "\t}":
            chain = ""
    assert {name: [r.handle for r in c.rules] for name, c in view.chains.items()} == handles
    counted = [r for c in view.chains.values() for r in c.rules if r.text.startswith("counter")]
    assert counted and all((r.packets, r.bytes) == (0, 0) for r in counted)  # nothing sent yet: zero, not None
