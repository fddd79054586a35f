"""The state dir against hostile content: whatever lies in it, no reader — the plugin, mnpd's state-dir source
(real inotify), `mnpctl pods/status/drops` — blocks, raises or drops what it cannot judge.

Invariants (issue 11, items 8, 9, 14):
* a file named like an entry that is not a regular file (FIFO, socket, directory, symlink, device) or is too big is
  never read: it is a Problem with its reason, and every other entry is still read;
* mnpd's source never raises and never blocks; what it cannot use is logged and counted in
  `mnp_state_entry_problems{kind}`;
* only a missing netns file (ENOENT) drops an entry as "gone"; EACCES and other errors keep it, reported;
* every garbled entry (hypothesis: each field any JSON value, any bytes) is either a valid entry or a Problem;
* the state dir is created 0700 and a bad file is quoted by a short excerpt only.

Every "does not block" check runs the reader on a thread and waits for it with a deadline (no sleeps).
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import ctl
from daemon.clock import SystemClock
from daemon.metrics import Metrics
from daemon.sources import statedir
from daemon.sources.statedir import StateDirSource
from daemon.store import STATE, Store
from shared.errors import StateError
from shared.state import MAX_ENTRY_BYTES, StateEntry, StateStore, entry_name, valid_name
from tests.integration.test_daemon_sources import wait_for
from tests.support.cnifake import FakeNode

DEADLINE_S = 10.0
KINDS = ["fifo", "socket", "directory", "symlink-out", "symlink-to-entry", "device", "huge"]


def finishes(fn: Callable[[], Any], timeout: float = DEADLINE_S) -> Any:
    """fn() on a thread: its result, or its exception raised here; a failure if it has not returned by the
    deadline (it blocked)."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn} blocked for more than {timeout}s"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def entry(netns_dir: Path, container: str, ifname: str = "net1") -> StateEntry:
    path = netns_dir / container
    path.touch()
    return StateEntry(container, ifname, str(path), "default", f"pod-{container}", f"uid-{container}", "net-a")


@pytest.fixture
def netns_dir(tmp_path: Path) -> Path:
    d = tmp_path / "netns"
    d.mkdir()
    return d


@pytest.fixture
def state(tmp_path: Path) -> StateStore:
    store = StateStore(str(tmp_path / "state"))
    store.ensure()
    return store


