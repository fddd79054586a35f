"""mnpd's /healthz on an IPv6 address, for real: the DaemonSet binds health and metrics on $(HOST_IP):9741, which
on an IPv6 node is `fd00::…:9741`, unbracketed.

The installed `mnpd` runs inside a test netns (`ip netns exec`) whose loopback carries fd00:…::1/128 (no DAD on
loopback, so the address is usable at once), with the manifests source, an empty state dir and nothing else; the
client asks /healthz from a thread inside the same netns (shared.netns.in_netns), and `mnpctl status` is run
there with the same --listen. Nothing is bound or programmed outside the test netns, which is removed pass or fail.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.testbed.netns import NetNS
from shared.netns import in_netns
from tests.integration.test_daemon_sources import wait_for

pytestmark = pytest.mark.netns

ADDRESS = "fd00:6d6e:7074::1"  # ULA; only ever on the test netns' loopback
PORT = 9741
DEADLINE_S = 30.0
BIN = Path(sys.executable).parent


@pytest.fixture
def netns() -> Iterator[NetNS]:
    ns = NetNS.create("listen6")
    try:
        ns.add_address("lo", f"{ADDRESS}/128")
        yield ns
    finally:
        ns.delete()


def healthz(netns: NetNS) -> tuple[int, str]:
    """GET /healthz on [ADDRESS]:PORT, from a socket opened inside `netns`."""

    def get() -> tuple[int, str]:
        conn = http.client.HTTPConnection(ADDRESS, PORT, timeout=5)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()

    return in_netns(netns.path, get)


@pytest.mark.parametrize("listen", [f"{ADDRESS}:{PORT}", f"[{ADDRESS}]:{PORT}"], ids=["unbracketed", "bracketed"])
def test_mnpd_serves_healthz_on_an_ipv6_address(netns: NetNS, listen: str, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    status = tmp_path / "mnpd-status.json"
    common = ["--state-dir", str(tmp_path / "state"), "--status-file", str(status)]
    argv = [*netns.exec_prefix(), str(BIN / "mnpd"), "--manifests-dir", str(tmp_path / "manifests"), *common]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNP_") and k != "KUBERNETES_SERVICE_HOST"}
    env["MNP_LISTEN"] = listen  # as the DaemonSet passes it
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as mnpd:
        try:
            answers: list[tuple[int, str]] = []

            def answered() -> bool:
                assert mnpd.poll() is None, mnpd.communicate()
                try:
                    answers.append(healthz(netns))
                except OSError:  # not listening yet
                    return False
                return answers[-1][0] == 200  # 503 "the sync loop is not running" until it runs

            assert wait_for(answered, DEADLINE_S), f"mnpd did not answer /healthz with 200: {answers[-3:]}"
            assert answers[-1] == (200, "ok\n")
            assert wait_for(status.exists, DEADLINE_S)
            ctl = netns.run(str(BIN / "mnpctl"), "status", *common, "--listen", listen, check=False)
            assert ctl.returncode == 0, ctl
            assert f"healthz:     http://[{ADDRESS}]:{PORT}/healthz: 200 ok" in ctl.stdout, ctl
        finally:
            mnpd.terminate()
            try:
                mnpd.wait(timeout=15)
            except subprocess.TimeoutExpired:
                mnpd.kill()
                mnpd.wait()
        err = mnpd.stderr.read() if mnpd.stderr else ""
    assert "serving /metrics, /healthz and /readyz" in err and "Traceback" not in err, err
