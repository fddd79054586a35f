"""The pure renderer: `InterfaceRules` → the nftables transaction for one pod network namespace.

Layout of the one private table (`inet mnp`) in every pod netns — see shared/nft/README.md for the diagram:

    chain input  { type filter hook input  priority filter; policy accept;
                   iif vmap @ingress_ifindex; iifname vmap @ingress_ifaces }
    chain output { type filter hook output priority filter; policy accept;
                   oif vmap @egress_ifindex; oifname vmap @egress_ifaces }
    map ingress_ifindex / egress_ifindex  iface_index : verdict — 3 comment "net1" : jump ingress_net1, …
    map ingress_ifaces / egress_ifaces    ifname : verdict — empty (tables written before index dispatch)
    chain ingress_net1 / egress_net1     per guarded interface: established first, invalid dropped, NDP,
                                         then one peer-map lookup per address family, a rate-limited nflog
                                         of what falls through, and a counted default drop
    map ingress_net1_v4_peers            ipv4_addr : verdict (interval) — disjoint peer intervals → `accept`
                                         (an allow of every port admits them) or `jump g_ingress_net1_<id>`
    map ingress_net1_v6_peers            ipv6_addr : verdict (interval)
    chain g_ingress_net1_<id>            a port group: the allows that admit a peer; one rule,
                                         `meta l4proto . th dport @g_ingress_net1_<id>_ports accept`
    set g_ingress_net1_<id>_ports        inet_proto . inet_service (interval) — the union of their ports

Interfaces that are not in the maps fall through to `policy accept`: only guarded interfaces are touched. A new
connection costs at most three lookups — dispatch, the peer map, the group's port set — whatever the number of
peers, rules or policies; a port the group does not open returns from its chain to the log and the drop.

Why port groups: ports used to live inside concatenated `addr . proto . port` elements, so a port change of a
policy rewrote every peer element of every pod it selects (≈ 300 each), and the kernel's set type for
concatenated intervals costs ≈ changes × set size (docs/benchmarks.md, Policy change). A group is named by a
hash of its allows' names (`_peer_elements`), so a port change keeps every name and changes a few elements of
the port sets; a peer joining or leaving changes elements of a peer map (a one-field interval map: cheap).

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
interface's chains, maps and sets. nft 1.0.6 has no `destroy`, so a set is replaced with `add; delete; add`,
which also avoids `flush set` (quadratic for concatenated interval sets). The CNI plugin installs the `pending` form
(closed both ways but for neighbour discovery; no map, no set) with the very same function; the daemon later
fills it.

The drop log: just before the counted default drop of an isolated direction,
`limit rate 10/second burst 20 packets log prefix "mnp drop net1 ingress: " group 667 queue-threshold 1` sends
what is about to be dropped to nflog group DROP_LOG_GROUP. Only packets the default deny refuses reach it
(established flows and allowed connections were accepted above), the limit is per chain, and with no listener
bound to the group in the pod netns the kernel discards the message at once, so it costs nothing per allowed
packet and next to nothing when nobody reads it. `queue-threshold 1` sends each message at once (nfnetlink_log
otherwise batches them for up to a second). `mnpctl drops --log` binds a listener (tcpdump on `nflog:667`) in
each pod netns while it runs. A kernel `log` to the kernel log would be silent in pod namespaces unless the host
sets nf_log_all_netns.

Interval maps and sets refuse overlapping elements, so the renderer cuts the allows' prefixes into disjoint
address intervals, each with the combination of allows that admit it (`_covering`), and the port ranges of a
group into disjoint ranges likewise.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from functools import lru_cache

from shared.memo import identity_memo
from shared.nft.objects import Chain, Element, Rule, Set, Table

# The names and pieces every rendering shares: defined once, with the pending table (re-exported: __all__ below).
from shared.nft.pending import (
    _HOOK,
    _PREFIX,
    DENY_COMMENT,
    DROP_LOG_BURST,
    DROP_LOG_GROUP,
    DROP_LOG_PREFIX,
    DROP_LOG_RATE,
    FAMILY,
    MAX_IFINDEX,
    ND_TYPES,
    PENDING_POLICIES,
    TABLE,
    _dispatch,
    _legacy_dispatch,
    _legacy_map,
    _map,
    _short_hash,
    chain_name,
    checked_ifname,
    deny_comment,
    dispatch_key,
    drop_log_prefix,
    drop_log_rule,
    iface_token,
    leading_rules,
    legacy_map_name,
    map_name,
    skeleton,
)
from shared.nft.transaction import Transaction, TransactionError
from shared.rules import EGRESS, INGRESS, InterfaceRules, collapse
from shared.value import Value

# Only what is re-exported from shared.nft.pending (the names defined here are exported anyway; nothing star-imports).
__all__ = [
    "DENY_COMMENT",
    "DROP_LOG_BURST",
    "DROP_LOG_GROUP",
    "DROP_LOG_PREFIX",
    "DROP_LOG_RATE",
    "FAMILY",
    "MAX_IFINDEX",
    "ND_TYPES",
    "PENDING_POLICIES",
    "TABLE",
    "chain_name",
    "dispatch_key",
    "drop_log_prefix",
    "drop_log_rule",
    "iface_token",
    "legacy_map_name",
    "map_name",
    "skeleton",
]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import TypeVar

    from shared.nft.fake import TableView
    from shared.rules import Allow, DirectionRules, IPNetwork

    T = TypeVar("T")

SCHEMA = 1

_ADDR = {INGRESS: "saddr", EGRESS: "daddr"}
NOT_ISOLATED = "not isolated for"  # the `accept` of a direction no policy isolates: `not isolated for ingress`


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


# The per-interface objects besides the chain (module docstring): the peer maps, one per address family, and the
# port groups — a chain and its port set each. Group names start with GROUP_PREFIX so that no interface's chain
# can be mistaken for one: an interface chain is `ingress_<token>`, and a tenant may name an interface
# `net1_gabcdefgh`, so `ingress_net1_g<id>` could be another interface's chain; `g_ingress_net1_<id>` cannot
# (no interface chain starts with `g_`, and the fixed-length id makes the token the name holds unambiguous).
GROUP_PREFIX = "g_"
GROUP_ID_LENGTH = 8
PORT_KEY_TYPE = "inet_proto . inet_service"
_GROUP_ID_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")  # base32, lower case
_ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
_ADDR_FAMILY = {4: "ip", 6: "ip6"}

# The sets of the layout before port groups (`addr . proto . port` and `_all` sets): removed by a full form.
LEGACY_SET_KEY_TYPES = {
    "v4": "ipv4_addr . inet_proto . inet_service",
    "v6": "ipv6_addr . inet_proto . inet_service",
    "v4_all": "ipv4_addr",
    "v6_all": "ipv6_addr",
}


def peer_map_name(direction: str, ifname: str, version: int) -> str:
    """The verdict map from peer addresses of one family to `accept` or a port group's chain."""
    return f"{chain_name(direction, ifname)}_v{version}_peers"


