"""The container image (packaging/Containerfile) and its init-container installer, built and exercised for real.

Why: the image is the only way mnp reaches a cluster, and its recipe is otherwise never executed by the test
suite. No registry is reachable from the project's machines, so the base image is made locally: `mmdebstrap`
builds a Debian 12 root filesystem from the Debian mirror (which is reachable), `buildah` imports it as
`localhost/…` and builds the Containerfile on it with `--build-arg BASE_IMAGE=…` (chroot isolation: no OCI runtime
or daemon needed), with the glibc-2.31 plugin bundle of packaging/build-plugin-compat.sh — the one releases ship.
The built image is then used as a runtime would: its entrypoints run (`mnpd`/`mnpctl --version`, the bundled
plugin's VERSION), the init container's installer writes into scratch "host" directories, after which the
installed bundle runs on this host through a symlink; its labels, size and contents (no test bed, compilers,
caches) are checked on its mounted file tree.

.ci/run installs buildah and mmdebstrap (packaging/install.sh --image), so CI runs all of these. The base image
and the plugin's build root are cached between runs on one machine ($MNP_CACHE_DIR; a fresh machine makes them: a few
minutes more, once).

The installer's atomic-upgrade logic (packaging/container/install-plugin.sh) is also tested directly on fake bundles,
which needs no image and always runs.

Skips, each with its reason: not root; buildah or mmdebstrap not installed (`packaging/install.sh --image`);
a part the image needs is not in the tree yet; MNP_SKIP_IMAGE_BUILD=1. A failing mmdebstrap or build fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest

from shared.version import VERSION
from tests.support.elf import glibc_floor

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "packaging" / "Containerfile"
IGNOREFILE = ROOT / "packaging" / "container" / "containerignore"
INSTALLER = ROOT / "packaging" / "container" / "install-plugin.sh"
# What the Containerfile needs from the tree besides itself.
NEEDED = ("packaging/build-plugin.sh", "cni/__main__.py", "daemon/main.py", "daemon/ctl.py")
BUILD_TIMEOUT = 1800
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# The base image (packaging/base-image.sh) and the glibc-2.31 build root (packaging/build-plugin-compat.sh) are
# cached between runs on one machine, in buildah's storage and $MNP_CACHE_DIR; a fresh machine makes them.
# The image's file tree (sum of its regular files), measured at 375 MB (du: 414 MB; the venv 172 MB, the plugin
# bundle 13 MB) on the mmdebstrap minbase; the limit leaves room for dependency updates, not for a new component.
MAX_IMAGE_MB = 450
VERSION_STDIN = '{"cniVersion":"1.0.0"}'


def image_build_skip_reason() -> str | None:
    if os.environ.get("MNP_SKIP_IMAGE_BUILD") == "1":
        return "MNP_SKIP_IMAGE_BUILD=1"
    if os.geteuid() != 0:
        return "building an image needs root (rootful buildah storage, mmdebstrap without fakechroot)"
    for tool in ("buildah", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (packaging/install.sh --image)"
    missing = [p for p in NEEDED if not (ROOT / p).exists()]
    if missing:
        return f"not in the tree yet, the image needs it: {', '.join(missing)}"
    return None


SKIP_BUILD = image_build_skip_reason()


def needs_build(test: T) -> T:
    """Marks a test that needs the built image: slow, and skipped with the precise reason when it cannot be built."""
    skip = pytest.mark.skipif(SKIP_BUILD is not None, reason=SKIP_BUILD or "")
    return cast(T, pytest.mark.slow(skip(test)))


def run(
    argv: list[str], timeout: float = 300, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env, input=input)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args} -> rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


# ------------------------------------------------------------------------------------------------ the installer


def fake_bundle(directory: Path, marker: str) -> Path:
    """A stand-in for the PyInstaller one-dir bundle: an executable `mnp` that answers VERSION, and `_internal/`."""
    (directory / "_internal").mkdir(parents=True)
    (directory / "_internal" / "marker").write_text(marker)
    exe = directory / "mnp"
    exe.write_text(
        "#!/bin/sh\n"
        'marker=$(cat "$(dirname "$(readlink -f "$0")")/_internal/marker")\n'
        'printf \'{"cniVersion":"1.0.0","supportedVersions":["1.0.0"],"marker":"%s"}\\n\' "$marker"\n'
    )
    exe.chmod(0o755)
    return directory


class Host:
    """Two host directories as the init container sees them, with the symlink text mapped back for assertions."""

    def __init__(self, root: Path) -> None:
        self.bundles = root / "host" / "opt" / "mnp" / "bundles"
        self.cni_bin = root / "host" / "opt" / "cni" / "bin"
        self.cni_bin.mkdir(parents=True)

    def env(self, src: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "MNP_BUNDLE_SRC": str(src),
            "MNP_BUNDLES_DIR": str(self.bundles),
            "MNP_BUNDLES_DIR_ON_HOST": "/opt/mnp/bundles",
            "MNP_CNI_BIN_DIR": str(self.cni_bin),
        }

    def install(self, src: Path) -> subprocess.CompletedProcess[str]:
        return run(["sh", str(INSTALLER)], timeout=60, env=self.env(src))

    def linked_id(self) -> str:
        target = os.readlink(self.cni_bin / "mnp")
        assert target.startswith("/opt/mnp/bundles/") and target.endswith("/mnp"), target
        return target.split("/")[-2]

    def installed(self) -> set[str]:
        return {p.name for p in self.bundles.iterdir()}

    def run_linked(self) -> dict[str, str]:
        exe = self.bundles / self.linked_id() / "mnp"
        out = ok(run([str(exe)], env={"CNI_COMMAND": "VERSION"}, input=VERSION_STDIN))
        result: dict[str, str] = json.loads(out)
        return result


def test_installer_installs_links_and_is_idempotent(tmp_path: Path) -> None:
    host = Host(tmp_path)
    src = fake_bundle(tmp_path / "image-a", "a")
    first = host.install(src)
    ok(first)
    assert "installed bundle" in first.stderr
    bundle_id = host.linked_id()
    assert host.run_linked()["marker"] == "a"
    assert host.installed() == {bundle_id}
    again = host.install(src)
    ok(again)
    assert "already installed" in again.stderr
    assert host.linked_id() == bundle_id and host.installed() == {bundle_id}


def test_installer_upgrade_keeps_the_previous_bundle_only(tmp_path: Path) -> None:
    """A CNI call may still run from the previous bundle during an upgrade; older ones go."""
    host = Host(tmp_path)
    ids = []
    for marker in ("a", "b", "c"):
        ok(host.install(fake_bundle(tmp_path / f"image-{marker}", marker)))
        ids.append(host.linked_id())
        assert host.run_linked()["marker"] == marker
    assert len(set(ids)) == 3, "different content must give different bundle ids"
    assert host.installed() == {ids[1], ids[2]}
    assert not list(host.cni_bin.glob(".*")), "no temporary link left behind"


def test_installer_replaces_a_half_copied_bundle_and_stale_temporaries(tmp_path: Path) -> None:
    host = Host(tmp_path)
    src = fake_bundle(tmp_path / "image-a", "a")
    ok(host.install(src))
    bundle_id = host.linked_id()
    shutil.rmtree(host.bundles / bundle_id)
    (host.bundles / bundle_id / "_internal").mkdir(parents=True)  # interrupted copy: no executable
    (host.bundles / ".tmp-deadbeef-1").mkdir()
    ok(host.install(src))
    assert host.run_linked()["marker"] == "a"
    assert host.installed() == {bundle_id}


def test_installer_refuses_without_a_bundle_or_cni_dir(tmp_path: Path) -> None:
    host = Host(tmp_path)
    proc = host.install(tmp_path / "nothing")
    assert proc.returncode == 1 and "no plugin executable" in proc.stderr
    shutil.rmtree(host.cni_bin)
    proc = host.install(fake_bundle(tmp_path / "image-a", "a"))
    assert proc.returncode == 1 and "not mounted" in proc.stderr


def test_installer_fails_when_the_plugin_does_not_run(tmp_path: Path) -> None:
    host = Host(tmp_path)
    src = fake_bundle(tmp_path / "image-a", "a")
    (src / "mnp").write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    proc = host.install(src)
    assert proc.returncode == 1 and "does not run" in proc.stderr and "broken" in proc.stderr
    assert not (host.cni_bin / "mnp").exists(), "a broken plugin must never be linked"


# ------------------------------------------------------------------------------------------------ the image


def base_image() -> str:
    """The Debian 12 base image, made locally without a registry and cached (packaging/base-image.sh)."""
    return ok(run([str(ROOT / "packaging" / "base-image.sh")], timeout=900)).strip()


@pytest.fixture(scope="module")
def image(compat_bundle: Path) -> Iterator[str]:
    name = f"localhost/mnp-test:{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, BUILDAH_ISOLATION="chroot")
    base = base_image()
    try:
        build = ["buildah", "bud", "--isolation=chroot", "--layers=false", "-f", str(CONTAINERFILE)]
        build += ["--ignorefile", str(IGNOREFILE), "--build-arg", f"BASE_IMAGE={base}", "-t", name]
        build += ["--volume", f"{compat_bundle}:/run/mnp-plugin:ro", "--build-arg", "PLUGIN_PREBUILT=/run/mnp-plugin"]
        if HOST_CA.is_file():
            # This host may reach PyPI through a TLS-intercepting proxy that only its own CA bundle trusts.
            build += ["--volume", f"{HOST_CA}:/run/build-ca.crt:ro", "--build-arg", "BUILD_CA_BUNDLE=/run/build-ca.crt"]
        build.append(str(ROOT))
        ok(run(build, timeout=BUILD_TIMEOUT, env=env))
        yield name
    finally:
        run(["buildah", "rmi", "--force", name], env=env)


def in_image(image: str, argv: list[str], volumes: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run argv in a working container of the image (chroot isolation), removing it afterwards."""
    env = dict(os.environ, BUILDAH_ISOLATION="chroot")
    ctr = ok(run(["buildah", "from", image], env=env)).strip()
    try:
        flags = [arg for volume in volumes for arg in ("-v", volume)]
        return run(["buildah", "run", "--isolation=chroot", *flags, ctr, "--", *argv], env=env)
    finally:
        run(["buildah", "rm", ctr], env=env)


