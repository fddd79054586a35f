"""The pure renderer: `InterfaceRules` → the nftables transaction for one pod network namespace.

Layout of the one private table (`inet mnp`) in every pod netns — see shared/nft/README.md for the diagram:

    chain input  { type filter hook input  priority filter; policy accept;
                   iif vmap @ingress_ifindex; iifname vmap @ingress_ifaces }
    chain output { type filter hook output priority filter; policy accept;
                   oif vmap @egress_ifindex; oifname vmap @egress_ifaces }
    map ingress_ifindex / egress_ifindex  iface_index : verdict — 3 comment "net1" : jump ingress_net1, …
    map ingress_ifaces / egress_ifaces    ifname : verdict — empty (tables written before index dispatch)
    chain ingress_net1 / egress_net1     per guarded interface: established first, invalid dropped, NDP,
                                         then four set lookups, a rate-limited nflog of what falls through,
                                         and a counted default drop
    set ingress_net1_v4      ipv4_addr . inet_proto . inet_service (interval)  peers × ports
    set ingress_net1_v6      ipv6_addr . inet_proto . inet_service (interval)
    set ingress_net1_v4_all  ipv4_addr (interval)                             peers, every protocol and port
    set ingress_net1_v6_all  ipv6_addr (interval)

Interfaces that are not in the maps fall through to `policy accept`: only guarded interfaces are touched. The
per-packet cost is at most four set lookups, whatever the number of peers, rules or policies.

Dispatch is on the interface *index* (`iif`/`oif`), which a pod with NET_ADMIN cannot change (`ip link set net1
name x` keeps it; only deleting the interface would, and then there is nothing to guard): dispatching on the name
let a renamed interface fall through to `policy accept`. The index is written as `" 3"`: nft 1.0.6 first looks an
iface_index constant up as an interface *name* in the netns of the thread that parses it (a pod could name an
interface `3`; the daemon's parsing thread is in the host's namespace) and only then reads it as a number — a
name never holds whitespace, so `" 3"` is always the number. The element's comment is the interface name at ADD,
for people and the tracer. The `*_ifaces` maps and their `iifname`/`oifname` rules are what tables written
before index dispatch used: kept (empty in a new table) so that their interfaces stay guarded until each gets
its full form, which removes its old element.

Every change of one interface is one transaction that first (re)asserts the static skeleton — `add` is a no-op
for objects that exist, the base chains are flushed and refilled with the same rule — and then replaces that
interface's chains and sets. nft 1.0.6 has no `destroy`, so a set is replaced with `add; delete; add`, which
also avoids `flush set` (quadratic for concatenated interval sets). The CNI plugin installs the `pending` form
(closed both ways but for neighbour discovery) with the very same function; the daemon later fills it.

The drop log: just before the counted default drop of an isolated direction,
`limit rate 10/second burst 20 packets log prefix "mnp drop net1 ingress: " group 667 queue-threshold 1` sends
what is about to be dropped to nflog group DROP_LOG_GROUP. Only packets the default deny refuses reach it
(established flows and allowed connections were accepted above), the limit is per chain, and with no listener
bound to the group in the pod netns the kernel discards the message at once, so it costs nothing per allowed
packet and next to nothing when nobody reads it. `queue-threshold 1` sends each message at once (nfnetlink_log
otherwise batches them for up to a second). `mnpctl drops --log` binds a listener (tcpdump on `nflog:667`) in
each pod netns while it runs. A kernel `log` to the kernel log would be silent in pod namespaces unless the host
sets nf_log_all_netns.

Concatenated interval sets refuse overlapping elements, so the renderer splits the union of all allows into
disjoint (prefix × port range) boxes.
"""

from __future__ import annotations

import itertools

from shared.ifname import InvalidInterfaceName
from shared.lean import defaultdict, lru_cache  # not functools/collections: the plugin's start-up time
from shared.nft.objects import Chain, Element, Rule, Set, Table, quote, quote_ifname
from shared.nft.transaction import Transaction, TransactionError
from shared.rules import EGRESS, INGRESS, InterfaceRules, collapse
from shared.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable

    from shared.nft.fake import TableView
    from shared.rules import Allow, DirectionRules, IPNetwork, PortRange

