"""End to end, real packets: manifests mnpd cannot use never open a pod and never stop enforcement (issue 11,
items 3, 4, 5 and 7). Each test failed before the fix: the bad input opened the server, or froze mnpd.

The world of tests/integration/test_daemon_e2e.py (one test node, the real macvlan → mnp chain, mnpd from a
manifests directory, probes between pod namespaces); every name has the `mnpt-` prefix and is removed pass or fail.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import load
from tests.integration.test_daemon_e2e import (
    PodHandle,
    World,
    can,
    daemon,
    daemon_args,
    ingress_policy,
    wait_for,
    world,
)

__all__ = ["daemon", "world"]

pytestmark = pytest.mark.netns


@pytest.fixture
def trio(world: World, daemon: Daemon) -> Iterator[tuple[World, PodHandle, PodHandle, PodHandle]]:
    """server isolated by `policy.yaml` (client may reach TCP 8080), client, other; programmed and checked."""
    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
    w.wait_programmed(server)
    wait_for(lambda: can([(client, server, "tcp", 8080)]) == [True], what="client allowed")
    assert can([(other, server, "tcp", 8080), (client, server, "tcp", 8081)]) == [False, False]
    yield w, client, other, server


def _policy() -> dict[str, Any]:
    return dict(ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}]))


def _wrong_api(w: World) -> None:
    w.write("policy.yaml", [{**_policy(), "apiVersion": "k8s.cni.cncf.io/v1"}])


def _kind_typo(w: World) -> None:
    w.write("policy.yaml", [{**_policy(), "kind": "MultiNetworkPolicies"}])


def _no_name(w: World) -> None:
    broken = copy.deepcopy(_policy())
    del broken["metadata"]["name"]
    w.write("policy.yaml", [broken])


def _non_object(w: World) -> None:
    w.write("policy.yaml", [[_policy()]])  # the policy inside a list: a document that is no object


def _symlink(w: World) -> None:
    unrelated = w.tmp / "unrelated.yaml"
    unrelated.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: mnpt-unrelated}\n")
    tmp = w.manifests / ".policy.yaml.link"
    tmp.symlink_to(unrelated)
    tmp.replace(w.manifests / "policy.yaml")


@pytest.mark.parametrize("breakage", [_wrong_api, _kind_typo, _no_name, _non_object, _symlink])
def test_a_policy_mnpd_cannot_use_keeps_isolating(
    trio: tuple[World, PodHandle, PodHandle, PodHandle], breakage: Callable[[World], None]
) -> None:
    """Before: the policy was dropped without a word, and the server opened to everyone."""
    w, client, other, server = trio
    digest = w.digest(server)
    breakage(w)
    # mnpd has seen the change once it reported it, or reprogrammed the server
    status = w.status
    wait_for(
        lambda: bool(status().get("policies") or status().get("problems")) or w.digest(server) != digest,
        what="the change seen",
    )
    if breakage in (_wrong_api, _kind_typo, _no_name):
        w.wait_programmed(server, since=digest)  # refused: isolates, allows nothing
        assert can([(client, server, "tcp", 8080)]) == [False]
    assert can([(other, server, "tcp", 8080), (other, server, "udp", 5353)]) == [False, False]
    assert status().get("policies") or status().get("problems"), "not reported"


def test_duplicate_policy_names_are_both_refused(trio: tuple[World, PodHandle, PodHandle, PodHandle]) -> None:
    """Before: the file read first won; a wide duplicate sorted before the narrow one opened the server."""
    w, client, other, server = trio
    digest = w.digest(server)
    wide = _policy()
    wide["spec"] = {"podSelector": {"matchLabels": {"app": "server"}}, "ingress": [{}]}
    w.write("a-copy.yaml", [wide])
    w.wait_programmed(server, since=digest)
    assert can([(other, server, "tcp", 8080), (client, server, "tcp", 8080)]) == [False, False]
    policies = w.status()["policies"]
    assert policies[0]["policy"] == "default/p" and "defined more than once" in policies[0]["problems"][0]


def test_a_bare_ip_is_no_cidr(trio: tuple[World, PodHandle, PodHandle, PodHandle]) -> None:
    """Before: 10.243.0.X was taken as a /32 and the client admitted."""
    w, client, other, server = trio
    digest = w.digest(server)
    bare = _policy()
    bare["spec"]["ingress"] = [{"from": [{"ipBlock": {"cidr": client.ip}}, {"ipBlock": {"cidr": other.ip}}]}]
    w.write("policy.yaml", [bare])
    w.wait_programmed(server, since=digest)
    assert can([(client, server, "tcp", 8080), (other, server, "tcp", 8080)]) == [False, False]
    assert "is an address, not a CIDR" in w.status()["policies"][0]["problems"][0]


def test_a_deeply_nested_file_costs_only_that_file(world: World) -> None:
    """Before: RecursionError — mnpd could not start while the file was there, and a running mnpd ignored every
    later change, a narrowing included."""
    w = world
    client, other = w.add_pod("client", {"role": "client"}), w.add_pod("other", {"role": "other"})
    server = w.add_pod("server", {"app": "server"})
    w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, None, [{"port": 8080}])])  # from anyone
    (w.manifests / "deep.yaml").write_text("[" * 600)
    d = Daemon(load(daemon_args(w), {})).start()
    try:
        wait_for(lambda: d.ready()[0], what="mnpd ready with the deep file there")
        digest = w.wait_programmed(server)
        wait_for(lambda: can([(other, server, "tcp", 8080)]) == [True], what="other allowed")
        problems = w.status()["problems"]["manifests"]
        assert any("deep.yaml" in p and "not valid YAML" in p for p in problems)
        (w.manifests / "deep2.yaml").write_text("a: " + "[" * 600)
        w.write("policy.yaml", [ingress_policy("p", {"app": "server"}, {"role": "client"}, [{"port": 8080}])])
        w.wait_programmed(server, since=digest)  # the narrowing is enforced
        assert can([(other, server, "tcp", 8080), (client, server, "tcp", 8080)]) == [False, True]
    finally:
        d.stop()