def _peer_map(direction: str, ifname: str, version: int) -> Set:
    return Set(peer_map_name(direction, ifname, version), _ADDR_TYPE[version], ("interval",), value_type="verdict")


def group_chain_name(direction: str, ifname: str, group_id: str) -> str:
    return f"{GROUP_PREFIX}{chain_name(direction, ifname)}_{group_id}"


def port_set_name(group_chain: str) -> str:
    return f"{group_chain}_ports"


def _port_set(group_chain: str) -> Set:
    return Set(port_set_name(group_chain), PORT_KEY_TYPE, ("interval",))


def _legacy_sets(direction: str, ifname: str) -> list[Set]:
    base = chain_name(direction, ifname)
    return [Set(f"{base}_{kind}", key_type, ("interval",)) for kind, key_type in LEGACY_SET_KEY_TYPES.items()]


def is_group_object(name: str, direction: str, ifname: str) -> bool:
    """Whether chain or set `name` is one of the port groups of `ifname`'s `direction` (exactly: the id has a
    fixed length, so another interface's groups never match)."""
    prefix = f"{GROUP_PREFIX}{chain_name(direction, ifname)}_"
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :].removesuffix("_ports")
    return len(rest) == GROUP_ID_LENGTH and _GROUP_ID_ALPHABET.issuperset(rest)