@pytest.mark.parametrize(
    "argv",
    [
        ["nft", "--version"],
        ["conntrack", "--version"],
        ["nsenter", "--version"],
        ["tcpdump", "--version"],
        ["python3", "--version"],
    ],
    ids=["nft", "conntrack", "nsenter", "tcpdump", "python3"],
)
@needs_build
def test_image_has_the_dataplane_tools(image: str, argv: list[str]) -> None:
    ok(in_image(image, argv))


@needs_build
def test_image_runs_mnpd_and_mnpctl(image: str) -> None:
    assert "--state-dir" in ok(in_image(image, ["/usr/local/bin/mnpd", "--help"]))
    assert ok(in_image(image, ["/usr/local/bin/mnpd", "--version"])).split() == ["mnpd", VERSION]
    assert ok(in_image(image, ["/usr/local/bin/mnpctl", "--version"])).split() == ["mnpctl", VERSION]
    ok(in_image(image, ["/usr/local/bin/mnpctl", "--help"]))


@needs_build
def test_image_leaves_the_lab_and_its_test_bed_out(image: str) -> None:
    done = in_image(image, ["/usr/local/bin/mnpctl", "lab", "/tmp"])
    assert done.returncode == 3 and "not installed here" in done.stderr, done.stderr
    python = "/usr/local/lib/mnp/venv/bin/python"
    probe = "import importlib.util as u; print(u.find_spec('daemon.testbed'), u.find_spec('daemon.lab.session'))"
    assert ok(in_image(image, [python, "-c", probe])).split() == ["None", "None"]


