"""Health/readiness/metrics endpoints, the status file and the structured log formats."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

from daemon.clock import FakeClock
from daemon.health import HealthServer
from daemon.logs import JsonFormatter, TextFormatter, fields, setup
from daemon.metrics import Metrics
from daemon.status import StatusWriter
from tests.unit.test_daemon_builders import NET_A, pod, put
from tests.unit.test_daemon_controller import DB, SERVER, Harness, cluster


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_health_ready_and_metrics_endpoints() -> None:
    state = {"healthy": (True, "ok"), "ready": (False, "waiting for the first list of: api/pods")}
    metrics = Metrics()
    metrics.apply_errors.inc()
    server = HealthServer(("127.0.0.1", 0), metrics, lambda: state["healthy"], lambda: state["ready"]).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert get(f"{base}/readyz") == (503, "waiting for the first list of: api/pods\n")
        state["ready"] = (True, "ok")
        assert get(f"{base}/readyz") == (200, "ok\n")
        state["healthy"] = (False, "one sync has been running for 400 s")
        assert get(f"{base}/healthz")[0] == 503
        code, text = get(f"{base}/metrics")
        assert code == 200 and "mnp_apply_errors_total 1.0" in text
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.stop()


def test_status_file(tmp_path: Path) -> None:
    h = Harness()
    cluster(h)
    path = tmp_path / "mnpd-status.json"
    writer = StatusWriter(str(path), h.clock, "node-a")
    h.controller.status = writer
    h.store.mark_synced("objects")
    h.controller.sync()
    doc = json.loads(path.read_text())  # not synced yet: every interface pending, and why
    assert doc["ready"] is False and doc["sources"] == {"objects": True, "state-dir": False}
    assert {i["state"] for i in doc["interfaces"]} == {"pending"}
    assert doc["interfaces"][0]["reason"] == "waiting for the first list of: state-dir"
    h.store.mark_synced("state-dir")
    h.controller.sync()
    doc = json.loads(path.read_text())
    assert doc["ready"] is True and doc["node"] == "node-a" and doc["schema"] == 1
    by_key = {(i["containerID"], i["ifname"]): i for i in doc["interfaces"]}
    server = by_key[SERVER.key]
    assert server["state"] == "programmed" and server["pod"] == "default/server"
    assert server["ingress"] == {"isolated": True, "policies": ["default/server-from-clients"], "allows": 1}
    assert server["egress"]["isolated"] is False and server["lastProgrammed"].endswith("Z")
    digest = server["rules"]
    stamp = path.stat().st_mtime_ns
    h.controller.sync()
    assert path.stat().st_mtime_ns == stamp  # nothing changed: not rewritten
    put(h.store, pod("client", labels={"role": "gone"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b"))
    h.controller.sync()
    doc = json.loads(path.read_text())
    by_key = {(i["containerID"], i["ifname"]): i for i in doc["interfaces"]}
    assert by_key[SERVER.key]["rules"] != digest and by_key[DB.key]["state"] == "programmed"


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("daemon.controller", logging.INFO, __file__, 1, msg, (), None)
    rec.__dict__.update(fields(**extra))
    return rec


def test_text_and_json_logs_carry_the_fields() -> None:
    rec = record("programmed", pod="ns1/web-0", ifname="net1", netns="/run/netns/a b", empty="")
    text = TextFormatter().format(rec)
    assert text.endswith('INFO daemon.controller programmed pod=ns1/web-0 ifname=net1 netns="/run/netns/a b"')
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["msg"] == "programmed" and doc["level"] == "info" and doc["pod"] == "ns1/web-0"
    assert doc["netns"] == "/run/netns/a b" and "empty" not in doc and doc["time"].endswith("Z")


def test_setup_installs_one_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        setup("json", "warning", stream)
        setup("json", "warning", stream)
        logging.getLogger("daemon.x").warning("hello", extra=fields(policy="ns/p"))
        logging.getLogger("daemon.x").info("not shown")
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["policy"] == "ns/p"
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_fake_clock() -> None:
    clock = FakeClock(start=5.0, wall_start=100.0)
    clock.advance(2.5)
    assert (clock.now(), clock.wall()) == (7.5, 102.5)


def test_rules_digest_changes_exactly_with_the_rules_and_keeps_only_live_ones() -> None:
    """Every field counts (a peer, a port, the interface's own fields); equal rules of two objects digest alike;
    the direction memo holds only the directions of the rules still live."""
    import ipaddress

    from daemon.status import RulesDigest
    from shared.rules import Allow, DirectionRules, InterfaceRules, PortRange

    def rules(peer: str, port: int, ifname: str = "net1", ifindex: int = 2) -> InterfaceRules:
        allow = Allow("ns/p ingress[0]", (ipaddress.ip_network(peer),), (PortRange("tcp", port, port),))
        return InterfaceRules(
            "ns/a", ifname, NET_A, DirectionRules(True, (allow,), ("ns/p",)), DirectionRules(False), ifindex
        )

    digest = RulesDigest()
    base = digest(rules("10.0.0.1/32", 80))
    assert digest(rules("10.0.0.1/32", 80)) == base  # another object, equal rules
    variants = [
        rules("10.0.0.2/32", 80),
        rules("10.0.0.1/32", 81),
        rules("10.0.0.1/32", 80, "net2"),
        rules("10.0.0.1/32", 80, ifindex=3),
    ]
    assert len({base, *(digest(r) for r in variants)}) == 1 + len(variants)
    live = rules("10.0.0.9/32", 80)
    digest(live)
    digest.keep_only([live])
    assert set(digest._directions) == {live.ingress, live.egress}