def plant(kind: str, path: Path, tmp_path: Path, good: StateEntry | None = None) -> None:
    """Put a hostile `kind` of file at `path`."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.close()
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink-out":
        outside = tmp_path / "outside.json"
        outside.write_text("{}")
        path.symlink_to(outside)
    elif kind == "symlink-to-entry":  # even a valid entry's content is not read through a link
        assert good is not None
        outside = tmp_path / "elsewhere.json"
        outside.write_text(good.to_json())
        path.symlink_to(outside)
    elif kind == "device":
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))  # a character device: /dev/null's numbers
    elif kind == "huge":
        path.write_bytes(b" " * (MAX_ENTRY_BYTES + 1))


@pytest.mark.parametrize("kind", KINDS)
def test_a_non_regular_or_huge_file_is_a_problem_never_a_read(
    kind: str, state: StateStore, netns_dir: Path, tmp_path: Path
) -> None:
    good = entry(netns_dir, "c1")
    state.write(good)
    bad_key = ("c2", "net1")
    bad = Path(state.path(*bad_key))
    plant(kind, bad, tmp_path, StateEntry("c2", "net1", good.netns))
    found, problems = finishes(state.entries)
    assert found == [good]
    assert [p.path for p in problems] == [str(bad)]
    assert ("regular file" in problems[0].reason) or ("bytes" in problems[0].reason), problems
    with pytest.raises(StateError):
        finishes(lambda: state.read(*bad_key))


@pytest.mark.parametrize("kind", KINDS)
def test_mnpd_source_goes_on_past_a_non_regular_file(
    kind: str, state: StateStore, netns_dir: Path, tmp_path: Path
) -> None:
    """Issue 11, item 8: the watcher (real inotify) sees the bad file, reports it and counts it, and still takes
    every entry written after it; the first scan and the rescan do not block either."""
    store = Store(SystemClock())
    metrics = Metrics()
    source = StateDirSource(store, state.directory, rescan_period=3600, metrics=metrics)
    first = entry(netns_dir, "c0")
    state.write(first)
    plant(kind, Path(state.path("c0", "net9")), tmp_path, first.replace(ifname="net9"))
    try:
        finishes(source.start)
        assert store.get(STATE, first.key) == first
        later_bad = Path(state.path("c1", "net9"))
        plant("fifo" if kind != "fifo" else "socket", later_bad, tmp_path)
        later = entry(netns_dir, "c2")
        state.write(later)
        assert wait_for(lambda: store.get(STATE, later.key) == later)
        finishes(source.scan)
        assert store.count(STATE) == 2
        assert set(source.problems[statedir.UNREADABLE]) == {state.path("c0", "net9"), str(later_bad)}
        assert _gauge(metrics, "unreadable") == 2
    finally:
        source.stop()


def _gauge(metrics: Metrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("mnp_state_entry_problems", {"kind": kind})
    assert value is not None
    return value


@pytest.mark.parametrize("command", ["pods", "status", "drops"])
def test_mnpctl_does_not_hang_on_a_fifo(command: str, state: StateStore, tmp_path: Path) -> None:
    os.mkfifo(state.path("c9", "net1"))
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        import contextlib

        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return ctl.main([command, "--state-dir", state.directory, "--listen", "off", "--json"])

    finishes(run)
    text = out.getvalue() + err.getvalue()
    if command == "pods":
        assert json.loads(out.getvalue())["problems"][0]["path"] == state.path("c9", "net1")
    if command == "status":
        assert json.loads(out.getvalue())["stateDir"]["unreadable"] == 1
    assert "Traceback" not in text


def test_the_plugin_does_not_hang_on_a_fifo(tmp_path: Path) -> None:
    node = FakeNode(tmp_path / "state")
    node.store.ensure()
    os.mkfifo(node.store.path("c1", "net1"))  # ADD's own entry path
    os.mkfifo(node.store.path("c2", "net1"))
    out = finishes(lambda: node.call("ADD"))
    assert out.rc == 0, out  # its tmp file is renamed over the FIFO: the entry is now a regular file
    assert node.store.read("c1", "net1") is not None
    assert finishes(lambda: node.call("CHECK")).rc == 0
    out = finishes(lambda: node.call("DEL"))
    assert out.rc == 0 and "unreadable state entry" in out.stderr
    assert node.nfts["/run/netns/pod-a"].list_tables() == [("inet", "mnp")]  # kept: the FIFO might be an entry


# ------------------------------------------------------------------------------------------- netns errors


@pytest.mark.parametrize("error", [errno.EACCES, errno.ELOOP, errno.EIO, errno.ENAMETOOLONG])
def test_an_error_other_than_enoent_is_not_gone(
    error: int, state: StateStore, netns_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Issue 11, item 9: mnpd keeps the entry of a netns it cannot stat (EACCES …), logs it and counts it."""
    blocked = entry(netns_dir, "c1")
    state.write(blocked)
    real_stat = os.stat

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) == blocked.netns:
            raise OSError(error, os.strerror(error), path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(statedir.os, "stat", stat)
    store = Store(SystemClock())
    metrics = Metrics()
    source = StateDirSource(store, state.directory, rescan_period=3600, metrics=metrics)
    caplog.set_level(logging.WARNING, logger=statedir.__name__)
    try:
        source.start()
        assert store.get(STATE, blocked.key) == blocked
        assert state.read(*blocked.key) == blocked  # still on disk
        assert _gauge(metrics, "netns_unchecked") == 1
        assert [r for r in caplog.records if "cannot check network namespace" in r.getMessage()]
        source.scan()  # once per entry and reason, not on every rescan
        assert len([r for r in caplog.records if "cannot check network namespace" in r.getMessage()]) == 1
        monkeypatch.setattr(statedir.os, "stat", real_stat)
        Path(blocked.netns).unlink()  # now it is gone: only this drops it
        source.scan()
        assert store.get(STATE, blocked.key) is None and state.read(*blocked.key) is None
        assert _gauge(metrics, "netns_unchecked") == 0
    finally:
        source.stop()


NOT_ENOENT = [errno.EACCES, errno.ELOOP, errno.ENOTDIR, errno.EIO, errno.ENAMETOOLONG, errno.EPERM]


@pytest.mark.parametrize("needs_visible_dir", [False, True])
def test_one_function_decides_what_a_netns_path_error_means(needs_visible_dir: bool, tmp_path: Path) -> None:
    """Item 9's one rule (shared.netns.netns_path_error), whose table the plugin, mnpd's state-dir source and
    mnpctl share: only ENOENT is gone; with gone_needs_visible_dir (mnpd, mnpctl) only where the path's directory
    is visible — else NetnsInvisible, a NetnsUnusable; every other error is NetnsUnusable, never gone."""
    from shared.errors import NetnsGone, NetnsInvisible, NetnsUnusable
    from shared.netns import netns_path_error

    visible = str(tmp_path / "pod-a")  # its directory exists
    hidden = str(tmp_path / "no-such-dir" / "pod-a")  # its directory is not visible either
    proc = "/proc/999999999/ns/net"  # its PID directory went with the process; /proc is mounted

    def answer(path: str, exc: OSError | ValueError) -> type[Exception]:
        return type(netns_path_error(path, exc, gone_needs_visible_dir=needs_visible_dir))

    for enoent in (FileNotFoundError(errno.ENOENT, "No such file or directory"), OSError(errno.ENOENT, "x")):
        assert answer(visible, enoent) is NetnsGone
        assert answer(proc, enoent) is NetnsGone
        assert answer(hidden, enoent) is (NetnsInvisible if needs_visible_dir else NetnsGone)
    assert issubclass(NetnsInvisible, NetnsUnusable)
    for error in NOT_ENOENT:
        for path in (visible, hidden, proc):
            assert answer(path, OSError(error, os.strerror(error))) is NetnsUnusable, (error, path)
    assert answer(visible, ValueError("embedded null byte")) is NetnsUnusable
    unusable = netns_path_error(visible, PermissionError(errno.EACCES, "Permission denied"))
    assert str(unusable) == f"cannot check network namespace {visible}: Permission denied"


def test_the_three_readers_of_a_netns_path_share_the_rule(tmp_path: Path) -> None:
    """The plugin (check_netns), mnpd's state-dir source (netns_gone) and mnpctl (netns_problem) on the same paths
    answer as netns_path_error's table says."""
    from daemon.cli.node import UNUSABLE, netns_problem
    from shared.errors import NetnsGone
    from shared.netns import check_netns

    visible, hidden = str(tmp_path / "pod-a"), str(tmp_path / "no-such-dir" / "pod-a")
    for path in (visible, hidden):
        with pytest.raises(NetnsGone):
            check_netns(path)  # the plugin: CNI_NETNS is in its own view
    assert statedir.netns_gone(visible) is True
    assert statedir.netns_gone(hidden) is None
    assert netns_problem(visible) == f"network namespace {visible} does not exist"
    problem = netns_problem(hidden)
    assert problem is not None and problem.startswith(UNUSABLE) and "not visible" in problem
    Path(visible).mkdir()  # exists, but is no namespace: mnpd's source only stats it, mnpctl checks its kind
    assert statedir.netns_gone(visible) is False
    problem = netns_problem(visible)
    assert problem is not None and problem.startswith(UNUSABLE)


def test_the_real_netns_check_tells_gone_from_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import netns as netns_mod
    from shared.errors import NetnsGone, NetnsUnusable

    with pytest.raises(NetnsGone):
        netns_mod.check_netns(str(tmp_path / "missing"))
    (tmp_path / "mountpoint").write_text("")
    with pytest.raises(NetnsGone, match="mount is gone"):
        netns_mod.check_netns(str(tmp_path / "mountpoint"))  # the empty file of a lost mount
    (tmp_path / "file").write_text("content")
    for path in ("/proc/self/ns/mnt", "/proc/self/ns/pid", str(tmp_path), str(tmp_path / "file"), "/dev/null"):
        with pytest.raises(NetnsUnusable):
            netns_mod.check_netns(path)
    real_stat = os.stat

    def denied(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.fspath(path) == "/proc/self/ns/net" and not kwargs and not args:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(netns_mod.os, "stat", denied)
    with pytest.raises(NetnsUnusable, match="Permission denied"):
        netns_mod.check_netns("/proc/self/ns/net")
    with pytest.raises(NetnsUnusable):
        netns_mod.netns_identity("/proc/self/ns/net")


# ------------------------------------------------------------------------------------------- garbled entries

FIELDS = ["schema", "containerID", "ifname", "netns", "podNamespace", "podName", "podUID", "network", "ips"]
FIELDS += ["mac", "created", "plugin"]
any_text = st.text(st.characters(codec=None), max_size=30)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
GOOD = StateEntry("c1", "net1", "/run/netns/mnpt-garbled", "ns", "p", "u", "net-a", ("10.0.0.1/24",))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbled=st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1),
    dropped=st.sets(st.sampled_from(FIELDS)),
    raw=st.none() | st.binary(max_size=300),
)
def test_a_garbled_entry_is_an_entry_or_a_problem(
    tmp_path_factory: pytest.TempPathFactory, garbled: dict[str, Any], dropped: set[str], raw: bytes | None
) -> None:
    """Every field of an entry garbled (or the file any bytes): the store reads a valid entry or reports a
    Problem with a short reason; mnpd's source never raises and keeps only valid entries."""
    store = StateStore(str(tmp_path_factory.mktemp("garbled") / "state"))
    store.ensure()
    doc = json.loads(GOOD.to_json()) | garbled
    for key in dropped:
        doc.pop(key, None)
    data = raw if raw is not None else json.dumps(doc).encode()
    Path(store.path(*GOOD.key)).write_bytes(data)
    found, problems = store.entries()
    assert len(found) + len(problems) == 1
    for problem in problems:
        assert len(problem.reason) < 400, problem.reason  # a short excerpt, never the whole file
    for got in found:
        assert valid_name(got.container_id) and (got.netns == "" or got.netns.startswith("/"))
        assert entry_name(*got.key) == os.path.basename(store.path(*GOOD.key))
    source = StateDirSource(Store(SystemClock()), store.directory, rescan_period=3600, remove_gone=False)
    source.scan()  # never raises
    assert source.store.count(STATE) == len(found)


