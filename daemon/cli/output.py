"""Terminal output shared by `mnpctl` subcommands: aligned tables, colour only where it belongs.

Colour follows the usual conventions: only when the stream is a terminal, never when `NO_COLOR` is set to a
non-empty value (https://no-color.org), and never in machine-readable (`--json`) output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TextIO

RESET = "\033[0m"
GREEN, RED, YELLOW, BOLD, DIM = "\033[32m", "\033[31m", "\033[33m", "\033[1m", "\033[2m"


def use_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def paint(text: str, colour: str | None, enabled: bool) -> str:
    return f"{colour}{text}{RESET}" if enabled and colour else text


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    colours: Sequence[Sequence[str | None]] | None = None,
    colour: bool = False,
) -> str:
    """Columns padded to their widest cell (the last column is not padded); the header in bold.

    `colours[i][j]` is the colour of cell (i, j); padding is computed on the plain text, so colour never breaks
    alignment."""
    widths = [max([len(h)] + [len(r[j]) for r in rows]) for j, h in enumerate(header)]

    def line(cells: Sequence[str], cell_colours: Sequence[str | None]) -> str:
        out = []
        for j, cell in enumerate(cells):
            padding = "" if j == len(cells) - 1 else " " * (widths[j] - len(cell))
            out.append(paint(cell, cell_colours[j], colour) + padding)
        return "  ".join(out).rstrip()

    lines = [line(header, [BOLD] * len(header))]
    for i, row in enumerate(rows):
        lines.append(line(row, colours[i] if colours else [None] * len(row)))
    return "\n".join(lines) + "\n"
