"""The drop log behind `mnpctl drops --log`: each packet mnp's default deny drops, one line, read from nflog.

Every isolated chain sends what it is about to drop to an nflog group in the pod's own netns, rate-limited —
`limit rate 10/second burst 20 packets log prefix "mnp drop <ifname> <direction>: " group 667`, just before the
counted drop (shared.nft.render.drop_log_rule). The kernel hands such a message to the listener bound to that
group in that netns, or discards it at once when there is none: nothing is logged until someone listens.
`DropLog` listens — one `nsenter --net=PATH tcpdump -U -w - -i nflog:667` per pod netns while `mnpctl drops
--log` runs, every one of them stopped when it ends (Ctrl-C, SIGTERM, `--count`, `--duration`, an error; a
tcpdump left behind by a SIGKILLed mnpctl ends at its next packet, on the closed pipe).

tcpdump's text output shows a logged packet but not its nflog prefix, which is what says which interface and
direction dropped it; so tcpdump writes pcap (`-w -`), and this module reads the pcap stream, the NFLOG link
layer's TLVs (prefix, payload) and the IPv4/IPv6 and TCP/UDP/SCTP/ICMP headers — enough for one line per packet:

    2026-05-09T07:35:27Z  ns1/a net1 ingress: dropped tcp 10.243.0.52:43210 → 10.243.0.10:9090 [S] (60 bytes)

The rule's limit applies per interface and direction (a burst of 20, then 10 a second), so the log samples a
flood while the counters count every packet. One listener per group and netns can bind: a second `mnpctl drops
--log` on the node (or a listener of the pod's own on the group) fails for that pod, and says so.
"""

from __future__ import annotations

import ipaddress
import queue
import re
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from shared.netns import netns_command
from shared.nft.render import DROP_LOG_BURST, DROP_LOG_GROUP, DROP_LOG_PREFIX, DROP_LOG_RATE, iface_token
from shared.state import StateEntry

SNAPLEN = 512  # the NFLOG TLVs before the payload, then the IP and transport headers of the payload
STOP_TIMEOUT = 2.0  # seconds a tcpdump gets to end after SIGTERM before SIGKILL
LIMIT = f"at most {DROP_LOG_RATE.replace('/', ' a ')} per interface and direction after a burst of {DROP_LOG_BURST}"

LINKTYPE_NFLOG = 239
NFULA_PAYLOAD, NFULA_PREFIX = 9, 10
_TLV_TYPE = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
# pcap magic → (byte order of the headers, seconds per unit of the fraction)
_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PREFIX = re.compile(rf"^{re.escape(DROP_LOG_PREFIX)}(?P<ifname>\S+) (?P<direction>ingress|egress): $")
_BUSY = "Can't listen on group index: Operation not permitted"

_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
_TCP_FLAGS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "."), (0x20, "U"), (0x40, "E"), (0x80, "W"))
_ICMP_TYPES = {0: "echo-reply", 3: "destination-unreachable", 5: "redirect", 8: "echo-request", 11: "time-exceeded"}
_ICMPV6_TYPES = {
    1: "destination-unreachable",
    2: "packet-too-big",
    3: "time-exceeded",
    128: "echo-request",
    129: "echo-reply",
    130: "mld-listener-query",
    131: "mld-listener-report",
    132: "mld-listener-done",
    143: "mld2-listener-report",
}
_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options: skipped to the transport header


def utc_stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


# ------------------------------------------------------------------------------------------- decoding


class PcapError(ValueError):
    """tcpdump's output is not the pcap stream of NFLOG packets it should be."""


