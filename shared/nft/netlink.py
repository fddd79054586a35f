"""nfnetlink without a library in between: a NETLINK_NETFILTER socket of one pod netns, nftables element batches,
and the attribute codec both need (ctnetlink uses it too: daemon/conntrack.py).

Why raw: a delta of a few set elements costs the kernel microseconds, but libnftables first re-reads the whole
table into its cache (every element of every set) before it sends anything, and parses text both ways
(docs/benchmarks.md). Here the elements the renderer computed are encoded once and sent as one nfnetlink batch
(`BATCH_BEGIN … NEWSETELEM / DELSETELEM … BATCH_END`), which the kernel applies as one transaction: every
message or none (nfnetlink_rcv_batch aborts the whole batch on the first error and reports every error).
pyroute2 has the same messages (`pyroute2.netlink.nfnetlink.nftsocket`), but its sockets run an asyncio event
loop each, its `commit()` does not read the kernel's acknowledgements (so a refused batch would pass unseen),
and importing it costs memory and start-up time (docs/benchmarks.md, Policy change): the tests use it as an
independent decoder of what this module encodes (tests/unit/test_nft_netlink.py) instead.

The encodings are nft 1.0.6's, read from `nft --debug=mnl` (the kernel test checks the listed result):

* a field of a concatenation takes a multiple of 4 bytes (a register): address in network order, protocol one
  byte, port two bytes in network order, each zero-padded;
* a concatenated interval set (`ipv4_addr . inet_proto . inet_service`, the kernel's pipapo) takes one element
  with NFTA_SET_ELEM_KEY = the first point and NFTA_SET_ELEM_KEY_END = the last point, for ranges and single
  values alike;
* a one-field interval set (rbtree) takes two elements: the start, and `last + 1` flagged
  NFT_SET_ELEM_INTERVAL_END — none when the range ends at the top of the address space, where the start's user
  data says NFTNL_SET_ELEM_F_INTERVAL_OPEN instead (so `nft list` prints the prefix);
* an element's comment is user data type 0, NUL-terminated, exactly what the text form stores;
* a verdict map's element (the peer maps: address interval → `accept` or `jump <port group>`) carries
  NFTA_SET_ELEM_DATA { NFTA_DATA_VERDICT { code, chain } } on its start element.

A socket belongs to the network namespace it was opened in (netlink(7)), so it is opened on a short-lived
thread inside the pod netns (shared.netns.in_netns) and then used from any thread; it keeps the namespace alive
until closed, and every use checks that the path still names the namespace it was opened for.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from shared.errors import NetnsGone
from shared.netns import in_netns, netns_identity
from shared.nft.errors import NftError
from shared.nft.nfnl import (  # the codec's one home (re-exported: daemon/conntrack.py reads it from here)
    NETLINK_CAP_ACK,
    NETLINK_EXT_ACK,
    NETLINK_NETFILTER,
    NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_CTNETLINK,
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NFPROTO_UNSPEC,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    SOL_NETLINK,
    attr,
    attribute_list,
    attributes,
    be32,
    error_for,
    exchange,
    explanation,
    from_kernel,
    message,
    messages,
    nested,
    strz,
    verdict,
)

# The codec, re-exported for its users here (daemon/conntrack.py, the tests): its one home is shared.nft.nfnl.
__all__ = [
    "NFNL_SUBSYS_CTNETLINK",
    "NLM_F_ACK",
    "NLM_F_CREATE",
    "NLM_F_DUMP",
    "NLM_F_REQUEST",
    "attr",
    "attribute_list",
    "attributes",
    "be32",
    "error_for",
    "message",
    "messages",
    "nested",
]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from shared.nft.transaction import Transaction

SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33
BUFFER = 4 << 20

NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFT_MSG_GETTABLE, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM = 1, 4, 7, 10, 13
NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE, NFTA_SET_TABLE, NFTA_SET_NAME = 1, 1, 1, 1, 2
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_USERDATA, NFTA_SET_ELEM_KEY_END = (
    1,
    2,
    3,
    6,
    10,
)
NFTA_DATA_VALUE = 1
NFT_SET_ELEM_INTERVAL_END = 1
NFTNL_UDATA_SET_ELEM_COMMENT, NFTNL_UDATA_SET_ELEM_FLAGS = 0, 1
NFTNL_SET_ELEM_F_INTERVAL_OPEN = 1

# The elements of one message: its ELEMENTS attribute has a 16-bit length (nft splits likewise).
MAX_NEST = 60000


# ------------------------------------------------------------------------------------------ set elements

_FIELD_BYTES = {"ipv4_addr": 4, "ipv6_addr": 16, "inet_proto": 1, "inet_service": 2}


def _value(types: Sequence[str], points: Sequence[int]) -> bytes:
    if len(types) == 1:
        return points[0].to_bytes(_FIELD_BYTES[types[0]], "big")
    out = b""
    for field_type, point in zip(types, points, strict=True):
        size = _FIELD_BYTES[field_type]
        out += point.to_bytes(size, "big") + b"\0" * (-size % 4)
    return out


def _key(kind: int, value: bytes) -> bytes:
    return nested(kind, attr(NFTA_DATA_VALUE, value))


def _userdata(comment: str | None, open_end: bool) -> bytes:
    data = b""
    if comment:
        text = comment.encode() + b"\0"
        data += struct.pack("BB", NFTNL_UDATA_SET_ELEM_COMMENT, len(text)) + text
    if open_end:
        data += struct.pack("=BBI", NFTNL_UDATA_SET_ELEM_FLAGS, 4, NFTNL_SET_ELEM_F_INTERVAL_OPEN)
    return attr(NFTA_SET_ELEM_USERDATA, data) if data else b""


def _verdict_data(value: str) -> bytes:
    """NFTA_SET_ELEM_DATA of a verdict map's element: `accept`, `drop`, … or `jump chain` / `goto chain`."""
    data = verdict(value)
    if data is None:
        raise NftError(f"{value!r} is not a verdict")
    return nested(NFTA_SET_ELEM_DATA, data)


