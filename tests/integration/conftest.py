"""Fixtures shared by the integration modules that need the release's plugin bundle."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def compat_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin bundle built against glibc 2.31 (packaging/build-plugin-compat.sh; its build root is cached in
    $MNP_CACHE_DIR), once per session: the image ships it and test_plugin_compat.py proves it on Debian 11.
    Only requested by tests that skip themselves without root or mmdebstrap."""
    dist = tmp_path_factory.mktemp("compat-dist")
    proc = subprocess.run(
        [str(ROOT / "packaging" / "build-plugin-compat.sh"), "--dist", str(dist)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert proc.returncode == 0, f"build-plugin-compat.sh -> rc {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return dist / "mnp-glibc2.31"
