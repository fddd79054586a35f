"""Values from the API that a real API server refuses, sent by a hostile or buggy one (red team, API objects).

Each test was failing first; the module docstring of the code each one pins says what mnpd does now:

* a peer pod whose containerPort is out of 1-65535 (70000, 0, -1): its named port resolved to a number nft refuses,
  so every pod egressing to that port name by name failed its transaction and was stuck on its previous rules,
  retried forever — one hostile pod froze other pods' enforcement. Now the entry is refused and reported
  (InvalidPod), the name resolves to nothing on that pod (no allow), the others are programmed.
"""

from __future__ import annotations

import pytest

from daemon.records import PROGRAMMED
from daemon.sources.convert import convert
from daemon.store import POD
from tests.unit.test_daemon_builders import NET_A, pod, policy, put
from tests.unit.test_daemon_controller import SERVER, Harness, cluster


def egress_to_named_port(name: str) -> dict[str, object]:
    return policy(
        "server-egress",
        select={"app": "server"},
        egress=[{"to": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": name}]}],
    )


@pytest.mark.parametrize("number", [70000, 65536, 0, -1])
def test_a_peer_with_a_container_port_out_of_range_freezes_no_one(number: int) -> None:
    h = Harness()
    cluster(h)
    put(h.store, egress_to_named_port("http"))
    put(h.store, pod("client", labels={"role": "client"}, nets=[(NET_A, "net1", "10.10.0.10")], node="node-b",
                     ports=[("http", 8080, "TCP")]))  # fmt: skip
    h.ready()
    h.sync()
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.10", 8080) == "accept"
    hostile = pod("other", labels={"role": "other"}, nets=[(NET_A, "net1", "10.10.0.11")], node="node-b",
                  ports=[("http", number, "TCP")])  # fmt: skip
    put(h.store, hostile)
    h.sync()
    assert h.controller.records[SERVER.key].state == PROGRAMMED, h.controller.records[SERVER.key].last_error
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.10", 8080) == "accept"
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.11", 8080) == "drop"  # its "http" is no port: no allow
    # enforcement goes on: a policy change after it still lands
    put(h.store, egress_to_named_port("other-name"))
    h.sync()
    assert h.controller.records[SERVER.key].state == PROGRAMMED
    assert h.egress(SERVER, "10.10.0.1", "10.10.0.10", 8080) == "drop"
    # and the hostile pod is reported
    found = convert(POD, hostile).problems
    assert found is not None and f"{number} is not in 1-65535" in found.problems[0]