def encode_elements(
    key_type: str, key_text: str, comment: str | None, with_data: bool, value: str | None = None
) -> list[bytes]:
    """The NFTA_LIST_ELEM attributes of one element of an interval set or verdict map of `key_type` (`with_data`:
    its comment and its verdict `value`, for an add). Raises NftError for a key nft would refuse.

    A verdict map's element carries its verdict on the start element only, as nft sends it (the interval's end
    element has flags, no data)."""
    from shared.nft.fake import key_fields, parse_key, stored_comment  # the daemon's side only

    types = key_fields(key_type)
    fields = parse_key(key_type, key_text, interval=True)
    firsts = [lo for lo, _ in fields]
    lasts = [hi for _, hi in fields]
    note = stored_comment(comment) if with_data else None
    data = _verdict_data(value) if with_data and value is not None else b""
    if len(types) > 1:
        body = _key(NFTA_SET_ELEM_KEY, _value(types, firsts)) + _key(NFTA_SET_ELEM_KEY_END, _value(types, lasts))
        return [nested(NFTA_LIST_ELEM, body + data + _userdata(note, False))]
    top = (1 << (8 * _FIELD_BYTES[types[0]])) - 1
    open_end = lasts[0] == top
    start = _key(NFTA_SET_ELEM_KEY, _value(types, firsts)) + data + _userdata(note, open_end and with_data)
    out = [nested(NFTA_LIST_ELEM, start)]
    if not open_end:
        end = _key(NFTA_SET_ELEM_KEY, _value(types, [lasts[0] + 1])) + be32(
            NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END
        )
        out.append(nested(NFTA_LIST_ELEM, end))
    return out


def element_batch(tx: Transaction, key_type_of: Callable[[str], str], first_seq: int) -> tuple[bytes, int]:
    """`tx` — element operations only, as `render_update` gives — as one nfnetlink batch: a message per run of
    operations with the same verb on the same set (split where the attribute would exceed 64 KB). The batch and
    the sequence number of its last message (the only one that asks for an acknowledgement: errors are always
    reported). Raises NftError for an operation that is not an element add or delete."""
    bodies = _bodies(tx, key_type_of)
    if not bodies:
        return b"", first_seq  # nothing to send
    seq = first_seq
    out = [message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES, b"")]
    family = _family(tx.family)
    for n, (kind, flags, body) in enumerate(bodies):
        seq += 1
        ack = NLM_F_ACK if n == len(bodies) - 1 else 0  # only the last message asks for an acknowledgement
        out.append(message((NFNL_SUBSYS_NFTABLES << 8) | kind, flags | ack, seq, family, 0, body))
    out.append(message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES, b""))
    return b"".join(out), seq


# The encoded messages of the last deltas, by transaction: render_update hands the very same Transaction to
# every pod of a Deployment, so a policy change encodes its elements once, not once per pod.
_ENCODED: dict[int, tuple[Transaction, list[tuple[int, int, bytes]]]] = {}
_ENCODED_LOCK = threading.Lock()
ENCODED_CACHE = 64


