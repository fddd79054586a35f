"""Real packets for every probe, compared with the prediction; the lab's matrix, as a table or as JSON.

The prediction of a probe is `mnpctl matrix`'s record for the lab's *runtime* manifests — DIR with the addresses
the CNI calls really gave (shared.predict.evaluate_probe). The observation runs the probe from the source's
netns, bound to the source address the prediction used, against a listener on the destination: a TCP handshake
plus a nonce echoed back, or a UDP datagram whose nonce comes back. Only the echo counts as allowed.

All probes run at once (one child process per source netns, a thread per probe) with a short timeout; a probe
predicted *allowed* that was not observed allowed is retried a few times (a lost first packet must not fail a
run), a probe predicted *denied* is never retried — one success is a hole. SCTP probes are reported as skipped,
never as passed (this lab does not send SCTP; many kernels, this project's CI among them, have none).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TextIO

from daemon.cli.output import BOLD, DIM, GREEN, RED, YELLOW, table
from daemon.testbed.netns import Probe as PacketProbe
from daemon.testbed.netns import ProbeResult, Proto, probe_matrix
from shared.model import Cluster
from shared.predict import Record, evaluate_probe
from shared.probes import Probe, ResolvedProbe, resolve

TIMEOUT = 0.5  # the first attempt; a denied probe costs exactly this, in parallel with all others
RETRY_TIMEOUTS = (1.0, 2.0)  # further attempts of a probe predicted allowed that was not observed allowed
DENIED = ("timeout", "eperm", "refused", "unreachable", "reset")
SKIPPED, NOT_RUN = "skipped", "not-run"


@dataclass(frozen=True)
class Observation:
    record: Record  # the prediction, as `mnpctl matrix` gives it
    resolved: ResolvedProbe | None
    outcome: str  # ProbeResult.outcome, or skipped / not-run
    detail: str = ""
    attempts: int = 0

    @property
    def observed(self) -> bool | None:
        """True allowed (the echo came back), False denied, None not observed (skipped, not run, error)."""
        if self.outcome == "ok":
            return True
        return False if self.outcome in DENIED else None

    @property
    def skipped(self) -> bool:
        return self.outcome == SKIPPED

    @property
    def as_predicted(self) -> bool:
        return self.observed is not None and self.observed == self.record.allowed

    @property
    def as_expected(self) -> bool | None:
        """Whether the observation meets the probe's `expect`; None without one."""
        expect = self.record.probe.expect
        return None if expect is None else self.observed is not None and self.observed == expect

    @property
    def passed(self) -> bool:
        return self.as_predicted and self.as_expected is not False

    @property
    def failed(self) -> bool:
        """Not skipped and not passed: a mismatch, an unmet expectation, an error or an unanswerable probe."""
        return not self.skipped and not self.passed

    def verdict(self) -> str:
        observed = self.observed
        if observed is None:
            return self.outcome if self.outcome in (SKIPPED, NOT_RUN) else f"error ({self.outcome})"
        return "allow" if observed else "deny"

    def to_json(self) -> dict[str, Any]:
        out = self.record.to_json()
        out["observed"] = self.observed
        out["outcome"] = self.outcome
        if self.detail:
            out["detail"] = self.detail
        out["attempts"] = self.attempts
        return out


def sctp_supported() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def predict(cluster: Cluster, probes: Iterable[Probe]) -> list[Observation]:
    """The prediction of every probe; nothing observed yet."""
    out = []
    for probe in probes:
        record = evaluate_probe(cluster, probe)
        resolved = resolve(cluster, probe)
        if not isinstance(resolved, ResolvedProbe) or record.allowed is None:
            out.append(Observation(record, None, NOT_RUN, record.reason))
        elif probe.protocol == "SCTP":
            why = "the lab does not send SCTP" if sctp_supported() else "this kernel has no SCTP"
            out.append(Observation(record, resolved, SKIPPED, why))
        else:
            out.append(Observation(record, resolved, NOT_RUN))
    return out


def endpoint_key(end: Any) -> str:
    """The lab's name for a probe end: the pod key, or the address of a host outside the cluster."""
    return str(end.pod.key) if end.pod is not None else str(end.address)


def listeners(observations: Iterable[Observation]) -> dict[str, list[tuple[Proto, int]]]:
    """What each destination must listen on for the probes (pods also listen on their containerPorts)."""
    wanted: dict[str, list[tuple[Proto, int]]] = {}
    for o in observations:
        if o.resolved is None or o.skipped:
            continue
        proto: Proto = "tcp" if o.record.probe.protocol == "TCP" else "udp"
        wanted.setdefault(endpoint_key(o.resolved.target), []).append((proto, o.record.probe.port))
    return wanted


