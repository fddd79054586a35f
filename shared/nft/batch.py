"""A whole Transaction — the CNI plugin's pending table — as one nfnetlink batch, without libnftables.

The plugin's ADD installs the same table every time but for the interface's name and index (shared.nft.render,
`render_interface(InterfaceRules.pending(…))`). Through libnftables that costs loading the library, a context, a
parse of the text and a cache fetch; here the rendered objects are encoded directly into the messages nft 1.0.6
sends for the very same text (read from `strace -e write=` of `nft -f tests/golden/pending.nft`, decoded; the
kernel test tests/integration/test_nft_batch.py applies both and compares `nft list table` and `nft -j list
table`): NEWTABLE, NEWCHAIN (with hook and policy for the base chains), DELRULE on a chain (`flush chain`),
NEWSET / DELSET with the key types, flags and user data nft stores (so `nft list` prints the same types),
NEWRULE with the expressions of each rule and its comment as user data, NEWSETELEM / DELSETELEM for the
dispatch maps' elements. The verbs keep their nft meaning: `add` is NLM_F_CREATE without NLM_F_EXCL (an object
that exists is kept), so a second interface's ADD in the same netns is the same batch as the first's.

Only what the pending table holds is encoded; the rules are recognised by their text, as the renderer writes
them — the dispatch lookups (`iif vmap @map`), `ct state … accept|drop`, the neighbour-discovery `icmpv6 type
{ … }` (an anonymous constant set created in the batch), the drop log (`limit … log prefix … group … queue-threshold
1`), `counter drop`. Anything else raises NotEncodable and the caller uses libnftables or the nft command, which
stay the reference (and the daemon's path). The user data blobs are nft's little-endian layout: on a big-endian
host nothing is encoded.

No imports beyond the codec (shared.nft.nfnl): this is on the plugin's ADD path.
"""

from __future__ import annotations

import struct
import sys

from shared.nft.nfnl import (
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFPROTO_UNSPEC,
    NLM_F_ACK,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    attr,
    be32,
    message,
    nested,
    strz,
    verdict,
)
from shared.nft.objects import Chain, Element, Rule, Set, Table, comment

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from shared.nft.transaction import Transaction


class NotEncodable(ValueError):
    """An operation this encoder does not know: use libnftables or the nft command for the transaction."""


# enum nf_tables_msg_types
NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 0, 3, 6, 8
NFT_MSG_NEWSET, NFT_MSG_DELSET, NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 9, 11, 12, 14

NF_INET_HOOKS = {"input": 1, "output": 3}  # NF_INET_LOCAL_IN, NF_INET_LOCAL_OUT
PRIORITIES = {"filter": 0}  # NF_IP_PRI_FILTER
POLICIES = {"accept": 1, "drop": 0}  # NF_ACCEPT, NF_DROP
FINAL = ("accept", "drop")  # the verdicts the pending table's rules end in
IFNAMSIZ = 16

# The sets the pending table declares: (key type, value type, flags) → NFTA_SET_FLAGS, NFTA_SET_KEY_TYPE,
# NFTA_SET_KEY_LEN, NFTA_SET_DESC (field lengths of a concatenation) and NFTA_SET_USERDATA (key/data byte order,
# typeof) exactly as nft 1.0.6 sends them. Maps have data type verdict (0xffffff00), data length 0.
_VERDICT_MAP_UDATA = bytes.fromhex("000401000000010400000000060400000000")
_CONCAT_UDATA = bytes.fromhex("000400000000030800040d0000000100")
_ADDR_UDATA = bytes.fromhex("000402000000")
_SET_KINDS: dict[tuple[str, str | None, tuple[str, ...]], tuple[int, int, int, tuple[int, ...], bytes]] = {
    ("iface_index", "verdict", ()): (0x8, 0x14, 4, (), _VERDICT_MAP_UDATA),
    ("ifname", "verdict", ()): (0x8, 0x29, IFNAMSIZ, (), _VERDICT_MAP_UDATA),
    ("ipv4_addr . inet_proto . inet_service", None, ("interval",)): (0x84, 0x730D, 12, (4, 1, 2), _CONCAT_UDATA),
    ("ipv6_addr . inet_proto . inet_service", None, ("interval",)): (0x84, 0x830D, 24, (16, 1, 2), _CONCAT_UDATA),
    ("ipv4_addr", None, ("interval",)): (0x4, 0x7, 4, (), _ADDR_UDATA),
    ("ipv6_addr", None, ("interval",)): (0x4, 0x8, 16, (), _ADDR_UDATA),
}
NFT_DATA_VERDICT_TYPE = 0xFFFFFF00