def _bodies(tx: Transaction, key_type_of: Callable[[str], str]) -> list[tuple[int, int, bytes]]:
    with _ENCODED_LOCK:
        cached = _ENCODED.get(id(tx))
    if cached is not None and cached[0] is tx:
        return cached[1]
    from shared.nft.objects import Element

    runs: list[tuple[int, str, list[bytes]]] = []
    for op in tx.operations:
        obj = op.obj
        if not isinstance(obj, Element) or op.verb not in ("add", "delete"):
            raise NftError(f"not an element delta: {op.verb} {type(obj).__name__.lower()}")
        kind = NFT_MSG_NEWSETELEM if op.verb == "add" else NFT_MSG_DELSETELEM
        encoded = encode_elements(key_type_of(obj.set), obj.key, obj.comment, op.verb == "add", obj.value)
        if not runs or runs[-1][0] != kind or runs[-1][1] != obj.set:
            runs.append((kind, obj.set, []))
        runs[-1][2].extend(encoded)
    bodies = []
    for kind, set_name, elements in runs:
        head = strz(NFTA_SET_ELEM_LIST_TABLE, tx.table) + strz(NFTA_SET_ELEM_LIST_SET, set_name)
        flags = NLM_F_REQUEST | (NLM_F_CREATE if kind == NFT_MSG_NEWSETELEM else 0)
        chunk: list[bytes] = []
        size = 0
        for i, element in enumerate(elements):
            chunk.append(element)
            size += len(element)
            if size >= MAX_NEST or i + 1 == len(elements):
                bodies.append((kind, flags, head + nested(NFTA_SET_ELEM_LIST_ELEMENTS, *chunk)))
                chunk, size = [], 0
    with _ENCODED_LOCK:
        if len(_ENCODED) >= ENCODED_CACHE:
            _ENCODED.clear()
        _ENCODED[id(tx)] = (tx, bodies)
    return bodies


def _family(name: str) -> int:
    families = {"inet": NFPROTO_INET, "ip": 2, "ip6": 10}
    if name not in families:
        raise NftError(f"unsupported table family {name!r}")
    return families[name]


# ---------------------------------------------------------------------------------------------- the socket


def _open() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        _tune(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def _tune(sock: socket.socket) -> socket.socket:
    sock.connect((0, 0))  # unicast from the kernel alone: a pod's process cannot send to it (nfnl.from_kernel)
    for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
        sock.setsockopt(SOL_NETLINK, option, 1)
    for forced, plain in ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, BUFFER)
        except OSError:  # without CAP_NET_ADMIN: as large as net.core.[rw]mem_max allows
            sock.setsockopt(socket.SOL_SOCKET, plain, BUFFER)
    return sock


class NfnetlinkSocket:
    """A NETLINK_NETFILTER socket opened inside the network namespace `netns` (None: this process's own) and
    kept; one user at a time (a lock). `batch` sends a transaction and waits for the kernel's verdict; `dump`
    reads a dump (ctnetlink's table)."""

    TIMEOUT_S = 10.0

    def __init__(self, netns: str | None, adopted: tuple[socket.socket, tuple[int, int]] | None = None) -> None:
        """`adopted`: a bound socket of `netns` opened elsewhere, and the identity of the namespace it belongs to
        (the CNI plugin's, taken from daemon/keeper.py), used instead of opening one."""
        self.netns = netns
        if netns is None:
            self.identity = None
            self.sock = _open()
        elif adopted is not None:
            try:
                self.sock, self.identity = _tune(adopted[0]), adopted[1]
            except BaseException:
                adopted[0].close()
                raise
        else:
            self.identity = netns_identity(netns)
            self.sock = in_netns(netns, _open)
        self.sock.settimeout(self.TIMEOUT_S)
        self._seq = 0
        self._lock = threading.Lock()

    def check(self) -> socket.socket:
        if self.netns is not None and netns_identity(self.netns) != self.identity:
            raise NetnsGone(f"{self.netns} names another network namespace now")
        return self.sock

    def next_seq(self, count: int) -> int:
        """The first of `count` fresh sequence numbers."""
        first = self._seq + 1
        self._seq = (self._seq + count) & 0x7FFFFFFF
        return first

    def batch(self, build: Callable[[int], tuple[bytes, int]], what: str) -> None:
        """Send the batch `build(first_seq)` returns (bytes, the sequence number of its last message, the one
        asking for an acknowledgement) and wait until the kernel acknowledges it. Raises the typed NftError of the
        first error the kernel reports (then it applied nothing), NetnsGone, or NftError on a socket failure."""
        with self._lock:
            sock = self.check()
            data, last = build(self._seq + 1)
            if not data:
                return
            self._seq = (last + 1) & 0x7FFFFFFF
            try:
                exchange(sock, data, last, what)
            except TimeoutError as exc:
                raise NftError(f"{what}: no answer from the kernel in {self.TIMEOUT_S:.0f} s") from exc
            except OSError as exc:
                raise NftError(f"{what}: netlink: {exc}") from exc

    def dump(self, request: Callable[[int], bytes], what: str) -> Iterator[tuple[int, bytes]]:
        """The (type, payload) of every message answering the dump request `request(seq)`."""
        out: list[tuple[int, bytes]] = []
        self.each(request, what, lambda kind, payload: out.append((kind, payload)))
        return iter(out)

    def each(self, request: Callable[[int], bytes], what: str, take: Callable[[int, bytes], object]) -> None:
        """`take(type, payload)` for every message answering the dump request `request(seq)`, as they arrive:
        the whole dump is read, nothing of it kept here."""
        with self._lock:
            sock = self.check()
            seq = self.next_seq(1)
            try:
                sock.sendall(request(seq))
                while True:
                    for kind, _, got, payload in messages(from_kernel(sock, 1 << 20)):
                        if got != seq:
                            continue
                        if kind == NLMSG_DONE:
                            return
                        if kind == NLMSG_ERROR:
                            code = struct.unpack_from("=i", payload)[0]
                            if code:
                                raise error_for(-code, what, explanation(payload))
                            return
                        take(kind, payload)
            except TimeoutError as exc:
                raise NftError(f"{what}: no answer from the kernel in {self.TIMEOUT_S:.0f} s") from exc
            except OSError as exc:
                raise NftError(f"{what}: netlink: {exc}") from exc

    def request(self, build: Callable[[int], bytes], what: str) -> None:
        """Send one request asking for an acknowledgement; raise the typed error the kernel answers."""
        with self._lock:
            sock = self.check()
            seq = self.next_seq(1)
            try:
                sock.sendall(build(seq))
                while True:
                    for kind, _, got, payload in messages(from_kernel(sock, 1 << 16)):
                        if kind == NLMSG_ERROR and got == seq:
                            code = struct.unpack_from("=i", payload)[0]
                            if code:
                                raise error_for(-code, what, explanation(payload))
                            return
            except TimeoutError as exc:
                raise NftError(f"{what}: no answer from the kernel in {self.TIMEOUT_S:.0f} s") from exc
            except OSError as exc:
                raise NftError(f"{what}: netlink: {exc}") from exc

    def close(self) -> None:
        self.sock.close()


