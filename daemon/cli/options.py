"""The command-line options every node inspection command shares (`mnpctl pods/rules/explain/drops/status`)."""

from __future__ import annotations

import argparse

from daemon.cli.errors import InspectError
from daemon.config import DEFAULT_LISTEN, STATUS_NAME, parse_listen
from shared.state import DEFAULT_STATE_DIR

STALE_AFTER = "180s"  # three default resync periods: mnpd rewrites its status file at least once per resync


def add_node_options(parser: argparse.ArgumentParser, *, with_json: bool = True) -> None:
    """The options every node command shares. Defaults follow mnpd's environment (`MNP_STATE_DIR`,
    `MNP_STATUS_FILE`, `MNP_LISTEN`), so inside the mnpd pod mnpctl finds what mnpd uses without flags."""
    group = parser.add_argument_group("where to look (defaults: mnpd's environment variables, else its defaults)")
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"the CNI plugin's state dir [MNP_STATE_DIR] (default: {DEFAULT_STATE_DIR})",
    )
    group.add_argument(
        "--status-file",
        metavar="FILE",
        help=f"mnpd's status file [MNP_STATUS_FILE] (default: {STATUS_NAME} beside the state dir)",
    )
    group.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"mnpd's /healthz and /readyz address; 'off' skips them [MNP_LISTEN] (default: {DEFAULT_LISTEN})",
    )
    group.add_argument(
        "--stale-after",
        metavar="DURATION",
        default=STALE_AFTER,
        help=f"a status file older than this is stale (default: {STALE_AFTER}; keep it above mnpd's --resync-period)",
    )
    group.add_argument("--nft", metavar="PATH", default="nft", help="the nft executable (default: nft on PATH)")
    if with_json:
        parser.add_argument("--json", action="store_true", help="machine-readable output (JSON)")


def listen_address(text: str | None) -> tuple[str, int] | None:
    """mnpd's `--listen` (read as mnpd reads it: daemon.config.parse_listen) → where to connect; None for off.
    A wildcard listen address is reached on loopback."""
    try:
        address = parse_listen(text or "")
    except ValueError as exc:
        raise InspectError(f"--listen: {exc}", usage=True) from exc
    if address is None:
        return None
    host, port = address
    if port == 0:
        raise InspectError(f"--listen: {text!r}: port 0 is no address to connect to", usage=True)
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port
