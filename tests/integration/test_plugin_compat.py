"""The plugin bundle for old hosts: built against glibc 2.31 and proven inside a Debian 11 root filesystem.

Why: the plugin runs on the node with the node's glibc, not the image's. A bundle that needs a newer glibc than the
node has does not start, and as the last plugin of a chain that fails every pod on the network (packaging/README.md,
"Old hosts"). RHEL 9 has glibc 2.34 and Ubuntu 20.04 2.31; so the release bundle
(packaging/build-plugin-compat.sh) must need at most GLIBC_2.31 in every ELF file, and must really work on such a
system: here a Debian 11 (bullseye, glibc 2.31, nftables 0.9.8) minbase root filesystem made with mmdebstrap, entered
by chroot with this host's kernel. The plugin answers VERSION, closes a real netns at ADD through bullseye's own
libnftables (loaded in-process from the rootfs, not from the bundle), passes CHECK and removes its table at DEL.

Skips, each with its reason: not root; mmdebstrap not installed (`packaging/install.sh --image`);
MNP_SKIP_IMAGE_BUILD=1 (the same switch as the image: both build root filesystems).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.testbed.netns import NetNS
from shared.version import VERSION
from tests.support.elf import elf_files, glibc_floor, glibc_needs
from tests.support.host import host_untouched

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MNP_CACHE_DIR", "/var/cache/mnp"))
FLOOR = (2, 31)
# The old system the bundle is run in: what a node needs for the plugin (libnftables; nft and nsenter for the
# fallback). Cached as a directory; a changed list makes a new one.
OLD_SUITE = "bullseye"
OLD_PACKAGES = "nftables,libnftables1,util-linux"


def skip_reason() -> str | None:
    if os.environ.get("MNP_SKIP_IMAGE_BUILD") == "1":
        return "MNP_SKIP_IMAGE_BUILD=1"
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, chroot, network namespaces)"
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed (packaging/install.sh --image)"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


def run(argv: list[str], timeout: float = 1800, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args} -> rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def old_rootfs() -> Path:
    """A Debian 11 minbase root filesystem with nftables, cached in CACHE between runs."""
    rootfs = CACHE / f"run-{OLD_SUITE}-{OLD_PACKAGES.replace(',', '-')}"
    if not (rootfs / "usr" / "sbin" / "nft").exists():
        tmp = rootfs.with_name(rootfs.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        ok(run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={OLD_PACKAGES}", OLD_SUITE, str(tmp)]))
        shutil.rmtree(rootfs, ignore_errors=True)
        tmp.rename(rootfs)
    return rootfs


def test_every_elf_file_of_the_bundle_needs_at_most_glibc_2_31(compat_bundle: Path) -> None:
    needs = {str(p.relative_to(compat_bundle)): glibc_needs(p) for p in elf_files(compat_bundle)}
    assert "mnp" in needs and any(name.startswith("_internal/libpython3.11") for name in needs)
    too_new = {name: f"GLIBC_{a}.{b}" for name, (a, b) in needs.items() if (a, b) > FLOOR}
    assert too_new == {}
    assert glibc_floor(compat_bundle) <= FLOOR


@pytest.fixture
def chroot_bundle(compat_bundle: Path, old_rootfs: Path) -> Iterator[tuple[Path, str]]:
    """The bundle copied into the old rootfs (path inside it), with /proc mounted; both removed afterwards."""
    inside = f"/opt/mnpt-{uuid.uuid4().hex[:8]}"
    shutil.copytree(compat_bundle, old_rootfs / inside.lstrip("/"), symlinks=True)
    proc_dir = old_rootfs / "proc"
    ok(run(["mount", "-t", "proc", "proc", str(proc_dir)]))
    try:
        yield old_rootfs, inside
    finally:
        run(["umount", str(proc_dir)])
        shutil.rmtree(old_rootfs / inside.lstrip("/"), ignore_errors=True)


def in_chroot(rootfs: Path, argv: list[str], env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env}
    return run(
        ["chroot", str(rootfs), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv], 60, input=stdin
    )


@pytest.fixture
def _host_stays_untouched() -> Iterator[None]:
    with host_untouched():
        yield


@pytest.mark.usefixtures("_host_stays_untouched")
def test_bundle_runs_add_check_del_in_a_debian_11_rootfs(chroot_bundle: tuple[Path, str]) -> None:
    rootfs, inside = chroot_bundle
    glibc = ok(in_chroot(rootfs, ["ldd", "--version"], {}, "")).splitlines()[0]
    assert glibc.endswith(" 2.31"), glibc
    exe = [f"{inside}/mnp"]
    answer = json.loads(ok(in_chroot(rootfs, exe, {"CNI_COMMAND": "VERSION"}, '{"cniVersion": "1.0.0"}')))
    assert answer["mnpVersion"] == VERSION and "1.0.0" in answer["supportedVersions"]

    pod = NetNS.create("compat")
    pod.add_veth("net1", "peer0")  # the interface ADD closes (by its index)
    netns_inside = f"/run/mnpt-netns-{uuid.uuid4().hex[:8]}"
    target = rootfs / netns_inside.lstrip("/")
    target.touch()
    try:
        ok(run(["mount", "--bind", pod.path, str(target)]))
        conf: dict[str, Any] = {
            "cniVersion": "1.0.0",
            "name": "mnpt-compat",
            "type": "mnp",
            "stateDir": "/run/mnpt-compat-state",
        }
        conf["prevResult"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": netns_inside}]}
        env = {"CNI_CONTAINERID": "ctr-compat", "CNI_NETNS": netns_inside, "CNI_IFNAME": "net1", "CNI_PATH": "/x"}
        added = in_chroot(rootfs, exe, env | {"CNI_COMMAND": "ADD"}, json.dumps(conf))
        ok(added)
        assert f"mnp={VERSION}" in added.stderr and "nft=netlink" in added.stderr, added.stderr  # the prebuilt batch
        assert "table inet mnp" in ok(run(["ip", "netns", "exec", pod.name, "nft", "list", "ruleset"]))
        ok(in_chroot(rootfs, exe, env | {"CNI_COMMAND": "CHECK"}, json.dumps(conf)))
        ok(in_chroot(rootfs, exe, env | {"CNI_COMMAND": "DEL"}, json.dumps(conf)))
        assert "table inet mnp" not in ok(run(["ip", "netns", "exec", pod.name, "nft", "list", "ruleset"]))
    finally:
        run(["umount", str(target)])
        target.unlink(missing_ok=True)
        shutil.rmtree(rootfs / "run" / "mnpt-compat-state", ignore_errors=True)
        pod.delete()
