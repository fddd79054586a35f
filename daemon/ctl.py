"""`mnpctl`: the command-line tool of mnp.

Each subcommand lives in its own module (`daemon.cli.matrix`, `daemon.lab.cli` …) and registers itself on the
parser built here, so adding one (`pods`, `rules`, `explain`, `drops`, `status` …) is a new module plus one entry
in `SUBCOMMANDS`:

    def register(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("name", help="…", description="…")
        parser.add_argument(…)
        parser.set_defaults(run=run)

    def run(args: argparse.Namespace) -> int: …

`main(argv)` never calls `sys.exit` and returns the exit status, so tests call it directly. Exit statuses are
shared by all subcommands (daemon/cli/exitcodes.py): 0 success, 1 the answer is "no" (an expectation not met),
2 bad input or usage, 3 a lab that could not be built.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from daemon.cli import drops, explain, matrix, pods, rules, status
from daemon.cli.exitcodes import EXIT_FAILED, EXIT_INVALID
from daemon.lab import cli as lab  # `mnpctl lab`: real packets on a throwaway node (daemon/lab/)
from shared.version import VERSION

NODE_COMMANDS = (pods, rules, explain, drops, status)  # node inspection: state dir, pod netns, mnpd's status
SUBCOMMANDS = (matrix, lab, *NODE_COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnpctl",
        description="Inspect and test MultiNetworkPolicies on secondary networks (mnp).",
    )
    parser.add_argument("--version", action="version", version=f"mnpctl {VERSION}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2) end here; keep main() free of sys.exit
        return exc.code if isinstance(exc.code, int) else EXIT_INVALID
    try:
        status: int = args.run(args)
    except BrokenPipeError:  # `mnpctl matrix … | head`: stop quietly, and let the interpreter's final flush too
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