TABLE = "mnp"
FAMILY = "inet"
SCHEMA = 1

ND_TYPES = "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect"
# Checked without `re` (the CNI plugin renders on every ADD and does not import it: shared.cjson).
_ALPHA = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_PLAIN_CHARS = _ALPHA | frozenset("0123456789_")  # a letter, then up to 14 of these: the name as a token
_LOG_SAFE_CHARS = _PLAIN_CHARS | frozenset(".@-")  # 1 to 15 of these: written as is in a log prefix


def _plain(ifname: str) -> bool:
    return 0 < len(ifname) <= 15 and ifname[0] in _ALPHA and all(char in _PLAIN_CHARS for char in ifname)


def _log_safe(ifname: str) -> bool:
    return 0 < len(ifname) <= 15 and all(char in _LOG_SAFE_CHARS for char in ifname)


_HOOK = {INGRESS: "input", EGRESS: "output"}
_PREFIX = {INGRESS: "ingress", EGRESS: "egress"}
_ADDR = {INGRESS: "saddr", EGRESS: "daddr"}
_IFACE_MATCH = {INGRESS: "iif", EGRESS: "oif"}
_LEGACY_MATCH = {INGRESS: "iifname", EGRESS: "oifname"}
MAX_IFINDEX = 2**31 - 1  # the kernel's ifindex is a positive int

# The nflog group of the drop log, the one place it is defined: the renderer writes it, `mnpctl drops --log`
# listens on it. 667 is "mnp" on a phone keypad — not 0 (the default of NFLOG and ulogd) nor the small numbers
# examples use, so a pod's own nflog listener is unlikely to hold it (one listener per group and netns).
DROP_LOG_GROUP = 667
# Per chain (one guarded interface, one direction): a port scan logs a burst, then 10 lines a second.
DROP_LOG_RATE = "10/second"
DROP_LOG_BURST = 20
DROP_LOG_PREFIX = "mnp drop "  # + "<ifname> <ingress|egress>: "; read back by daemon/cli/droplog.py

# The comments the readers of a live table look for (mnpctl, the lab): defined here, where they are written.
DENY_COMMENT = "default deny"  # the counted drop: `default deny (ns/policy, …)`
PENDING_POLICIES = "pending: not yet programmed"  # …in place of the policies: the plugin's pending table
NOT_ISOLATED = "not isolated for"  # the `accept` of a direction no policy isolates: `not isolated for ingress`


def deny_comment(policies: Iterable[str]) -> str:
    """The counted drop's comment: the policies that isolate the direction, or the pending marker."""
    return f"{DENY_COMMENT} ({', '.join(policies) or PENDING_POLICIES})"


class RenderOptions(Value):
    """Daemon-wide switches (`mnpd --accept-icmp …`). The CNI plugin's pending table uses the defaults.

    `drop_log`: the rate-limited nflog rule before each counted default drop (see the module docstring). On by
    default, for the daemon and for the plugin's pending table alike: it is the same rendering, and the drops of
    the pending window (a pod that cannot talk yet at start-up) are among the ones worth seeing."""

    __slots__ = ("accept_icmp", "accept_icmpv6", "additions", "drop_log")

    def __init__(
        self,
        accept_icmp: bool = False,
        accept_icmpv6: bool = False,
        drop_log: bool = True,
        additions: OperatorAdditions | None = None,
    ) -> None:
        self.accept_icmp = accept_icmp
        self.accept_icmpv6 = accept_icmpv6
        self.drop_log = drop_log
        self.additions = additions or NO_ADDITIONS