def table_objects(sock: NfnetlinkSocket, family: str, table: str, limit: int) -> int:
    """How many chains, rules, sets and set elements table `family` `table` holds — what a listing through
    libnftables holds in memory at once (measured: about 0.7 KB an element) — from netlink dumps counted as
    they arrive, nothing kept; once past `limit`, the count stops growing and the sets' elements go uncounted.
    NotFoundError when there is no such table."""
    proto, name = _family(family), table.encode() + b"\0"
    count = 0
    sets: list[str] = []

    def request(kind: int, body: bytes, flags: int = NLM_F_DUMP) -> Callable[[int], bytes]:
        return lambda seq: message((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | flags, seq, proto, 0, body)

    def of_table(key: int, payload: bytes) -> dict[int, bytes] | None:
        found = attributes(payload, 4)  # after nfgenmsg
        return found if found.get(key) == name else None  # a kernel that does not filter the dump

    def chain(_: int, payload: bytes) -> None:
        nonlocal count
        count += of_table(NFTA_CHAIN_TABLE, payload) is not None

    def rule(_: int, payload: bytes) -> None:
        nonlocal count
        count += of_table(NFTA_RULE_TABLE, payload) is not None

    def named_set(_: int, payload: bytes) -> None:
        nonlocal count
        found = of_table(NFTA_SET_TABLE, payload)
        if found is not None and count <= limit:
            count += 1
            sets.append(found.get(NFTA_SET_NAME, b"").rstrip(b"\0").decode(errors="replace"))

    def elements(_: int, payload: bytes) -> None:
        nonlocal count
        listed = attributes(payload, 4).get(NFTA_SET_ELEM_LIST_ELEMENTS)
        if listed is not None and count <= limit:
            count += sum(1 for _ in attribute_list(listed))

    what = f"counting the objects of table {family} {table}"
    sock.request(request(NFT_MSG_GETTABLE, strz(NFTA_TABLE_NAME, table), NLM_F_ACK), what)  # NotFoundError
    sock.each(request(NFT_MSG_GETCHAIN, b""), what, chain)
    sock.each(request(NFT_MSG_GETRULE, strz(NFTA_RULE_TABLE, table)), what, rule)
    sock.each(request(NFT_MSG_GETSET, strz(NFTA_SET_TABLE, table)), what, named_set)
    for set_name in sets:
        if count > limit:
            break
        body = strz(NFTA_SET_ELEM_LIST_TABLE, table) + strz(NFTA_SET_ELEM_LIST_SET, set_name)
        sock.each(request(NFT_MSG_GETSETELEM, body), what, elements)
    return count


@contextlib.contextmanager
def opened(netns: str) -> Iterator[NfnetlinkSocket]:
    """A socket of `netns` for one use, closed after it (where no backend keeps one)."""
    sock = NfnetlinkSocket(netns)
    try:
        yield sock
    finally:
        sock.close()
