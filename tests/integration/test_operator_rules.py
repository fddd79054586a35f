"""The operator's additions (`--allow-src-prefix`, `--custom-v4-ingress-rule-file` …) with real packets, and
snippets the kernel refuses in the dry run (daemon/operator.py: `nft -c` in a scratch netns).

The world is test_daemon_e2e's (real macvlan → mnp chain, mnpd from manifests); the server is isolated for
ingress by a policy that admits nobody, so whatever reaches it came through an addition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.config import load
from daemon.operator import RuleFile, dry_run
from daemon.operator import load as load_additions
from shared.nft.render import OperatorAdditions
from shared.rules import INGRESS
from tests.integration.test_daemon_e2e import World, can, daemon_args, ingress_policy, wait_for, world_of
from tests.support.host import host_untouched

pytestmark = pytest.mark.netns


@pytest.fixture(scope="module", autouse=True)
def _host_stays_untouched() -> Iterator[None]:
    with host_untouched(("macvlan", "host-local"), ("nft", "nsenter", "conntrack")):
        yield


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_of(World, "oprules", tmp_path) as w:
        yield w


def test_prefixes_and_custom_rules_open_exactly_what_they_say_and_bad_snippets_are_left_out(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = world
    trusted = w.add_pod("trusted", {"role": "x"})
    other = w.add_pod("other", {"role": "x"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("nobody", {"app": "server"}, {"role": "nobody"}, [{"port": 8080}])])
    rules = w.tmp / "v4-ingress.rules"
    rules.write_text(
        "# the anchors' format: one nft rule per line\n"
        "tcp dport 8081 accept\n"
        "tcp dport 9 acept\n"  # a typo: the kernel (nft) refuses it in the dry run
        "udp dport 5353 accept; flush ruleset\n"  # a second command: refused before nft sees it
    )
    v6 = w.tmp / "v6-ingress.rules"
    v6.write_text("udp dport 5353 accept\n")  # IPv6 only: must not open IPv4
    args = [
        *daemon_args(w), "--allow-src-prefix", f"{trusted.ip}/32",
        "--custom-v4-ingress-rule-file", str(rules), "--custom-v6-ingress-rule-file", str(v6),
    ]  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="daemon.operator"):
        d = Daemon(load(args, {})).start()
    try:
        refused = sorted(r.getMessage() for r in caplog.records if "custom rule refused" in r.getMessage())
        assert len(refused) == 2, refused
        assert f"{rules}:3: nft refused it in a dry run" in refused[0]
        assert f"{rules}:4: one nft rule per line: it holds a second command" in refused[1]
        wait_for(lambda: d.ready()[0], what="daemon ready")
        w.wait_programmed(server)
        assert can(
            [
                (trusted, server, "tcp", 8080),  # --allow-src-prefix: any port
                (trusted, server, "udp", 5353),
                (other, server, "tcp", 8080),  # the policy admits nobody
                (other, server, "tcp", 8081),  # the custom rule
                (other, server, "udp", 5353),  # the v6 file's rule does not apply to IPv4
            ]
        ) == [True, True, False, True, False]
        table = server.netns.run("nft", "list", "chain", "inet", "mnp", "custom_ingress").stdout
        assert "tcp dport 8081 accept" in table and "acept" not in table and "flush" not in table
    finally:
        d.stop()


def test_the_dry_run_takes_good_snippets_and_names_the_error_of_bad_ones() -> None:
    good = OperatorAdditions(custom=((INGRESS, "meta nfproto ipv4 tcp dport 22 accept", "f:1"),))
    assert dry_run(good) is None
    bad = OperatorAdditions(custom=((INGRESS, "meta nfproto ipv4 tcp dport 22 acept", "f:1"),))
    error = dry_run(bad)
    assert error is not None and "syntax error" in error


def test_a_refused_snippet_is_an_event_on_the_node(tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.seen: list[tuple[str, str, str]] = []

        def warn(self, ref: object, reason: str, message: str) -> None:
            self.seen.append((str(getattr(ref, "key", "")), reason, message))

        def clear(self, ref: object, reason: str) -> None:
            pass

    path = tmp_path / "r"
    path.write_text("ip saddr 10.0.0.0/8 accept\nip saddr 10.0.0.300 accept\n")
    events = Recorder()
    additions = load_additions((), (), [RuleFile(str(path), INGRESS, 4)], events=events, node="node-a")  # type: ignore[arg-type]
    assert [text for _, text, _ in additions.custom] == ["meta nfproto ipv4 ip saddr 10.0.0.0/8 accept"]
    ((ref, reason, message),) = events.seen
    assert ref == "Node /node-a" and reason == "CustomRuleRefused" and message.startswith(f"{path}:2: nft refused")