# The neighbour-discovery rule's anonymous set: icmpv6_type keys (0x1d, 1 byte), ANONYMOUS|CONSTANT.
ICMPV6_TYPES = {
    "nd-router-solicit": 133,
    "nd-router-advert": 134,
    "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136,
    "nd-redirect": 137,
}
_ICMPV6_SET_UDATA = bytes.fromhex("0004020000000314000407000000010c00040e000000010401000000")
CT_STATES = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
META_KEYS = {"iif": 4, "oif": 5, "iifname": 6, "oifname": 7, "nfproto": 15, "l4proto": 16}
NFPROTO_IPV6, IPPROTO_ICMPV6 = 10, 58
LIMIT_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def encode(tx: Transaction, first_seq: int = 1) -> tuple[bytes, int]:
    """`tx` as one batch (BATCH_BEGIN … BATCH_END) and the sequence number of its last message, the only one that
    asks for an acknowledgement (errors are always reported). Raises NotEncodable, or `tx.error`."""
    if tx.error is not None:
        raise tx.error
    if sys.byteorder != "little":
        raise NotEncodable("nft's user data layout is encoded for little-endian hosts only")
    if tx.family != "inet":
        raise NotEncodable(f"family {tx.family}")
    batch = _Batch(tx.table)
    for op in tx.operations:
        batch.operation(op.verb, op.obj)
    return batch.framed(first_seq)


