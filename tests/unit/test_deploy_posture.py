"""The DaemonSet's security posture, on what `kubectl kustomize` renders for the base and every overlay.

Why: a privilege that creeps into a manifest (a capability, a hostPath, privileged mode, an all-interfaces metrics
port) is invisible in review and permanent on every node. Each privilege mnpd keeps was measured as needed
(docs/security.md, with setpriv against a test netns); this test pins exactly that set, per rendered overlay, and
requires docs/security.md to say what each one is for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.version import VERSION

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kustomize"
SECURITY_DOC = ROOT / "docs" / "security.md"
KUBECTL = shutil.which("kubectl")
DIRECTORIES = [KUSTOMIZE / "base", *sorted(p for p in (KUSTOMIZE / "overlays").iterdir() if p.is_dir())]

# What each rendering may grant mnpd; everything else must be absent.
MNPD_CAPABILITIES = {"base": {"NET_ADMIN", "SYS_ADMIN"}, "proc-netns": {"NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"}}
HOST_PID = {"base": False, "proc-netns": True}
# hostPath → (container, mountPath, readOnly) of every mount of it.
HOST_PATHS = {
    "/run/netns": {("mnpd", "/run/netns", True)},
    "/run/mnp": {("mnpd", "/run/mnp", False)},
    "/opt/cni/bin": {("install-plugin", "/host/opt/cni/bin", False)},
    "/opt/mnp": {("install-plugin", "/host/opt/mnp", False)},
}

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: cannot run `kubectl kustomize`")


def render(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL
    proc = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def daemonset(directory: Path) -> dict[str, Any]:
    (found,) = [d for d in render(directory) if d["kind"] == "DaemonSet"]
    return found


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


@pytest.mark.parametrize("directory", DIRECTORIES, ids=lambda p: p.name)
def test_rendered_daemonset_grants_only_the_measured_privileges(directory: Path) -> None:
    pod = daemonset(directory)["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod.get("hostPID", False) is HOST_PID[directory.name]
    assert not pod.get("hostIPC", False)
    assert pod["hostNetwork"] is True  # runs before the pod network; the metrics port binds the node address only
    ctrs = containers(pod)
    assert set(ctrs) == {"install-plugin", "mnpd"}
    for name, ctr in ctrs.items():
        sc = ctr["securityContext"]
        assert not sc.get("privileged", False), name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert ctr["image"] == f"mnp:{VERSION}", name
    assert set(ctrs["mnpd"]["securityContext"]["capabilities"]["add"]) == MNPD_CAPABILITIES[directory.name]
    init = ctrs["install-plugin"]["securityContext"]
    assert "add" not in init["capabilities"] and init["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("directory", DIRECTORIES, ids=lambda p: p.name)
def test_rendered_daemonset_mounts_only_what_it_needs(directory: Path) -> None:
    pod = daemonset(directory)["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts: dict[str, set[tuple[str, str, bool]]] = {path: set() for path in host.values()}
    for name, ctr in containers(pod).items():
        for mount in ctr.get("volumeMounts", []):
            if mount["name"] in host:
                mounts[host[mount["name"]]].add((name, mount["mountPath"], bool(mount.get("readOnly", False))))
    assert mounts == HOST_PATHS


@pytest.mark.parametrize("directory", DIRECTORIES, ids=lambda p: p.name)
def test_rendered_metrics_listen_on_the_node_address_not_everywhere(directory: Path) -> None:
    docs = render(directory)
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert "MNP_LISTEN" not in configmap["data"]
    mnpd = containers(daemonset(directory)["spec"]["template"]["spec"])["mnpd"]
    env = {e["name"]: e for e in mnpd["env"]}
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert env["MNP_LISTEN"]["value"] == "$(HOST_IP):9741"
    assert not re.search(r"(0\.0\.0\.0|\[::\]):", yaml.safe_dump(docs))


def test_security_doc_says_what_each_privilege_is_for() -> None:
    text = SECURITY_DOC.read_text()
    granted = set().union(*MNPD_CAPABILITIES.values())
    for capability in sorted(granted):
        assert re.search(rf"^\| `{capability}` \|", text, re.M), f"docs/security.md has no row for {capability}"
    for path in HOST_PATHS:
        assert re.search(rf"^\| `{re.escape(path)}` \|", text, re.M), f"docs/security.md has no row for {path}"
    assert "RuntimeDefault" in text and "readOnlyRootFilesystem" in text and "hostPID" in text