def pcap_records(stream: IO[bytes]) -> Iterator[tuple[float, bytes, str]]:
    """(time, data, byte order) of each record of a pcap stream of NFLOG packets, as they arrive; ends at EOF."""
    header = _read(stream, 24)
    if header is None:
        return
    if header[:4] not in _PCAP_MAGIC:
        raise PcapError(f"not a pcap stream (magic {header[:4].hex()})")
    order, unit = _PCAP_MAGIC[header[:4]]
    (linktype,) = struct.unpack(f"{order}I", header[20:24])
    if linktype & 0x0FFFFFFF != LINKTYPE_NFLOG:
        raise PcapError(f"link type {linktype}, not NFLOG ({LINKTYPE_NFLOG})")
    while True:
        head = _read(stream, 16)
        if head is None:
            return
        seconds, fraction, caplen, _ = struct.unpack(f"{order}IIII", head)
        data = _read(stream, caplen)
        if data is None:
            return
        yield seconds + fraction * unit, data, order


def _read(stream: IO[bytes], size: int) -> bytes | None:
    """Exactly `size` bytes, or None at the end of the stream."""
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@dataclass(frozen=True)
class NflogPacket:
    family: int  # 2 (AF_INET) or 10 (AF_INET6)
    group: int
    prefix: str
    payload: bytes  # the network-layer packet, cut at the snap length


def parse_nflog(data: bytes, order: str) -> NflogPacket:
    """One NFLOG record: a 4-byte header (family, version, group) and TLVs, whose length and type are in the
    capturing host's byte order (the pcap header's), each padded to 4 bytes."""
    if len(data) < 4:
        raise PcapError("NFLOG record shorter than its header")
    (group,) = struct.unpack(">H", data[2:4])
    prefix, payload, offset = "", b"", 4
    while offset + 4 <= len(data):
        length, kind = struct.unpack(f"{order}HH", data[offset : offset + 4])
        if length < 4:
            break
        value = data[offset + 4 : offset + length]  # the payload may be cut by the snap length
        if kind & _TLV_TYPE == NFULA_PREFIX:
            prefix = value.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind & _TLV_TYPE == NFULA_PAYLOAD:
            payload = value
        offset += (length + 3) & ~3
    return NflogPacket(data[0], group, prefix, payload)


@dataclass(frozen=True)
class Headers:
    """What a drop log line says about a packet."""

    l4proto: str  # tcp | udp | sctp | icmp | icmpv6 | the protocol number
    saddr: str
    daddr: str
    length: int  # of the IP packet
    sport: int | None = None
    dport: int | None = None
    detail: str = ""  # TCP flags as tcpdump writes them ([S], [S.] …), an ICMP type

    def describe(self) -> str:
        def end(address: str, port: int | None) -> str:
            if port is None:
                return address
            return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

        detail = f" {self.detail}" if self.detail else ""
        return (
            f"{self.l4proto} {end(self.saddr, self.sport)} → {end(self.daddr, self.dport)}{detail} "
            f"({self.length} bytes)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "l4proto": self.l4proto,
            "saddr": self.saddr,
            "daddr": self.daddr,
            "sport": self.sport,
            "dport": self.dport,
            "detail": self.detail,
            "length": self.length,
        }