def interface_names(ifname: str, names: Iterable[str] = ()) -> set[str]:
    """The names of every chain, set and map that belongs to `ifname`: its chains, peer maps and the sets of the
    older layout, and those of `names` (a listing's chain and set names) that are its port groups."""
    out: set[str] = set()
    for direction in (INGRESS, EGRESS):
        out.add(chain_name(direction, ifname))
        out.update(peer_map_name(direction, ifname, version) for version in (4, 6))
        out.update(s.name for s in _legacy_sets(direction, ifname))
        out.update(name for name in names if is_group_object(name, direction, ifname))
    return out


def element_key_type(set_name: str) -> str:
    """The key type of a per-interface set or map, from its name (what an element delta sent as netlink needs)."""
    if set_name.endswith("_ports") and set_name.startswith(GROUP_PREFIX):
        return PORT_KEY_TYPE
    for version in (4, 6):
        if set_name.endswith(f"_v{version}_peers"):
            return _ADDR_TYPE[version]
    raise TransactionError(f"{set_name!r} is not a per-interface set")


def render_interface(rules: InterfaceRules, options: RenderOptions = DEFAULTS) -> Transaction:
    """One transaction that sets `rules.ifname`'s chains, maps and port groups to exactly `rules`, dispatched on
    `rules.ifindex`. TransactionError for an interface name that is not valid (`checked_ifname`) or an unknown
    index (`dispatch_key`).

    Per direction: the interface chain is flushed (which drops its references to the peer maps), the peer maps
    are deleted (which drops their jumps to the port groups), each port group's chain is flushed and its port
    set replaced, the maps are added again with their elements, then the chain's rules. A daemon's full form also
    deletes the peer maps it does not use and the sets of the older layout (`addr . proto . port`, `_all`), so
    it replaces an interface an older mnpd programmed; the pending form (nothing admitted, no policy named: the
    plugin's ADD, on an interface that has nothing yet) writes only what it uses. Port groups the interface no
    longer uses are not deleted here (their names are not known without listing the table): nothing refers to
    them any more; the daemon's repair, which lists, removes them with the full form (`unused_groups`,
    `remove_groups`), and the plugin's DEL does."""
    checked_ifname(rules.ifname)
    dispatch_key(rules.ifindex)
    tx = skeleton()
    operator_objects(tx, options.additions)
    for direction in (INGRESS, EGRESS):
        rules_of = rules.direction(direction)
        rendered = render_direction(rules.ifname, direction, rules_of, options)
        chain = Chain(rendered.chain)
        tx.add(chain)
        tx.flush(chain)  # drops the rules' references so the maps can be replaced
        used = {m.name for m, _ in rendered.maps}
        if not _pending(rules_of):
            unused = [_peer_map(direction, rules.ifname, v) for v in (4, 6)]
            for s in [*_legacy_sets(direction, rules.ifname), *(m for m in unused if m.name not in used)]:
                tx.add(s)
                tx.delete(s)
        for m, _ in rendered.maps:
            tx.add(m)
            tx.delete(m)  # drops its jumps, so the groups' chains can be refilled
        for group in rendered.groups:
            _replace_group(tx, group)
            for element in group.elements:
                tx.add(element)
            tx.add(group.rule)
        for m, elements in rendered.maps:
            tx.add(m)
            for element in elements:
                tx.add(element)
        for rule in rendered.rules:
            tx.add(rule)
        tx.add(_dispatch(direction, rules.ifname, rules.ifindex, chain.name))
        legacy = _legacy_dispatch(direction, rules.ifname, chain.name)  # an older table's, if any: not needed
        tx.add(legacy)
        tx.delete(legacy)
    return tx


def _pending(rules: DirectionRules) -> bool:
    """The pending form of a direction: isolated with no allow and no policy (InterfaceRules.pending)."""
    return rules.isolated and not rules.allows and not rules.policies


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
    return _render_update(
        old.ingress, old.egress, new.ingress, new.egress, ifname=new.ifname, options=options, priced=priced
    )