class OperatorAdditions(Value):
    """What the operator adds to every isolated direction (`mnpd --allow-src-prefix`, `--allow-dst-prefix`,
    `--custom-*-rule-file`, the anchors' knobs): prefixes always accepted, and nft rule snippets already checked
    against the kernel (daemon/operator.py). Rendered by `operator_objects` and `operator_rules` below."""

    __slots__ = ("allow_dst", "allow_src", "custom")

    def __init__(
        self,
        allow_src: tuple[IPNetwork, ...] = (),
        allow_dst: tuple[IPNetwork, ...] = (),
        custom: tuple[tuple[str, str, str], ...] = (),  # (direction, rule text, where it came from)
    ) -> None:
        self.allow_src = allow_src
        self.allow_dst = allow_dst
        self.custom = custom

    def __bool__(self) -> bool:
        return bool(self.allow_src or self.allow_dst or self.custom)

    def custom_rules(self, direction: str) -> tuple[tuple[str, str], ...]:
        return tuple((text, origin) for d, text, origin in self.custom if d == direction)


NO_ADDITIONS = OperatorAdditions()


DEFAULTS = RenderOptions()


def drop_log_prefix(ifname: str, direction: str) -> str:
    """The nflog prefix of one chain's drop log: `mnp drop net1 ingress: `. An interface name with characters
    other than letters, digits, `_`, `.`, `-` and `@` is written as its chain-name token (`if_…`) instead: nft
    1.0.6 expands `$name` even inside a quoted string, so `x$y` would fail the whole transaction."""
    name = ifname if _log_safe(ifname) else iface_token(ifname)
    return f"{DROP_LOG_PREFIX}{name} {_PREFIX[direction]}: "


def drop_log_rule(ifname: str, direction: str) -> str:
    """The drop log rule's text, as nft 1.0.6 lists it (`prefix` before `group`, whatever order it was given in)."""
    return (
        f"limit rate {DROP_LOG_RATE} burst {DROP_LOG_BURST} packets "
        f"log prefix {quote(drop_log_prefix(ifname, direction))} group {DROP_LOG_GROUP} queue-threshold 1"
    )


def iface_token(ifname: str) -> str:
    """The part of chain and set names that stands for an interface: the name itself when it is a plain
    identifier (`net1`), else `if_` and a hash of it (interface names may hold `.`, `-`, `@` …)."""
    if _plain(ifname):
        return ifname
    import base64  # the CNI plugin renders on every ADD: import the hash only for the names that need it
    import hashlib

    digest = base64.b32encode(hashlib.sha256(ifname.encode()).digest()).decode()[:8].lower()
    return f"if_{digest}"


def chain_name(direction: str, ifname: str) -> str:
    return f"{_PREFIX[direction]}_{iface_token(ifname)}"


def set_names(direction: str, ifname: str) -> dict[str, str]:
    base = chain_name(direction, ifname)
    return {"v4": f"{base}_v4", "v6": f"{base}_v6", "v4_all": f"{base}_v4_all", "v6_all": f"{base}_v6_all"}


def _map(direction: str) -> Set:
    return Set(f"{_PREFIX[direction]}_ifindex", "iface_index", value_type="verdict")


def legacy_map_name(direction: str) -> str:
    """The name dispatch map of tables written before index dispatch (see the module docstring)."""
    return _legacy_map(direction).name


def _legacy_map(direction: str) -> Set:
    """The dispatch by name of tables written before index dispatch (see the module docstring)."""
    return Set(f"{_PREFIX[direction]}_ifaces", "ifname", value_type="verdict")


def dispatch_key(ifindex: int) -> str:
    """The dispatch-map key of interface index `ifindex`: `" 3"` (see the module docstring); TransactionError when
    the index is unknown (0) or not one, for then the interface cannot be guarded."""
    if isinstance(ifindex, bool) or not isinstance(ifindex, int) or not 1 <= ifindex <= MAX_IFINDEX:
        raise TransactionError(f"refusing to render: interface index {ifindex!r} is not known")
    return f'" {ifindex}"'


def _dispatch(direction: str, ifname: str, ifindex: int, chain: str) -> Element:
    return Element(_map(direction).name, dispatch_key(ifindex), f"jump {chain}", comment=ifname)


def _legacy_dispatch(direction: str, ifname: str, chain: str) -> Element:
    return Element(_legacy_map(direction).name, checked_ifname(ifname), f"jump {chain}")


