"""The operator's additions to every isolated interface, as the other implementations offer them, checked first.

multi-networkpolicy-iptables and -nftables read custom rule files (`--custom-v4-ingress-rule-file` … one rule
per line, `#` comments) and the telekom fork takes prefixes that are always accepted (`--allow-src-prefix`,
`--allow-dst-prefix`); mnpd takes the same flags so their configurations carry over. Here the files are read and
every snippet is checked before any pod sees it:

* a line must be one nft rule: no `;` (a second command), no `$` (a variable), no `#` inside it, at most 512
  characters — anything else is refused without asking nft;
* then the kernel decides, in a dry run: the full transaction of a pod interface with that one snippet
  (shared.nft.render: the snippet sits in its own chain, jumped to from every isolated direction) goes through
  `nft -c -f -` in a scratch network namespace (`unshare --net`: a namespace that exists only for that check,
  so nothing on the node can be touched), and finally all accepted snippets together.

A refused snippet is a log line and a `CustomRuleRefused` Warning Event on the node, and is left out; the pods
get the rest. A snippet therefore never reaches a pod's transaction unless the kernel took it, and a pod's table
is still changed only by whole transactions. Rules in a v4 file match IPv4 packets only (`meta nfproto ipv4`
before the rule), in a v6 file IPv6 only, as in the anchors' per-family files. The files are read at start;
change them and restart mnpd.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.events import EventRecorder, node_ref
from shared.errors import StateError
from shared.nft.exec import Runner, subprocess_runner
from shared.nft.render import OperatorAdditions, RenderOptions, render_interface
from shared.rules import EGRESS, INGRESS, InterfaceRules, IPNetwork
from shared.state import read_entry_file

log = logging.getLogger(__name__)

REASON_REFUSED = "CustomRuleRefused"
MAX_LINE = 512
MAX_FILE = 64 * 1024
_FORBIDDEN = {";": "a second command", "$": "a variable", "#": "a comment inside a rule"}


@dataclass(frozen=True)
class RuleFile:
    path: str
    direction: str  # INGRESS | EGRESS
    family: int  # 4 | 6


def parse_prefixes(text: str | None) -> tuple[tuple[IPNetwork, ...], list[str]]:
    """A comma list of CIDRs → networks, and the problems (for config validation)."""
    nets: list[IPNetwork] = []
    problems: list[str] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            problems.append(f"{item!r} is not a CIDR ({exc})")
    return tuple(dict.fromkeys(nets)), problems


def read_rules(rule_file: RuleFile) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(rule text, origin) of each rule line, and (origin, why) of each line refused before any check."""
    try:  # a regular file only, bounded, never waiting on a writer (a FIFO); a ConfigMap's file is a symlink
        text = read_entry_file(rule_file.path, MAX_FILE, follow=True, what="a rule file").decode("utf-8")
    except StateError as exc:
        return [], [(rule_file.path, str(exc))]
    rules, refused = [], []
    nfproto = "ipv4" if rule_file.family == 4 else "ipv6"
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        origin = f"{rule_file.path}:{number}"
        if not line or line.startswith("#"):
            continue
        bad = [why for char, why in _FORBIDDEN.items() if char in line]
        if any(ord(c) < 32 for c in line):
            bad.append("a control character")
        if len(line) > MAX_LINE:
            bad.append(f"more than {MAX_LINE} characters")
        if bad:
            refused.append((origin, "one nft rule per line: it holds " + ", ".join(bad)))
            continue
        rules.append((f"meta nfproto {nfproto} {line}", origin))
    return rules, refused


def dry_run(additions: OperatorAdditions, runner: Runner = subprocess_runner) -> str | None:
    """None when the kernel accepts a pod transaction with `additions`, else nft's error (a scratch netns)."""
    tx = render_interface(InterfaceRules.pending("net1", ifindex=2), RenderOptions(additions=additions))
    rc, _, err = runner(["unshare", "--net", "--", "nft", "-c", "-f", "-"], str(tx))
    return None if rc == 0 else (err.strip() or f"nft exited with {rc}")


def load(
    allow_src: Sequence[IPNetwork],
    allow_dst: Sequence[IPNetwork],
    files: Sequence[RuleFile],
    *,
    events: EventRecorder | None = None,
    node: str = "",
    runner: Runner = subprocess_runner,
) -> OperatorAdditions:
    """The additions the pods get: the prefixes, and every snippet the kernel took (the others reported)."""
    refused: list[tuple[str, str]] = []
    custom: list[tuple[str, str, str]] = []
    for rule_file in files:
        try:
            rules, bad = read_rules(rule_file)
        except (OSError, UnicodeDecodeError) as exc:
            refused.append((rule_file.path, f"cannot read: {exc}"))
            continue
        refused += bad
        for text, origin in rules:
            error = dry_run(OperatorAdditions(custom=((rule_file.direction, text, origin),)), runner)
            if error is None:
                custom.append((rule_file.direction, text, origin))
            else:
                refused.append((origin, f"nft refused it in a dry run: {error}"))
    additions = OperatorAdditions(tuple(allow_src), tuple(allow_dst), tuple(custom))
    if additions:
        error = dry_run(additions, runner)
        if error is not None:  # each was fine alone: refuse the custom rules rather than guess which pair clashes
            refused += [(origin, f"refused together with the others: {error}") for _, _, origin in custom]
            additions = OperatorAdditions(tuple(allow_src), tuple(allow_dst))
            if dry_run(additions, runner) is not None:
                refused.append(("--allow-*-prefix", "the allow-lists were refused too"))
                additions = OperatorAdditions()
    for origin, why in refused:
        log.error("custom rule refused, not used: %s: %s", origin, why)
        if events is not None and node:
            events.warn(node_ref(node), REASON_REFUSED, f"{origin}: {why}"[:1000])
    for direction in (INGRESS, EGRESS):
        count = len(additions.custom_rules(direction))
        if count:
            log.info("%d custom %s rule(s) in force for isolated interfaces", count, direction.lower())
    return additions