class _Batch:
    def __init__(self, table: str) -> None:
        self.table = table
        self.bodies: list[tuple[int, int, bytes]] = []  # (message type, flags, attributes)
        self.set_ids: dict[str, int] = {}  # sets added in this batch → their NFTA_SET_ID
        self.next_id = 1

    def framed(self, first_seq: int) -> tuple[bytes, int]:
        seq = first_seq
        out = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES, b"")]
        for n, (kind, flags, body) in enumerate(self.bodies):
            seq += 1
            ack = NLM_F_ACK if n == len(self.bodies) - 1 else 0
            out.append(message((NFNL_SUBSYS_NFTABLES << 8) | kind, flags | ack, seq, NFPROTO_INET, 0, body))
        out.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES, b""))
        return b"".join(out), seq

    def emit(self, kind: int, flags: int, *attrs: bytes) -> None:
        self.bodies.append((kind, NLM_F_REQUEST | flags, strz(1, self.table) + b"".join(attrs)))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def operation(self, verb: str, obj: object) -> None:
        if isinstance(obj, Table) and verb == "add":
            self.emit(NFT_MSG_NEWTABLE, 0, be32(2, 0))  # NFTA_TABLE_FLAGS; nft sends no NLM_F_CREATE here
        elif isinstance(obj, Chain) and verb == "add":
            self.emit(NFT_MSG_NEWCHAIN, NLM_F_CREATE, *_chain(obj))
        elif isinstance(obj, Chain) and verb == "flush":
            self.emit(NFT_MSG_DELRULE, 0, strz(2, obj.name))  # NFTA_RULE_CHAIN, no handle: every rule
        elif isinstance(obj, Set) and verb == "add":
            self.set_ids[obj.name] = set_id = self.new_id()
            self.emit(NFT_MSG_NEWSET, NLM_F_CREATE, *_set(obj, set_id))
        elif isinstance(obj, Set) and verb == "delete":
            self.emit(NFT_MSG_DELSET, 0, strz(2, obj.name))
        elif isinstance(obj, Rule) and verb == "add":
            self.rule(obj)
        elif isinstance(obj, Element) and verb in ("add", "delete"):
            self.element(verb, obj)
        else:
            raise NotEncodable(f"{verb} {type(obj).__name__.lower()}")

    def element(self, verb: str, element: Element) -> None:
        key_type = _dispatch_key_type(element.set)
        key = nested(1, attr(1, _dispatch_key(key_type, element.key)))  # NFTA_SET_ELEM_KEY → NFTA_DATA_VALUE
        if verb == "delete":
            body = nested(3, nested(1, key))
            self.emit(NFT_MSG_DELSETELEM, 0, strz(2, element.set), body)
            return
        if element.value is None:
            raise NotEncodable(f"map element without a value in {element.set}")
        data = nested(2, _verdict(element.value))  # NFTA_SET_ELEM_DATA
        note = _comment_udata(comment(element.comment), 6)  # NFTA_SET_ELEM_USERDATA
        ident = self.set_ids.get(element.set)
        head = strz(2, element.set) + (be32(4, ident) if ident is not None else b"")
        self.emit(NFT_MSG_NEWSETELEM, NLM_F_CREATE, head, nested(3, nested(1, key, data, note)))

    def rule(self, rule: Rule) -> None:
        expressions = self.expressions(rule.text)
        note = _comment_udata(comment(rule.comment), 7)  # NFTA_RULE_USERDATA
        self.emit(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, strz(2, rule.chain), nested(4, *expressions), note)

    def expressions(self, text: str) -> list[bytes]:
        """The expressions of one of the pending table's rules (see the module docstring), else NotEncodable."""
        words = text.split(" ")
        if len(words) == 3 and words[0] in ("iif", "oif", "iifname", "oifname") and words[1] == "vmap":
            name = words[2].removeprefix("@")
            return [_meta(words[0]), self.lookup(name, verdict_map=True)]
        if len(words) == 4 and words[:2] == ["ct", "state"] and words[3] in FINAL:
            mask = 0
            for state in words[2].split(","):
                if state not in CT_STATES:
                    raise NotEncodable(f"ct state {state}")
                mask |= CT_STATES[state]
            ct = _expr("ct", be32(2, 0), be32(1, 1))  # NFT_CT_STATE → reg 1
            bitwise = _expr(
                "bitwise",
                be32(1, 1),
                be32(2, 1),
                be32(3, 4),
                nested(4, attr(1, struct.pack("=I", mask))),
                nested(5, attr(1, b"\0\0\0\0")),
            )
            return [ct, bitwise, _cmp(1, b"\0\0\0\0"), _immediate(words[3])]
        if text.startswith("icmpv6 type { ") and text.endswith(" } accept"):
            names = text[len("icmpv6 type { ") : -len(" } accept")].split(", ")
            if any(n not in ICMPV6_TYPES for n in names):
                raise NotEncodable(text)
            set_id = self.anonymous_set([ICMPV6_TYPES[n] for n in names])
            payload = _expr("payload", be32(1, 1), be32(2, 2), be32(3, 0), be32(4, 1))  # transport header, 1 byte
            lookup = _expr("lookup", be32(2, 1), strz(1, "__set%d"), be32(4, set_id))
            return [
                _meta("nfproto"),
                _cmp(0, bytes([NFPROTO_IPV6])),
                _meta("l4proto"),
                _cmp(0, bytes([IPPROTO_ICMPV6])),
                payload,
                lookup,
                _immediate("accept"),
            ]
        if text.startswith("limit rate "):
            return _limit_log(text)
        if text == "counter drop":
            return [_expr("counter"), _immediate("drop")]
        if text in FINAL:
            return [_immediate(text)]
        raise NotEncodable(f"rule {text!r}")

    def lookup(self, name: str, verdict_map: bool) -> bytes:
        ident = self.set_ids.get(name)
        return _expr(
            "lookup",
            be32(2, 1),  # NFTA_LOOKUP_SREG
            *((be32(3, 0),) if verdict_map else ()),  # NFTA_LOOKUP_DREG: the verdict register
            strz(1, name),
            *((be32(4, ident),) if ident is not None else ()),
        )

    def anonymous_set(self, keys: list[int]) -> int:
        set_id = self.new_id()
        self.emit(
            NFT_MSG_NEWSET,
            NLM_F_CREATE,
            strz(2, "__set%d"),
            be32(3, 0x3),  # NFT_SET_ANONYMOUS | NFT_SET_CONSTANT
            be32(4, 0x1D),  # icmpv6_type
            be32(5, 1),
            be32(10, set_id),
            nested(9, be32(1, len(keys))),  # NFTA_SET_DESC_SIZE
            attr(13, _ICMPV6_SET_UDATA),
        )
        elements = [nested(1, nested(1, attr(1, bytes([key])))) for key in keys]
        self.emit(NFT_MSG_NEWSETELEM, NLM_F_CREATE, strz(2, "__set%d"), be32(4, set_id), nested(3, *elements))
        return set_id


def _chain(chain: Chain) -> list[bytes]:
    out = [strz(3, chain.name)]  # NFTA_CHAIN_NAME
    if chain.hook is None:
        return out
    if chain.hook not in NF_INET_HOOKS or chain.priority not in PRIORITIES or chain.policy not in POLICIES:
        raise NotEncodable(f"base chain {chain.name}")
    hook = nested(4, be32(1, NF_INET_HOOKS[chain.hook]), be32(2, PRIORITIES[chain.priority]))
    return [*out, strz(7, "filter"), be32(5, POLICIES[chain.policy]), hook]


def _set(s: Set, set_id: int) -> list[bytes]:
    kind = _SET_KINDS.get((s.key_type, s.value_type, s.flags))
    if kind is None or s.comment:
        raise NotEncodable(f"set {s.name} of type {s.key_type}")
    flags, key_type, key_len, fields, udata = kind
    out = [strz(2, s.name), be32(3, flags), be32(4, key_type), be32(5, key_len)]
    if s.value_type is not None:
        out += [be32(6, NFT_DATA_VERDICT_TYPE), be32(7, 0)]
    out.append(be32(10, set_id))
    if fields:  # NFTA_SET_DESC → NFTA_SET_DESC_CONCAT → one NFTA_LIST_ELEM(NFTA_SET_FIELD_LEN) per field
        out.append(nested(9, nested(2, *(nested(1, be32(1, size)) for size in fields))))
    out.append(attr(13, udata))
    return out


