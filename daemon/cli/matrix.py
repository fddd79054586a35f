"""`mnpctl matrix DIR [--probes FILE] [--json]`: who may talk to whom, offline, from manifests.

DIR is read with `shared.manifests.load_dir`; the probes come from FILE, else DIR/probes.yaml, else every
ordered pair of distinct pods sharing a network × every containerPort of the destination (`shared.probes`).
Each probe is decided by the reference evaluator (`shared.evaluate`), which names the deciding policy and rule
or says why an endpoint is not isolated. No cluster, no root, no network access.

Exit status: 2 when any input is unreadable or invalid (every bad object and field is named on stderr; the valid
objects are still evaluated, and invalid policies take part as the fail-closed rule says), else 1 when a probe's
`expect` is not met, else 0.

`evaluate_probes` and `Record` are the prediction `mnpctl lab` compares its observed packets with.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from daemon.cli import Subparsers
from daemon.cli.output import BOLD, GREEN, RED, YELLOW, table, use_colour
from shared.evaluate import evaluate
from shared.manifests import PROBES_FILE, Manifests, load_dir
from shared.model import Cluster
from shared.probes import Probe, ResolvedProbe, default_probes, parse_probes, resolve

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


@dataclass(frozen=True)
class Record:
    """One probe and its verdict. `allowed` None: the probe could not be answered (`reason` says why)."""

    probe: Probe
    network: str | None
    allowed: bool | None
    reason: str

    @property
    def met(self) -> bool | None:
        """Whether the verdict is the expected one; None when the probe states no expectation."""
        if self.probe.expect is None:
            return None
        return self.allowed is not None and self.allowed == self.probe.expect

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "from": self.probe.source,
            "to": self.probe.target,
            "port": self.probe.port,
            "protocol": self.probe.protocol,
            "network": self.network,
            "allowed": self.allowed,
            "reason": self.reason,
        }
        if self.probe.expect is not None:
            out["expected"] = "allow" if self.probe.expect else "deny"
        return out


def evaluate_probe(cluster: Cluster, probe: Probe) -> Record:
    resolved = resolve(cluster, probe)
    if not isinstance(resolved, ResolvedProbe):
        return Record(probe, probe.network, None, resolved)
    verdict = evaluate(
        cluster, resolved.network, resolved.source.address, resolved.target.address, probe.protocol, probe.port
    )
    return Record(probe, resolved.network, verdict.allowed, verdict.reason)


def evaluate_probes(cluster: Cluster, probes: Iterable[Probe]) -> list[Record]:
    return [evaluate_probe(cluster, probe) for probe in probes]


def load_probes(directory: Path, file: Path | None, cluster: Cluster) -> tuple[list[Probe], list[str], str]:
    """The probes to ask, the problems of the probe file (each naming the file), and where they came from."""
    path = file if file is not None else directory / PROBES_FILE
    if file is None and not path.is_file():
        return default_probes(cluster), [], "every pod pair sharing a network × the destination's containerPorts"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"{path}: cannot read: {exc.strerror or exc}"], str(path)
    except UnicodeDecodeError as exc:
        return [], [f"{path}: cannot read: not UTF-8 text ({exc.reason})"], str(path)
    except yaml.YAMLError as exc:
        return [], [f"{path}: not valid YAML: {exc}"], str(path)
    probes, problems = parse_probes(raw, str(path))
    return probes, problems, str(path)


# ------------------------------------------------------------------------------------------- output


def _verdict(record: Record) -> str:
    return "error" if record.allowed is None else ("allow" if record.allowed else "deny")


def render_table(records: list[Record], colour: bool) -> str:
    networks = {r.network for r in records if r.network}
    expectations = any(r.probe.expect is not None for r in records)
    header = ["FROM", "TO", "PORT/PROTO"]
    header += ["NETWORK"] if len(networks) > 1 else []
    header += ["VERDICT"] + (["EXPECTED"] if expectations else []) + ["REASON"]
    rows: list[list[str]] = []
    colours: list[list[str | None]] = []
    for r in records:
        verdict = _verdict(r)
        row = [r.probe.source, r.probe.target, f"{r.probe.port}/{r.probe.protocol}"]
        tint: list[str | None] = [None, None, None]
        if len(networks) > 1:
            row.append(r.network or "-")
            tint.append(None)
        row.append(verdict)
        tint.append({"allow": GREEN, "deny": RED}.get(verdict, YELLOW))
        if expectations:
            if r.probe.expect is None:
                row.append("")
            else:
                wanted = "allow" if r.probe.expect else "deny"
                row.append(wanted if r.met else f"{wanted} (MISMATCH)")
            tint.append(None if r.met in (None, True) else BOLD + YELLOW)
        row.append(r.reason)
        tint.append(None)
        rows.append(row)
        colours.append(tint)
    return table(header, rows, colours, colour)


def _report(problems: list[str], stream: TextIO) -> None:
    for problem in problems:
        print(problem, file=stream)


# ------------------------------------------------------------------------------------------- command


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "matrix",
        help="what-if analysis: which probes the policies in a manifest directory allow (offline)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("directory", metavar="DIR", type=Path, help="directory of Kubernetes YAML manifests")
    parser.add_argument(
        "--probes",
        metavar="FILE",
        type=Path,
        help="YAML list of {from, to, port, protocol, network, expect} (default: DIR/probes.yaml, else every pod pair)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of records instead of a table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return matrix(args.directory, args.probes, args.json, sys.stdout, sys.stderr)


def matrix(directory: Path, probes_file: Path | None, as_json: bool, out: TextIO, err: TextIO) -> int:
    manifests: Manifests = load_dir(directory)
    problems = [str(p) for p in manifests.problems]
    invalid = bool(manifests.errors)
    if not directory.is_dir():
        _report(problems, err)
        return EXIT_INVALID
    probes, probe_problems, origin = load_probes(directory, probes_file, manifests.cluster)
    problems += [f"error: {p}" for p in probe_problems]
    invalid = invalid or bool(probe_problems)
    records = evaluate_probes(manifests.cluster, probes)
    unanswered = [r for r in records if r.allowed is None]
    problems += [
        f"error: probe {r.probe.source} -> {r.probe.target} {r.probe.port}/{r.probe.protocol}: {r.reason}"
        for r in unanswered
    ]
    invalid = invalid or bool(unanswered)
    if as_json:
        json.dump([r.to_json() for r in records], out, indent=2)
        out.write("\n")
    elif records:
        out.write(render_table(records, use_colour(out)))
    else:
        out.write(f"no probes ({origin})\n")
    _report(problems, err)
    missed = [r for r in records if r.met is False]
    if missed:
        print(f"{len(missed)} of {sum(r.met is not None for r in records)} expectations not met:", file=err)
        for r in missed:
            wanted = "allow" if r.probe.expect else "deny"
            print(
                f"  {r.probe.source} -> {r.probe.target} {r.probe.port}/{r.probe.protocol}: expected {wanted}, "
                f"got {_verdict(r)} ({r.reason})",
                file=err,
            )
    if invalid:
        errors = sum(p.startswith("error") for p in problems)
        print(f"invalid input: {errors} error(s); valid objects were still evaluated", file=err)
        return EXIT_INVALID
    return EXIT_FAILED if missed else EXIT_OK