# The key type of each kind of per-interface set (all of them have `flags interval`).
SET_KEY_TYPES = {
    "v4": "ipv4_addr . inet_proto . inet_service",
    "v6": "ipv6_addr . inet_proto . inet_service",
    "v4_all": "ipv4_addr",
    "v6_all": "ipv6_addr",
}


def element_key_type(set_name: str) -> str:
    """The key type of a per-interface set, from its name (what an element delta sent as netlink needs)."""
    for kind in ("v4_all", "v6_all", "v4", "v6"):
        if set_name.endswith(f"_{kind}"):
            return SET_KEY_TYPES[kind]
    raise TransactionError(f"{set_name!r} is not a per-interface set")


def map_name(direction: str) -> str:
    """The verdict map that sends a direction's guarded interfaces to their chains."""
    return _map(direction).name


def _sets(direction: str, ifname: str) -> dict[str, Set]:
    names = set_names(direction, ifname)
    return {kind: Set(names[kind], key_type, ("interval",)) for kind, key_type in SET_KEY_TYPES.items()}


def skeleton() -> Transaction:
    """The static part, asserted idempotently by every transaction."""
    tx = Transaction(FAMILY, TABLE)
    tx.add(Table())
    for direction in (INGRESS, EGRESS):
        base = Chain(_HOOK[direction], hook=_HOOK[direction])
        tx.add(_map(direction))
        tx.add(_legacy_map(direction))
        tx.add(base)
        tx.flush(base)
        tx.add(Rule(base.name, f"{_IFACE_MATCH[direction]} vmap @{_map(direction).name}"))
        tx.add(Rule(base.name, f"{_LEGACY_MATCH[direction]} vmap @{_legacy_map(direction).name}"))
    return tx


def checked_ifname(ifname: str) -> str:
    """The quoted map key of `ifname`; TransactionError when the name is not one mnp accepts (shared.ifname): a
    name is never rendered, not even in part, unless it passes the one rule."""
    try:
        return quote_ifname(ifname)
    except InvalidInterfaceName as exc:
        raise TransactionError(f"refusing to render: {exc}") from None


def render_interface(rules: InterfaceRules, options: RenderOptions = DEFAULTS) -> Transaction:
    """One transaction that sets `rules.ifname`'s chains and sets to exactly `rules`, dispatched on
    `rules.ifindex`. TransactionError for an interface name that is not valid (`checked_ifname`) or an unknown
    index (`dispatch_key`)."""
    checked_ifname(rules.ifname)
    dispatch_key(rules.ifindex)
    tx = skeleton()
    operator_objects(tx, options.additions)
    for direction in (INGRESS, EGRESS):
        rendered = render_direction(rules.ifname, direction, rules.direction(direction), options)
        chain = Chain(rendered.chain)
        tx.add(chain)
        tx.flush(chain)  # drops the rules' references so the sets can be replaced
        for kind, s in _sets(direction, rules.ifname).items():
            tx.add(s)
            tx.delete(s)
            tx.add(s)
            for element in rendered.elements.get(kind, ()):
                tx.add(element)
        for rule in rendered.rules:
            tx.add(rule)
        tx.add(_dispatch(direction, rules.ifname, rules.ifindex, chain.name))
        legacy = _legacy_dispatch(direction, rules.ifname, chain.name)  # an older table's, if any: not needed
        tx.add(legacy)
        tx.delete(legacy)
    return tx


def render_update(
    old: InterfaceRules, new: InterfaceRules, options: RenderOptions = DEFAULTS, *, priced: bool = True
) -> Transaction | None:
    """The cheapest transaction that takes an interface programmed with `render_interface(old)` to `new`, or
    None when that is the full `render_interface(new)` — see `_render_update`. Memoised per interface name and
    directions (the pods of a Deployment change alike); the transaction returned must not be modified.

    `priced=False`: the delta whenever the chains keep their rules, whatever it costs (the tests use it to
    exercise every delta)."""
    if old.ifname != new.ifname or old.ifindex != new.ifindex:
        return None
    checked_ifname(new.ifname)
    return _render_update(new.ifname, old.ingress, old.egress, new.ingress, new.egress, options, priced)


