"""shared.nft.nfnl against a hostile peer: datagrams another socket of the pod's namespace sends to ours.

Our sockets are connected to the kernel, which then refuses the others' (tests/integration/test_nft_netlink.py
shows it with real sockets); `from_kernel` checks the source again for a socket that is not — these tests feed it
forged datagrams directly and show that none of them is taken for the kernel's answer.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Iterator

import pytest

from shared.nft import nfnl
from shared.nft.errors import NftError

POD_PORT = 4242  # another socket's port id: anything but the kernel's 0


class _Socket:
    """Hands out the (datagram, (port id, groups)) pairs it was given, as recvfrom; keeps what was sent."""

    def __init__(self, datagrams: Iterable[tuple[bytes, int]]) -> None:
        self.datagrams: Iterator[tuple[bytes, int]] = iter(datagrams)
        self.sent: list[bytes] = []

    def sendall(self, data: bytes, /) -> None:
        self.sent.append(data)

    def recvfrom(self, size: int, /) -> tuple[bytes, tuple[int, int]]:
        data, source = next(self.datagrams)
        return data, (source, 0)


def _answer(seq: int, code: int) -> bytes:
    """An NLMSG_ERROR answering message `seq`: an acknowledgement (0) or a negative errno, with the capped header."""
    refused = struct.pack("=IHHII", 20, 0, 0, seq, 0)
    return struct.pack("=IHHII", 16 + 4 + len(refused), nfnl.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", code) + refused


def test_datagrams_of_other_sockets_are_dropped_and_a_flood_is_an_error() -> None:
    sock = _Socket([(b"forged", POD_PORT), (b"forged again", POD_PORT), (b"the kernel's", 0)])
    assert nfnl.from_kernel(sock, 1 << 16) == b"the kernel's"
    with pytest.raises(OSError, match="flooded"):
        nfnl.from_kernel(_Socket(itertools.repeat((b"forged", POD_PORT))), 1 << 16)


def test_a_forged_acknowledgement_does_not_pass_a_batch_the_kernel_refused() -> None:
    forged_ack = _answer(7, 0)
    refusal = _answer(7, -1)  # EPERM
    sock = _Socket([(forged_ack, POD_PORT), (refusal, 0)])
    with pytest.raises(NftError, match="test batch"):
        nfnl.exchange(sock, b"batch", 7, "test batch")
    assert sock.sent == [b"batch"]
    nfnl.exchange(_Socket([(refusal, POD_PORT), (forged_ack, 0)]), b"batch", 7, "test batch")  # the kernel's ack