def test_a_bad_file_is_quoted_by_a_short_excerpt(state: StateStore) -> None:
    Path(state.path("c1", "net1")).write_text(json.dumps({"schema": "x" * 50_000, "containerID": "c1"}))
    Path(state.path("c2", "net1")).write_text(json.dumps(json.loads(GOOD.to_json()) | {"containerID": "c" * 9000}))
    _, problems = state.entries()
    assert len(problems) == 2 and all(len(p.reason) < 200 for p in problems), problems


def test_the_state_dir_is_created_0700(tmp_path: Path) -> None:
    """Issue 11, item 14: by the store (plugin ADD) and by mnpd's source, whatever the umask."""
    old = os.umask(0)
    try:
        plugin_dir = tmp_path / "plugin" / "state"
        node = FakeNode(plugin_dir)
        assert node.call("ADD").rc == 0
        assert plugin_dir.stat().st_mode & 0o777 == 0o700
        daemon_dir = tmp_path / "daemon" / "state"
        source = StateDirSource(Store(SystemClock()), str(daemon_dir), rescan_period=3600)
        try:
            source.start()
        finally:
            source.stop()
        assert daemon_dir.stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


@pytest.mark.parametrize("kind", ["garbage", "fifo"])
def test_an_entry_that_turns_unreadable_keeps_its_last_good_version(
    kind: str, state: StateStore, netns_dir: Path, tmp_path: Path
) -> None:
    """mnpd keeps enforcing the last good view: the interface stays managed (later policy changes still reach
    it) while its file is broken, and goes only when the file is removed."""
    store = Store(SystemClock())
    source = StateDirSource(store, state.directory, rescan_period=3600)
    good = entry(netns_dir, "c1")
    state.write(good)
    path = Path(state.path(*good.key))
    try:
        source.start()
        assert store.get(STATE, good.key) == good
        broken = tmp_path / "broken"
        if kind == "fifo":
            os.mkfifo(broken)
        else:
            broken.write_text("{garbage")
        os.replace(broken, path)  # a `moved` event onto the entry's name
        assert wait_for(lambda: path.name in {os.path.basename(p) for p in source.problems[statedir.UNREADABLE]})
        assert store.get(STATE, good.key) == good
        finishes(source.scan)
        assert store.get(STATE, good.key) == good
        path.unlink()
        assert wait_for(lambda: store.get(STATE, good.key) is None)
        assert source.problems[statedir.UNREADABLE] == {}
    finally:
        source.stop()