# By the rules objects' identity (shared.memo), not their value: the controller hands the pods of a Deployment the
# very same objects, and a by-value lookup with equal objects of another identity compares every peer.
@identity_memo(maxsize=64)  # each entry holds two directions' rules and the delta: keep a node's groups only
def _render_update(
    old_ingress: DirectionRules,
    old_egress: DirectionRules,
    new_ingress: DirectionRules,
    new_egress: DirectionRules,
    *,
    ifname: str,
    options: RenderOptions,
    priced: bool,
) -> Transaction | None:
    """The smallest transaction that takes an interface programmed with `render_interface(old)` to `new`, or
    None when only a full `render_interface(new)` can.

    When both directions keep the very same chains with the very same rules — the interface chains, and the
    same port groups (a group is named by the allows that make it up, not by their ports) — only elements
    differ: a port change changes the elements of the port sets of the groups that hold the allow, a peer that
    joins or leaves changes elements of a peer map. The transaction deletes the elements `new` no longer has and
    adds the ones it lacks (an element whose comment or verdict changed is deleted and added again, so `mnpctl
    explain` keeps naming the right rules). Its cost is proportional to the change, not to the peers, and it
    holds no rule, chain or set replacement. A combination of allows that no peer had before (a peer admitted by
    one more rule) adds a port group — its chain, rule and port set, created (or replaced, should the table hold
    a stale one) before the map elements that jump there — and a combination no peer has any more removes one
    after them: then the delta is not only elements (shared.nft.backend sends it through libnftables). The
    delta relies on the table holding exactly `render_interface(old)`: if it does not (someone edited it),
    the kernel refuses it as a whole (a missing element, an overlap) and the caller falls back to the full form.

    A delta is not always cheaper. nft 1.0.6 looks each deleted interval element up in its copy of the set, and
    the kernel's set for concatenated intervals (pipapo: the port sets) reshapes its lookup tables for every
    element inserted or removed, so changing d elements of a set of n costs about d × n, while the full form
    costs about the total number of elements it writes (docs/benchmarks.md, Policy change, has the figures).
    When the COST_* estimate makes the delta dearer than the full form, None."""
    tx = Transaction(FAMILY, TABLE)
    cost = 0.0
    total = 0
    for direction, old, new in ((INGRESS, old_ingress, new_ingress), (EGRESS, old_egress, new_egress)):
        before = render_direction(ifname, direction, old, options)
        after = render_direction(ifname, direction, new, options)
        if before.rules != after.rules:
            return None
        was_groups = {group.chain: group for group in before.groups}
        now_groups = {group.chain: group for group in after.groups}
        if any(was_groups[name].rule != group.rule for name, group in now_groups.items() if name in was_groups):
            return None  # pragma: no cover - a group's name is the hash of what its rule says
        added_groups = sorted(now_groups.keys() - was_groups.keys())
        for name in added_groups:  # replaced, should a stale one be there
            group = now_groups[name]
            _replace_group(tx, group)
            for element in group.elements:
                tx.add(element)
            tx.add(group.rule)
            cost += COST_GROUP + COST_ADD * len(group.elements)
        was_sets, now_sets = before.elements(), after.elements()
        filled = {now_groups[name].ports.name for name in added_groups}
        for name, now in now_sets.items():
            total += len(now)
            if name in filled:
                continue  # a new group's port set: filled above
            was = was_sets.get(name, ())
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
        for name in sorted(was_groups.keys() - now_groups.keys()):  # nothing jumps there any more
            group = was_groups[name]
            tx.flush(Chain(name))
            tx.delete(Chain(name))
            tx.delete(group.ports)
            cost += COST_GROUP
    if priced and cost > COST_FULL_PER_ELEMENT * total + COST_FULL_FIXED:
        return None
    return tx


def _replace_group(tx: Transaction, group: PortGroup) -> None:
    """A port group's chain, emptied, and its port set, new and empty (whatever a table held under the name)."""
    chain = Chain(group.chain)
    tx.add(chain)
    tx.flush(chain)
    tx.add(group.ports)
    tx.delete(group.ports)
    tx.add(group.ports)


# What the two ways to change an interface's sets cost (µs; nft 1.0.6 on the benchmark machine).
COST_DELETE_PER_SET_ELEMENT = 0.27  # one deleted element, per element of the set it is deleted from
COST_ADD = 26.0  # one added element (checked against the set's elements for overlaps)
COST_FULL_PER_ELEMENT = 15.0  # one element of a full replacement
COST_FULL_FIXED = 2000.0  # the chains and sets a full replacement writes on top
COST_GROUP = 500.0  # a port group added or removed by a delta (a chain, a set, a rule)


class PortGroup(Value):
    """One port group of a direction: its chain, the chain's one rule, its port set and the set's elements."""

    __slots__ = ("chain", "elements", "ports", "rule")

    def __init__(self, chain: str, rule: Rule, ports: Set, elements: tuple[Element, ...]) -> None:
        self.chain = chain
        self.rule = rule
        self.ports = ports
        self.elements = elements


