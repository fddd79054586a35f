"""Hostile and broken manifests: what mnp cannot use never vanishes, never widens, never stops enforcement.

Each class of issue 11 (items 3, 4, 5, 7, 10, 12) has a test here that failed before the fix: a policy-looking
object with a wrong apiVersion, a misspelt kind or no name; a non-object document; a symlink out of the directory;
duplicate policy names; a bare IP as a CIDR; 600 `[`; a FIFO; a file too large; YAML aliases that expand without
bound or into themselves. Then `test_hostile_input_never_widens_and_never_stops_enforcement` generates hostile
edits (hypothesis) against a running manifests source, controller and FakeNft, and checks the invariants of
docs/daemon.md "Hostile input" with the packet tracer: the source stays up, the result is never wider than before
the bad input, the problem is reported, and a later good edit is still enforced.

Address plan: network default/net-a 10.10.0.0/24 (local pods server .1, db .2; remote peers client .10, other
.11); 192.0.2.0/24 (TEST-NET-1) stands for hosts outside the cluster.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.apply import Applier
from daemon.clock import FakeClock
from daemon.controller import Controller
from daemon.events import LogEvents
from daemon.metrics import Metrics
from daemon.sources.manifests import ManifestsSource
from daemon.store import STATE, Store
from shared.manifests import MAX_DEPTH, MAX_FILE_BYTES, build_cluster, load_dir, read_file
from shared.model import MultiNetworkPolicy, parse_policy, refuse_duplicates
from shared.nft.fake import FakeNft
from shared.nft.render import RenderOptions, render_interface
from shared.nft.trace import Packet, trace
from shared.rules import InterfaceRules
from tests.unit.test_daemon_builders import NET_A, attach, entry, from_pods, nad, namespace, pod, policy

JSON = dict[str, Any]


def write(directory: Path, name: str, *docs: Any) -> Path:
    path = directory / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)
    return path


def only_policy(loaded_policies: tuple[MultiNetworkPolicy, ...]) -> MultiNetworkPolicy:
    assert len(loaded_policies) == 1, loaded_policies
    return loaded_policies[0]


# ------------------------------------------------------------------------------------------- item 3


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda p: p.update(apiVersion="k8s.cni.cncf.io/v1"), "apiVersion 'k8s.cni.cncf.io/v1' is not one of"),
        (lambda p: p.update(kind="MultinetworkPolicy"), "kind: 'MultinetworkPolicy' is not MultiNetworkPolicy"),
        (lambda p: p.update(kind="MultiNetworkPolicies"), "is not MultiNetworkPolicy"),
        (lambda p: p.pop("kind"), "kind: missing"),
        (lambda p: p["metadata"].pop("name"), "metadata.name: missing"),
    ],
)
def test_a_policy_looking_object_that_cannot_be_used_still_isolates(change: Any, problem: str) -> None:
    """Before: each of these was dropped ("kind … is not used by mnp; ignored", "metadata.name: missing"), so the
    pods it isolated opened."""
    raw = policy("deny", select={"app": "server"}, ingress=[from_pods({"role": "client"})])
    change(raw)
    loaded = build_cluster([("p.yaml", raw)])
    found = only_policy(loaded.cluster.policies)
    assert not found.valid and any(problem in p for p in found.problems), found.problems
    assert found.policy_for == (NET_A,) and found.pod_selector.matches({"app": "server"})
    assert found.rules("Ingress") == ()  # isolates, allows nothing
    assert any(problem in str(p) and p.policy == found.key for p in loaded.errors)


def test_a_kubernetes_network_policy_and_other_kinds_are_not_taken_for_policies() -> None:
    netpol = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"}, "spec": {}}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    loaded = build_cluster([("a.yaml", netpol), ("b.yaml", cm)])
    assert loaded.cluster.policies == () and loaded.errors == []


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (["a", "list"], "not a Kubernetes object (a list)"),
        ("a string", "not a Kubernetes object (a str)"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": ["x"]}, "metadata: not an object"),
        ({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "namespace": 7}}, "metadata.namespace: 7"),
        ({"kind": ["Pod"], "metadata": {"name": "a"}}, "kind: ['Pod'] is not a kind"),
        ({"kind": "Pdo", "apiVersion": "v1", "metadata": {"name": "a"}}, "not Pod (misspelt?)"),
        ({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "a", "labels": {"app": ["x"]}}}, "labels"),
        ({"kind": "List", "items": "nope"}, "List.items: not a list"),
    ],
)
def test_a_document_no_one_can_identify_breaks_its_file(document: Any, why: str) -> None:
    loaded = build_cluster([("f.yaml", document)])
    assert any(why in str(p) and p.breaks_file for p in loaded.problems), [str(p) for p in loaded.problems]


def test_a_symlink_out_of_the_directory_is_not_followed_but_one_inside_is(tmp_path: Path) -> None:
    root = tmp_path / "manifests"
    root.mkdir()
    (tmp_path / "unrelated.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: outside}\n")
    write(root, "real.yaml", namespace("inside"))
    (root / "out.yaml").symlink_to(tmp_path / "unrelated.yaml")
    (root / "in.yaml").symlink_to(root / "real.yaml")  # a ConfigMap volume is symlinks inside the directory
    assert read_file(root / "out.yaml", root).broken
    assert "outside the manifests directory" in str(read_file(root / "out.yaml", root).problems[0])
    assert not read_file(root / "in.yaml", root).broken


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")  # a reader that opened it blocking would wait for a writer for ever
    loaded = load_dir(tmp_path)
    assert [str(p) for p in loaded.errors] == ["error: pipe.yaml: a FIFO, not a regular file: not read"]


# ------------------------------------------------------------------------------------------- item 4


def test_duplicate_policy_names_are_both_refused_and_never_wider_than_either() -> None:
    """Before: the file read first won silently, and it could be the wider one."""
    narrow = policy("p", select={"app": "server"}, ingress=[from_pods({"role": "client"}, [("TCP", 80)])])
    wide = policy("p", select={"app": "db"}, ingress=[{}], types=["Ingress", "Egress"])
    loaded = build_cluster([("a.yaml", narrow), ("b.yaml", wide)])
    merged = only_policy(loaded.cluster.policies)
    assert not merged.valid and merged.rules("Ingress") == () and merged.rules("Egress") == ()
    assert merged.pod_selector.matches({"app": "server"}) and merged.pod_selector.matches({"app": "db"})
    assert merged.policy_types == {"Ingress", "Egress"}
    duplicates = [str(p) for p in loaded.errors if "defined again" in str(p)]
    assert len(duplicates) == 2 and "a.yaml" in duplicates[0] and "b.yaml" in duplicates[1]


def test_refusing_duplicates_keeps_their_common_selector_and_every_network() -> None:
    a = parse_policy(policy("p", select={"app": "x"}, policy_for="net-a"))
    b = parse_policy(policy("p", select={"app": "x"}, policy_for="net-b"))
    merged = refuse_duplicates(a, b, "in a and in b")
    assert merged.pod_selector == a.pod_selector and merged.policy_for == ("default/net-a", "default/net-b")


# ------------------------------------------------------------------------------------------- item 5


@pytest.mark.parametrize("where", ["cidr", "except"])
def test_a_bare_ip_is_not_a_cidr(where: str) -> None:
    """Before: 10.100.0.11 was taken as 10.100.0.11/32 (the NetworkPolicy API refuses it)."""
    block = {"cidr": "10.100.0.11"} if where == "cidr" else {"cidr": "10.100.0.0/24", "except": ["10.100.0.11"]}
    found = parse_policy(policy("p", ingress=[{"from": [{"ipBlock": block}]}]))
    assert not found.valid and found.rules("Ingress") == ()
    assert any("is an address, not a CIDR" in p for p in found.problems)


def test_unreadable_policy_for_isolates_on_every_network_and_missing_on_none() -> None:
    garbled = policy("p")
    garbled["metadata"]["annotations"]["k8s.v1.cni.cncf.io/policy-for"] = ["net-a"]
    found = parse_policy(garbled)
    assert found.every_network and found.applies_on("default/anything") and not found.valid
    assert "every network" in found.effect()
    missing = policy("p")
    del missing["metadata"]["annotations"]
    found = parse_policy(missing)
    assert not found.applies_on(NET_A) and found.effect() == "applies to no network, so it changes nothing"


def test_effect_says_what_an_invalid_policy_does() -> None:
    found = parse_policy(policy("p", select={"app": "x"}, ingress=[{"from": [{"ipBlock": {"cidr": "1.2.3.4"}}]}]))
    assert found.effect() == (
        "enforced fail-closed: isolates ingress of the pods its podSelector selects on default/net-a, allows nothing"
    )
    assert found.effect(["default/other"]) == (
        "applies to no known network (default/net-a: no NetworkAttachmentDefinition)"
    )


# ------------------------------------------------------------------------------------------- item 7 and bounds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("[" * 600, "not valid YAML"),  # before: RecursionError out of the loader, mnpd could not start
        ("[" * 100_000, "not valid YAML"),
        ("a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5), f"nested deeper than {MAX_DEPTH} levels"),
        ("- " * 3000 + "x", "not valid YAML"),
        ("a: &a [*a]", "contains itself"),
        (
            "\n".join(
                [f"l0: &l0 [{', '.join(['x'] * 10)}]"]
                + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
            ),
            "values once its YAML aliases are expanded",
        ),
    ],
)
def test_a_file_no_step_can_walk_safely_is_one_problem(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    write(tmp_path, "good.yaml", namespace("ok"))
    loaded = load_dir(tmp_path)
    assert set(loaded.cluster.namespaces) == {"ok"}
    assert len(loaded.errors) == 1 and why in str(loaded.errors[0]) and loaded.errors[0].breaks_file
    assert len(str(loaded.errors[0])) < 400  # a short excerpt, not the file


def test_a_file_too_large_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "big.yaml").write_bytes(b"#" * (MAX_FILE_BYTES + 1))
    assert [str(p) for p in load_dir(tmp_path).errors] == [
        f"error: big.yaml: {MAX_FILE_BYTES + 1} bytes, more than a manifest file can have ({MAX_FILE_BYTES}): not read"
    ]


# ------------------------------------------------------------------------------------------- the source and mnpd


SERVER = entry("c-server", "server", ip="10.10.0.1")
DB = entry("c-db", "db", ip="10.10.0.2")
PEERS = ("10.10.0.10", "10.10.0.11", "10.10.0.1", "10.10.0.2", "192.0.2.7")
PORTS = (80, 5432, 8080)


def cluster_files(directory: Path) -> None:
    write(directory, "cluster.yaml", namespace("default", {"team": "a"}), nad("net-a"))
    write(directory, "pod-server.yaml", pod("server", labels={"app": "server"}, nets=[(NET_A, "net1", "10.10.0.1")]))
    write(directory, "pod-db.yaml", pod("db", labels={"app": "db"}, nets=[(NET_A, "net1", "10.10.0.2")]))
    for name, ip, labels in (("client", "10.10.0.10", {"role": "client"}), ("other", "10.10.0.11", {"role": "o"})):
        write(directory, f"pod-{name}.yaml", pod(name, labels=labels, nets=[(NET_A, "net1", ip)], node="node-b"))
    write(
        directory,
        "policy-server.yaml",
        policy("server-from-clients", select={"app": "server"}, ingress=[from_pods({"role": "client"}, [("TCP", 80)])]),
    )
    write(
        directory,
        "policy-db.yaml",
        policy(
            "db",
            select={"app": "db"},
            ingress=[from_pods({"role": "o"}, [("TCP", 5432)]), {"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}],
            egress=[{"to": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}], "ports": [{"port": 8080}]}],
        ),
    )


class Node:
    """A manifests source, the controller and a FakeNft per local pod, as mnpd runs them (no threads: the test
    calls `reload` and `sync`)."""

    def __init__(self, directory: Path) -> None:
        self.clock = FakeClock()
        self.store = Store(self.clock)
        self.source = ManifestsSource(self.store, str(directory))
        self.store.register_source("state-dir", [STATE])
        self.events = LogEvents()
        self.metrics = Metrics()
        pending = {e.netns: InterfaceRules.pending(e.ifname, ifindex=e.ifindex) for e in (SERVER, DB)}
        self.nfts = {netns: FakeNft.from_transaction(render_interface(rules)) for netns, rules in pending.items()}
        applier = Applier(lambda netns: self.nfts[netns], RenderOptions())
        self.controller = Controller(self.store, applier, self.clock, events=self.events, metrics=self.metrics)
        attach(self.store, SERVER, DB)
        self.store.mark_synced("state-dir")
        self.load()
        self.store.mark_synced("manifests")
        self.controller.sync()

    def load(self) -> None:
        self.source.reload()
        self.controller.sync()

    def allowed(self) -> set[tuple[str, str, str, int, str]]:
        """Every (interface, direction, peer, port, protocol) the programmed tables accept."""
        out = set()
        for e in (SERVER, DB):
            local = "10.10.0.1" if e is SERVER else "10.10.0.2"
            table = self.nfts[e.netns].list_table()
            for peer in PEERS:
                for port in PORTS:
                    for proto in ("tcp", "udp"):
                        if trace(table, Packet("input", e.ifname, peer, local, proto, port)).verdict == "accept":
                            out.add((e.pod, "in", peer, port, proto))
                        if trace(table, Packet("output", e.ifname, local, peer, proto, port)).verdict == "accept":
                            out.add((e.pod, "out", peer, port, proto))
        return out

    def reported(self) -> list[str]:
        problems = [m for found in self.store.source_problems().values() for m in found]
        return problems + [n["effect"] for n in self.controller.policy_notes()]


@pytest.fixture
def node(tmp_path: Path) -> Node:
    cluster_files(tmp_path)
    return Node(tmp_path)


def test_the_baseline_is_what_the_policies_say(node: Node) -> None:
    allowed = node.allowed()
    assert ("default/server", "in", "10.10.0.10", 80, "tcp") in allowed
    assert ("default/server", "in", "10.10.0.11", 80, "tcp") not in allowed
    assert ("default/db", "in", "192.0.2.7", 8080, "udp") in allowed
    assert ("default/db", "out", "10.10.0.1", 8080, "tcp") in allowed
    assert ("default/db", "out", "10.10.0.1", 80, "tcp") not in allowed
    assert node.reported() == []


def test_a_broken_file_keeps_its_last_good_version_and_the_others_still_change(tmp_path: Path, node: Node) -> None:
    """Before: a RecursionError in one file stopped every later reload (a narrowing included)."""
    before = node.allowed()
    (tmp_path / "policy-server.yaml").write_text("[" * 600)
    node.load()
    assert node.allowed() == before
    assert any("policy-server.yaml" in m and "last good version" in m for m in node.reported())
    assert node.metrics.source_problems.labels("manifests")._value.get() >= 1
    write(tmp_path, "policy-db.yaml", policy("db", select={"app": "db"}, types=["Ingress", "Egress"]))
    node.load()  # a narrowing elsewhere is still enforced
    assert {a for a in node.allowed() if a[0] == "default/db"} == set()
    assert {a for a in node.allowed() if a[0] == "default/server"} == {a for a in before if a[0] == "default/server"}


def test_mnpd_starts_with_a_broken_file_and_refuses_its_policies(tmp_path: Path) -> None:
    cluster_files(tmp_path)
    text = (tmp_path / "policy-server.yaml").read_text()
    (tmp_path / "policy-server.yaml").write_text(text + "---\n[not, an, object]\n")
    started = Node(tmp_path)
    assert not {a for a in started.allowed() if a[:2] == ("default/server", "in")}  # isolated, nothing allowed
    assert any("never good" in m for m in started.reported())


def test_only_changed_files_are_read_again(tmp_path: Path, node: Node) -> None:
    read = node.source.files_read
    node.load()
    assert node.source.files_read == read  # nothing changed: nothing read
    write(tmp_path, "pod-other.yaml", pod("other", labels={"role": "o"}, nets=[(NET_A, "net1", "10.10.0.12")]))
    node.load()
    assert node.source.files_read == read + 1


def test_invalid_policies_are_reported_with_what_they_do(tmp_path: Path, node: Node) -> None:
    """Before: an invalid policy without policy-for was announced as "enforced fail-closed"."""
    bad = policy("inert", select={"app": "server"}, ingress=[{}])
    del bad["metadata"]["annotations"]
    write(tmp_path, "policy-inert.yaml", bad)
    write(tmp_path, "policy-nowhere.yaml", policy("nowhere", policy_for="default/no-such-net"))
    node.load()
    notes = {n["policy"]: n for n in node.controller.policy_notes()}
    assert notes["default/inert"]["effect"] == "applies to no network, so it changes nothing"
    assert notes["default/nowhere"]["effect"].startswith("applies to no known network")
    assert notes["default/nowhere"]["problems"] == []
    messages = [message for _, reason, message in node.events.posted if reason == "InvalidPolicy"]
    assert messages and messages[0].startswith("applies to no network, so it changes nothing: ")


# ------------------------------------------------------------------------------------------- generated input

# Values of the wrong type or shape for wherever they land. Not empty lists or maps, nor strings in place of
# strings: those can be valid, deliberate edits (`to: []` allows every destination, by the API's definition).
HOSTILE_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.booleans(),
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
    st.builds(lambda n: json.loads("[" * n + "]" * n), st.integers(min_value=2, max_value=200)),
    st.sampled_from(["10.10.0.99", "0.0.0.0/0", "::/0", "*", "", '" : accept }\nflush ruleset', "\x00"]),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*prefix, i))
    return out


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        document = document[step]
    document[path[-1]] = value


def _is_valid_scalar_swap(original: Any, value: Any) -> bool:
    """A scalar replaced by another of its type can be a valid, deliberate edit (a label value, a port number):
    that changes access by design and is not hostile input, so the generator does not count it."""
    return isinstance(original, str | int) and type(original) is type(value)


FILES = ("cluster.yaml", "pod-server.yaml", "pod-db.yaml", "pod-client.yaml", "policy-server.yaml", "policy-db.yaml")


@st.composite
def hostile_edits(draw: st.DrawFn) -> tuple[str, str, bytes | None]:
    """(file, what, new content or None for a symlink out of the directory)."""
    name = draw(st.sampled_from(FILES))
    kind = draw(
        st.sampled_from(["garble-field", "non-object", "deep", "binary", "huge", "duplicate", "bare-ip", "symlink"])
    )
    if kind == "symlink":
        return name, kind, None
    if kind == "non-object":
        return name, kind, yaml.safe_dump(draw(st.one_of(st.lists(st.integers()), st.text(), st.integers()))).encode()
    if kind == "deep":
        return name, kind, b"a: " + b"[" * draw(st.integers(min_value=65, max_value=5000))
    if kind == "binary":
        return name, kind, draw(st.binary(min_size=1, max_size=64)) + b"\xff\xfe"
    if kind == "huge":  # the content is made in _apply: hypothesis would print it
        return name, kind, b""
    if kind == "duplicate":  # another file's policy, under this file's name
        return name, kind, b""
    if kind == "bare-ip":
        return "policy-db.yaml", kind, b""
    return name, kind, b""


def _apply(directory: Path, name: str, kind: str, content: bytes | None, data: st.DataObject) -> None:
    path = directory / name
    if kind == "symlink":
        outside = directory.parent / f"outside-{name}"
        outside.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}))
        path.unlink()
        path.symlink_to(outside)
        return
    if kind == "duplicate":
        write(directory, "policy-copy.yaml", *yaml.safe_load_all((directory / "policy-db.yaml").read_text()))
        return
    if kind == "bare-ip":
        docs = list(yaml.safe_load_all(path.read_text()))
        docs[0]["spec"]["ingress"][1]["from"][0]["ipBlock"]["cidr"] = "192.0.2.7"
        write(directory, name, *docs)
        return
    if kind == "garble-field":
        docs = list(yaml.safe_load_all(path.read_text()))
        index = data.draw(st.integers(min_value=0, max_value=len(docs) - 1))
        document = copy.deepcopy(docs[index])
        at = data.draw(st.sampled_from(_paths(document)))
        original: Any = document
        for step in at:
            original = original[step]
        value = data.draw(HOSTILE_VALUES.filter(lambda v: not _is_valid_scalar_swap(original, v) and v != original))
        _set(document, at, value)
        docs[index] = document
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(yaml.safe_dump_all(docs))
        os.replace(tmp, path)
        return
    assert content is not None
    if kind == "huge":
        content = b"#" * (MAX_FILE_BYTES + 1)
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=hostile_edits(), data=st.data())
def test_hostile_input_never_widens_and_never_stops_enforcement(
    tmp_path_factory: pytest.TempPathFactory, edit: tuple[str, str, bytes | None], data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("hostile") / "manifests"
    directory.mkdir()
    cluster_files(directory)
    mnpd = Node(directory)
    before = mnpd.allowed()
    name, kind, content = edit
    _apply(directory, name, kind, content, data)
    mnpd.load()  # the source stays up: reload and sync raise nothing
    after = mnpd.allowed()
    assert after <= before, f"{kind} of {name} widened: {sorted(after - before)}"
    if after != before or kind in ("non-object", "deep", "binary", "huge", "duplicate", "bare-ip", "symlink"):
        assert mnpd.reported(), f"{kind} of {name} changed access or was broken, and nothing was reported"
    # enforcement goes on: a narrowing in another file is still applied
    other, pod_key = (
        ("policy-server.yaml", "default/server") if name == "policy-db.yaml" else ("policy-db.yaml", "default/db")
    )
    write(directory, other, policy(other[7:-5], select={"app": pod_key[8:]}, types=["Ingress", "Egress"]))
    mnpd.load()
    assert {a for a in mnpd.allowed() if a[0] == pod_key} == set()