def observe(
    observations: Sequence[Observation],
    netns_of: Callable[[ResolvedProbe, bool], str],
    *,
    timeouts: Sequence[float] = (TIMEOUT, *RETRY_TIMEOUTS),
) -> list[Observation]:
    """Run every runnable probe; `netns_of(resolved, source_side)` gives the netns path of an end. A probe
    predicted allowed and not observed allowed is tried again with each further timeout of `timeouts`."""
    done = list(observations)
    todo = [i for i, o in enumerate(done) if o.resolved is not None and not o.skipped]
    for attempt, limit in enumerate(timeouts):
        if not todo:
            break
        items: list[tuple[str | os.PathLike[str], PacketProbe]] = []
        for i in todo:
            o = done[i]
            assert o.resolved is not None
            r = o.resolved
            proto: Proto = "tcp" if o.record.probe.protocol == "TCP" else "udp"
            items.append(
                (
                    netns_of(r, True),
                    PacketProbe(proto, str(r.target.address), o.record.probe.port, limit, str(r.source.address)),
                )
            )
        results: list[ProbeResult] = probe_matrix(items)
        for i, result in zip(todo, results, strict=True):
            done[i] = replace(done[i], outcome=result.outcome, detail=result.detail, attempts=attempt + 1)
        todo = [i for i in todo if done[i].record.allowed and done[i].observed is not True]
    return done


# ------------------------------------------------------------------------------------------------ output


def _cell_colour(o: Observation) -> str | None:
    if o.skipped or o.outcome == NOT_RUN:
        return DIM
    if not o.as_predicted:
        return BOLD + YELLOW
    return GREEN if o.observed else RED


def render_table(observations: Sequence[Observation], colour: bool) -> str:
    networks = {o.record.network for o in observations if o.record.network}
    expectations = any(o.record.probe.expect is not None for o in observations)
    header = ["FROM", "TO", "PORT/PROTO"] + (["NETWORK"] if len(networks) > 1 else [])
    header += ["PREDICTED", "OBSERVED"] + (["EXPECTED"] if expectations else []) + ["REASON"]
    rows: list[list[str]] = []
    colours: list[list[str | None]] = []
    for o in observations:
        p, r = o.record.probe, o.record
        predicted = r.verdict
        row = [p.source, p.target, f"{p.port}/{p.protocol}"]
        tint: list[str | None] = [None, None, None]
        if len(networks) > 1:
            row.append(r.network or "-")
            tint.append(None)
        observed = o.verdict()
        if not o.skipped and o.observed is not None and not o.as_predicted:
            observed += " (MISMATCH)"
        row += [predicted, observed]
        tint += [{"allow": GREEN, "deny": RED}.get(predicted, YELLOW), _cell_colour(o)]
        if expectations:
            if p.expect is None:
                row.append("")
                tint.append(None)
            else:
                wanted = "allow" if p.expect else "deny"
                met = o.as_expected
                row.append(wanted if met or o.skipped else f"{wanted} (NOT MET)")
                tint.append(None if met or o.skipped else BOLD + YELLOW)
        reason = r.reason
        if o.skipped or o.outcome == NOT_RUN:
            reason = o.detail or reason
        elif o.observed is None or not o.as_predicted:
            reason = f"observed {o.outcome}" + (f": {o.detail}" if o.detail else "") + f"; predicted: {r.reason}"
        row.append(reason)
        tint.append(None)
        rows.append(row)
        colours.append(tint)
    return table(header, rows, colours, colour)


@dataclass(frozen=True)
class Summary:
    total: int
    passed: int
    mismatched: int  # observed, but not as predicted
    unmet: int  # observed as predicted, but not as the probe's `expect`
    errors: int  # not observable (probe error) or not answerable (no prediction)
    skipped: int

    @property
    def ok(self) -> bool:
        return self.mismatched == 0 and self.unmet == 0 and self.errors == 0

    def __str__(self) -> str:
        parts = [f"{self.passed} as predicted"]
        if self.mismatched:
            parts.append(f"{self.mismatched} MISMATCHED")
        if self.unmet:
            parts.append(f"{self.unmet} not as expected")
        if self.errors:
            parts.append(f"{self.errors} not observed (error)")
        if self.skipped:
            parts.append(f"{self.skipped} skipped (SCTP; not counted as passed)")
        return f"{self.total} probes: " + ", ".join(parts)


def summarise(observations: Sequence[Observation]) -> Summary:
    return Summary(
        total=len(observations),
        passed=sum(o.passed for o in observations),
        mismatched=sum(o.observed is not None and not o.as_predicted for o in observations),
        unmet=sum(o.as_predicted and o.as_expected is False for o in observations),
        errors=sum(not o.skipped and o.observed is None for o in observations),
        skipped=sum(o.skipped for o in observations),
    )


def write_json(observations: Sequence[Observation], out: TextIO) -> None:
    json.dump([o.to_json() for o in observations], out, indent=2)
    out.write("\n")


def by_key(observations: Iterable[Observation]) -> Mapping[tuple[str, str, int, str, str | None], Observation]:
    """Observations by (from, to, port, protocol, network) — for tests comparing with hand-written matrices."""
    return {
        (
            o.record.probe.source,
            o.record.probe.target,
            o.record.probe.port,
            o.record.probe.protocol,
            o.record.network,
        ): o
        for o in observations
    }