@lru_cache(maxsize=64)  # each entry holds two directions' rules and the delta: keep a node's groups only
def _render_update(
    ifname: str,
    old_ingress: DirectionRules,
    old_egress: DirectionRules,
    new_ingress: DirectionRules,
    new_egress: DirectionRules,
    options: RenderOptions,
    priced: bool = True,
) -> Transaction | None:
    """The smallest transaction that takes an interface programmed with `render_interface(old)` to `new`, or
    None when only a full `render_interface(new)` can.

    When both directions' chains keep the very same rules — a peer joined or left, a port changed, a policy's
    peers moved — only set elements differ: the transaction deletes the elements `new` no longer has and adds
    the ones it lacks (an element whose comment changed is deleted and added again, so `mnpctl explain` keeps
    naming the right rules). Its cost is proportional to the change, not to the peers, and it holds no rule or
    set replacement. It relies on the table holding exactly `render_interface(old)`: if it does not (someone
    edited it), nft refuses the delta as a whole (a missing element, an overlap) and the caller falls back to
    the full transaction.

    A delta is not always cheaper. nft 1.0.6 looks each deleted interval element up in its copy of the set, and
    the kernel's set for concatenated intervals (pipapo) reshapes its lookup tables for every element inserted
    or removed, so changing d elements of a set of n costs about d × n — whether the elements come as nft text
    or as a netlink batch (shared.nft.netlink) — while the full form costs about the total number of elements it
    writes (docs/benchmarks.md, Policy change, has the figures). When the COST_* estimate makes the delta dearer
    than the full form, None."""
    tx = Transaction(FAMILY, TABLE)
    cost = 0.0
    total = 0
    for direction, old, new in ((INGRESS, old_ingress, new_ingress), (EGRESS, old_egress, new_egress)):
        before = render_direction(ifname, direction, old, options)
        after = render_direction(ifname, direction, new, options)
        if before.rules != after.rules:
            return None
        for kind in _SET_KINDS:
            was, now = before.elements.get(kind, ()), after.elements.get(kind, ())
            total += len(now)
            if was == now:
                continue
            keep = set(was) & set(now)
            deleted = [element for element in was if element not in keep]
            added = [element for element in now if element not in keep]
            cost += COST_DELETE_PER_SET_ELEMENT * len(deleted) * len(was) + COST_ADD * len(added)
            for element in deleted:
                tx.delete(element)
            for element in added:
                tx.add(element)
    if priced and cost > COST_FULL_PER_ELEMENT * total + COST_FULL_FIXED:
        return None
    return tx


# What the two ways to change an interface's sets cost (µs; nft 1.0.6 on the benchmark machine).
COST_DELETE_PER_SET_ELEMENT = 0.27  # one deleted element, per element of the set it is deleted from
COST_ADD = 26.0  # one added element (checked against the set's elements for overlaps)
COST_FULL_PER_ELEMENT = 15.0  # one element of a full replacement
COST_FULL_FIXED = 2000.0  # the chains and sets a full replacement writes on top


_SET_KINDS = ("v4", "v6", "v4_all", "v6_all")


class RenderedDirection(Value):
    """One direction of one interface as the table holds it: its chain's rules and its sets' elements."""

    __slots__ = ("chain", "elements", "rules")

    def __init__(self, chain: str, rules: tuple[Rule, ...], elements: dict[str, tuple[Element, ...]]) -> None:
        self.chain = chain
        self.rules = rules
        self.elements = elements  # set kind (v4, v6, v4_all, v6_all) → elements


def render_direction(ifname: str, direction: str, rules: DirectionRules, options: RenderOptions) -> RenderedDirection:
    """`rules` as chain rules and set elements (memoised: the pods of a Deployment share their rules).
    TransactionError for an invalid interface name (`checked_ifname`)."""
    checked_ifname(ifname)
    return _render_direction(ifname, direction, rules, options)


