"""packaging/release.sh: the release set, its checksums, and one version in all of it.

Why: a release is what users install; a tarball without its `_internal/`, a manifest naming another image tag, or a
checksum file that does not verify would reach them unnoticed. The image part of release.sh is the same
`buildah bud` as tests/integration/test_image_build.py, which builds and runs the image; here `--no-image` keeps the
run short, with the session's glibc-2.31 bundle (`--plugin`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from shared.version import VERSION

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the release's plugin build needs root (mmdebstrap, chroot)"),
    pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed (install.sh --image)"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed (kubectl kustomize)"),
    pytest.mark.skipif(os.environ.get("MNP_SKIP_IMAGE_BUILD") == "1", reason="MNP_SKIP_IMAGE_BUILD=1"),
]


def test_release_set_without_the_image(compat_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "release"
    argv = [str(ROOT / "packaging" / "release.sh"), "--out", str(out), "--no-image", "--plugin", str(compat_bundle)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tarball = f"mnp-cni-plugin-{VERSION}-linux-amd64.tar.gz"
    overlays = sorted(p.name for p in (ROOT / "deploy" / "kustomize" / "overlays").iterdir() if p.is_dir())
    manifests = [f"mnp-{VERSION}.yaml", *(f"mnp-{VERSION}-{name}.yaml" for name in overlays)]
    assert sorted(p.name for p in out.iterdir()) == sorted(["SHA256SUMS", tarball, *manifests])
    sums = (out / "SHA256SUMS").read_text().split("\n")
    assert sorted(line.split()[1] for line in sums if line) == sorted([tarball, *manifests])
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr

    with tarfile.open(out / tarball) as archive:
        names = archive.getnames()
        assert all(member.uid == 0 and member.gid == 0 for member in archive.getmembers())
        archive.extractall(tmp_path / "unpacked", filter="tar")
    assert "mnp/mnp" in names and any(name.startswith("mnp/_internal/libpython3.11") for name in names)
    answer = subprocess.run(
        [str(tmp_path / "unpacked" / "mnp" / "mnp")],
        input='{"cniVersion": "1.0.0"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(answer.stdout)["mnpVersion"] == VERSION

    for name in manifests:
        docs = [d for d in yaml.safe_load_all((out / name).read_text()) if d]
        (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
        pod = daemonset["spec"]["template"]["spec"]
        assert {c["image"] for c in [*pod["containers"], *pod["initContainers"]]} == {f"mnp:{VERSION}"}
