"""A packet tracer over mnp's rendered rules: where does this packet go? (kube-proxy's `nftablesTracer`.)

Tests assert behaviour, not only text: "a new TCP connection from this peer to port 80 on net1 is accepted, by
the element that allow-web put there". The tracer walks a `TableView` — from `FakeNft.list_table()`, or from the
live kernel through `table_from_nft_json(nft -j list table inet mnp)` — the way netfilter would: the base chain
of the packet's hook, rule by rule, through verdict-map jumps, to a verdict or the chain's policy.

nft's rule language is large and context sensitive, so the tracer does not parse it: it knows the few rule shapes
shared.nft.render writes, one regular expression each, and raises `TraceError` on any other rule rather than
guess. Set lookups use the element representation of shared.nft.fake (one closed interval per key field), so
prefixes, ranges, concatenations and single addresses behave as in the kernel's interval sets.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeGuard, TypeVar

from shared.nft.errors import NftError
from shared.nft.fake import (
    PROTOCOLS,
    ChainView,
    ElementView,
    FakeNft,
    RuleView,
    SetView,
    TableView,
    stored_comment,
)
from shared.nft.render import CUSTOM_CHAIN_PREFIX

Hook = Literal["input", "output"]
CtState = Literal["new", "established", "related", "invalid"]
Verdict = Literal["accept", "drop"]

PORT_PROTOCOLS = ("tcp", "udp", "sctp")
MAX_JUMPS = 16  # the kernel's NFT_JUMP_STACK_SIZE


class TraceError(Exception):
    """The tracer met a rule, verdict or JSON object it does not understand, or an inconsistent table; the one
    error of the reader of `nft -j` (`NftListing`), whatever is wrong in what it reads."""


# What reading an item that is not as nft prints it raises besides TraceError (a missing key, a value of another
# type, an object naming no kind): the reader turns it into TraceError, so its callers catch one type.
_MALFORMED = (ValueError, KeyError, TypeError, AttributeError, StopIteration, IndexError)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _one_error(read: Callable[_P, _R]) -> Callable[_P, _R]:
    """`read`, raising TraceError — saying what the underlying error said — for an item it cannot read."""

    @functools.wraps(read)
    def reading(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return read(*args, **kwargs)
        except _MALFORMED as exc:
            raise TraceError(str(exc)) from exc

    return reading


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection as netfilter sees it at `hook`: `ifname` is the input interface at the
    input hook and the output interface at the output hook, `ifindex` its index. mnp's tables dispatch on the
    index; a packet given only a name matches the dispatch element that names it (its comment: the interface's
    name when mnp programmed it)."""

    hook: Hook
    ifname: str
    saddr: str
    daddr: str
    l4proto: str = "tcp"  # tcp | udp | sctp | icmp | ipv6-icmp
    dport: int | None = None
    icmpv6_type: str | None = None  # e.g. "nd-neighbor-solicit", "echo-request"
    ct_state: CtState = "new"
    ifindex: int | None = None

    def __post_init__(self) -> None:
        versions = {ipaddress.ip_address(self.saddr).version, ipaddress.ip_address(self.daddr).version}
        if len(versions) != 1:
            raise ValueError(f"{self.saddr} and {self.daddr} are not of one address family")
        if self.l4proto not in PROTOCOLS:
            raise ValueError(f"unknown l4proto {self.l4proto!r}")
        if (self.dport is not None) != (self.l4proto in PORT_PROTOCOLS):
            raise ValueError(f"{self.l4proto} packets {'need' if self.dport is None else 'have no'} a dport")
        if {"icmp": 4, "ipv6-icmp": 6}.get(self.l4proto, self.version) != self.version:
            raise ValueError(f"{self.l4proto} over IPv{self.version}")
        if self.icmpv6_type is not None and self.l4proto != "ipv6-icmp":
            raise ValueError("an icmpv6 type needs l4proto ipv6-icmp")

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.saddr).version

    @property
    def iifname(self) -> str:
        return self.ifname if self.hook == "input" else ""

    @property
    def oifname(self) -> str:
        return self.ifname if self.hook == "output" else ""