def _dispatch_key_type(set_name: str) -> str:
    """Elements are encoded for the dispatch maps only: by index (`*_ifindex`) or by name (`*_ifaces`)."""
    if set_name.endswith("_ifindex"):
        return "iface_index"
    if set_name.endswith("_ifaces"):
        return "ifname"
    raise NotEncodable(f"elements of {set_name}")


def _dispatch_key(key_type: str, text: str) -> bytes:
    value = text.strip('"')
    if key_type == "iface_index":
        if not (value.strip().isdigit() and 0 < int(value) <= 0xFFFFFFFF):
            raise NotEncodable(f"interface index {text}")
        return struct.pack("=I", int(value))
    data = value.encode()
    if len(data) >= IFNAMSIZ:
        raise NotEncodable(f"interface name {text}")
    return data + b"\0" * (IFNAMSIZ - len(data))


def _verdict(text: str) -> bytes:
    """NFTA_DATA_VERDICT (shared.nft.nfnl.verdict) of the verdicts the pending table holds: FINAL and jumps."""
    data = verdict(text) if text in FINAL or text.startswith("jump ") else None
    if data is None:
        raise NotEncodable(f"verdict {text}")
    return data


def _comment_udata(written: str, kind: int) -> bytes:
    """The user data nft stores for a comment (NFTNL_UDATA_*_COMMENT, type 0, NUL-terminated): the text between
    the quotes of what shared.nft.objects.comment writes, so both ways store the same bytes."""
    if not written:
        return b""
    text = written.removeprefix(' comment "').removesuffix('"').encode() + b"\0"
    return attr(kind, bytes((0, len(text))) + text)


def _expr(name: str, *data: bytes) -> bytes:
    """One NFTA_LIST_ELEM of NFTA_RULE_EXPRESSIONS: NFTA_EXPR_NAME and NFTA_EXPR_DATA."""
    return nested(1, strz(1, name), nested(2, *data))


def _meta(key: str) -> bytes:
    return _expr("meta", be32(2, META_KEYS[key]), be32(1, 1))  # NFTA_META_KEY → NFTA_META_DREG reg 1


def _cmp(op: int, value: bytes) -> bytes:
    return _expr("cmp", be32(1, 1), be32(2, op), nested(3, attr(1, value)))  # NFT_CMP_EQ 0, NFT_CMP_NEQ 1


def _immediate(verdict: str) -> bytes:
    return _expr("immediate", be32(1, 0), nested(2, _verdict(verdict)))


def _limit_log(text: str) -> list[bytes]:
    """`limit rate N/UNIT burst B packets log prefix "P" group G queue-threshold Q` (shared.nft.render's drop log)."""
    head, quote_open, rest = text.partition(' log prefix "')
    prefix, quote_close, tail = rest.partition('" ')
    words, tail_words = head.split(" "), tail.split(" ")
    if (
        not (quote_open and quote_close)
        or len(words) != 6
        or words[3] != "burst"
        or words[5] != "packets"
        or len(tail_words) != 4
        or tail_words[0] != "group"
        or tail_words[2] != "queue-threshold"
    ):
        raise NotEncodable(f"rule {text!r}")
    rate, _, unit = words[2].partition("/")
    if not (rate.isdigit() and unit in LIMIT_UNITS and words[4].isdigit()):
        raise NotEncodable(f"rule {text!r}")
    if not (tail_words[1].isdigit() and tail_words[3].isdigit()):
        raise NotEncodable(f"rule {text!r}")
    limit = _expr(
        "limit",
        attr(1, struct.pack(">Q", int(rate))),  # NFTA_LIMIT_RATE
        attr(2, struct.pack(">Q", LIMIT_UNITS[unit])),  # NFTA_LIMIT_UNIT
        be32(3, int(words[4])),  # NFTA_LIMIT_BURST
        be32(4, 0),  # NFT_LIMIT_PKTS
        be32(5, 0),  # NFTA_LIMIT_FLAGS
    )
    log = _expr(
        "log",
        strz(2, prefix),  # NFTA_LOG_PREFIX
        attr(1, struct.pack(">H", int(tail_words[1]))),  # NFTA_LOG_GROUP
        attr(4, struct.pack(">H", int(tail_words[3]))),  # NFTA_LOG_QTHRESHOLD
    )
    return [limit, log]