@needs_build
def test_image_bundled_plugin_answers_version(image: str) -> None:
    script = f"echo '{VERSION_STDIN}' | CNI_COMMAND=VERSION /usr/local/lib/mnp/cni/mnp"
    answer = json.loads(ok(in_image(image, ["sh", "-c", script])))
    assert answer["mnpVersion"] == VERSION and "1.0.0" in answer["supportedVersions"]


@needs_build
def test_image_entrypoint_user_and_labels(image: str) -> None:
    config = json.loads(ok(run(["buildah", "inspect", "--type", "image", image])))["OCIv1"]["config"]
    assert config["Entrypoint"] == ["/usr/local/bin/mnpd"]
    assert config.get("User") in ("0", "root")
    assert config["Labels"]["org.opencontainers.image.version"] == VERSION
    assert config["Labels"]["org.opencontainers.image.title"] == "mnp"


@pytest.fixture(scope="module")
def image_tree(image: str) -> Iterator[Path]:
    """The image's root file tree, mounted read-only for inspection (buildah mount of a working container)."""
    env = dict(os.environ, BUILDAH_ISOLATION="chroot")
    ctr = ok(run(["buildah", "from", image], env=env)).strip()
    try:
        yield Path(ok(run(["buildah", "mount", ctr], env=env)).strip())
    finally:
        run(["buildah", "umount", ctr], env=env)
        run(["buildah", "rm", ctr], env=env)