@lru_cache(maxsize=64)  # ≈ 80 KB each with 300 peers: a node's groups, old and new, not more
def _render_direction(ifname: str, direction: str, rules: DirectionRules, options: RenderOptions) -> RenderedDirection:
    name = chain_name(direction, ifname)
    sets = _sets(direction, ifname)
    elements = {
        kind: tuple(Element(sets[kind].name, key, comment=", ".join(sources)) for key, sources in items)
        for kind, items in (_elements(rules.allows) if rules.isolated else {}).items()
    }
    out = [
        Rule(name, "ct state established,related accept"),
        Rule(name, "ct state invalid drop"),
        Rule(name, f"icmpv6 type {{ {ND_TYPES} }} accept", "IPv6 neighbour discovery"),
    ]
    if options.accept_icmp:
        out.append(Rule(name, "meta l4proto icmp accept", "--accept-icmp"))
    if options.accept_icmpv6:
        out.append(Rule(name, "meta l4proto ipv6-icmp accept", "--accept-icmpv6"))
    if not rules.isolated:
        out.append(Rule(name, "accept", f"{NOT_ISOLATED} {direction.lower()}"))
    else:
        out.extend(operator_rules(name, direction, options.additions))
        addr = _ADDR[direction]
        for kind, match in (
            ("v4_all", f"ip {addr} @{sets['v4_all'].name}"),
            ("v6_all", f"ip6 {addr} @{sets['v6_all'].name}"),
            ("v4", f"ip {addr} . meta l4proto . th dport @{sets['v4'].name}"),
            ("v6", f"ip6 {addr} . meta l4proto . th dport @{sets['v6'].name}"),
        ):
            if elements.get(kind):
                out.append(Rule(name, f"{match} accept"))
        if options.drop_log:
            out.append(Rule(name, drop_log_rule(ifname, direction)))
        out.append(Rule(name, "counter drop", deny_comment(rules.policies)))
    return RenderedDirection(name, tuple(out), elements)


# ------------------------------------------------------------------------------- the operator's additions
#
# Table-level objects, the same for every interface of a daemon (constant for its life), re-asserted by every full
# transaction and referenced from each isolated direction's chain, right after neighbour discovery and the
# --accept-icmp rules (where the anchors put them: in their COMMON chains, before the policies):
#
#     set allow_src_v4 / allow_src_v6 / allow_dst_v4 / allow_dst_v6   ipv4_addr / ipv6_addr (interval)
#         `ip saddr @allow_src_v4 accept` … in ingress and egress alike, as the anchors' `-s X -j ACCEPT`
#     chain custom_ingress / custom_egress                               the operator's rules, one per line
#         `jump custom_ingress`: a snippet's accept or drop decides, else the packet returns to the policy rules
#
# The custom rules live in their own chains so the tracer and the readers of a live table (which understand only
# the rules above) can tell them apart: they are listed as they are and not modelled (shared.nft.trace).

CUSTOM_CHAIN_PREFIX = "custom_"
_FAMILY_OF = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}


def _allow_sets(additions: OperatorAdditions) -> list[tuple[str, str, int, tuple[IPNetwork, ...]]]:
    """(set name, address selector, family, prefixes) of the non-empty allow-lists."""
    out = []
    for which, prefixes in (("src", additions.allow_src), ("dst", additions.allow_dst)):
        for version in (4, 6):
            nets = tuple(n for n in prefixes if n.version == version)
            if nets:
                out.append((f"allow_{which}_v{version}", f"{which[0]}addr", version, nets))
    return out


def custom_chain(direction: str) -> str:
    return f"{CUSTOM_CHAIN_PREFIX}{_PREFIX[direction]}"


def operator_objects(tx: Transaction, additions: OperatorAdditions) -> None:
    """Assert the allow-list sets and the custom chains in `tx` (flushed and refilled: idempotent)."""
    if not additions:
        return
    for name, _, version, nets in _allow_sets(additions):
        s = Set(name, _FAMILY_OF[version][1], ("interval",))
        tx.add(s)
        tx.flush(s)
        for net in collapse(nets):
            tx.add(Element(name, _net_text(net)))
    for direction in (INGRESS, EGRESS):
        rules = additions.custom_rules(direction)
        if rules:
            chain = Chain(custom_chain(direction))
            tx.add(chain)
            tx.flush(chain)
            for text, origin in rules:
                tx.add(Rule(chain.name, text, origin))


