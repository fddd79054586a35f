"""The nfnetlink codec and one batch exchange, with nothing heavier than `struct` imported.

Its one home: the daemon's netlink backend (shared.nft.netlink, which re-exports it) and the CNI plugin's
prebuilt pending table (shared.nft.batch) both speak it. The plugin imports this on its ADD path, so it must not
pull in `socket` (selectors, array …), `threading` or `typing` (docs/benchmarks.md, CNI ADD): a socket here is any
object with `sendall` and `recv` — the C module's `_socket.socket` as well as `socket.socket`.
"""

from __future__ import annotations

import _socket
import errno
import os
import struct

from shared.nft.errors import BusyError, ExistsError, NftError, NotFoundError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Protocol

    class Sock(Protocol):
        def sendall(self, data: bytes, /) -> None: ...

        def recvfrom(self, size: int, /) -> tuple[bytes, tuple[int, int]]: ...


NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors carry only the header of the refused message, not all of it
NETLINK_EXT_ACK = 11  # errors carry the kernel's explanation (extack), when it gives one

NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP = 0x1, 0x4, 0x400, 0x300
NLM_F_APPEND = 0x800
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFPROTO_UNSPEC, NFPROTO_INET = 0, 1

NFTA_DATA_VERDICT, NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 2, 1, 2
# Verdict codes (include/uapi/linux/netfilter.h, nf_tables.h); the negative ones are sent as two's complement.
VERDICTS = {"drop": 0, "accept": 1, "continue": -1, "return": -5, "jump": -3, "goto": -4}

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_ATTR = struct.Struct("=HH")  # struct nlattr


def attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def strz(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def be32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">I", value))


def message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    """One nfnetlink message: nlmsghdr, nfgenmsg (family, version 0, resource id in network order), attributes."""
    payload = struct.pack("=BB", family, 0) + struct.pack(">H", res_id) + body
    return _HEADER.pack(_HEADER.size + len(payload), kind, flags, seq, 0) + payload


def verdict(text: str) -> bytes | None:
    """NFTA_DATA_VERDICT of `accept`, `drop`, … or `jump chain` / `goto chain` (its code, and its chain for a jump
    or goto), as nft sends it in a rule's immediate and a verdict map's element; None when `text` is no verdict."""
    kind, _, chain = text.partition(" ")
    if kind not in VERDICTS or bool(chain) != (kind in ("jump", "goto")) or " " in chain:
        return None
    code = attr(NFTA_VERDICT_CODE, struct.pack(">i", VERDICTS[kind]))
    return nested(NFTA_DATA_VERDICT, code + (strz(NFTA_VERDICT_CHAIN, chain) if chain else b""))


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The attributes in `data[offset:]` by type (nested flag cleared; the first of a repeated type)."""
    out: dict[int, bytes] = {}
    for kind, payload in attribute_list(data, offset):
        out.setdefault(kind, payload)
    return out


def attribute_list(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    end = len(data)
    while offset + _ATTR.size <= end:
        size, kind = _ATTR.unpack_from(data, offset)
        if size < _ATTR.size or offset + size > end:
            return
        yield kind & NLA_TYPE_MASK, data[offset + _ATTR.size : offset + size]
        offset += (size + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(type, flags, seq, payload) of each message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        size, kind, flags, seq, _ = _HEADER.unpack_from(data, offset)
        if size < _HEADER.size or offset + size > len(data):
            return
        yield kind, flags, seq, data[offset + _HEADER.size : offset + size]
        offset += (size + 3) & ~3


def error_for(code: int, what: str, explanation: str = "") -> NftError:
    """The typed error of a negative errno the kernel answered, worded like nft's (shared.nft.errors)."""
    text = f"{what}: {os.strerror(code)}" + (f" ({explanation})" if explanation else "")
    if code == errno.ENOENT:
        return NotFoundError(text)
    if code == errno.EEXIST:
        return ExistsError(text)
    if code == errno.EBUSY:
        return BusyError(text)
    return NftError(text)


# Datagrams from other sockets read and dropped before one answer: past this, the socket is being flooded.
MAX_FOREIGN = 10_000


def from_kernel(sock: Sock, size: int) -> bytes:
    """The next datagram the kernel sent to `sock`. Another socket of the namespace — a process with NET_ADMIN
    in a pod, where mnpd's kept sockets live — may send netlink messages to ours by its port id, with any type
    and sequence number (an acknowledgement, a dump's end); the kernel's come from port id 0. Our sockets are
    connected to the kernel, which then refuses the others' (ECONNREFUSED); this check holds for a socket that
    is not (one adopted from elsewhere). OSError when more than MAX_FOREIGN others come first."""
    for _ in range(MAX_FOREIGN):
        data, (source, _) = sock.recvfrom(size)
        if source == 0:
            return data
    raise OSError(f"flooded: more than {MAX_FOREIGN} netlink messages from other sockets")


def exchange(sock: Sock, data: bytes, last: int, what: str) -> None:
    """Send one batch (`data`, whose message `last` — the last one — asks for an acknowledgement) and wait for the
    kernel's verdict: return when it acknowledged `last`, raise the typed NftError of the first error it reports
    (then it applied nothing: nfnetlink_rcv_batch aborts the whole batch and reports every error). Socket errors
    (OSError, TimeoutError) are the caller's."""
    first = None
    sock.sendall(data)
    while True:
        for kind, _, seq, payload in messages(from_kernel(sock, 1 << 16)):
            if kind != NLMSG_ERROR or seq > last:
                continue
            code = struct.unpack_from("=i", payload)[0]
            if code and first is None:
                first = error_for(-code, what, explanation(payload))
            if seq == last or (code and seq < last and _is_begin(payload)):
                if first is not None:
                    raise first
                return


def _is_begin(payload: bytes) -> bool:
    """Whether an error answers a BATCH_BEGIN (the kernel then processed nothing else and says no more)."""
    if len(payload) < 4 + _HEADER.size:
        return False
    kind: int = _HEADER.unpack_from(payload, 4)[1]
    return kind == NFNL_MSG_BATCH_BEGIN


def explanation(payload: bytes) -> str:
    """The extack message of an error, if the kernel gave one (NLM_F_ACK_TLVS after the capped header)."""
    if len(payload) < 4 + _HEADER.size:
        return ""
    size = _HEADER.unpack_from(payload, 4)[0]
    offset = 4 + (_HEADER.size if len(payload) < 4 + size else size)
    text = attributes(payload, (offset + 3) & ~3).get(NLMSGERR_ATTR_MSG, b"")
    return text.rstrip(b"\0").decode(errors="replace")


def open_socket(timeout: float = 10.0) -> _socket.socket:
    """A bound NETLINK_NETFILTER socket of the calling thread's network namespace, asking for capped
    acknowledgements with the kernel's explanations; `timeout` seconds per receive (TimeoutError)."""
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.bind((0, 0))
        sock.connect((0, 0))  # messages from the kernel alone (`from_kernel`)
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            sock.setsockopt(SOL_NETLINK, option, 1)
        sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock
