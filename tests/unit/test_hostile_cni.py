"""The CNI plugin against hostile input, generated: whatever stdin and CNI_* environment a runtime (or an attacker
who can call it) hands over, the plugin

* answers exactly one CNI result or error JSON on stdout, and an error always has a specific code — never 999,
  never a Python traceback (issue 11, item 13);
* never changes the host's own netns (the FakeNode's `host` nft stays untouched) and never acts in a netns path
  that is the plugin's own;
* touches nothing outside the test's tmp dir (every generated absolute stateDir / logFile is moved under it).

The real dispatcher runs against FakeNode (tests/support/cnifake.py): FakeNft per netns, a tmp state dir. Item 13's
end-to-end check runs the plugin as a process with a non-UTF-8 CNI_IFNAME in its environment, as a runtime would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni.errors import (
    CHECK_FAILED,
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERFACE_MISSING,
    INVALID_CONFIG,
    INVALID_ENV,
    INVALID_NETNS,
    IO_FAILURE,
)
from tests.support.cnifake import OWN_NETNS, FakeNode, Outcome, prev_result

ROOT = Path(__file__).resolve().parents[2]

# The codes bad input may end with (cni/errors.py). 999 (INTERNAL) is not one: it means mnp itself broke.
BAD_INPUT_CODES = {INCOMPATIBLE_VERSION, INVALID_ENV, IO_FAILURE, DECODING_FAILURE, INVALID_CONFIG, INVALID_NETNS}
BAD_INPUT_CODES |= {CHECK_FAILED, INTERFACE_MISSING}
VERBS = ["ADD", "DEL", "CHECK", "GC", "STATUS"]
ENV_VARS = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"]
CONF_KEYS = ["cniVersion", "name", "type", "stateDir", "logFile", "logLevel", "onError", "nftPath", "prevResult"]
CONF_KEYS += ["cni.dev/valid-attachments"]

# Text as a runtime's bytes reach Python: any code point, including the surrogate escapes of undecodable bytes.
any_text = st.text(st.characters(codec=None, exclude_characters="\0"), max_size=40)
env_text = any_text | st.sampled_from(["", "net1", "c1", "/run/netns/pod-a", OWN_NETNS, ".", "..", "a" * 300])
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
HOSTILE_STDIN = [
    b"",
    b"\xff\xfe{",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b'{"cniVersion": "1.0.0", "name": "n", "type": "mnp", "x": "' + b"a" * 2_000_000 + b'"}',
    b"NaN",
    b'{"cniVersion": NaN}',
    b'{"cniVersion": "1.0.0", "name": "net-a", "type": "mnp", "stateDir": "/tmp/\\ud800"}',
]


def base_conf(node: FakeNode) -> dict[str, Any]:
    conf = node.conf(cniVersion="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": "c1", "ifname": "net1"}]
    return conf


def confined(value: Any, root: Path) -> Any:
    """A generated absolute path moved under the test's tmp dir: the suite must never create files elsewhere."""
    if isinstance(value, str) and value.startswith("/"):
        return str(root) + value
    return value


def assert_one_answer(out: Outcome, node: FakeNode) -> None:
    """One error JSON with a specific code, or success: ADD's one result JSON, nothing for the other verbs."""
    lines = out.stdout.splitlines()
    assert out.rc in (0, 1), out
    assert len(lines) == (1 if out.rc else len(lines[:1])), out
    answer = json.loads(lines[0]) if lines else {}
    assert isinstance(answer, dict), out
    if out.rc:
        assert answer.get("code") in BAD_INPUT_CODES, out
        assert isinstance(answer.get("msg"), str) and answer["msg"], out
    assert "Traceback" not in out.stderr, out.stderr
    assert node.host.transactions == 0, "the host's own netns was changed"
    assert OWN_NETNS not in node.nfts or node.nfts[OWN_NETNS].transactions == 0


