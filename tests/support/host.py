"""The guard every real-netns test module runs under: skip cleanly where the machine cannot run it, and fail
if the test touched the host — an nft table in the root netns, or namespaces and processes left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon.testbed.netns import check_leftovers, have_netns_support, sweep_stale_netns

CNI_BIN = Path(os.environ.get("MNP_TEST_CNI_BIN", "/usr/lib/cni"))


def root_nft_tables() -> str:
    """`nft list tables` of the host's own network namespace."""
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


@contextmanager
def host_untouched(cni_plugins: Iterable[str] = (), binaries: Iterable[str] = ("nft", "nsenter")) -> Iterator[None]:
    reason = have_netns_support()
    if reason:
        pytest.skip(reason)
    missing = [p for p in cni_plugins if not (CNI_BIN / p).exists()]
    if missing:
        pytest.skip(f"CNI plugins missing in {CNI_BIN}: {', '.join(missing)}")
    absent = [b for b in binaries if shutil.which(b) is None]
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)}")
    sweep_stale_netns()
    before = root_nft_tables()
    yield
    after = root_nft_tables()
    assert "inet mnp" not in after, "the host's root netns got an mnp table"
    assert after == before, "the host's root netns' nft tables changed"
    assert check_leftovers() == [], "namespaces or processes leaked"
