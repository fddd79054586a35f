"""One version everywhere: every place that states mnp's version reads or repeats shared/version.py's VERSION.

Why: a release is one version; a plugin, a daemon, an image or a manifest that says another is a mixed install
nobody can reason about. Places that must be literal text (the Containerfile's label default, the manifests' image
tag, the CHANGELOG's newest heading) are compared here; the others read VERSION and are run.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import yaml

import cni
from cni.skel import Dispatcher
from daemon.status import status_document
from shared.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kustomize" / "base"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT)


def test_version_is_a_release_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION


def test_package_metadata_reads_the_version_source() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shared.version.VERSION"}
    assert metadata.version("mnp") == VERSION, "reinstall the project (packaging/install.sh) after a version change"


def test_mnpd_and_mnpctl_say_their_version() -> None:
    for module, program in (("daemon.main", "mnpd"), ("daemon.ctl", "mnpctl")):
        proc = run(sys.executable, "-m", module, "--version")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [program, VERSION]


def test_plugin_version_answer_and_log_line_carry_it() -> None:
    assert cni.__version__ == VERSION
    out, err = io.StringIO(), io.StringIO()
    rc = Dispatcher({"CNI_COMMAND": "VERSION"}, '{"cniVersion": "1.0.0"}', out, err).run()
    assert rc == 0 and json.loads(out.getvalue())["mnpVersion"] == VERSION
    out, err = io.StringIO(), io.StringIO()
    Dispatcher({"CNI_COMMAND": "ADD"}, "{}", out, err).run()  # no container id: an error, logged
    assert f" mnp={VERSION} " in err.getvalue()


def test_status_file_carries_it() -> None:
    class NoController:
        records: dict[tuple[str, str], object] = {}  # noqa: RUF012
        synced_once = True

        def policy_notes(self) -> list[object]:
            return []

        def unreadable_notes(self) -> list[object]:
            return []

        def source_problems(self) -> dict[str, tuple[str, ...]]:
            return {}

        def unguarded_report(self) -> list[object]:
            return []

    doc = status_document(NoController(), {}, "node-a")  # type: ignore[arg-type]
    assert doc["version"] == VERSION


def test_image_label_and_manifests_name_it() -> None:
    containerfile = (ROOT / "packaging" / "Containerfile").read_text()
    assert re.findall(r"^ARG MNP_VERSION=(\S+)$", containerfile, re.M) == [VERSION]
    assert 'org.opencontainers.image.version="${MNP_VERSION}"' in containerfile
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "mnp", "newTag": VERSION}]
    daemonset = yaml.safe_load((BASE / "daemonset.yaml").read_text())
    pod = daemonset["spec"]["template"]["spec"]
    assert {c["image"] for c in [*pod["containers"], *pod["initContainers"]]} == {f"mnp:{VERSION}"}


def test_changelog_starts_with_it() -> None:
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert headings and headings[0] == VERSION
