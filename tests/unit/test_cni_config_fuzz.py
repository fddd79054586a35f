"""Fuzzing the one config parser: whatever stdin, CNI_ARGS or interface name a runtime hands over, `parse_config`
returns a PluginConf or raises the typed CNIError — never another exception, which would reach the runtime as a
traceback instead of the CNI error JSON."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni.config import COMMANDS, SUPPORTED_VERSIONS, PluginConf, parse_cni_args, parse_config, result_for
from cni.errors import CNIError
from tests.support.cnifake import prev_result

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
versions = st.sampled_from([*SUPPORTED_VERSIONS, "0.1.0", "1.2.0", "", "x"]) | json_values
commands = st.sampled_from([c for c in COMMANDS if c != "VERSION"])
ifnames = st.sampled_from(["net1", "eth0", ""]) | st.text(max_size=16)

KEYS = ["cniVersion", "name", "type", "stateDir", "logFile", "logLevel", "onError", "nftPath", "prevResult",
        "cni.dev/valid-attachments", "cni.dev/attachments"]  # fmt: skip
PREV_KEYS = ["cniVersion", "interfaces", "ips", "routes", "dns"]


def base() -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": "net-a",
        "type": "mnp",
        "prevResult": prev_result(version="1.1.0"),
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "net1"}],
    }


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid config with some keys (top level, prevResult, its interfaces and ips) replaced or dropped."""
    conf = base()
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        if draw(st.booleans()):
            conf.pop(key, None)
        else:
            conf[key] = draw(versions if key == "cniVersion" else json_values)
    prev = conf.get("prevResult")
    if isinstance(prev, dict):
        for key in draw(st.lists(st.sampled_from(PREV_KEYS), max_size=3)):
            prev[key] = draw(json_values)
        ips = prev.get("ips")
        if isinstance(ips, list) and ips and isinstance(ips[0], dict) and draw(st.booleans()):
            ips[0][draw(st.sampled_from(["address", "interface", "gateway", "version"]))] = draw(
                json_values | st.sampled_from(["10.0.0.1/24", "::1/128", "10.0.0.1", "1.2.3.4/33", "fe80::%1/64"])
            )
    return conf


def check(stdin: bytes | str, command: str, ifname: str) -> None:
    try:
        conf = parse_config(stdin, command, ifname)
    except CNIError as exc:
        assert isinstance(exc.code, int) and exc.msg
        return
    assert isinstance(conf, PluginConf)
    assert conf.cni_version in SUPPORTED_VERSIONS
    if command == "ADD":
        assert conf.prev_result is not None
        json.dumps(result_for(conf.prev_result, conf.cni_version))  # printable
    if command == "GC":
        assert conf.valid_attachments is not None


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=200), commands, ifnames)
def test_arbitrary_bytes(stdin: bytes, command: str, ifname: str) -> None:
    check(stdin, command, ifname)


@FAST
@given(json_values, commands, ifnames)
def test_arbitrary_json(value: Any, command: str, ifname: str) -> None:
    check(json.dumps(value), command, ifname)


@FAST
@given(mutated_configs(), commands, ifnames)
def test_mutated_valid_configs(conf: dict[str, Any], command: str, ifname: str) -> None:
    check(json.dumps(conf), command, ifname)


@FAST
@given(st.text(max_size=80))
def test_cni_args(text: str) -> None:
    try:
        parsed = parse_cni_args(text)
    except CNIError as exc:
        assert exc.code == 4
        return
    assert all(isinstance(k, str) and k for k in parsed)


def test_the_unmutated_config_parses_for_every_command() -> None:
    for command in COMMANDS:
        if command != "VERSION":
            assert isinstance(parse_config(json.dumps(base()), command, "net1"), PluginConf)
