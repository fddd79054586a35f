"""mnpd under hostile conditions outside the manifests themselves (issue 11 items 3, 11, 12, 14):

* the API source gets a garbled answer (an item that is no object, no readable namespace or name): it keeps its
  last good view, reports the problem, and goes on (before: an AttributeError ended the reflector's thread);
* the status file names the process that wrote it, and `mnpctl status` says when that process is dead (before:
  "daemon: running, ready" and exit 0 for up to 180 s after mnpd died);
* a state entry whose netns path is no network namespace is reported as that, not as a gone pod;
* the metrics/health server caps its connections, times slow clients out and logs through the logger.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon import health as health_mod
from daemon.cli import status as status_cmd
from daemon.clock import FakeClock
from daemon.controller import FAILED
from daemon.health import HealthServer
from daemon.metrics import Metrics
from daemon.sources.convert import convert
from daemon.sources.kube import Backoff, Kind, Reflector
from daemon.status import writer_alive, writer_identity
from daemon.store import POLICY, Store
from shared.errors import NetnsUnusable
from shared.state import StateStore
from tests.support.poll import wait_for
from tests.unit.test_ctl_inspect import FakeNode, make, run, status_doc, write_status
from tests.unit.test_ctl_inspect import entry as state_entry
from tests.unit.test_daemon_builders import policy
from tests.unit.test_daemon_controller import SERVER, Harness, cluster

# ------------------------------------------------------------------------------------------- the API source


class Answer:
    """One canned answer of the list/watch call: a list body, or watch lines."""

    def __init__(self, body: Any = None, lines: list[Any] | None = None) -> None:
        self.data = json.dumps(body).encode()
        self.lines = [json.dumps(line).encode() + b"\n" for line in lines or []]

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stream(self, amt: Any = None, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.lines


class Script:
    """The API as a script: each list call and each watch call takes the next answer of its queue; when a queue is
    empty the call blocks until the test ends (a quiet watch)."""

    def __init__(self, lists: list[Answer], watches: list[Answer]) -> None:
        self.lists, self.watches = lists, watches
        self.calls: list[str] = []
        self.done = threading.Event()

    def __call__(self, **kwargs: Any) -> Answer:
        queue = self.watches if kwargs.get("watch") else self.lists
        self.calls.append("watch" if kwargs.get("watch") else "list")
        if not queue:
            self.done.wait()
            raise OSError("test over")
        return queue.pop(0)


GOOD = policy("p", select={"app": "server"})


@pytest.mark.parametrize(
    "garbled",
    [
        {"type": "MODIFIED", "object": ["not", "an", "object"]},
        {"type": "MODIFIED", "object": {"metadata": "nope"}},
        {"type": "MODIFIED", "object": {**GOOD, "metadata": {"namespace": "default"}}},  # no name
        ["not", "an", "event"],
    ],
)
def test_a_garbled_watch_event_keeps_the_last_good_view_and_is_reported(garbled: Any) -> None:
    store = Store(FakeClock())
    good_list = Answer({"items": [GOOD], "metadata": {"resourceVersion": "1"}})
    script = Script([good_list], [Answer(lines=[garbled]), Answer(lines=[garbled])])
    reflector = Reflector(Kind("multi-networkpolicies", POLICY, script), store, backoff=Backoff(0.001, 0.002))
    reflector.start()
    try:
        wait_for(lambda: script.calls.count("watch") >= 3, "the reflector watches again after the garbled event")
        assert reflector._thread.is_alive()
        assert set(store.snapshot().policies) == {"default/p"}
        assert store.snapshot().policies["default/p"].valid
        (problem,) = store.source_problems()["api/multi-networkpolicies"]
        assert "keeping the last good view" in problem
    finally:
        script.done.set()
        reflector.stop()


OPEN = policy("p", select={"app": "server"}, ingress=[{}])  # GOOD's name, allowing everything


@pytest.mark.parametrize(
    "event",
    [
        {"type": "MODIFIED", "object": {**OPEN, "metadata": {"name": "p"}}},  # no namespace: not default's
        {"type": "BOGUS", "object": OPEN},  # an event type the watch API does not have
    ],
)
def test_a_watch_event_mnpd_cannot_place_changes_nothing(event: Any) -> None:
    """An object without a namespace (the API server always sends one; a manifest's default would make it
    default's) and an unknown event type are refused whole: the last good view stays, the reflector goes on."""
    store = Store(FakeClock())
    script = Script([Answer({"items": [GOOD], "metadata": {"resourceVersion": "1"}})], [Answer(lines=[event])] * 2)
    reflector = Reflector(Kind("multi-networkpolicies", POLICY, script), store, backoff=Backoff(0.001, 0.002))
    reflector.start()
    try:
        wait_for(lambda: script.calls.count("watch") >= 3, "the reflector watches again after the refused event")
        assert reflector._thread.is_alive()
        assert store.snapshot().policies == {"default/p": convert(POLICY, GOOD).value}
    finally:
        script.done.set()
        reflector.stop()


def test_a_garbled_list_changes_nothing_and_a_good_one_clears_the_problem() -> None:
    store = Store(FakeClock())
    store.register_source("other", [])
    good = Answer({"items": [GOOD], "metadata": {"resourceVersion": "1"}})
    garbled = Answer({"items": [GOOD, 42], "metadata": {"resourceVersion": "2"}})
    gone = Answer(lines=[{"type": "ERROR", "object": {"code": 410, "message": "too old"}}])
    script = Script([good, garbled, Answer({"items": [], "metadata": {"resourceVersion": "3"}})], [gone])
    reflector = Reflector(Kind("multi-networkpolicies", POLICY, script), store, backoff=Backoff(0.001, 0.002))
    reflector.start()
    try:
        wait_for(lambda: script.calls.count("list") >= 3, "relisted after the garbled list")
        wait_for(lambda: not store.snapshot().policies, "the good empty list applied")
        assert store.source_problems()["api/multi-networkpolicies"] == ()
    finally:
        script.done.set()
        reflector.stop()


# ------------------------------------------------------------------------------------------- status file: the writer


def test_the_status_file_names_a_live_writer(tmp_path: Path) -> None:
    h = Harness()
    cluster(h)
    from daemon.status import StatusWriter

    h.controller.status = StatusWriter(str(tmp_path / "s.json"), h.clock, "node-a")
    h.ready()
    h.sync()
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["writer"]["pid"] > 1 and isinstance(doc["writer"]["startTime"], int)
    assert writer_alive(doc) == (True, f"pid {doc['writer']['pid']}")


def dead_writer() -> dict[str, Any]:
    """The writer identity of a process that has exited."""
    code = "import json; from daemon.status import writer_identity; print(json.dumps(writer_identity()))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return dict(json.loads(done.stdout))


def test_mnpctl_status_says_a_dead_writer_is_not_running(tmp_path: Path) -> None:
    """Before: a fresh status file from a dead mnpd gave "daemon: running, ready" and exit 0 for up to 180 s."""
    state = StateStore(str(tmp_path / "state"))
    state.write(state_entry("c0ffee0001", "net1", "/run/netns/web"))
    writer = dead_writer()
    write_status(state, status_doc([], writer=writer))
    rc, text = run(lambda out: status_cmd.status(make(state, FakeNode()), False, out))
    assert rc == 1
    assert text.splitlines()[0] == (
        f"daemon: not running (status file from dead pid {writer['pid']}, written 5s ago; no such process)"
    )
    write_status(state, status_doc([], writer={**writer_identity(), "startTime": 1}))  # the pid reused
    rc, text = run(lambda out: status_cmd.status(make(state, FakeNode()), False, out))
    assert rc == 1 and "the pid is another process now" in text.splitlines()[0]


def test_mnpctl_status_lists_invalid_policies_unreadable_objects_and_input_problems(tmp_path: Path) -> None:
    state = StateStore(str(tmp_path / "state"))
    note = {"policy": "default/p", "effect": "applies to no network, so it changes nothing", "problems": ["x: y"]}
    unreadable = {"kind": "Pod", "object": "default/web", "effect": "left out, fail closed", "problems": ["a: b"]}
    problems = {"manifests": ["error: a.yaml: not valid YAML"]}
    doc = status_doc([], writer=writer_identity(), policies=[note], objects=[unreadable], problems=problems)
    write_status(state, doc)
    _, text = run(lambda out: status_cmd.status(make(state, FakeNode()), False, out))
    lines = text.splitlines()
    start = lines.index("policies:    1 not used as written:")
    assert lines[start : start + 8] == [
        "policies:    1 not used as written:",
        "  default/p: applies to no network, so it changes nothing",
        "    x: y",
        "objects:     1 with parts mnpd cannot read:",
        "  Pod default/web: left out, fail closed",
        "    a: b",
        "input:       1 problems:",
        "  manifests: error: a.yaml: not valid YAML",
    ]
    _, text = run(lambda out: status_cmd.status(make(state, FakeNode()), True, out))
    assert json.loads(text)["objects"] == [unreadable]


# ------------------------------------------------------------------------------------------- not a netns


def test_a_path_that_is_no_network_namespace_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: logged at INFO as "pod netns is gone" and shown as `gone`."""
    h = Harness()
    cluster(h)

    def refuse(netns: str) -> Any:
        raise NetnsUnusable(f"{netns} is not a network namespace file (not on nsfs: its mount is gone)")

    monkeypatch.setattr(h.applier, "nft_for", refuse)
    h.ready()
    h.sync()
    record = h.controller.records[SERVER.key]
    assert record.state == FAILED, record.state
    assert record.reason.startswith("not a usable network namespace, nothing programmed")


# ------------------------------------------------------------------------------------------- the HTTP server


READ_TIMEOUT_S = 2.0  # long enough that a loaded machine accepts all ten connections before the first times out
DEADLINE = 3.0


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HealthServer]:
    monkeypatch.setattr(health_mod, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(health_mod._Handler, "timeout", READ_TIMEOUT_S)
    monkeypatch.setattr(health_mod, "CONNECTION_DEADLINE_S", DEADLINE)
    s = HealthServer(("127.0.0.1", 0), Metrics(), lambda: (True, "ok"), lambda: (True, "ok")).start()
    try:
        yield s
    finally:
        s.stop()


def test_start_does_not_resolve_the_bound_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: HTTPServer.server_bind looked the address up in DNS (socket.getfqdn); a node whose resolver hangs
    held up mnpd's start."""

    def no_dns(*_: object) -> str:
        raise AssertionError("the health server asked DNS for its own name")

    monkeypatch.setattr(socket, "getfqdn", no_dns)
    s = HealthServer(("127.0.0.1", 0), Metrics(), lambda: (True, "ok"), lambda: (True, "ok")).start()
    try:
        assert b" 200 " in get(s.port)
    finally:
        s.stop()


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return c.recv(4096)


def test_slow_clients_are_timed_out_and_connections_capped(
    server: HealthServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: hundreds of half-sent requests held hundreds of threads, and each aborted one printed a traceback."""
    stderr = io.StringIO()
    opened: list[socket.socket] = []
    try:
        with contextlib.redirect_stderr(stderr), caplog.at_level(logging.DEBUG, logger="daemon.health"):
            for _ in range(10):
                c = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                opened.append(c)
                c.sendall(b"GET /hea")  # never finished
            wait_for(lambda: server._server.refused >= 6, "connections over the cap closed at once")
            # the slow ones time out, and the server answers again
            wait_for(lambda: get(server.port).startswith(b"HTTP/1.1 200"), "the server answers after the timeout")
            trickle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            opened.append(trickle)
            started = time.monotonic()
            with contextlib.suppress(OSError):
                for _ in range(100):  # one byte well inside the read timeout each time: only the deadline cuts it
                    trickle.sendall(b"G")
                    time.sleep(0.1)  # the client's pace, not synchronisation
            assert time.monotonic() - started < DEADLINE + 3.0
    finally:
        for c in opened:
            c.close()
    assert "Traceback" not in stderr.getvalue()
    assert any("closing new ones" in r.getMessage() for r in caplog.records)
