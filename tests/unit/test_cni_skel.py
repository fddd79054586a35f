"""The CNI protocol of the `mnp` plugin: environment, stdin, the error JSON and its codes, stdout vs logs.

Every test drives `cni.skel.Dispatcher` with a dict environment and StringIO streams against a fake node
(tests/support/cnifake.py): FakeNft per netns, a tmp state dir. The exact code of every bad input is asserted —
cni/errors.py has the table these tests hold the plugin to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cni.config import SUPPORTED_VERSIONS, PluginConf
from cni.errors import (
    DECODING_FAILURE,
    INCOMPATIBLE_VERSION,
    INTERNAL,
    INVALID_CONFIG,
    INVALID_ENV,
    INVALID_NETNS,
)
from cni.plugin import Deps
from shared.version import VERSION
from tests.support.cnifake import OWN_NETNS, FakeNode, prev_result


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path / "state")


def assert_error(outcome: Any, code: int) -> dict[str, Any]:
    """The call failed with `code`: exit 1, exactly one CNI error object on stdout."""
    assert outcome.rc == 1, outcome
    error = json.loads(outcome.stdout)
    assert set(error) == {"cniVersion", "code", "msg", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["msg"], str) and error["msg"]
    assert outcome.stdout.count("\n") == 1
    return dict(error)


# ----------------------------------------------------------------------------------------------- VERSION


def test_version_needs_nothing_but_the_command(node: FakeNode) -> None:
    out = node.call("VERSION", "", env={"CNI_COMMAND": "VERSION"})
    assert out.rc == 0
    assert out.json == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        "mnpVersion": VERSION,
    }
    assert out.stderr == ""


@pytest.mark.parametrize(
    ("stdin", "answer"),
    [
        ('{"cniVersion": "0.4.0"}', "0.4.0"),
        ('{"cniVersion": "9.9.9"}', "1.1.0"),
        ("not json", "1.1.0"),
        ("[]", "1.1.0"),
    ],
)
def test_version_answers_in_the_requested_version_when_it_can(node: FakeNode, stdin: str, answer: str) -> None:
    # libcni's GetVersionInfo sends {"cniVersion": newest} with dummy NETNS/IFNAME/PATH
    out = node.call("VERSION", stdin, env={"CNI_COMMAND": "VERSION", "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy"})
    assert out.rc == 0
    assert out.json["cniVersion"] == answer


# ----------------------------------------------------------------------------------------------- environment


def test_missing_command_is_invalid_env(node: FakeNode) -> None:
    env = node.env("ADD")
    del env["CNI_COMMAND"]
    assert_error(node.call("ADD", env=env), INVALID_ENV)


def test_unknown_command_is_invalid_env(node: FakeNode) -> None:
    error = assert_error(node.call("ADD", env=node.env("FROB")), INVALID_ENV)
    assert "FROB" in error["msg"]


@pytest.mark.parametrize(
    ("command", "variable"),
    [
        ("ADD", "CNI_CONTAINERID"),
        ("ADD", "CNI_NETNS"),
        ("ADD", "CNI_IFNAME"),
        ("ADD", "CNI_PATH"),
        ("CHECK", "CNI_CONTAINERID"),
        ("CHECK", "CNI_NETNS"),
        ("CHECK", "CNI_IFNAME"),
        ("CHECK", "CNI_PATH"),
        ("DEL", "CNI_CONTAINERID"),
        ("DEL", "CNI_IFNAME"),
        ("DEL", "CNI_PATH"),
        ("GC", "CNI_PATH"),
        ("STATUS", "CNI_PATH"),
    ],
)
def test_missing_required_variable(node: FakeNode, command: str, variable: str) -> None:
    env = node.env(command)
    del env[variable]
    conf = node.conf(cniVersion="1.1.0", **{"cni.dev/valid-attachments": []})
    error = assert_error(node.call(command, conf, env=env), INVALID_ENV)
    assert variable in error["details"]
    assert node.transactions() == 0
    assert not node.state_dir.exists()


def test_empty_variable_counts_as_missing(node: FakeNode) -> None:
    assert_error(node.call("ADD", CNI_IFNAME=""), INVALID_ENV)


def test_del_does_not_need_the_netns(node: FakeNode) -> None:
    env = node.env("DEL")
    del env["CNI_NETNS"]
    assert node.call("DEL", env=env).rc == 0


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_need_only_the_path(node: FakeNode, command: str) -> None:
    # libcni sends CNI_CONTAINERID/NETNS/IFNAME/ARGS empty for these
    env = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin", "CNI_CONTAINERID": "", "CNI_NETNS": ""}
    conf = node.conf(cniVersion="1.1.0", prevResult=None, **{"cni.dev/valid-attachments": []})
    out = node.call(command, conf, env=env)
    assert (out.rc, out.stdout) == (0, "")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CNI_CONTAINERID", "-leading-dash"),
        ("CNI_CONTAINERID", "has/slash"),
        ("CNI_CONTAINERID", "has space"),
        ("CNI_IFNAME", "much-too-long-name"),
        ("CNI_IFNAME", "a/b"),
        ("CNI_IFNAME", "a:b"),
        ("CNI_IFNAME", "a b"),
        ("CNI_IFNAME", ".."),
        ("CNI_IFNAME", 'z" : accept }'),
        ("CNI_IFNAME", "net\x01"),
        ("CNI_IFNAME", "net*"),
        ("CNI_NETNS", "relative/path"),
        ("CNI_NETNS", "/run/netns/" + "a" * 4096),  # longer than PATH_MAX: a state entry could not name it
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME"),
        ("CNI_ARGS", "=value"),
    ],
)
def test_malformed_variable_is_invalid_env(node: FakeNode, variable: str, value: str) -> None:
    assert_error(node.call("ADD", env=node.env("ADD", **{variable: value})), INVALID_ENV)
    assert node.transactions() == 0


# ----------------------------------------------------------------------------------------------- stdin


@pytest.mark.parametrize(
    "stdin",
    [b"", b"{", b"not json", b'{"cniVersion": "1.0.0",}', b"\xff\xfe{}", b'{"a": NaN}', b"[" * 100_000, b"[1, 2]"],
)
def test_undecodable_stdin(node: FakeNode, stdin: bytes) -> None:
    assert_error(node.call("ADD", stdin), DECODING_FAILURE)


@pytest.mark.parametrize(
    ("version", "command"),
    [("0.2.0", "ADD"), ("1.2.0", "ADD"), ("2.0", "DEL"), ("0.3.1", "CHECK"), ("1.0.0", "GC"), ("1.0.0", "STATUS")],
)
def test_unsupported_version(node: FakeNode, version: str, command: str) -> None:
    conf = node.conf(cniVersion=version, **{"cni.dev/valid-attachments": []})
    error = assert_error(node.call(command, conf), INCOMPATIBLE_VERSION)
    # answered in the config's version when mnp speaks it (it just does not allow the verb), else in 1.1.0
    assert error["cniVersion"] == (version if version in SUPPORTED_VERSIONS else "1.1.0")


def test_missing_version_is_incompatible(node: FakeNode) -> None:
    conf = node.conf()
    del conf["cniVersion"]
    assert_error(node.call("ADD", conf), INCOMPATIBLE_VERSION)


def test_prev_result_in_an_unknown_version(node: FakeNode) -> None:
    assert_error(node.call("ADD", node.conf(prevResult=prev_result(version="0.2.0"))), INCOMPATIBLE_VERSION)


def test_add_without_prev_result_is_invalid_config(node: FakeNode) -> None:
    error = assert_error(node.call("ADD", node.conf(prevResult=None)), INVALID_CONFIG)
    assert "chained" in error["msg"]
    assert error["cniVersion"] == "1.0.0"  # the config's own version once it is known
    assert node.transactions() == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": None},
        {"name": 7},
        {"name": "bad name"},
        {"type": None},
        {"type": ["mnp"]},
        {"stateDir": 5},
        {"stateDir": "relative/state"},
        {"stateDir": ""},
        {"logFile": "relative.log"},
        {"logFile": True},
        {"logLevel": "chatty"},
        {"logLevel": 3},
        {"onError": "maybe"},
        {"onError": False},
        {"nftPath": ""},
        {"nftPath": ["nft"]},
        {"cniVersion": 1.0},
        {"prevResult": []},
        {"prevResult": {"cniVersion": "1.0.0", "interfaces": {"name": "net1"}}},
        {"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]}},
        {"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": 1}]}},
        {"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}},
        {"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}},
        {"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "interface": 3}]}},
        {"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "interface": True}]}},
        {"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "gateway": "nope"}]}},
        {"prevResult": {"cniVersion": "1.0.0", "routes": {}}},
        {"prevResult": {"cniVersion": "1.0.0", "dns": []}},
        {"prevResult": {"cniVersion": 1}},
    ],
)
def test_wrong_types_and_values_are_invalid_config(node: FakeNode, overrides: dict[str, Any]) -> None:
    assert_error(node.call("ADD", node.conf(**overrides)), INVALID_CONFIG)
    assert node.transactions() == 0


def test_unknown_keys_are_fine(node: FakeNode) -> None:
    conf = node.conf(somethingElse={"x": 1}, args={"labels": {"a": "b"}}, runtimeConfig={"ips": ["10.0.0.1/24"]})
    assert node.call("ADD", conf).rc == 0


def test_minimal_chain_line_uses_the_defaults(node: FakeNode) -> None:
    # a NAD chain line {"type": "mnp"} + what libcni adds (name, cniVersion, prevResult)
    seen: list[PluginConf] = []

    def deps(conf: PluginConf) -> Deps:
        seen.append(conf)
        return node.deps(conf)

    conf = {"type": "mnp", "name": "net-a", "cniVersion": "1.0.0", "prevResult": prev_result()}
    node.call("DEL", conf, deps=deps)
    (parsed,) = seen
    assert (parsed.state_dir, parsed.log_file, parsed.log_level, parsed.on_error, parsed.nft_path) == (
        "/run/mnp/state",
        None,
        "info",
        "fail",
        "nft",
    )


def test_del_ignores_a_malformed_prev_result(node: FakeNode) -> None:
    # DEL needs nothing from prevResult and must not fail a teardown over it
    assert node.call("DEL", node.conf(prevResult={"ips": "garbage"})).rc == 0


# ----------------------------------------------------------------------------------------------- netns guard


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_own_netns_is_refused_before_anything_is_touched(node: FakeNode, command: str) -> None:
    node.netns.add(OWN_NETNS)
    error = assert_error(node.call(command, netns=OWN_NETNS), INVALID_NETNS)
    assert "own network namespace" in error["msg"]
    assert node.transactions() == 0
    assert not node.state_dir.exists()


def test_real_own_netns_check_sees_proc_self() -> None:
    from shared.netns import is_own_netns

    assert is_own_netns("/proc/self/ns/net")
    assert not is_own_netns("/nonexistent/netns")


# ----------------------------------------------------------------------------------------------- outputs


def test_unexpected_exception_is_internal_error_with_traceback_in_the_log(node: FakeNode) -> None:
    def broken(conf: PluginConf) -> Deps:
        raise RuntimeError("boom")

    out = node.call("ADD", deps=broken)
    error = assert_error(out, INTERNAL)
    assert "boom" in error["details"]
    assert "Traceback" in out.stderr


def test_logs_never_reach_stdout(node: FakeNode) -> None:
    out = node.call("ADD")
    assert out.rc == 0
    assert json.loads(out.stdout)["cniVersion"] == "1.0.0"  # stdout is exactly the result
    assert "level=info" in out.stderr and "interface closed" in out.stderr
    out = node.call("DEL")
    assert (out.rc, out.stdout) == (0, "")


def test_log_file_takes_the_lines(node: FakeNode, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "mnp.log"
    out = node.call("ADD", node.conf(logFile=str(log), logLevel="debug"))
    assert out.rc == 0 and out.stderr == ""
    text = log.read_text()
    assert "cmd=ADD" in text and "container=c1" in text and "ifname=net1" in text and "network=net-a" in text


def test_unusable_log_file_falls_back_to_stderr(node: FakeNode, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = node.call("ADD", node.conf(logFile=str(blocker / "mnp.log")))
    assert out.rc == 0
    assert "cannot open logFile" in out.stderr and "interface closed" in out.stderr


def test_log_level_filters(node: FakeNode) -> None:
    out = node.call("ADD", node.conf(logLevel="warning"))
    assert out.rc == 0 and out.stderr == ""
