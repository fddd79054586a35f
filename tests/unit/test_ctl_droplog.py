"""`mnpctl drops --log` without a kernel: tcpdump's pcap of NFLOG packets decoded, and the listeners managed.

The pcap streams are built here the way tcpdump writes them (`-w -`: a pcap header in the host's byte order,
link type NFLOG, each record an NFLOG header and TLVs in host order); tests/integration/test_ctl_node.py reads
the real thing from tcpdump on a real nflog group. `FakeTcpdump` stands in for `nsenter … tcpdump`: it has said
`listening on`, writes its pcap, and waits to be terminated (or has failed).
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import ctl
from daemon.cli import drops as drops_cmd
from daemon.cli.droplog import (
    DropLog,
    Dropped,
    Headers,
    LogProblem,
    PcapError,
    parse_ip,
    parse_nflog,
    pcap_records,
)
from daemon.cli.errors import InspectError
from shared.nft.render import DROP_LOG_GROUP, drop_log_prefix, iface_token
from shared.rules import EGRESS, INGRESS
from shared.state import StateStore
from tests.unit.test_ctl_inspect import NOW, TABLE_JSON_ITEMS, FakeNode, entry, main, make, with_counters

LISTENING = (
    b"tcpdump: listening on nflog:667, link-type NFLOG (Linux netfilter log messages), snapshot length 512 bytes\n"
)
BUSY = b"tcpdump: Can't listen on group index: Operation not permitted\n"
T0 = NOW + 2.25  # 2026-05-09T07:35:27Z

# ----------------------------------------------------------------------------------------------- packets


def _ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack(">HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 64240, 0, 0)


def udp(sport: int, dport: int, data: bytes = b"x") -> bytes:
    return struct.pack(">HHHH", sport, dport, 8 + len(data), 0) + data


def ipv4(src: str, dst: str, proto: int, transport: bytes, fragment: int = 0) -> bytes:
    total = 20 + len(transport)
    return struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 7, fragment, 64, proto, 0, _ip(src), _ip(dst)) + transport


def ipv6(src: str, dst: str, next_header: int, transport: bytes, extensions: bytes = b"") -> bytes:
    length = len(extensions) + len(transport)
    return struct.pack(">IHBB16s16s", 6 << 28, length, next_header, 64, _ip(src), _ip(dst)) + extensions + transport


def nflog(prefix: str, payload: bytes, order: str = "<", family: int = 2) -> bytes:
    """An NFLOG record as the kernel builds it: packet header, prefix, an interface index, then the payload."""

    def tlv(kind: int, value: bytes) -> bytes:
        length = 4 + len(value)
        return struct.pack(f"{order}HH", length, kind) + value + b"\0" * (-length % 4)

    return (
        bytes([family, 0])
        + struct.pack(">H", DROP_LOG_GROUP)
        + tlv(1, b"\x08\x00\x01\x00")
        + tlv(10, prefix.encode() + b"\0")
        + tlv(4, struct.pack(">I", 3))
        + tlv(9, payload)
    )


def pcap(*records: tuple[float, bytes], order: str = "<", linktype: int = 239, snaplen: int = 512) -> bytes:
    out = struct.pack(f"{order}IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype)
    for stamp, data in records:
        cut = data[:snaplen]
        out += struct.pack(f"{order}IIII", int(stamp), round((stamp % 1) * 1e6), len(cut), len(data)) + cut
    return out


SYN = ipv4("10.1.0.7", "10.1.0.10", 6, tcp(43210, 9090, 0x02))
PREFIX = drop_log_prefix("net1", INGRESS)


# ----------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcap_records_of_either_byte_order(order: str) -> None:
    stream = io.BytesIO(pcap((T0, nflog(PREFIX, SYN, order)), (T0 + 1.5, nflog("other: ", b"", order)), order=order))
    (first_time, first, first_order), (second_time, second, _) = pcap_records(stream)
    assert (first_time, first_order) == (T0, order) and second_time == T0 + 1.5
    packet = parse_nflog(first, order)
    assert (packet.family, packet.group, packet.prefix, packet.payload) == (2, DROP_LOG_GROUP, PREFIX, SYN)
    assert parse_nflog(second, order).prefix == "other: "


def test_pcap_streams_it_refuses_or_ends_quietly() -> None:
    assert list(pcap_records(io.BytesIO(b""))) == []  # tcpdump ended before writing anything
    with pytest.raises(PcapError, match="not a pcap stream"):
        list(pcap_records(io.BytesIO(b"tcpdump: nflog: something\n" * 2)))
    with pytest.raises(PcapError, match="link type 1, not NFLOG"):
        list(pcap_records(io.BytesIO(pcap(linktype=1))))
    cut_short = pcap((T0, nflog(PREFIX, SYN)))[:-10]  # killed in the middle of a record
    assert list(pcap_records(io.BytesIO(cut_short))) == []
    with pytest.raises(PcapError):
        parse_nflog(b"\x02", "<")


@pytest.mark.parametrize(
    ("packet", "described"),
    [
        (SYN, "tcp 10.1.0.7:43210 → 10.1.0.10:9090 [S] (40 bytes)"),
        (ipv4("10.1.0.7", "10.1.0.10", 6, tcp(80, 43210, 0x12)), "tcp 10.1.0.7:80 → 10.1.0.10:43210 [S.] (40 bytes)"),
        (ipv4("10.1.0.10", "10.2.0.9", 17, udp(5353, 53)), "udp 10.1.0.10:5353 → 10.2.0.9:53 (29 bytes)"),
        (ipv4("10.1.0.7", "10.1.0.10", 132, struct.pack(">HHI", 5000, 36412, 0)),
         "sctp 10.1.0.7:5000 → 10.1.0.10:36412 (28 bytes)"),
        (ipv4("10.1.0.7", "10.1.0.10", 1, b"\x08\x00\x00\x00"), "icmp 10.1.0.7 → 10.1.0.10 echo-request (24 bytes)"),
        (ipv4("10.1.0.7", "10.1.0.10", 17, b"\x00\x01", fragment=185), "udp 10.1.0.7 → 10.1.0.10 (22 bytes)"),
        (ipv4("10.1.0.7", "10.1.0.10", 47, b"\x00" * 4), "proto 47 10.1.0.7 → 10.1.0.10 (24 bytes)"),
        (ipv6("fd00:1::7", "fd00:1::10", 6, tcp(43210, 8080, 0x02)),
         "tcp [fd00:1::7]:43210 → [fd00:1::10]:8080 [S] (60 bytes)"),
        (ipv6("fd00:1::10", "ff02::16", 0, b"\x8f\x00", extensions=b"\x3a\x00" + b"\x00" * 6),  # hop-by-hop, MLDv2
         "icmpv6 fd00:1::10 → ff02::16 mld2-listener-report (50 bytes)"),
        (ipv6("fd00:1::7", "fd00:1::10", 44, b"\x11\x00\x00\x00" * 2), "proto 44 fd00:1::7 → fd00:1::10 (48 bytes)"),
        (ipv6("fd00:1::7", "fd00:1::10", 58, b"\x99"), "icmpv6 fd00:1::7 → fd00:1::10 type 153 (41 bytes)"),
    ],
)  # fmt: skip
def test_parse_ip_describes_a_packet_like_tcpdump(packet: bytes, described: str) -> None:
    headers = parse_ip(packet)
    assert headers is not None and headers.describe() == described


def test_parse_ip_of_what_is_no_ip_packet_or_cut_short() -> None:
    assert parse_ip(b"") is None and parse_ip(b"\x60" + b"\x00" * 20) is None and parse_ip(b"\x10" * 40) is None
    assert parse_ip(SYN[:23]) == Headers("tcp", "10.1.0.7", "10.1.0.10", 40)  # no room for the ports
    assert parse_ip(SYN[:30]) == Headers("tcp", "10.1.0.7", "10.1.0.10", 40, 43210, 9090)  # nor for the flags


# ----------------------------------------------------------------------------------------------- listeners


class FakeTcpdump:
    """`nsenter … tcpdump -U -w - …`: has written `stderr` and `data`, then waits to be terminated — or has
    already exited with `exit_code`."""

    def __init__(self, data: bytes = b"", stderr: bytes = LISTENING, exit_code: int | None = None) -> None:
        out_read, self._out = os.pipe()
        err_read, self._err = os.pipe()
        self.stdout = os.fdopen(out_read, "rb")
        self.stderr = os.fdopen(err_read, "rb")
        os.write(self._out, data)
        os.write(self._err, stderr)
        self.returncode: int | None = None
        self.terminated = False
        if exit_code is not None:
            self._end(exit_code)

    def _end(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            os.close(self._out)
            os.close(self._err)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            raise subprocess.TimeoutExpired("tcpdump", timeout or 0.0)
        return self.returncode

    def terminate(self) -> None:
        self.terminated = True
        self._end(-15)

    def kill(self) -> None:
        self._end(-9)


class Spawner:
    """The spawn seam: one prepared FakeTcpdump per netns path, every argv recorded."""

    def __init__(self, by_netns: dict[str, FakeTcpdump | OSError]) -> None:
        self.by_netns = by_netns
        self.argvs: list[list[str]] = []

    def __call__(self, argv: list[str]) -> FakeTcpdump:
        self.argvs.append(argv)
        made = self.by_netns[argv[1].removeprefix("--net=")]
        if isinstance(made, OSError):
            raise made
        return made

    def close(self) -> None:
        for made in self.by_netns.values():
            if isinstance(made, FakeTcpdump):
                made.kill()
                made.stdout.close()
                made.stderr.close()


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    made = Spawner({})
    yield made
    made.close()


def events(log: DropLog, count: int) -> list[Dropped | LogProblem]:
    out = []
    while len(out) < count:
        event = log.next(5.0)
        assert event is not None, out
        out.append(event)
    return out


def test_one_tcpdump_per_pod_netns_and_its_drops_named_by_the_prefix(spawner: Spawner) -> None:
    web = [entry("c0ffee0001", "net1", "/run/netns/web"), entry("c0ffee0001", "eth0.100", "/run/netns/web")]
    db = [entry("d00d000002", "net1", "/run/netns/db", pod="red/db")]
    hashed = drop_log_prefix("eth0.100", EGRESS)
    web_tcpdump = spawner.by_netns["/run/netns/web"] = FakeTcpdump(
        pcap(
            (T0, nflog(PREFIX, SYN)),
            (T0 + 1, nflog("somebody else: ", SYN)),  # logged to the group by a rule that is not mnp's: skipped
            (T0 + 2, nflog(hashed.replace("eth0.100", iface_token("eth0.100")), SYN)),  # the token of an odd name
            (T0 + 3, nflog(PREFIX, b"\x00\x01")),
        )
    )
    spawner.by_netns["/run/netns/db"] = FakeTcpdump(stderr=LISTENING + BUSY, exit_code=1)
    with DropLog({"/run/netns/web": web, "/run/netns/db": db}, spawn=spawner, now=lambda: NOW) as log:
        log.start()
        assert log.wait_ready(5.0) == []
        got = events(log, 4)
        problems = [e for e in got if isinstance(e, LogProblem)]
        dropped = [e for e in got if isinstance(e, Dropped)]
        assert log.listening() == ["blue/web"]
    assert spawner.argvs == [
        ["nsenter", "--net=/run/netns/db", "--", "tcpdump", "-U", "-w", "-", "-s", "512", "-i", "nflog:667"],
        ["nsenter", "--net=/run/netns/web", "--", "tcpdump", "-U", "-w", "-", "-s", "512", "-i", "nflog:667"],
    ]
    assert [d.text() for d in dropped] == [
        "2026-05-09T07:35:27Z  blue/web net1 ingress: dropped tcp 10.1.0.7:43210 → 10.1.0.10:9090 [S] (40 bytes)",
        "2026-05-09T07:35:29Z  blue/web eth0.100 egress: dropped tcp 10.1.0.7:43210 → 10.1.0.10:9090 [S] (40 bytes)",
        "2026-05-09T07:35:30Z  blue/web net1 ingress: dropped a packet mnpctl cannot decode",
    ]
    assert dropped[0].to_json() == {
        "time": "2026-05-09T07:35:27Z",
        "dropped": {
            "pod": "blue/web",
            "containerID": "c0ffee0001",
            "ifname": "net1",
            "direction": "ingress",
            "packet": {"l4proto": "tcp", "saddr": "10.1.0.7", "daddr": "10.1.0.10", "sport": 43210, "dport": 9090,
                       "detail": "[S]", "length": 40},
        },
    }  # fmt: skip
    (busy,) = problems
    assert (busy.pod, busy.netns) == ("red/db", "/run/netns/db")
    assert busy.reason.startswith("nflog group 667 is taken in this netns (another `mnpctl drops --log` on the node?)")
    assert web_tcpdump.terminated, "leaving the context stops every tcpdump"
    assert log.listeners == {}


def test_a_tcpdump_that_cannot_start_or_ends_or_writes_nonsense(spawner: Spawner) -> None:
    pods = {f"/run/netns/{name}": [entry(f"c0ffee{name}", "net1", f"/run/netns/{name}", pod=f"ns/{name}")]
            for name in ("a", "b", "c", "d")}  # fmt: skip
    spawner.by_netns.update(
        {
            "/run/netns/a": OSError(2, "No such file or directory"),
            "/run/netns/b": FakeTcpdump(stderr=b"tcpdump: nflog: no such device\n", exit_code=1),
            "/run/netns/c": FakeTcpdump(b"this is not pcap at all!"),
            "/run/netns/d": FakeTcpdump(stderr=b"", exit_code=-9),
        }
    )
    with DropLog(pods, spawn=spawner, now=lambda: NOW) as log:
        log.start()
        assert sorted(log.listeners) == ["/run/netns/b", "/run/netns/c", "/run/netns/d"]
        log.wait_ready(5.0)
        reasons = {e.pod: e.reason for e in events(log, 4) if isinstance(e, LogProblem)}
    assert reasons == {
        "ns/a": "cannot run tcpdump: [Errno 2] No such file or directory",
        "ns/b": "tcpdump exited with status 1: tcpdump: nflog: no such device",
        "ns/c": "unreadable tcpdump output: not a pcap stream (magic 74686973)",
        "ns/d": "tcpdump killed by signal 9",
    }
    assert LogProblem(NOW, "ns/a", "/run/netns/a", "x").text() == "2026-05-09T07:35:25Z  ns/a: no drop log: x"


# ----------------------------------------------------------------------------------------------- drops --log


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    store = StateStore(str(tmp_path / "state"))
    store.write(entry("c0ffee0001", "net1", "/run/netns/web", ips=["10.1.0.10/24"]))
    store.write(entry("c0ffee0001", "net2", "/run/netns/web", ips=["10.3.0.10/24"], network="other"))
    return store


@pytest.fixture
def node() -> FakeNode:
    fake = FakeNode()
    fake.tables["/run/netns/web"] = with_counters(TABLE_JSON_ITEMS, {"ingress_net1": (7, 420)})
    return fake


def test_drops_log_prints_each_drop_between_the_samples(state: StateStore, node: FakeNode, spawner: Spawner) -> None:
    tcpdump = spawner.by_netns["/run/netns/web"] = FakeTcpdump(pcap((T0, nflog(PREFIX, SYN))))
    out, err = io.StringIO(), io.StringIO()
    rc = drops_cmd.drops(make(state, node), follow=False, log=True, interval=0.05, count=3, as_json=False, out=out,
                         err=err, spawn=spawner, which=lambda name: f"/usr/bin/{name}")  # fmt: skip
    lines = out.getvalue().splitlines()
    assert rc == 0 and err.getvalue() == ""
    assert lines[6] == (
        "drop log: nflog group 667 in 1 of 1 pod netns "
        "(at most 10 a second per interface and direction after a burst of 20)"
    )
    assert lines[7:] == [
        "2026-05-09T07:35:27Z  blue/web net1 ingress: dropped tcp 10.1.0.7:43210 → 10.1.0.10:9090 [S] (40 bytes)"
    ]  # and no counter grew: no delta lines
    assert tcpdump.terminated

    spawner.by_netns["/run/netns/web"] = FakeTcpdump(pcap((T0, nflog(PREFIX, SYN))))
    out = io.StringIO()
    drops_cmd.drops(make(state, node), follow=True, log=True, interval=0.05, count=2, as_json=True, out=out,
                    err=io.StringIO(), spawn=spawner, which=lambda name: name)  # fmt: skip
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [next(k for k in ("drops", "dropLog", "dropped") if k in d) for d in docs] == [
        "drops", "dropLog", "dropped", "drops"
    ]  # fmt: skip
    assert docs[1]["dropLog"] == {"group": 667, "listening": ["blue/web"], "starting": [], "pods": 1}
    assert docs[2]["dropped"]["packet"]["dport"] == 9090


def test_drops_log_without_tcpdump_follows_the_counters(state: StateStore, node: FakeNode, spawner: Spawner) -> None:
    out, err = io.StringIO(), io.StringIO()
    waits: list[float] = []
    rc = drops_cmd.drops(make(state, node), follow=True, log=True, interval=1.0, count=2, as_json=False, out=out,
                         err=err, spawn=spawner, which=lambda name: None, sleep=waits.append)  # fmt: skip
    assert rc == 0 and waits == [1.0] and spawner.argvs == []
    assert err.getvalue() == (
        "mnpctl drops: --log needs tcpdump, and 'tcpdump' is not installed (apt-get install tcpdump); "
        "following the counters only\n"
    )
    assert "drop log:" not in out.getvalue()


def test_drops_duration_bounds_a_follow(state: StateStore, node: FakeNode) -> None:
    clock = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    rc = drops_cmd.drops(make(state, node), follow=True, interval=2.0, count=None, duration=5.0, as_json=False,
                         out=io.StringIO(), err=io.StringIO(), sleep=sleep, clock=lambda: clock[0])  # fmt: skip
    assert rc == 0 and waits == [2.0, 2.0, 1.0]
    with pytest.raises(InspectError, match="--duration must be more than 0"):
        drops_cmd.drops(make(state, node), follow=True, interval=1, count=None, duration=0, as_json=False,
                        out=io.StringIO(), err=io.StringIO())  # fmt: skip


def test_drops_help_describes_the_log() -> None:
    rc, text, _ = main("drops", "--help")
    assert rc == 0 and "--log" in text and "nflog group 667" in text and "There is no per-packet drop log" not in text
    args = ctl.build_parser().parse_args(["drops", "--log", "--duration", "3", "--tcpdump", "/opt/tcpdump"])
    assert (args.log, args.follow, args.duration, args.tcpdump) == (True, False, 3.0, "/opt/tcpdump")