def operator_rules(chain: str, direction: str, additions: OperatorAdditions) -> list[Rule]:
    """An isolated direction's rules into the operator's additions (empty without any)."""
    out = [
        Rule(chain, f"{_FAMILY_OF[version][0]} {addr} @{name} accept", f"mnpd --allow-{name.split('_')[1]}-prefix")
        for name, addr, version, _ in _allow_sets(additions)
    ]
    if additions.custom_rules(direction):
        out.append(Rule(chain, f"jump {custom_chain(direction)}", "mnpd custom rules"))
    return out


def render_remove_interface(ifname: str, ifindex: int = 0) -> Transaction:
    """Remove everything of one interface; succeeds whether or not any of it exists (idempotent DEL).
    TransactionError for an invalid interface name (`checked_ifname`).

    The dispatch element is found by its key, the index: with `ifindex` unknown (0: an entry from before the
    index was recorded, whose interface is gone) it cannot be deleted, so the interface's chains are only emptied
    (a packet jumping there returns to the base chain's `policy accept`, as for any interface mnp does not guard)
    and stay, still referenced; its sets go."""
    checked_ifname(ifname)
    known = ifindex != 0
    tx = Transaction(FAMILY, TABLE)
    tx.add(Table())
    for direction in (INGRESS, EGRESS):
        chain = Chain(chain_name(direction, ifname))
        tx.add(_map(direction))
        tx.add(_legacy_map(direction))
        tx.add(chain)
        elements = [_legacy_dispatch(direction, ifname, chain.name)]
        if known:
            elements.append(_dispatch(direction, ifname, ifindex, chain.name))
        for element in elements:
            tx.add(element)
            tx.delete(element)
        tx.flush(chain)
        if known:
            tx.delete(chain)
        for s in _sets(direction, ifname).values():
            tx.add(s)
            tx.delete(s)
    return tx


def owned_view(view: TableView, ifname: str, ifindex: int) -> tuple[object, ...]:
    """What the full form of `ifname` at `ifindex` (render_interface) defines in a table, as read back (`nft -j
    list table`, or the Fake): the two base chains (hook, policy, rules), the interface's element in each dispatch
    map (and none left in the old name maps), its chains' rules and its sets' elements — without counters. Two
    tables with equal owned views enforce the same on the interface; whatever else the table holds (other
    interfaces' objects, unused chains) cannot change that. A missing object reads as None, so a deleted table,
    a flushed chain, an edited set or an element taken out of a map all differ from the full form."""
    owned: list[object] = []
    index, name = str(ifindex), checked_ifname(ifname)
    for direction in (INGRESS, EGRESS):
        base = view.chains.get(_HOOK[direction])
        owned.append(None if base is None else (base.hook, base.policy, tuple((r.text, r.comment) for r in base.rules)))
        for dispatch, key in ((_map(direction), index), (_legacy_map(direction), name)):
            found = view.sets.get(dispatch.name)
            owned.append(
                None
                if found is None
                else (
                    found.key_type,
                    found.value_type,
                    [(e.key, e.value, e.comment) for e in found.elements if e.key == key],
                )
            )
        chain = view.chains.get(chain_name(direction, ifname))
        owned.append(None if chain is None else (chain.hook, tuple((r.text, r.comment) for r in chain.rules)))
        for set_name in set_names(direction, ifname).values():
            found = view.sets.get(set_name)
            owned.append(
                None
                if found is None
                else (found.key_type, found.flags, tuple((e.key, e.comment) for e in found.elements))
            )
    # the operator's additions, which every isolated chain refers to (a rule added there would open it too)
    owned.append(
        [
            (c.name, tuple((r.text, r.comment) for r in c.rules))
            for c in view.chains.values()
            if c.name.startswith(CUSTOM_CHAIN_PREFIX)
        ]
    )
    owned.append(
        [(n, s.key_type, tuple(e.key for e in s.elements)) for n, s in view.sets.items() if n.startswith("allow_")]
    )
    return tuple(owned)