class RenderedDirection(Value):
    """One direction of one interface as the table holds it: its chain's rules, its peer maps (those with
    elements) and its port groups."""

    __slots__ = ("chain", "groups", "maps", "rules")

    def __init__(
        self,
        chain: str,
        rules: tuple[Rule, ...],
        maps: tuple[tuple[Set, tuple[Element, ...]], ...] = (),
        groups: tuple[PortGroup, ...] = (),
    ) -> None:
        self.chain = chain
        self.rules = rules
        self.maps = maps
        self.groups = groups

    def elements(self) -> dict[str, tuple[Element, ...]]:
        """Every map's and port set's elements, by name."""
        out = {m.name: elements for m, elements in self.maps}
        out.update((group.ports.name, group.elements) for group in self.groups)
        return out


def render_direction(ifname: str, direction: str, rules: DirectionRules, options: RenderOptions) -> RenderedDirection:
    """`rules` as chain rules, peer maps and port groups (memoised: the pods of a Deployment share their rules).
    TransactionError for an invalid interface name (`checked_ifname`)."""
    checked_ifname(ifname)
    return _render_direction(ifname, direction, rules, options)


@lru_cache(maxsize=64)  # ≈ 80 KB each with 300 peers: a node's groups, old and new, not more
def _render_direction(ifname: str, direction: str, rules: DirectionRules, options: RenderOptions) -> RenderedDirection:
    name = chain_name(direction, ifname)
    out = leading_rules(name)
    if options.accept_icmp:
        out.append(Rule(name, "meta l4proto icmp accept", "--accept-icmp"))
    if options.accept_icmpv6:
        out.append(Rule(name, "meta l4proto ipv6-icmp accept", "--accept-icmpv6"))
    if not rules.isolated:
        out.append(Rule(name, "accept", f"{NOT_ISOLATED} {direction.lower()}"))
        return RenderedDirection(name, tuple(out))
    out.extend(operator_rules(name, direction, options.additions))
    maps, groups = _peer_elements(direction, ifname, rules.allows) if rules.allows else ((), ())
    for m, _ in maps:
        version = 4 if m.key_type == _ADDR_TYPE[4] else 6
        out.append(Rule(name, f"{_ADDR_FAMILY[version]} {_ADDR[direction]} vmap @{m.name}"))
    if options.drop_log:
        out.append(Rule(name, drop_log_rule(ifname, direction)))
    out.append(Rule(name, "counter drop", deny_comment(rules.policies)))
    return RenderedDirection(name, tuple(out), maps, groups)


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


def render_remove_interface(ifname: str, ifindex: int = 0, names: Iterable[str] = ()) -> Transaction:
    """Remove everything of one interface; succeeds whether or not any of it exists (idempotent DEL).
    TransactionError for an invalid interface name (`checked_ifname`).

    `names`: the chain and set names the table holds (a listing), for the interface's port groups, whose names
    depend on its rules; without them the groups stay, referenced by nothing once the peer maps are gone (as a
    group whose rules changed does: `render_interface`). Per direction: the dispatch elements, the chain's rules
    (its references to the maps), the peer maps (their jumps to the groups), the groups, the chain.

    The dispatch element is found by its key, the index: with `ifindex` unknown (0: an entry from before the
    index was recorded, whose interface is gone) it cannot be deleted, so the interface's chains are only emptied
    (a packet jumping there returns to the base chain's `policy accept`, as for any interface mnp does not guard)
    and stay, still referenced; its maps, sets and groups go."""
    checked_ifname(ifname)
    known = ifindex != 0
    names = sorted(set(names))
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
        for s in [*_legacy_sets(direction, ifname), *(_peer_map(direction, ifname, v) for v in (4, 6))]:
            tx.add(s)
            tx.delete(s)
        for group in _group_chains(names, direction, ifname):
            _remove_group(tx, group)
    return tx


def _group_chains(names: Iterable[str], direction: str, ifname: str) -> list[str]:
    """The chain names of `ifname`'s `direction` port groups among `names` (a listing's chain and set names; a
    port set alone names its group too), sorted."""
    return sorted({n.removesuffix("_ports") for n in names if is_group_object(n, direction, ifname)})


