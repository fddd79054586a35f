"""The state-dir and manifests sources on a real filesystem with real inotify (watchdog); polled with deadlines."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from daemon.clock import SystemClock
from daemon.sources.manifests import ManifestsSource
from daemon.sources.statedir import StateDirSource, netns_gone
from daemon.store import NAMESPACE, POD, POLICY, STATE, Store
from shared.state import StateEntry, StateStore
from tests.unit.test_daemon_builders import NET_A, namespace, pod, policy

DEADLINE_S = 5.0


def wait_for(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def netns_dir(tmp_path: Path) -> Path:
    """Stands in for /run/netns: files here are "namespaces" that exist."""
    d = tmp_path / "netns"
    d.mkdir()
    return d


def make_entry(netns_dir: Path, container: str, ifname: str = "net1", exists: bool = True) -> StateEntry:
    path = netns_dir / container
    if exists:
        path.touch()
    return StateEntry(container, ifname, str(path), "default", f"pod-{container}", f"uid-{container}", "net-a")


@pytest.fixture
def state_source(tmp_path: Path) -> Iterator[tuple[StateDirSource, Store, StateStore]]:
    store = Store(SystemClock())
    directory = tmp_path / "state"
    source = StateDirSource(store, str(directory), rescan_period=3600)
    yield source, store, StateStore(str(directory))
    source.stop()


def test_state_dir_scan_then_watch(state_source: tuple[StateDirSource, Store, StateStore], netns_dir: Path) -> None:
    source, store, state = state_source
    state.ensure()
    before = make_entry(netns_dir, "c1")
    state.write(before)
    Path(state.directory, "broken.json").write_text("{not json")
    Path(state.directory, ".c9_net1.json.1234.tmp").write_text("{}")
    assert not store.synced()
    source.start()
    assert store.synced()
    assert store.get(STATE, before.key) == before  # the scan, before any event
    assert store.count(STATE) == 1  # the corrupt entry and the tmp file are skipped

    added = make_entry(netns_dir, "c2", "net2")
    state.write(added)  # tmp + rename: a `moved` event
    assert wait_for(lambda: store.get(STATE, added.key) == added)
    changed = added.replace(ips=("10.10.0.5/24",))
    state.write(changed)
    assert wait_for(lambda: store.get(STATE, added.key) == changed)

    elsewhere = make_entry(netns_dir, "c3")
    outside = Path(state.directory).parent / "outside.json"
    outside.write_text(elsewhere.to_json())
    os.replace(outside, state.path(*elsewhere.key))  # moved in from outside: a `created` event
    assert wait_for(lambda: store.get(STATE, elsewhere.key) == elsewhere)

    state.delete(*before.key)
    assert wait_for(lambda: store.get(STATE, before.key) is None)
    assert store.count(STATE) == 2


def test_entries_whose_netns_is_gone_are_removed(
    state_source: tuple[StateDirSource, Store, StateStore], netns_dir: Path, tmp_path: Path
) -> None:
    source, store, state = state_source
    state.ensure()
    gone = make_entry(netns_dir, "dead", exists=False)
    invisible = StateEntry("c-inv", "net1", str(tmp_path / "not-mounted" / "ns"), "default", "p", "u")
    state.write(gone)
    state.write(invisible)
    source.start()
    assert store.get(STATE, gone.key) is None
    assert state.read(*gone.key) is None  # removed from disk
    assert store.get(STATE, invisible.key) == invisible  # cannot tell: kept
    assert state.read(*invisible.key) == invisible
    late = make_entry(netns_dir, "late", exists=False)
    state.write(late)
    assert wait_for(lambda: state.read(*late.key) is None)
    assert store.get(STATE, late.key) is None


def test_rescan_repairs_what_events_missed(
    state_source: tuple[StateDirSource, Store, StateStore], netns_dir: Path
) -> None:
    source, store, state = state_source
    source.start()
    entry = make_entry(netns_dir, "c1")
    state.write(entry)
    assert wait_for(lambda: store.get(STATE, entry.key) == entry)
    store.delete(STATE, entry.key)  # as if an event had been lost
    store.drain()
    source.scan()
    assert store.get(STATE, entry.key) == entry
    source.scan()
    assert [c.key for c in store.drain()] == [entry.key]  # the second scan changed nothing


@pytest.mark.parametrize("how", ["removed", "moved away"])
def test_a_state_dir_removed_or_replaced_is_watched_again(
    state_source: tuple[StateDirSource, Store, StateStore], netns_dir: Path, tmp_path: Path, how: str
) -> None:
    """The state dir removed (`rm -rf`) or moved away under mnpd, then written again by the plugin's next ADD
    (which creates it): inotify's watch died with the old directory, so every later entry — a new pod's, closed
    until mnpd programs it — waited for the periodic rescan (60 s by default, an hour here). The source watches
    the directory again at once, recreating it if need be."""
    source, store, state = state_source
    source.start()
    first = make_entry(netns_dir, "c1")
    state.write(first)
    assert wait_for(lambda: store.get(STATE, first.key) == first)
    if how == "removed":
        shutil.rmtree(state.directory)
    else:
        os.rename(state.directory, tmp_path / "old-state")
    assert wait_for(lambda: store.get(STATE, first.key) is None)  # not in the directory any more
    assert wait_for(lambda: os.path.isdir(state.directory))  # recreated (0700) for the plugin's next ADD
    assert stat.S_IMODE(os.stat(state.directory).st_mode) == 0o700
    late = make_entry(netns_dir, "c2")
    state.write(late)
    assert wait_for(lambda: store.get(STATE, late.key) == late)


def test_netns_gone() -> None:
    assert netns_gone("/proc/self/ns/net") is False
    assert netns_gone("/proc/999999999/ns/net") is True
    assert netns_gone("/no/such/dir/ns") is None
    assert netns_gone("") is None


# ------------------------------------------------------------------------------------------- manifests


def write(path: Path, *docs: object) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)


def test_manifests_load_watch_and_keep_the_last_good_version(tmp_path: Path) -> None:
    root = tmp_path / "manifests"
    (root / "sub").mkdir(parents=True)
    write(
        root / "cluster.yaml", namespace("default"), pod("a", labels={"app": "a"}, nets=[(NET_A, "net1", "10.10.0.1")])
    )
    write(root / "sub" / "policies.yaml", policy("p1", select={"app": "a"}, ingress=[]))
    (root / "probes.yaml").write_text("not: [a manifest")  # the probe file is not read
    store = Store(SystemClock())
    source = ManifestsSource(store, str(root))
    try:
        source.start()
        assert store.synced()
        assert store.get(NAMESPACE, "default") is not None
        assert store.get(POD, "default/a").status_reported
        assert store.get(POLICY, "default/p1") is not None

        write(root / "sub" / "policies.yaml", policy("p2", select={"app": "a"}, ingress=[]))
        assert wait_for(lambda: store.get(POLICY, "default/p2") is not None and store.get(POLICY, "default/p1") is None)

        (root / "sub" / "policies.yaml").write_text("kind: MultiNetworkPolicy\n  bad: [indent")
        assert wait_for(lambda: source.reloads >= 3)
        assert store.get(POLICY, "default/p2") is not None  # a broken file keeps its last good objects

        write(root / "late.yaml", pod("b", nets=[(NET_A, "net1", "10.10.0.2")], status=False))
        assert wait_for(lambda: store.get(POD, "default/b") is not None)
        assert store.get(POD, "default/b").status_reported is False

        (root / "sub" / "policies.yaml").unlink()
        assert wait_for(lambda: store.get(POLICY, "default/p2") is None)
        (root / "list.json").write_text(json.dumps({"kind": "List", "apiVersion": "v1", "items": [policy("p3")]}))
        assert wait_for(lambda: store.get(POLICY, "default/p3") is not None)
    finally:
        source.stop()