def expected_view(rules: InterfaceRules, options: RenderOptions = DEFAULTS) -> tuple[object, ...]:
    """`owned_view` of a table that holds exactly `render_interface(rules, options)` (memoised like the
    rendering: the pods of a Deployment share it)."""
    return _expected_view(rules.ifname, rules.ifindex, rules.ingress, rules.egress, options)


@lru_cache(maxsize=16)  # ≈ 80 KB each with 300 peers; the periodic repair walks a node's groups
def _expected_view(
    ifname: str, ifindex: int, ingress: DirectionRules, egress: DirectionRules, options: RenderOptions
) -> tuple[object, ...]:
    from shared.nft.fake import FakeNft  # the daemon's: the CNI plugin never compares

    rules = InterfaceRules("", ifname, "", ingress, egress, ifindex)
    fake = FakeNft.from_transaction(render_interface(rules, options))
    return owned_view(fake.list_table(FAMILY, TABLE), ifname, ifindex)


def render_remove_table() -> Transaction:
    """Remove the whole table, whether or not it exists."""
    return Transaction(FAMILY, TABLE).add(Table()).delete(Table())


# ------------------------------------------------------------------------------------------- elements


def _net_text(net: IPNetwork) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _port_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def _elements(allows: Iterable[Allow]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """The elements of the four sets for one direction, each with the allows it came from, disjoint."""
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
    everything: list[tuple[IPNetwork, str]] = []
    boxes: dict[tuple[int, str], list[tuple[tuple[IPNetwork, ...], PortRange, str]]] = defaultdict(list)
    for allow in allows:
        if allow.ports is None:
            everything.extend((net, allow.source) for net in allow.peers)
            continue
        for version in (4, 6):
            nets = tuple(n for n in allow.peers if n.version == version)
            if nets:
                for ports in allow.ports:
                    boxes[(version, ports.protocol)].append((nets, ports, allow.source))
    for version in (4, 6):
        for net in collapse(n for n, _ in everything if n.version == version):
            owners = sorted({s for n, s in everything if n.version == version and n.overlaps(net)})
            out[f"v{version}_all"].append((_net_text(net), tuple(owners)))
    for (version, protocol), items in sorted(boxes.items()):
        for box_nets, first, last, sources in _disjoint(items):
            for net in box_nets:
                out[f"v{version}"].append((f"{_net_text(net)} . {protocol} . {_port_text(first, last)}", sources))
    return out


def _disjoint(
    items: list[tuple[tuple[IPNetwork, ...], PortRange, str]],
) -> list[tuple[tuple[IPNetwork, ...], int, int, tuple[str, ...]]]:
    """Split overlapping (prefixes × port range) boxes of one protocol into disjoint ones.

    The port axis is cut at every range boundary; each elementary range gets the union of the prefixes of the
    boxes covering it; neighbouring ranges with the same prefixes and the same origin are merged again, so an element's
    comment names only rules that admit packets in its range."""
    cuts = sorted({p.first for _, p, _ in items} | {p.last + 1 for _, p, _ in items})
    merged: list[tuple[tuple[IPNetwork, ...], int, int, set[str]]] = []
    for first, nxt in itertools.pairwise(cuts):
        last = nxt - 1
        covering = [(nets, src) for nets, p, src in items if p.first <= first and p.last >= last]
        if not covering:
            continue
        nets = collapse(n for ns, _ in covering for n in ns)
        sources = {src for _, src in covering}
        if merged and merged[-1][0] == nets and merged[-1][2] == first - 1 and merged[-1][3] == sources:
            merged[-1] = (nets, merged[-1][1], last, sources)
        else:
            merged.append((nets, first, last, sources))
    return [(nets, first, last, tuple(sorted(sources))) for nets, first, last, sources in merged]