def _remove_group(tx: Transaction, group_chain: str) -> None:
    """Remove a port group's chain and its port set, whether or not they exist; nothing may refer to the chain
    by then."""
    group = Chain(group_chain)
    tx.add(group)
    tx.flush(group)  # drops its reference to the port set
    tx.delete(group)
    tx.add(_port_set(group_chain))
    tx.delete(_port_set(group_chain))


def unused_groups(rules: InterfaceRules, names: Iterable[str], options: RenderOptions = DEFAULTS) -> list[str]:
    """The chains of `rules.ifname`'s port groups among `names` (a listing's chain and set names) that its full
    form (`render_interface(rules, options)`) does not write: left by a full form that did not know them (after
    a restart with changed rules, a refused delta), referenced by nothing once the full form has replaced the
    peer maps. Not those of a pending direction, whose full form leaves the peer maps (and their jumps) alone."""
    names = list(names)
    out: list[str] = []
    for direction in (INGRESS, EGRESS):
        rules_of = rules.direction(direction)
        found = _group_chains(names, direction, rules.ifname)
        if found and not _pending(rules_of):
            written = {g.chain for g in render_direction(rules.ifname, direction, rules_of, options).groups}
            out += [g for g in found if g not in written]
    return out


def referenced_elsewhere(view: TableView, ifname: str, groups: Iterable[str]) -> set[str]:
    """Those of `groups` (port-group chains of `ifname`: `unused_groups`) that something the full form does not
    replace names — a rule of a chain other than the interface's own two and the group's own, an element of a
    map other than its peer maps. mnp writes no such reference: someone with NET_ADMIN in the pod did, and a
    chain or set in use cannot be deleted (nft: EBUSY), so the cleanup leaves those alone. Names are matched as
    whole words of the rule's text (an opaque rule's JSON names its target too); linear in the listing."""
    import re  # not at import: the plugin's ADD loads this module

    word = re.compile(r"[A-Za-z0-9_.-]+")
    replaced = {chain_name(direction, ifname) for direction in (INGRESS, EGRESS)}
    replaced_maps = {peer_map_name(d, ifname, v) for d in (INGRESS, EGRESS) for v in (4, 6)}
    named: set[str] = set()
    for chain in view.chains.values():
        if chain.name in replaced:
            continue
        for rule in chain.rules:
            # the group's own rule names its own port set: not a reference that keeps it
            named.update(w for w in word.findall(rule.text) if w.removesuffix("_ports") != chain.name)
    for m in view.sets.values():
        if m.name not in replaced_maps:
            named.update(w for e in m.elements for w in word.findall(e.value or ""))
    return {group for group in groups if group in named or port_set_name(group) in named}


def remove_groups(tx: Transaction, groups: Iterable[str]) -> Transaction:
    """`tx` — a full form — followed by the removal of the port groups `groups` (chains, with their port sets:
    its `unused_groups`), in the same transaction, where nothing refers to them any more."""
    for group in groups:
        _remove_group(tx, group)
    return tx


def owned_view(view: TableView, ifname: str, ifindex: int) -> tuple[object, ...]:
    """What the full form of `ifname` at `ifindex` (render_interface) defines in a table, as read back (`nft -j
    list table`, or the Fake): the two base chains (hook, policy, rules), the interface's element in each dispatch
    map (and none left in the old name maps), its chains' rules and everything they reach — the peer maps, the
    port groups' chains their elements jump to, the port sets — without counters. Two tables with equal owned
    views enforce the same on the interface; whatever else the table holds (other interfaces' objects, chains
    nothing refers to) cannot change that. A missing object reads as None, so a deleted table, a flushed chain,
    an edited set or an element taken out of a map all differ from the full form."""
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
        owned.append(reachable(view, chain_name(direction, ifname)))
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


_REFERENCE = r"(?:@|\b(?:jump|goto) )([A-Za-z_]\w*)"


