"""The pending table — what the CNI plugin installs at ADD — and the names and pieces every rendering shares.

The pending form of an interface (InterfaceRules.pending: isolated both ways, nothing admitted, no policy named)
is a Transaction that shared.nft.render.render_interface also produces; this module builds it directly, so that
the plugin's ADD does not load the renderer (its options, port groups, peer maps, operator additions, the rules
IR's classes): every import is paid on every pod start (docs/benchmarks.md, CNI ADD). The renderer imports the
names, the skeleton and the chain's leading rules from here, so each of them is written once;
tests/unit/test_nft_pending.py checks over interface names and indexes that `render_pending` equals
`render_interface(InterfaceRules.pending(…))` with the renderer's defaults. The table's layout: shared/nft/render.py.
"""

from __future__ import annotations

from shared.ifname import InvalidInterfaceName
from shared.nft.objects import Chain, Element, Rule, Set, Table, quote, quote_ifname
from shared.nft.transaction import Transaction, TransactionError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable

# The directions, as shared.rules spells them (INGRESS, EGRESS; equal by test): not imported from there, which
# would load the rules IR's classes on the plugin's ADD path.
INGRESS, EGRESS = "Ingress", "Egress"

TABLE = "mnp"
FAMILY = "inet"

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


def deny_comment(policies: Iterable[str]) -> str:
    """The counted drop's comment: the policies that isolate the direction, or the pending marker."""
    return f"{DENY_COMMENT} ({', '.join(policies) or PENDING_POLICIES})"


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
    return f"if_{_short_hash(ifname, 8)}"


def chain_name(direction: str, ifname: str) -> str:
    return f"{_PREFIX[direction]}_{iface_token(ifname)}"


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


def map_name(direction: str) -> str:
    """The verdict map that sends a direction's guarded interfaces to their chains."""
    return _map(direction).name


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


def _short_hash(text: str, length: int) -> str:
    """`length` characters of base32 (lower case) of the SHA-256 of `text`: names for interfaces that are not
    plain identifiers, and port groups' ids."""
    import base64  # the CNI plugin renders on every ADD: imported only for the names that need it
    import hashlib

    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length].lower()


def leading_rules(chain: str) -> list[Rule]:
    """The first rules of every interface chain, pending or programmed: established flows, invalid packets,
    IPv6 neighbour discovery."""
    return [
        Rule(chain, "ct state established,related accept"),
        Rule(chain, "ct state invalid drop"),
        Rule(chain, f"icmpv6 type {{ {ND_TYPES} }} accept", "IPv6 neighbour discovery"),
    ]


def render_pending(ifname: str, ifindex: int) -> Transaction:
    """The pending table of interface `ifname` (index `ifindex`): the skeleton, and per direction the interface's
    chain closed but for neighbour discovery — with the drop log and the counted default drop — and its dispatch
    element (an older table's name-dispatch element removed). The same Transaction as
    `render_interface(InterfaceRules.pending(…))` with the renderer's default options; TransactionError for an
    interface name or index that cannot be rendered, as there."""
    checked_ifname(ifname)
    dispatch_key(ifindex)
    tx = skeleton()
    for direction in (INGRESS, EGRESS):
        chain = Chain(chain_name(direction, ifname))
        tx.add(chain)
        tx.flush(chain)
        for rule in leading_rules(chain.name):
            tx.add(rule)
        tx.add(Rule(chain.name, drop_log_rule(ifname, direction)))
        tx.add(Rule(chain.name, "counter drop", deny_comment(())))
        tx.add(_dispatch(direction, ifname, ifindex, chain.name))
        legacy = _legacy_dispatch(direction, ifname, chain.name)  # an older table's, if any: not needed
        tx.add(legacy)
        tx.delete(legacy)
    return tx
