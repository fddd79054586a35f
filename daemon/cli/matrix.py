"""`mnpctl matrix DIR [--probes FILE] [--json]`: who may talk to whom, offline, from manifests.

DIR is read with `shared.manifests.load_dir`; the probes come from FILE, else DIR/probes.yaml, else every
ordered pair of distinct pods sharing a network × every containerPort of the destination (`shared.probes`).
Each probe is decided by the reference evaluator (`shared.evaluate`), which names the deciding policy and rule
or says why an endpoint is not isolated. No cluster, no root, no network access.

Exit status: 2 when any input is unreadable or invalid (every bad object and field is named on stderr; the valid
objects are still evaluated, and invalid policies take part as the fail-closed rule says), else 1 when a probe's
`expect` is not met, else 0.

The prediction itself (`Record`, `evaluate_probes`, `load_probes`) is shared/predict.py, which `mnpctl lab` also
compares its observed packets with; this module is the command line and the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from daemon.cli import Subparsers
from daemon.cli.exitcodes import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from daemon.cli.output import BOLD, GREEN, RED, YELLOW, table, use_colour
from shared.manifests import Manifests, load_dir
from shared.predict import Record, evaluate_probes, load_probes

# ------------------------------------------------------------------------------------------- output


def render_table(records: list[Record], colour: bool) -> str:
    networks = {r.network for r in records if r.network}
    expectations = any(r.probe.expect is not None for r in records)
    header = ["FROM", "TO", "PORT/PROTO"]
    header += ["NETWORK"] if len(networks) > 1 else []
    header += ["VERDICT"] + (["EXPECTED"] if expectations else []) + ["REASON"]
    rows: list[list[str]] = []
    colours: list[list[str | None]] = []
    for r in records:
        verdict = r.verdict
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
                f"got {r.verdict} ({r.reason})",
                file=err,
            )
    if invalid:
        errors = sum(p.startswith("error") for p in problems)
        print(f"invalid input: {errors} error(s); valid objects were still evaluated", file=err)
        return EXIT_INVALID
    return EXIT_FAILED if missed else EXIT_OK