def reachable(view: TableView, chain: str) -> tuple[tuple[str, str, object], ...]:
    """Chain `chain` and every chain, set and map it reaches through its rules and its maps' verdicts, as
    (kind, name, content) sorted by name: a chain's hook and rules (text, comment), a set's or map's types,
    flags and elements (key, value, comment); None for a missing one. The operator's additions (custom chains,
    allow-lists: shared by every interface, `owned_view` reads them once) are named, not followed."""
    import re  # here, not at the top: the plugin's ADD imports this module and must not load `re` (start-up)

    out: dict[tuple[str, str], object] = {}
    pending = [("chain", chain)]
    while pending:
        kind, name = pending.pop()
        if (kind, name) in out:
            continue
        if kind == "chain":
            found_chain = view.chains.get(name)
            out[(kind, name)] = (
                None
                if found_chain is None
                else (found_chain.hook, tuple((r.text, r.comment) for r in found_chain.rules))
            )
            texts = [r.text for r in found_chain.rules] if found_chain is not None else []
        else:
            found_set = view.sets.get(name)
            out[(kind, name)] = (
                None
                if found_set is None
                else (
                    found_set.key_type,
                    found_set.value_type,
                    found_set.flags,
                    tuple((e.key, e.value, e.comment) for e in found_set.elements),
                )
            )
            texts = [e.value for e in found_set.elements if e.value] if found_set is not None else []
        for text in texts:
            unquoted = re.sub(r'"[^"]*"', '""', text)  # strings emptied: a log prefix is never a reference
            for match in re.finditer(_REFERENCE, unquoted):
                target = match[1]
                if target.startswith(CUSTOM_CHAIN_PREFIX) or target.startswith("allow_"):
                    continue
                pending.append(("set" if match[0].startswith("@") else "chain", target))
    return tuple((kind, name, content) for (kind, name), content in sorted(out.items(), key=lambda item: item[0][1]))


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


def _covering(intervals: Iterable[tuple[int, int, T]]) -> list[tuple[int, int, frozenset[T]]]:
    """Split overlapping closed intervals, each carrying a tag, into disjoint ones, each with the tags of the
    intervals that cover it; neighbouring pieces with the same tags are merged again, and uncovered gaps left
    out. A sweep over the intervals' ends: O(n log n)."""
    events: list[tuple[int, int, int]] = []
    tags: list[T] = []
    for first, last, tag in intervals:
        events.append((first, 1, len(tags)))
        events.append((last + 1, -1, len(tags)))
        tags.append(tag)
    events.sort()
    active: dict[int, int] = {}
    out: list[tuple[int, int, frozenset[T]]] = []
    shared: dict[frozenset[T], frozenset[T]] = {}
    start = 0
    for point, group in itertools.groupby(events, key=lambda event: event[0]):
        if active:
            covering = frozenset(tags[i] for i in active)
            covering = shared.setdefault(covering, covering)  # one object per combination, not per interval
            if out and out[-1][1] == start - 1 and out[-1][2] == covering:
                out[-1] = (out[-1][0], point - 1, covering)
            else:
                out.append((start, point - 1, covering))
        for _, step, i in group:
            count = active.get(i, 0) + step
            if count:
                active[i] = count
            else:
                del active[i]
        start = point
    return out