@pytest.fixture
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Any:
    def make() -> FakeNode:
        return FakeNode(tmp_path_factory.mktemp("hostile") / "state")

    return make


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verb=st.sampled_from(VERBS), garbled=st.dictionaries(st.sampled_from(ENV_VARS), env_text, min_size=1))
def test_any_environment_gets_one_answer_with_a_specific_code(fresh: Any, verb: str, garbled: dict[str, str]) -> None:
    node: FakeNode = fresh()
    found = node.ifindex

    def only_net1(netns: str, ifname: str) -> int:  # the pods have net1 only: any other CNI_IFNAME names nothing
        if ifname != "net1":
            raise OSError("no interface with this name")
        return found(netns, ifname)

    node.ifindex = only_net1  # type: ignore[method-assign]
    env = node.env(verb) | garbled
    out = node.call(verb, base_conf(node), env=env)
    assert_one_answer(out, node)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    verb=st.sampled_from(VERBS),
    garbled=st.dictionaries(st.sampled_from(CONF_KEYS), json_values, min_size=1),
    dropped=st.sets(st.sampled_from(CONF_KEYS)),
)
def test_any_config_gets_one_answer_with_a_specific_code(
    fresh: Any, verb: str, garbled: dict[str, Any], dropped: set[str]
) -> None:
    node = fresh()
    conf = base_conf(node) | {key: confined(value, node.state_dir.parent) for key, value in garbled.items()}
    for key in dropped:
        conf.pop(key, None)
    out = node.call(verb, conf, env=node.env(verb))
    assert_one_answer(out, node)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verb=st.sampled_from(VERBS), stdin=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v)))
def test_any_stdin_gets_one_answer_with_a_specific_code(fresh: Any, verb: str, stdin: bytes | str) -> None:
    node = fresh()
    out = node.call(verb, stdin, env=node.env(verb))
    assert_one_answer(out, node)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    verb=st.sampled_from(["ADD", "CHECK"]),
    prev=st.dictionaries(st.sampled_from(["cniVersion", "interfaces", "ips", "routes", "dns"]), json_values),
)
def test_any_prev_result_gets_one_answer_with_a_specific_code(fresh: Any, verb: str, prev: dict[str, Any]) -> None:
    node = fresh()
    out = node.call(verb, base_conf(node) | {"prevResult": prev_result() | prev}, env=node.env(verb))
    assert_one_answer(out, node)


@pytest.mark.parametrize("stdin", HOSTILE_STDIN, ids=range(len(HOSTILE_STDIN)))
@pytest.mark.parametrize("verb", VERBS)
def test_huge_deep_and_broken_stdin(node_dir: Path, verb: str, stdin: bytes) -> None:
    node = FakeNode(node_dir)
    out = node.call(verb, stdin, env=node.env(verb))
    assert out.rc == 1 or b'"x": "aaa' in stdin  # the 2 MB one is a valid config with an unknown key
    assert_one_answer(out, node)


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.mark.parametrize("variable", ENV_VARS)
@pytest.mark.parametrize("verb", ["ADD", "CHECK", "DEL"])
def test_a_non_utf8_variable_is_invalid_env(node_dir: Path, verb: str, variable: str) -> None:
    """Issue 11, item 13: os.environ hands undecodable bytes over as surrogate escapes; each such CNI_* variable is
    code 4 with one error JSON, and nothing is touched."""
    node = FakeNode(node_dir)
    bad = os.fsdecode(b"net\xff") if variable != "CNI_ARGS" else os.fsdecode(b"K8S_POD_NAME=\xff")
    out = node.call(verb, env=node.env(verb) | {variable: bad})
    assert (out.rc, out.code) == (1, INVALID_ENV), out
    assert_one_answer(out, node)
    assert node.transactions() == 0 and node.store.entries() == ([], [])


@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK"])
def test_a_non_utf8_ifname_from_a_real_process_environment(tmp_path: Path, verb: str) -> None:
    """The same through a real process: the plugin executable, its environment given as bytes."""
    conf = {"cniVersion": "1.0.0", "name": "mnpt-bytes", "type": "mnp", "stateDir": str(tmp_path / "state")}
    conf["prevResult"] = prev_result(sandbox="/run/netns/mnpt-none")
    env = {
        b"CNI_COMMAND": verb.encode(),
        b"CNI_CONTAINERID": b"ctr-bytes",
        b"CNI_NETNS": b"/run/netns/mnpt-none",
        b"CNI_IFNAME": b"net\xff\xfe",
        b"CNI_PATH": b"/x",
        b"PATH": os.environb[b"PATH"],
        b"PYTHONPATH": os.fsencode(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cni"], input=json.dumps(conf).encode(), env=env, capture_output=True, check=False
    )
    lines = done.stdout.decode().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done
    answer = json.loads(lines[0])
    assert answer["code"] == INVALID_ENV and "CNI_IFNAME" in answer["msg"], answer
    assert b"Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "state").exists()


def test_log_lines_escape_what_they_quote(node_dir: Path) -> None:
    """A value with a newline or an undecodable byte cannot forge or break a log line."""
    node = FakeNode(node_dir)
    out = node.call("ADD", env=node.env("ADD") | {"CNI_COMMAND": "ADD\nlevel=info msg=forged"})
    assert out.code == INVALID_ENV
    assert len(out.stderr.splitlines()) == 1 and "\\n" in out.stderr