def parse_ip(packet: bytes) -> Headers | None:
    """The addresses, protocol, ports and TCP flags or ICMP type of an IPv4 or IPv6 packet; None if it is none."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        header = (packet[0] & 0x0F) * 4
        (length,) = struct.unpack(">H", packet[2:4])
        (fragment,) = struct.unpack(">H", packet[6:8])
        proto = packet[9]
        saddr, daddr = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
        transport = b"" if fragment & 0x1FFF else packet[header:]  # a later fragment has no transport header
    elif len(packet) >= 40 and packet[0] >> 4 == 6:
        length = struct.unpack(">H", packet[4:6])[0] + 40
        proto, offset = packet[6], 40
        saddr, daddr = str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))
        while proto in _IPV6_EXTENSIONS and len(packet) >= offset + 2:
            proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
        transport = b"" if proto == 44 else packet[offset:]  # a fragment header: not decoded further
    else:
        return None
    name = _PROTOCOLS.get(proto, f"proto {proto}")
    sport = dport = None
    detail = ""
    if name in ("tcp", "udp", "sctp") and len(transport) >= 4:
        sport, dport = struct.unpack(">HH", transport[:4])
        if name == "tcp" and len(transport) >= 14:
            detail = "[" + "".join(letter for bit, letter in _TCP_FLAGS if transport[13] & bit) + "]"
    elif name in ("icmp", "icmpv6") and transport:
        types = _ICMP_TYPES if name == "icmp" else _ICMPV6_TYPES
        detail = types.get(transport[0], f"type {transport[0]}")
    return Headers(name, saddr, daddr, length, sport, dport, detail)


# ------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Dropped:
    """One logged drop."""

    time: float
    pod: str
    container_id: str
    netns: str
    ifname: str
    direction: str  # ingress | egress
    headers: Headers | None  # None: not an IP packet (or cut before its addresses)

    def text(self) -> str:
        what = self.headers.describe() if self.headers else "a packet mnpctl cannot decode"
        return f"{utc_stamp(self.time)}  {self.pod} {self.ifname} {self.direction}: dropped {what}"

    def to_json(self) -> dict[str, Any]:
        return {
            "time": utc_stamp(self.time),
            "dropped": {
                "pod": self.pod,
                "containerID": self.container_id,
                "ifname": self.ifname,
                "direction": self.direction,
                "packet": self.headers.to_json() if self.headers else None,
            },
        }


@dataclass(frozen=True)
class LogProblem:
    """The drop log of one pod netns cannot be read (tcpdump failed or ended)."""

    time: float
    pod: str
    netns: str
    reason: str

    def text(self) -> str:
        return f"{utc_stamp(self.time)}  {self.pod}: no drop log: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "time": utc_stamp(self.time),
            "dropLogError": {"pod": self.pod, "netns": self.netns, "reason": self.reason},
        }


Event = Dropped | LogProblem


# ------------------------------------------------------------------------------------------- listeners


class Process(Protocol):
    """What DropLog uses of a `subprocess.Popen` (tests give a fake)."""

    @property
    def stdout(self) -> IO[bytes] | None: ...

    @property
    def stderr(self) -> IO[bytes] | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


Spawn = Callable[[list[str]], Process]


def spawn_process(argv: list[str]) -> Process:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@dataclass
class _Listener:
    netns: str
    pod: str
    container_id: str
    ifnames: dict[str, str]  # what the prefix may say (the name, or its token) → the interface name
    process: Process
    ready: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


class DropLog:
    """One tcpdump on the drop log's nflog group in each pod netns; their drops and problems on one queue.

    `start()` spawns them all (before any reader thread exists), `wait_ready()` waits until each says it listens
    (or ended), `next()` gives the next event, `stop()` ends one or all. A context manager: leaving it stops all."""

    def __init__(
        self,
        by_netns: Mapping[str, Sequence[StateEntry]],
        *,
        tcpdump: str = "tcpdump",
        group: int = DROP_LOG_GROUP,
        spawn: Spawn = spawn_process,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.by_netns = {netns: list(entries) for netns, entries in by_netns.items() if entries}
        self.tcpdump = tcpdump
        self.group = group
        self.spawn = spawn
        self.now = now
        self.events: queue.Queue[Event] = queue.Queue()
        self.listeners: dict[str, _Listener] = {}

    def argv(self, netns: str) -> list[str]:
        capture = [self.tcpdump, "-U", "-w", "-", "-s", str(SNAPLEN), "-i", f"nflog:{self.group}"]
        return netns_command(netns, capture)

    def __enter__(self) -> DropLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for netns, entries in sorted(self.by_netns.items()):
            first = entries[0]
            pod = first.pod or first.container_id[:12]
            try:
                process = self.spawn(self.argv(netns))
            except OSError as exc:
                self.events.put(LogProblem(self.now(), pod, netns, f"cannot run {self.tcpdump}: {exc}"))
                continue
            names = {e.ifname: e.ifname for e in entries} | {iface_token(e.ifname): e.ifname for e in entries}
            self.listeners[netns] = _Listener(netns, pod, first.container_id, names, process)
        for listener in self.listeners.values():
            for target in (self._read_packets, self._read_errors):
                thread = threading.Thread(
                    target=target, args=(listener,), daemon=True, name=f"droplog {listener.pod} {target.__name__}"
                )
                listener.threads.append(thread)
                thread.start()

    def wait_ready(self, timeout: float) -> list[str]:
        """Wait until every listener listens or ended; the pods of those that did neither within `timeout`."""
        deadline = time.monotonic() + timeout
        late = []
        for listener in self.listeners.values():
            if not listener.ready.wait(max(0.0, deadline - time.monotonic())):
                late.append(listener.pod)
        return late

    def listening(self) -> list[str]:
        """The pods whose tcpdump listens now."""
        return [x.pod for x in self.listeners.values() if x.ready.is_set() and x.process.poll() is None]

    def next(self, timeout: float) -> Event | None:
        """The next drop or problem, waiting at most `timeout` seconds."""
        try:
            return self.events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def stop(self, netns: str | None = None) -> None:
        """End the tcpdump of `netns` (all when None): SIGTERM, then SIGKILL after STOP_TIMEOUT."""
        chosen = [netns] if netns is not None else list(self.listeners)
        stopping = [self.listeners.pop(n) for n in chosen if n in self.listeners]
        for listener in stopping:
            listener.stopping.set()
            if listener.process.poll() is None:
                listener.process.terminate()
        for listener in stopping:
            try:
                listener.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                listener.process.kill()
                listener.process.wait()
            for thread in listener.threads:
                thread.join(timeout=STOP_TIMEOUT)
            if not any(thread.is_alive() for thread in listener.threads):
                for stream in (listener.process.stdout, listener.process.stderr):
                    if stream is not None:
                        stream.close()

    # -- the reader threads

    def _read_packets(self, listener: _Listener) -> None:
        stream = listener.process.stdout
        if stream is None:
            return
        try:
            for stamp, data, order in pcap_records(stream):
                event = self._dropped(listener, stamp, parse_nflog(data, order))
                if event is not None:
                    self.events.put(event)
        except Exception as exc:  # a reader must not die silently: whatever it is, the pod's log ends, and says why
            if not listener.stopping.is_set():
                self.events.put(
                    LogProblem(self.now(), listener.pod, listener.netns, f"unreadable tcpdump output: {exc}")
                )

    def _dropped(self, listener: _Listener, stamp: float, packet: NflogPacket) -> Dropped | None:
        m = _PREFIX.match(packet.prefix)
        if m is None:
            return None  # logged to the group by a rule that is not mnp's
        ifname = listener.ifnames.get(m["ifname"], m["ifname"])
        headers = parse_ip(packet.payload)
        return Dropped(stamp, listener.pod, listener.container_id, listener.netns, ifname, m["direction"], headers)

    def _read_errors(self, listener: _Listener) -> None:
        stream = listener.process.stderr
        if stream is not None:
            for raw in stream:
                line = raw.decode("utf-8", "replace").strip()
                if "listening on" in line:
                    listener.ready.set()
                elif line:
                    listener.stderr = [*listener.stderr[-4:], line]
        try:
            code = listener.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:  # stderr closed, the process still there: let stop() deal with it
            code = None
        listener.ready.set()
        if not listener.stopping.is_set():
            self.events.put(LogProblem(self.now(), listener.pod, listener.netns, self._why(code, listener.stderr)))

    def _why(self, code: int | None, stderr: list[str]) -> str:
        said = next((line for line in reversed(stderr) if "packets" not in line), "")
        if _BUSY in said:
            return (
                f"nflog group {self.group} is taken in this netns (another `mnpctl drops --log` on the node?), "
                f"or mnpctl lacks CAP_NET_ADMIN ({said})"
            )
        how = f"exited with status {code}" if code is not None and code >= 0 else "ended"
        if code is not None and code < 0:
            how = f"killed by signal {-code}"
        return f"{self.tcpdump} {how}" + (f": {said}" if said else "")