def test_mnpctl_pods_tells_an_unusable_netns_from_a_gone_one(state: StateStore, tmp_path: Path) -> None:
    """Item 9 in mnpctl: a netns path that exists but is no network namespace is an error, not "netns gone"."""
    state.write(StateEntry("c1", "net1", "/proc/self/ns/mnt", "ns", "p", "u", "net-a"))
    state.write(StateEntry("c2", "net1", str(tmp_path / "missing"), "ns", "q", "u", "net-a"))
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        finishes(lambda: ctl.main(["pods", "--state-dir", state.directory, "--listen", "off", "--json"]))
    rows = {row["containerID"]: row for row in json.loads(out.getvalue())["interfaces"]}
    assert rows["c1"]["state"] == "error" and "mount namespace" in rows["c1"]["reason"]
    assert rows["c2"]["state"] == "netns gone"


@pytest.mark.parametrize("kind", ["directory", "file with content", "device", "fifo"])
def test_without_proc_a_path_that_is_no_namespace_file_is_still_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Where nsfs cannot be told (no /proc to compare with), a directory, a file with content, a device or a FIFO
    is still refused as CNI_NETNS — never accepted because NS_GET_NSTYPE cannot say, and a FIFO never opened in a
    way that waits for a writer."""
    from shared import netns as netns_mod
    from shared.errors import NetnsUnusable

    monkeypatch.setattr(netns_mod, "_nsfs_device", lambda: None)
    path = {"directory": str(tmp_path), "device": "/dev/null"}.get(kind, str(tmp_path / "x"))
    if kind == "file with content":
        Path(path).write_text("not a namespace")
    elif kind == "fifo":
        os.mkfifo(path)
    with pytest.raises(NetnsUnusable):
        netns_mod.check_netns(path)


@pytest.mark.parametrize("kind", ["fifo", "deep", "huge", "directory", "not an object"])
@pytest.mark.parametrize("command", ["pods", "status"])
def test_mnpctl_reads_a_forged_status_file_as_unreadable_without_hanging(
    command: str, kind: str, state: StateStore, tmp_path: Path
) -> None:
    """Whoever can write beside the state dir can put anything at mnpd's status file: mnpctl opened it blocking
    (a FIFO hung it), read it whole, and a document nested deeper than Python's recursion limit raised a
    traceback. It is read like a state entry (regular files only, non-blocking, size-bounded) and anything it
    cannot use is "unreadable (…)", the rest of the report still given."""
    status = tmp_path / "forged-status.json"
    if kind == "fifo":
        os.mkfifo(status)
    elif kind == "deep":
        status.write_text('{"schema": 1, "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    elif kind == "huge":
        with open(status, "wb") as fh:
            fh.truncate(2**40)  # sparse: its size alone refuses it
    elif kind == "directory":
        status.mkdir()
    else:
        status.write_text('["schema", 1]')
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        import contextlib

        argv = [command, "--state-dir", state.directory, "--status-file", str(status), "--listen", "off", "--json"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return ctl.main(argv)

    finishes(run)
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text and "RecursionError" not in text, text
    if command == "status":
        found = json.loads(out.getvalue())["daemon"]["statusFile"]
        assert found["present"] is False and found["error"], found


class RecordingObserver:
    """watchdog's Observer as far as StateDirSource._watch uses it: which directories are watched."""

    def __init__(self) -> None:
        self.watched: list[str] = []

    def unschedule_all(self) -> None:
        self.watched = []

    def schedule(self, handler: object, path: str, recursive: bool = False) -> None:
        self.watched.append(path)