@dataclass(frozen=True)
class Step:
    """A rule that matched: rule `index` of `chain`, and the set or map element it matched, if any."""

    chain: str
    index: int
    rule: RuleView
    element: ElementView | None = None

    def __str__(self) -> str:
        found = ""
        if self.element is not None:
            value = f" : {self.element.value}" if self.element.value else ""
            note = f" ({self.element.comment})" if self.element.comment else ""
            found = f"  ← {self.element.key}{value}{note}"
        note = f"  # {self.rule.comment}" if self.rule.comment else ""
        return f"{self.chain}[{self.index}] {self.rule.text}{note}{found}"


@dataclass(frozen=True)
class Trace:
    """The verdict, the rules that matched on the way, and why: the comment of the element that decided (the
    allows it came from) or else of the deciding rule; None when the base chain's policy decided."""

    verdict: Verdict
    steps: tuple[Step, ...] = ()
    comment: str | None = None

    def __str__(self) -> str:
        return "\n".join([*(str(step) for step in self.steps), f"→ {self.verdict}"])


# ----------------------------------------------------------------------------------------- rule shapes

_Match = ElementView | bool  # a matched element, or whether a rule without a set lookup matched
_VERDICT = r" (?P<verdict>accept|drop)"
_CT_STATES = {"new", "established", "related", "invalid"}


def _set(table: TableView, name: str, key_type: str, value_type: str | None = None) -> SetView:
    """Set `name`, which the rule looks up with a key of `key_type`: checked whatever the packet."""
    s = table.sets.get(name)
    if s is None:
        raise TraceError(f"rule refers to missing set @{name}")
    if (s.key_type, s.value_type) != (key_type, value_type):
        raise TraceError(f"@{name} is {s.key_type} : {s.value_type}, the rule looks up {key_type} : {value_type}")
    return s


