"""The glibc a set of ELF files needs: the highest `GLIBC_x.y` symbol version any of them imports.

Why: the frozen plugin runs on the host with the host's glibc, and a binary fails to start when it imports a
versioned symbol newer than that glibc (`version 'GLIBC_2.35' not found`). `objdump -T` lists each imported dynamic
symbol with its version, for executables and shared libraries alike.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

GLIBC = re.compile(r"\bGLIBC_(\d+)\.(\d+)(?:\.\d+)?\b")


def elf_files(root: Path) -> list[Path]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def glibc_needs(path: Path) -> tuple[int, int]:
    """The highest GLIBC_ version `path` imports; (0, 0) when it imports none (e.g. libz uses only unversioned)."""
    out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return max(((int(a), int(b)) for a, b in GLIBC.findall(out)), default=(0, 0))


def glibc_floor(root: Path) -> tuple[int, int]:
    """The glibc every ELF file under `root` can run with: the highest of their needs."""
    files = elf_files(root)
    if not files:
        raise ValueError(f"no ELF file under {root}")
    return max(glibc_needs(path) for path in files)