def test_a_state_dir_replaced_by_a_file_keeps_the_last_entries_and_is_watched_again_once_it_is_back(
    state: StateStore, netns_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rewatch (StateDirSource._watch) meets a file where the state dir was: it can neither recreate nor
    watch the directory, nor list it. Nothing raises, the entries read before stay in force (their pods keep
    being enforced), and the directory made again is watched and read again."""
    store = Store(SystemClock())
    source = StateDirSource(store, state.directory, rescan_period=3600, remove_gone=False)
    observer = RecordingObserver()
    source._observer = observer
    first = entry(netns_dir, "c0")
    state.write(first)
    source.scan()
    assert observer.watched == [state.directory, os.path.dirname(state.directory)]
    os.rename(state.directory, tmp_path / "old-state")
    Path(state.directory).write_text("not a directory")
    source.directory_gone()
    caplog.set_level(logging.ERROR, logger=statedir.__name__)
    source.scan()  # never raises
    assert store.get(STATE, first.key) == first
    assert [r for r in caplog.records if "cannot watch the state dir" in r.getMessage()]
    os.unlink(state.directory)
    later = entry(netns_dir, "c1")
    source.scan()  # recreated, watched, read
    state.write(later)
    source.scan()
    assert observer.watched == [state.directory, os.path.dirname(state.directory)]
    assert store.get(STATE, later.key) == later and store.get(STATE, first.key) is None