def _vmap(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    """`iif vmap @m` (by index) or `iifname vmap @m` (by name); `iif` at the output hook matches no element."""
    ours = (m["dir"] == "iif") == (packet.hook == "input")
    if m["byname"]:
        return _set(table, m["set"], "ifname", "verdict").lookup([packet.ifname if ours else ""]) or False
    s = _set(table, m["set"], "iface_index", "verdict")
    if not ours:
        return False
    if packet.ifindex is not None:
        return s.lookup([str(packet.ifindex)]) or False
    return next((element for element in s.elements if element.comment == packet.ifname), False)


def _ct_state(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    states = set(m["states"].split(","))
    if not states <= _CT_STATES:
        raise TraceError(f"unknown ct state in {m[0]!r}")
    return packet.ct_state in states


def _icmpv6_type(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    return packet.l4proto == "ipv6-icmp" and packet.icmpv6_type in m["types"].split(", ")


def _l4proto(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    if m["proto"] not in PROTOCOLS:
        raise TraceError(f"unknown protocol in {m[0]!r}")
    return packet.l4proto == m["proto"]


def _address(packet: Packet, m: re.Match[str]) -> str | None:
    """The address the rule looks up, or None when the packet is of the other family."""
    if packet.version != (4 if m["family"] == "ip" else 6):
        return None
    return packet.saddr if m["dir"] == "s" else packet.daddr


def _addr_type(m: re.Match[str]) -> str:
    return "ipv4_addr" if m["family"] == "ip" else "ipv6_addr"


def _addr_set(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    s = _set(table, m["set"], _addr_type(m))
    address = _address(packet, m)
    return address is not None and (s.lookup([address]) or False)


def _addr_port_set(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    s = _set(table, m["set"], f"{_addr_type(m)} . inet_proto . inet_service")
    address = _address(packet, m)
    if address is None or packet.dport is None:  # `th dport` of a packet without ports: mnp's sets hold none
        return False
    return s.lookup([address, packet.l4proto, str(packet.dport)]) or False


def _addr_vmap(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    """`ip saddr vmap @peers`: the peer map's element for the address (its verdict: `accept` or a port group's
    chain), or no match — the rule then does nothing and the packet goes on."""
    s = _set(table, m["set"], _addr_type(m), "verdict")
    address = _address(packet, m)
    return address is not None and (s.lookup([address]) or False)


def _port_set(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    """`meta l4proto . th dport @ports`: a port group's port set."""
    s = _set(table, m["set"], "inet_proto . inet_service")
    if packet.dport is None:  # `th dport` of a packet without ports: mnp's port sets hold none
        return False
    return s.lookup([packet.l4proto, str(packet.dport)]) or False


def _always(table: TableView, packet: Packet, m: re.Match[str]) -> _Match:
    return True


# The drop log (shared.nft.render.drop_log_rule): `limit … log … group N` has no verdict, so the packet goes on
# to the next rule whether the limit let the log through or not. The limit is not modelled: the tracer follows
# one packet, and the rule's only effect is a copy sent to nflog.
_DROP_LOG = (
    r'limit rate \d+/(?:second|minute|hour|day)(?: burst \d+ packets)? log prefix "[^"]*" group \d+'
    r"(?: queue-threshold \d+)?"
)

# One entry per rule shape shared.nft.render writes, with the verdict of a rule that has no verdict statement;
# the verdict of a vmap rule is its element's value.
_SHAPES: tuple[tuple[re.Pattern[str], Callable[[TableView, Packet, re.Match[str]], _Match], str | None], ...] = tuple(
    (re.compile(f"^{pattern}$"), match, default)
    for pattern, match, default in (
        (r"(?P<dir>iif|oif)(?P<byname>name)? vmap @(?P<set>\w+)", _vmap, None),
        (rf"ct state (?P<states>[a-z]+(?:,[a-z]+)*){_VERDICT}", _ct_state, None),
        (rf"icmpv6 type \{{ (?P<types>[a-z-]+(?:, [a-z-]+)*) \}}{_VERDICT}", _icmpv6_type, None),
        (rf"meta l4proto (?P<proto>[a-z0-9-]+){_VERDICT}", _l4proto, None),
        (r"(?P<family>ip6?) (?P<dir>[sd])addr vmap @(?P<set>\w+)", _addr_vmap, None),
        (rf"meta l4proto \. th dport @(?P<set>\w+){_VERDICT}", _port_set, None),
        # the layout before port groups (a table an older mnpd wrote, until its interfaces are programmed again)
        (rf"(?P<family>ip6?) (?P<dir>[sd])addr @(?P<set>\w+){_VERDICT}", _addr_set, None),
        (
            rf"(?P<family>ip6?) (?P<dir>[sd])addr \. meta l4proto \. th dport @(?P<set>\w+){_VERDICT}",
            _addr_port_set,
            None,
        ),
        (r"(?:counter )?(?P<verdict>accept|drop)", _always, None),
        (r"(?P<verdict>jump \w+)", _always, None),  # into the operator's custom rules (render.operator_rules)
        (_DROP_LOG, _always, "continue"),
    )
)


def _evaluate(table: TableView, packet: Packet, rule: RuleView) -> tuple[ElementView | None, str] | None:
    """(matched element, verdict) if `rule` matches `packet`, None if it does not."""
    for pattern, match, default in _SHAPES:
        m = pattern.match(rule.text)
        if m is None:
            continue
        result = match(table, packet, m)
        if result is False:
            return None
        element = result if isinstance(result, ElementView) else None
        verdict = m.groupdict().get("verdict") or (element.value if element else None) or default
        if verdict is None:
            raise TraceError(f"no verdict for {rule.text!r}")
        return element, verdict
    raise TraceError(f"rule shape not understood (only shared.nft.render's rules are): {rule.text!r}")


# ----------------------------------------------------------------------------------------- the walk


@dataclass
class _Walk:
    table: TableView
    packet: Packet
    steps: list[Step] = field(default_factory=list)
    decided: Step | None = None

    def chain(self, name: str, depth: int = 0) -> Verdict | None:
        """The verdict of chain `name`, or None when the packet returns from it (end of chain or `return`)."""
        if depth > MAX_JUMPS:
            raise TraceError(f"more than {MAX_JUMPS} nested jumps at {name}")
        if name not in self.table.chains:
            raise TraceError(f"jump to missing chain {name}")
        if name.startswith(CUSTOM_CHAIN_PREFIX) and self.table.chains[name].rules:
            raise TraceError(f"{name} holds the operator's own nft rules (mnpd --custom-*-rule-file): not modelled")
        for index, rule in enumerate(self.table.chains[name].rules):
            matched = _evaluate(self.table, self.packet, rule)
            if matched is None:
                continue
            element, verdict = matched
            step = Step(name, index, rule, element)
            self.steps.append(step)
            kind, _, target = verdict.partition(" ")
            if verdict in ("accept", "drop"):
                self.decided = step
                return "accept" if verdict == "accept" else "drop"
            if kind == "jump" and target:
                result = self.chain(target, depth + 1)
                if result is not None:
                    return result
            elif kind == "goto" and target:
                return self.chain(target, depth + 1)
            elif verdict == "return":
                return None
            elif verdict != "continue":
                raise TraceError(f"verdict not understood: {verdict!r}")
        return None


def trace(table: TableView, packet: Packet) -> Trace:
    """Where `packet` goes through `table`. A table with no base chain on the packet's hook lets it pass."""
    bases = [chain for chain in table.chains.values() if chain.hook == packet.hook]
    if not bases:
        return Trace("accept")
    if len(bases) > 1:
        raise TraceError(f"several base chains on hook {packet.hook}: their order is not modelled")
    walk = _Walk(table, packet)
    verdict = walk.chain(bases[0].name)
    if verdict is None:
        if bases[0].policy not in ("accept", "drop"):
            raise TraceError(f"policy not understood: {bases[0].policy!r}")
        verdict = "accept" if bases[0].policy == "accept" else "drop"
    why = None
    if walk.decided is not None:  # else the policy decided
        element = walk.decided.element
        why = (element.comment if element else None) or walk.decided.rule.comment
    return Trace(verdict, tuple(walk.steps), why)


def send(fake: FakeNft, packet: Packet, family: str = "inet", table: str = "mnp") -> Trace:
    """Trace `packet` through a Fake's table and bump the counters of the rules it hit, as the kernel would."""
    result = trace(fake.list_table(family, table), packet)
    for step in result.steps:
        fake.count(step.chain, step.index, family=family, table=table)
    return result


# ----------------------------------------------------------------------------------------- from `nft -j`


@dataclass(frozen=True)
class BaseChain:
    """A base chain of another table of the listed netns (`nft -j list ruleset`): it sees packets too, and the
    tracer does not walk it. Its fields as nft listed them (None: not listed; a missing policy is accept)."""

    family: str | None
    table: str | None
    name: str | None
    hook: str
    prio: int | str | None
    policy: str | None


def _in_table(obj: object, family: str, table: str) -> TypeGuard[dict[str, Any]]:
    """Whether a listed item's object belongs to table `family table` (or is that table's own object)."""
    return isinstance(obj, dict) and (obj.get("family"), obj.get("table", obj.get("name"))) == (family, table)


@dataclass(frozen=True)
class NftListing:
    """`nft -j list table …` or `nft -j list ruleset` output: its `nftables` items, parsed once.

    The one place mnp reads nft's JSON items: the `TableView` of one table (`view`, also `table_from_nft_json`),
    the names of its chains, sets and maps (`names`: the plugin's DEL, for an interface's port groups), the
    items of some of them as nft printed them (`items_of`: `mnpctl rules -o json`) and the other tables' base
    chains (`base_chains`: `mnpctl explain`'s note). Every other module reads a listing through this class, and
    catches one error from it: TraceError, whatever is wrong in the listing."""

    items: tuple[dict[str, Any], ...]  # the `nftables` array (its objects)

    @staticmethod
    def parse(text: str) -> NftListing:
        """TraceError when `text` is not nft's JSON (an object with an `nftables` array)."""
        try:
            items = json.loads(text)["nftables"]
            if not isinstance(items, list):
                raise TypeError("nftables is not a list")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: nested too deep
            raise TraceError(f"nft -j gave no nftables JSON: {exc}") from exc
        return NftListing(tuple(item for item in items if isinstance(item, dict)))

    def _objects(self, family: str, table: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(kind, object) of every item of table `family table` (the table's own item too)."""
        for item in self.items:
            for kind, obj in item.items():
                if _in_table(obj, family, table):
                    yield kind, obj

    @_one_error
    def has_table(self, family: str = "inet", table: str = "mnp") -> bool:
        return any(kind == "table" for kind, _ in self._objects(family, table))

    @_one_error
    def names(self, family: str = "inet", table: str = "mnp") -> list[str]:
        """The names of the table's chains, sets and maps, in listing order."""
        return [str(obj["name"]) for kind, obj in self._objects(family, table) if kind in ("chain", "set", "map")]

    @_one_error
    def items_of(self, family: str, table: str, names: set[str]) -> list[dict[str, Any]]:
        """The items of the table's chains, sets and maps named in `names` and of their rules, as nft printed
        them, with the listing's metainfo and the table's own item."""
        kept = []
        for item in self.items:
            if "metainfo" in item:
                kept.append(item)
                continue
            for kind, obj in item.items():
                if _in_table(obj, family, table):
                    name = obj.get("chain") if kind == "rule" else obj.get("name")
                    if kind == "table" or (kind in ("chain", "set", "map", "rule") and name in names):
                        kept.append(item)
                        break
        return kept

    @_one_error
    def base_chains(self, family: str = "inet", table: str = "mnp") -> list[BaseChain]:
        """The base chains (a hook) of every *other* table listed (`list ruleset`)."""
        out = []
        for item in self.items:
            obj = item.get("chain")
            if isinstance(obj, dict) and obj.get("hook") and (obj.get("family"), obj.get("table")) != (family, table):
                out.append(
                    BaseChain(
                        _str_or_none(obj.get("family")),
                        _str_or_none(obj.get("table")),
                        _str_or_none(obj.get("name")),
                        str(obj["hook"]),
                        obj.get("prio") if isinstance(obj.get("prio"), int | str) else None,
                        _str_or_none(obj.get("policy")),
                    )
                )
        return out

    @_one_error
    def view(
        self,
        family: str = "inet",
        table: str = "mnp",
        ifindex_of: Callable[[str], int] | None = None,
        opaque: bool = False,
    ) -> TableView:
        """The view of table `family table` (see `table_from_nft_json`); each rule with its handle and its
        counter's packets and bytes."""
        chains: dict[str, tuple[dict[str, Any], list[RuleView]]] = {}
        sets: dict[str, SetView] = {}
        for item in self.items:
            kind, obj = next(iter(item.items()))
            if kind == "metainfo" or (obj.get("family"), obj.get("table", obj.get("name"))) != (family, table):
                continue
            if kind == "chain":
                chains[obj["name"]] = (obj, [])
            elif kind in ("set", "map"):
                sets[obj["name"]] = _opaque_set(obj, ifindex_of) if opaque else _set_from_json(obj, ifindex_of)
            elif kind == "rule":
                # with `opaque`, and for the operator's own rules (render.operator_objects: any nft), a rule of
                # a shape the tracer does not know is kept as an opaque line
                kept = opaque or obj["chain"].startswith(CUSTOM_CHAIN_PREFIX)
                packets, nbytes = _counter(obj["expr"])
                handle = obj.get("handle")
                chains[obj["chain"]][1].append(
                    RuleView(
                        _opaque_rule_text(obj["expr"]) if kept else _rule_text(obj["expr"]),
                        stored_comment(obj.get("comment")),
                        packets,
                        nbytes,
                        handle if isinstance(handle, int) else None,
                    )
                )
            elif kind != "table" and not opaque:  # opaque: another kind is nothing mnp owns (a rule using it is)
                raise TraceError(f"nft JSON object not understood: {kind}")
        return TableView(
            family,
            table,
            {
                name: ChainView(name, obj.get("hook"), obj.get("policy", "accept"), tuple(rules))
                for name, (obj, rules) in sorted(chains.items())
            },
            dict(sorted(sets.items())),
        )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def table_from_nft_json(
    text: str,
    family: str = "inet",
    table: str = "mnp",
    ifindex_of: Callable[[str], int] | None = None,
    opaque: bool = False,
) -> TableView:
    """The view of table `family table` in `nft -j list table …` (or `list ruleset`) output.

    nft prints an interface index as the name it has in the netns of the thread that listed (libnftables builds
    its interface cache there for each command), or as a number where that netns has no such index: `ifindex_of`
    maps such a name back to its index *in that same netns* (without it, a name raises TraceError). It may
    answer 0 for a name it cannot map, which matches no interface.

    Rules are turned back into the text nft would print for them — for the expressions mnp writes; anything else
    raises TraceError — so the tracer reads the live kernel's rules with the same regular expressions. With
    `opaque`, a rule of any other shape is kept as its JSON text instead, a set this reader cannot read with its
    key type marked unreadable and no elements, and objects of other kinds are skipped (`mnpctl` shows a tampered
    table; the daemon's tamper check sees it differ from what it rendered, and restores it).
    Each rule keeps its handle and its counter's bytes beside its packets, outside comparisons (`RuleView`)."""
    return NftListing.parse(text).view(family, table, ifindex_of, opaque)


def _opaque_set(obj: dict[str, Any], ifindex_of: Callable[[str], int] | None) -> SetView:
    """A set of any type or elements: as `_set_from_json` reads it where it can, else with its key type marked
    unreadable and no elements — unequal to every set mnp renders."""
    try:
        return _set_from_json(obj, ifindex_of)
    except (TraceError, NftError, ValueError, KeyError, TypeError, IndexError):
        key_type = obj.get("type")
        return SetView(str(obj.get("name")), f"unreadable {json.dumps(key_type, sort_keys=True)}", str(obj.get("map")))


def _set_from_json(obj: dict[str, Any], ifindex_of: Callable[[str], int] | None) -> SetView:
    key_type = obj["type"] if isinstance(obj["type"], str) else " . ".join(obj["type"])
    flags = tuple(obj.get("flags", ()))
    elements = []
    for item in obj.get("elem", ()):
        key, value = (item[0], _verdict(item[1])) if "map" in obj else (item, None)
        comment = None
        if isinstance(key, dict) and "elem" in key:
            key, comment = key["elem"]["val"], key["elem"].get("comment")
        elements.append(
            ElementView.parse(
                key_type,
                _key_text(key_type, key, ifindex_of),
                interval="interval" in flags,
                value=value,
                comment=comment,
            )
        )
    return SetView(
        obj["name"],
        key_type,
        obj.get("map"),
        flags,
        tuple(sorted(elements, key=lambda e: e.fields)),
        obj.get("comment"),
    )


def _key_text(key_type: str, key: Any, ifindex_of: Callable[[str], int] | None) -> str:
    """An element key in nft's text syntax; an interface index printed as a name is mapped back (`ifindex_of`)."""
    text = _json_text(key)
    if key_type != "iface_index" or text.isdigit():
        return text
    if ifindex_of is None:
        raise TraceError(f"interface index printed as the name {text!r}: its netns' names are needed (ifindex_of)")
    return str(ifindex_of(text))


def _json_text(value: Any) -> str:
    """An operand (element key, match side) in nft's text syntax."""
    match value:
        case str() | int():
            return str(value)
        case {"prefix": {"addr": addr, "len": length}}:
            return f"{addr}/{length}"
        case {"range": [first, last]}:
            return f"{_json_text(first)}-{_json_text(last)}"
        case {"concat": list(parts)}:
            return " . ".join(_json_text(part) for part in parts)
        case {"set": list(items)}:
            return "{ " + ", ".join(_json_text(item) for item in items) + " }"
        case list(flags):  # ct state established,related
            return ",".join(_json_text(flag) for flag in flags)
        case {"payload": {"protocol": protocol, "field": name}}:
            return f"{protocol} {name}"
        case {"meta": {"key": "iifname" | "oifname" | "iif" | "oif" as key}}:
            return str(key)
        case {"meta": {"key": key}}:
            return f"meta {key}"
        case {"ct": {"key": key}}:
            return f"ct {key}"
    raise TraceError(f"nft JSON expression not understood: {value!r}")


def _verdict(value: Any) -> str:
    match value:
        case {"accept": None} | {"drop": None} | {"continue": None} | {"return": None}:
            return str(next(iter(value)))
        case {"jump": {"target": target}} | {"goto": {"target": target}}:
            return f"{next(iter(value))} {target}"
    raise TraceError(f"nft JSON verdict not understood: {value!r}")


def _limit_text(limit: dict[str, Any]) -> str:
    """`limit rate 10/second burst 20 packets`: a packet rate limit (not `over`, not bytes), as nft prints it."""
    match limit:
        case {"rate": int(rate), "per": str(per), **rest} if set(rest) <= {"burst"}:
            burst = rest.get("burst", 0)
            if isinstance(burst, int):
                return f"limit rate {rate}/{per}" + (f" burst {burst} packets" if burst else "")
    raise TraceError(f"nft JSON limit not understood: {limit!r}")


def _log_text(log: dict[str, Any]) -> str:
    """`log prefix "…" group N [queue-threshold N]`: an nflog statement, in nft's order."""
    match log:
        case {"prefix": str(prefix), "group": int(group), **rest} if set(rest) <= {"queue-threshold"}:
            threshold = rest.get("queue-threshold")
            if threshold is None or isinstance(threshold, int):
                return f'log prefix "{prefix}" group {group}' + (f" queue-threshold {threshold}" if threshold else "")
    raise TraceError(f"nft JSON log statement not understood: {log!r}")


def _opaque_rule_text(expressions: list[Any]) -> str:
    """A rule of any shape: its text where the tracer's reader understands it, else its JSON."""
    try:
        return _rule_text(expressions)
    except TraceError:
        return json.dumps(expressions, sort_keys=True, separators=(",", ":"))


def _counter(expressions: list[Any]) -> tuple[int | None, int | None]:
    """The packets and bytes of a rule's counter statement (None, None: no counter)."""
    for expression in expressions:
        if isinstance(expression, dict) and isinstance(expression.get("counter"), dict):
            packets, nbytes = expression["counter"].get("packets"), expression["counter"].get("bytes")
            return (packets if isinstance(packets, int) else None), (nbytes if isinstance(nbytes, int) else None)
    return None, None


def _rule_text(expressions: list[Any]) -> str:
    """A rule's text as nft prints it (without the counter's values)."""
    words = []
    for expression in expressions:
        match expression:
            case {"match": {"op": "==" | "in", "left": left, "right": right}}:
                words.append(f"{_json_text(left)} {_json_text(right)}")
            case {"vmap": {"key": key, "data": data}}:
                words.append(f"{_json_text(key)} vmap {_json_text(data)}")
            case {"counter": {"packets": int()}}:
                words.append("counter")
            case {"limit": dict(limit)}:
                words.append(_limit_text(limit))
            case {"log": dict(log)}:
                words.append(_log_text(log))
            case _:
                words.append(_verdict(expression))
    return " ".join(words)