COMPILER = re.compile(r"(x86_64-linux-gnu-)?(gcc|g\+\+|cc|c\+\+|cpp|clang|clang\+\+|ld|as|rustc|go)(-[\d.]+)?")
# Only what the runtime needs may be installed in the venv: no test, lint or build tools.
NOT_IN_VENV = ("pytest", "_pytest", "hypothesis", "mypy", "ruff", "PyInstaller", "importlinter", "pip", "setuptools")


@needs_build
def test_image_size_and_contents(image_tree: Path) -> None:
    total = 0
    for path in image_tree.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    assert total < MAX_IMAGE_MB * 1024 * 1024, f"image tree is {total / 2**20:.0f} MB (limit {MAX_IMAGE_MB} MB)"
    compilers = sorted(
        str(p.relative_to(image_tree))
        for d in ("usr/bin", "usr/local/bin", "bin")
        for p in (image_tree / d).glob("*")
        if COMPILER.fullmatch(p.name)
    )
    assert compilers == [], "compilers/toolchains in the image"
    assert not (image_tree / "usr" / "lib" / "gcc").exists(), "a compiler's support files"
    assert not any((image_tree / "usr" / "include").rglob("*")), "C headers: only a build needs them"
    caches = [p for p in (image_tree / "var" / "lib" / "apt" / "lists").glob("*") if p.is_file() and p.name != "lock"]
    caches += list((image_tree / "var" / "cache" / "apt").rglob("*.deb"))
    caches += list((image_tree / "var" / "cache" / "apt").glob("*.bin"))
    leftovers = (image_tree / "root" / ".cache", image_tree / "src", image_tree / "tmp" / "pip")
    caches += [p for p in leftovers if p.exists()]
    assert caches == [], "package lists, downloaded .debs, pip caches or build trees left in the image"
    (site,) = (image_tree / "usr" / "local" / "lib" / "mnp" / "venv" / "lib").glob("python3*/site-packages")
    shipped = {p.name for p in site.iterdir()}
    assert not shipped & set(NOT_IN_VENV), sorted(shipped & set(NOT_IN_VENV))
    assert "tests" not in shipped, "the test suite is not part of the image"
    assert {"cni", "daemon", "shared"} <= shipped
    bundle = image_tree / "usr" / "local" / "lib" / "mnp" / "cni"
    assert (bundle / "mnp").is_file() and (bundle / "_internal").is_dir()
    assert glibc_floor(bundle) <= (2, 31), "the image must ship the glibc-2.31 plugin bundle"


@needs_build
def test_image_init_container_installs_a_plugin_that_runs_on_this_host(image: str, tmp_path: Path) -> None:
    """What the DaemonSet's init container does, with two temp dirs as the host's /opt/mnp and /opt/cni/bin; then
    the installed bundle runs here, outside the image, through a symlink like the runtime's /opt/cni/bin/mnp."""
    opt_mnp, cni_bin = tmp_path / "opt-mnp", tmp_path / "cni-bin"
    opt_mnp.mkdir()
    cni_bin.mkdir()
    volumes = (f"{opt_mnp}:/host/opt/mnp", f"{cni_bin}:/host/opt/cni/bin")
    ok(in_image(image, ["/usr/local/bin/mnp-install-plugin"], volumes))
    target = os.readlink(cni_bin / "mnp")
    assert target.startswith("/opt/mnp/bundles/") and target.endswith("/mnp")
    bundle = opt_mnp / "bundles" / target.split("/")[-2]
    assert (bundle / "mnp").is_file() and (bundle / "_internal").is_dir()
    link = tmp_path / "mnp"
    link.symlink_to(bundle / "mnp")
    out = ok(
        run([str(link)], env={"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, input=VERSION_STDIN)
    )
    assert "1.0.0" in json.loads(out)["supportedVersions"]
    again = in_image(image, ["/usr/local/bin/mnp-install-plugin"], volumes)
    ok(again)
    assert "already installed" in again.stderr
