"""The operator's additions in the pure renderer, the tracer and the conntrack check (shared.nft.render's
"operator's additions" section; daemon/operator.py reads and checks them)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from daemon.conntrack import Flow, admits
from daemon.operator import RuleFile, load, parse_prefixes, read_rules
from shared.nft.fake import FakeNft
from shared.nft.render import OperatorAdditions, RenderOptions, render_interface
from shared.nft.trace import Packet, TraceError, trace
from shared.rules import EGRESS, INGRESS, InterfaceRules

NETS, _ = parse_prefixes("10.50.0.0/16, 2001:db8:50::/48")
PENDING = InterfaceRules.pending("net1", ifindex=2)


def table(additions: OperatorAdditions) -> FakeNft:
    return FakeNft.from_transaction(render_interface(PENDING, RenderOptions(additions=additions)))


def test_allow_prefixes_accept_on_isolated_directions_both_ways_and_nothing_else() -> None:
    view = table(OperatorAdditions(allow_src=NETS)).list_table()
    assert trace(view, Packet("input", "net1", "10.50.3.4", "10.1.0.1", "tcp", 80)).verdict == "accept"
    assert trace(view, Packet("input", "net1", "2001:db8:50::9", "2001:db8::1", "udp", 53)).verdict == "accept"
    assert trace(view, Packet("input", "net1", "10.51.0.1", "10.1.0.1", "tcp", 80)).verdict == "drop"
    # as the anchors' `-s X -j ACCEPT` in both COMMON chains: egress from an address in the prefix
    assert trace(view, Packet("output", "net1", "10.50.0.1", "10.9.0.1", "tcp", 80)).verdict == "accept"
    dst = table(OperatorAdditions(allow_dst=NETS)).list_table()
    assert trace(dst, Packet("output", "net1", "10.1.0.1", "10.50.0.9", "tcp", 443)).verdict == "accept"
    assert trace(dst, Packet("output", "net1", "10.1.0.1", "10.49.0.9", "tcp", 443)).verdict == "drop"


def test_without_additions_the_rendering_is_unchanged() -> None:
    assert render_interface(PENDING, RenderOptions(additions=OperatorAdditions())) == render_interface(PENDING)


def test_custom_rules_sit_in_their_own_chain_which_the_tracer_refuses_to_guess() -> None:
    additions = OperatorAdditions(custom=((INGRESS, "meta nfproto ipv4 tcp dport 22 accept", "f:1"),))
    view = table(additions).list_table()
    assert [r.text for r in view.chains["custom_ingress"].rules] == ["meta nfproto ipv4 tcp dport 22 accept"]
    assert "custom_egress" not in view.chains
    assert trace(view, Packet("output", "net1", "10.1.0.1", "10.2.0.1", "tcp", 22)).verdict == "drop"
    with pytest.raises(TraceError, match="not modelled"):
        trace(view, Packet("input", "net1", "10.2.0.1", "10.1.0.1", "tcp", 22))


def test_conntrack_keeps_flows_the_allow_lists_admit() -> None:
    options = RenderOptions(additions=OperatorAdditions(allow_src=NETS))
    local = [ipaddress.ip_address("10.1.0.1")]
    admitted = Flow("ipv4", "tcp", ipaddress.ip_address("10.50.0.7"), local[0], 80)
    cut = Flow("ipv4", "tcp", ipaddress.ip_address("10.60.0.7"), local[0], 80)
    assert admits(PENDING, admitted, local, options) and not admits(PENDING, cut, local, options)


def test_rule_files_one_rule_per_line_family_bound(tmp_path: Path) -> None:
    path = tmp_path / "r"
    path.write_text("# comment\n\n  tcp dport 22 accept  \nudp dport 1 accept; flush ruleset\nip saddr $x accept\n")
    rules, refused = read_rules(RuleFile(str(path), EGRESS, 6))
    assert rules == [("meta nfproto ipv6 tcp dport 22 accept", f"{path}:3")]
    assert [o for o, _ in refused] == [f"{path}:4", f"{path}:5"]
    assert "a second command" in refused[0][1] and "a variable" in refused[1][1]
    assert parse_prefixes("10.0.0.1/8, x")[1] == [
        "'10.0.0.1/8' is not a CIDR (10.0.0.1/8 has host bits set)", "'x' is not a CIDR ('x' does not appear to be "
        "an IPv4 or IPv6 network)"]  # fmt: skip


def test_snippets_the_dry_run_refuses_are_left_out_and_a_clash_of_good_ones_drops_the_custom_rules(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r"
    path.write_text("tcp dport 22 accept\ntcp dport 23 accept\n")
    files = [RuleFile(str(path), INGRESS, 4)]

    def refusing_23(argv: object, stdin: str) -> tuple[int, str, str]:
        return (1, "", "Error: no") if "dport 23" in stdin else (0, "", "")

    kept = load(NETS, (), files, runner=refusing_23)
    assert [text for _, text, _ in kept.custom] == ["meta nfproto ipv4 tcp dport 22 accept"] and kept.allow_src == NETS

    def refusing_both_together(argv: object, stdin: str) -> tuple[int, str, str]:
        return (1, "", "Error: clash") if "dport 22" in stdin and "dport 23" in stdin else (0, "", "")

    clash = load(NETS, (), files, runner=refusing_both_together)
    assert clash.custom == () and clash.allow_src == NETS


@pytest.mark.parametrize("kind", ["fifo", "directory", "too big"])
def test_a_rule_file_that_is_no_small_regular_file_is_refused_without_blocking_the_start(
    tmp_path: Path, kind: str
) -> None:
    """The files are read before mnpd serves anything: a FIFO named as one (a careless --custom-*-rule-file) must
    not hang the start (open(2) of a FIFO waits for a writer), nor a directory or a huge file stop it."""
    import os
    import threading

    path = tmp_path / "mnpt-rules"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_text("tcp dport 22 accept\n" * 4000)
    out: list[OperatorAdditions] = []
    loader = threading.Thread(
        target=lambda: out.append(load(NETS, (), [RuleFile(str(path), INGRESS, 4)], runner=lambda a, s: (0, "", ""))),
        daemon=True,
    )
    loader.start()
    loader.join(timeout=20)  # a deadline, not a pause: it returns as soon as load() does
    if loader.is_alive():  # unblock the reader so the thread ends, then fail
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        loader.join(timeout=20)
        pytest.fail("load() blocked on the rule file")
    (additions,) = out
    assert additions.custom == () and additions.allow_src == NETS
