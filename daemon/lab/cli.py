"""`mnpctl lab DIR [--probes FILE] [--json] [--keep]`: the manifests of DIR on a throwaway node, real packets.

As root, the lab builds a node in network namespaces (`mnplab-…`) from the manifests `mnpctl matrix` reads: the
NADs' master links, a netns per Pod attached through the NAD's real CNI chain (interface plugin and IPAM from
containernetworking-plugins, then the `mnp` plugin), a netns for every probe address no pod has (a host outside
the cluster), listeners on the destinations' ports, and `mnpd` reading the same manifests. When every interface is
programmed it sends the probes, prints predicted and observed verdicts side by side, and removes everything —
also on Ctrl-C or error; `--keep` leaves it running and prints how to look at it and remove it.

Exit status: 0 every probe observed as predicted (and as its `expect`, if any); 1 a mismatch, an unmet
expectation or a probe that could not be observed; 2 invalid input (as `mnpctl matrix`); 3 the lab could not be
built or run (not root, a CNI plugin missing, mnpd failing …). SCTP probes are reported as skipped and never
counted as passed. DIR is never written: the Pods, with the network-status the CNI calls produced, go to the
lab's own manifests dir under /run/mnplab/.

This module only parses the command line; the lab itself (daemon.lab.session and below) is imported when a lab
runs, so no other `mnpctl` command pays for loading it.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from daemon.cli import Subparsers
from daemon.cli.exitcodes import EXIT_INVALID, EXIT_LAB, EXIT_OK

# ------------------------------------------------------------------------------------------------ command


@contextlib.contextmanager
def _ignore_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored while the lab tears down (a second Ctrl-C must not leave debris)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lab",
        help="real packets: the manifests of DIR on a throwaway node with the real CNI chain and mnpd (root)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", metavar="DIR", type=Path, nargs="?", help="directory of Kubernetes YAML manifests")
    parser.add_argument(
        "--probes",
        metavar="FILE",
        type=Path,
        help="YAML list of {from, to, port, protocol, network, expect} (default: DIR/probes.yaml, else every pod pair)",
    )
    parser.add_argument("--json", action="store_true", help="print matrix's JSON records plus 'observed'")
    parser.add_argument("--keep", action="store_true", help="leave the lab running for inspection")
    parser.add_argument(
        "--down",
        metavar="WORKDIR",
        nargs="?",
        const="",
        help="remove a kept lab (its work dir under /run/mnplab); without WORKDIR, every lab whose mnpctl is gone",
    )
    parser.add_argument(
        "--plugin", metavar="PATH", help="the mnp plugin to chain (default: the frozen build, else the venv's)"
    )
    parser.set_defaults(run=run)


NOT_INSTALLED = (
    "mnpctl lab: the lab is not installed here (the mnp image leaves it and its test bed out); "
    "run it from a checkout or a `pip install mnp` on a test machine"
)


def run(args: argparse.Namespace) -> int:
    try:
        from daemon.lab.session import run_lab  # the lab's machinery loads only when a lab runs
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith(("daemon.lab.", "daemon.testbed")):
            raise
        print(NOT_INSTALLED, file=sys.stderr)
        return EXIT_LAB
    if args.down is not None:
        return _down(args.down)
    if args.directory is None:
        print("mnpctl lab: DIR is required (or --down)", file=sys.stderr)
        return EXIT_INVALID
    if not args.directory.is_dir():
        print(f"mnpctl lab: {args.directory} is not a directory", file=sys.stderr)
        return EXIT_INVALID
    previous = (
        signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        result = run_lab(
            args.directory,
            args.probes,
            as_json=args.json,
            keep=args.keep,
            plugin=args.plugin,
            shield=_ignore_interrupts,
        )
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return result.status


def _down(target: str) -> int:
    from daemon.lab import build as nodes
    from daemon.lab.build import WORK_ROOT, LabError
    from daemon.lab.session import preflight

    why = preflight()
    if why:
        print(why, file=sys.stderr)
        return EXIT_LAB
    if target:
        workdirs = [Path(target)]
    else:
        workdirs = [
            w for w in nodes.labs() if not nodes.process_alive(int((nodes.read_record(w) or {}).get("pid") or 0))
        ]
        if not workdirs:
            print(f"no lab to remove under {WORK_ROOT}", file=sys.stderr)
            return EXIT_OK
    status = EXIT_OK
    for workdir in workdirs:
        try:
            for line in nodes.down(workdir):
                print(line, file=sys.stderr)
        except LabError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_LAB
    return status
