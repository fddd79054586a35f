"""The state-dir contract (shared/state.py) the plugin writes and the daemon reads."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from shared.errors import StateError
from shared.state import SCHEMA, StateEntry, StateStore, entry_name, is_entry_name

ENTRY = StateEntry(
    container_id="3f6940ab5ab4",
    ifname="net1",
    netns="/var/run/netns/cni-1234",
    pod_namespace="ns1",
    pod_name="web-0",
    pod_uid="6b1e0c4e",
    network="macvlan-conf",
    ips=("10.200.0.10/24", "2001:db8::10/64"),
    mac="52:54:00:12:34:56",
    created="2026-05-09T07:35:25Z",
    plugin="0.1.0",
)


def test_json_schema_is_the_documented_one() -> None:
    raw = json.loads(ENTRY.to_json())
    assert raw == {
        "schema": SCHEMA,
        "containerID": "3f6940ab5ab4",
        "ifname": "net1",
        "netns": "/var/run/netns/cni-1234",
        "podNamespace": "ns1",
        "podName": "web-0",
        "podUID": "6b1e0c4e",
        "network": "macvlan-conf",
        "ips": ["10.200.0.10/24", "2001:db8::10/64"],
        "mac": "52:54:00:12:34:56",
        "created": "2026-05-09T07:35:25Z",
        "plugin": "0.1.0",
        "origin": "cni",
    }
    assert StateEntry.from_json(ENTRY.to_json()) == ENTRY
    assert ENTRY.pod == "ns1/web-0" and StateEntry("c", "i", "").pod == ""


def test_origin_defaults_to_the_plugin_and_round_trips_adopted() -> None:
    """Entries of older plugins have no `origin`: they are the plugin's. mnpd's adopted entries say so."""
    raw = json.loads(ENTRY.to_json())
    del raw["origin"]
    old = StateEntry.from_json(json.dumps(raw))
    assert old == ENTRY and old.origin == "cni" and not old.adopted
    adopted = StateEntry("adopted-6b1e0c4e", "net1", "/run/netns/x", origin="adopted")
    assert StateEntry.from_json(adopted.to_json()) == adopted and adopted.adopted
    with pytest.raises(StateError, match="origin"):
        StateEntry.from_json(json.dumps(raw | {"origin": 1}))


def test_unknown_keys_are_ignored() -> None:
    raw = json.loads(ENTRY.to_json()) | {"future": [1, 2]}
    assert StateEntry.from_json(json.dumps(raw)) == ENTRY


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"schema": 2, "containerID": "c", "ifname": "i"}',
        '{"schema": true, "containerID": "c", "ifname": "i"}',
        '{"containerID": "c", "ifname": "i"}',
        '{"schema": 1, "ifname": "i"}',
        '{"schema": 1, "containerID": "", "ifname": "i"}',
        '{"schema": 1, "containerID": "c", "ifname": "i", "ips": "10.0.0.1/24"}',
        '{"schema": 1, "containerID": "c", "ifname": "i", "ips": [1]}',
        '{"schema": 1, "containerID": "c", "ifname": "i", "podName": 5}',
    ],
)
def test_bad_entries_raise_state_error(text: str) -> None:
    with pytest.raises(StateError):
        StateEntry.from_json(text)


@pytest.mark.parametrize(
    ("container", "ifname", "name"),
    [
        ("3f6940ab5ab4", "net1", "3f6940ab5ab4_net1.json"),
        ("a_b", "c", "a%5Fb_c.json"),
        ("a", "b_c", "a_b_c.json"),
        ("x/../y", "eth0.100", "x%2F..%2Fy_eth0.100.json"),
        (".hidden", "net1", "%2Ehidden_net1.json"),
        ("100%", "ü", "100%25_%C3%BC.json"),
    ],
)
def test_entry_names_are_escaped_and_unambiguous(container: str, ifname: str, name: str) -> None:
    assert entry_name(container, ifname) == name
    assert is_entry_name(name)


def test_tmp_files_and_the_lock_are_not_entries() -> None:
    assert not is_entry_name(".c_net1.json.1a2b3c4d.tmp")
    assert not is_entry_name(".lock")
    assert not is_entry_name("c_net1.json.tmp")


def test_write_read_delete(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "a" / "state"))
    assert store.read("c", "net1") is None
    assert store.entries() == ([], [])  # a missing dir is empty
    path = store.write(ENTRY)
    assert path == str(tmp_path / "a" / "state" / "3f6940ab5ab4_net1.json")
    assert store.read(ENTRY.container_id, "net1") == ENTRY
    assert sorted(os.listdir(store.directory)) == ["3f6940ab5ab4_net1.json"]  # no tmp left
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert store.delete(ENTRY.container_id, "net1") is True
    assert store.delete(ENTRY.container_id, "net1") is False
    assert store.read(ENTRY.container_id, "net1") is None


def test_write_replaces_atomically(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.write(ENTRY)
    newer = StateEntry(ENTRY.container_id, ENTRY.ifname, "/var/run/netns/other")
    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            entry = store.read(ENTRY.container_id, ENTRY.ifname)  # never partial: parses or raises
            assert entry is not None
            seen.append(entry.netns)

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(60):
        store.write(newer)
        store.write(ENTRY)
    stop.set()
    thread.join()
    assert set(seen) <= {ENTRY.netns, newer.netns}


def test_read_tolerates_corrupt_entries(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.write(ENTRY)
    store.write(StateEntry("other", "net2", "/var/run/netns/x"))
    (tmp_path / "bad_net1.json").write_text("{nope")
    (tmp_path / "misnamed_net1.json").write_text(StateEntry("someone", "net1", "").to_json())
    (tmp_path / ".in-progress.json.tmp").write_text("{")
    (tmp_path / "README").write_text("not an entry")
    found, problems = store.entries()
    assert sorted(e.container_id for e in found) == ["3f6940ab5ab4", "other"]
    assert sorted(Path(p.path).name for p in problems) == ["bad_net1.json", "misnamed_net1.json"]
    with pytest.raises(StateError, match=r"bad_net1\.json"):
        store.read("bad", "net1")


def test_by_container(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    for cid, ifname in [("c1", "net1"), ("c1", "net2"), ("c10", "net1"), ("c1_x", "net1")]:
        store.write(StateEntry(cid, ifname, "/n"))
    assert sorted(e.ifname for e in store.by_container("c1")) == ["net1", "net2"]
    assert [e.container_id for e in store.by_container("c1_x")] == ["c1_x"]


def test_unusable_directory_raises_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = StateStore(str(blocker / "state"))
    with pytest.raises(StateError):
        store.write(ENTRY)
    with pytest.raises(StateError):
        store.check_writable()
    with pytest.raises(StateError), store.lock():
        pass
    with pytest.raises(StateError):
        store.entries()


def test_failed_write_leaves_no_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(str(tmp_path))

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StateError, match="No space left"):
        store.write(ENTRY)
    assert os.listdir(tmp_path) == []


def test_lock_is_exclusive(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.lock():
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(5)

    def second() -> None:
        with store.lock():
            order.append("second in")

    waiter = threading.Thread(target=second)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # blocked behind the holder
    release.set()
    thread.join()
    waiter.join(5)
    assert order == ["first in", "first out", "second in"]