def _peer_elements(
    direction: str, ifname: str, allows: Iterable[Allow]
) -> tuple[tuple[tuple[Set, tuple[Element, ...]], ...], tuple[PortGroup, ...]]:
    """The peer maps (with elements) and the port groups of one isolated direction.

    The peers of all allows are cut into disjoint address intervals, each with the allows that admit it. An
    interval that an allow of every port admits maps to `accept` (comment: those allows); any other to the chain
    of its port group — the combination of allows that admit it, whose port set holds the union of their ports,
    each port range commented with the allows that open it. A group is named by a hash of its allows' sources
    (`ns/policy ingress[0]`), not of their ports, so that a port change keeps every name and changes only port
    elements. Where the same sources make up groups with different ports (an egress named port resolved to
    different numbers for different peers, the compiler's one allow per resolution), those groups are named by
    sources and ports together."""
    from shared.nft.fake import format_field  # the daemon's side: the plugin's pending form has no peers

    usable = [allow for allow in allows if allow.ports is None or allow.ports]
    combos: dict[int, list[tuple[int, int, frozenset[Allow]]]] = {}
    for version in (4, 6):
        intervals = [
            (int(net.network_address), int(net.broadcast_address), allow)
            for allow in usable
            for net in allow.peers
            if net.version == version
        ]
        combos[version] = _covering(intervals)
    # the port groups: by the allows (with ports) of an interval that no every-port allow admits
    contents: dict[frozenset[Allow], tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]] = {}
    for version in (4, 6):
        for _, _, combo in combos[version]:
            if combo not in contents and all(allow.ports is not None for allow in combo):
                sources = tuple(sorted({allow.source for allow in combo}))
                contents[combo] = (sources, _port_elements(combo))
    by_sources: dict[tuple[str, ...], set[tuple[tuple[str, tuple[str, ...]], ...]]] = defaultdict(set)
    for sources, ports in contents.values():
        by_sources[sources].add(ports)
    names: dict[frozenset[Allow], str] = {}
    groups: dict[str, PortGroup] = {}
    for combo, (sources, ports) in contents.items():
        identity = _group_identity(sources, None if len(by_sources[sources]) == 1 else ports)
        chain = group_chain_name(direction, ifname, _short_hash(identity, GROUP_ID_LENGTH))
        names[combo] = chain
        known = groups.get(chain)
        if known is not None:
            if known.elements != _port_set_elements(chain, ports):
                raise TransactionError(f"refusing to render: two port groups of {ifname} hash to {chain}")
            continue
        port_set = _port_set(chain)
        rule = Rule(chain, f"meta l4proto . th dport @{port_set.name} accept", ", ".join(sources))
        groups[chain] = PortGroup(chain, rule, port_set, _port_set_elements(chain, ports))
    maps = []
    verdicts: dict[frozenset[Allow], tuple[str, str]] = {}  # one verdict and comment string per combination
    for version in (4, 6):
        peer_map = _peer_map(direction, ifname, version)
        elements: list[tuple[int, int, str, str]] = []
        for lo, hi, combo in combos[version]:
            verdict, note = verdicts.get(combo) or verdicts.setdefault(combo, _verdict(combo, names, groups))
            if elements and elements[-1][1] == lo - 1 and elements[-1][2:] == (verdict, note):
                elements[-1] = (elements[-1][0], hi, verdict, note or "")
            else:
                elements.append((lo, hi, verdict, note or ""))
        if elements:
            maps.append(
                (
                    peer_map,
                    tuple(
                        Element(peer_map.name, format_field(_ADDR_TYPE[version], (lo, hi)), verdict, note)
                        for lo, hi, verdict, note in elements
                    ),
                )
            )
    return tuple(maps), tuple(groups[name] for name in sorted(groups))


def _group_identity(sources: tuple[str, ...], ports: tuple[tuple[str, tuple[str, ...]], ...] | None) -> str:
    """What a port group's id hashes: its sources one a line (and its ports' repr, a line starting with `(`).
    Policy names reach here unvalidated (hand-written manifests), so each source is escaped to keep the text
    unambiguous — `\\` doubled, a newline as `\\n`, a leading `(` as `\\(` — lest a name holding a newline spell
    another group's sources and take its id. A Kubernetes name holds none of these, so its ids are unchanged."""
    lines = [source.replace("\\", "\\\\").replace("\n", "\\n") for source in sources]
    lines = ["\\" + line if line.startswith("(") else line for line in lines]
    if ports is not None:
        lines.append(repr(ports))
    return "\n".join(lines)


def _verdict(
    combo: frozenset[Allow], names: dict[frozenset[Allow], str], groups: dict[str, PortGroup]
) -> tuple[str, str]:
    """A peer map element's verdict and comment: `accept` (the allows of every port that admit the peer), or the
    jump to the port group of `combo`."""
    every = sorted({allow.source for allow in combo if allow.ports is None})
    if every:
        return "accept", ", ".join(every)
    return f"jump {names[combo]}", groups[names[combo]].rule.comment or ""


def _port_elements(allows: Iterable[Allow]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The union of the allows' port ranges, disjoint: (`tcp . 80-90`, the sources that open it)."""
    out: list[tuple[str, tuple[str, ...]]] = []
    by_protocol: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for allow in allows:
        for ports in allow.ports or ():
            by_protocol[ports.protocol].append((ports.first, ports.last, allow.source))
    for protocol in sorted(by_protocol):
        for first, last, sources in _covering(by_protocol[protocol]):
            out.append((f"{protocol} . {_port_text(first, last)}", tuple(sorted(sources))))
    return tuple(out)


def _port_set_elements(chain: str, ports: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[Element, ...]:
    name = port_set_name(chain)
    return tuple(Element(name, key, comment=", ".join(sources)) for key, sources in ports)
