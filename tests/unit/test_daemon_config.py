"""mnpd's configuration: flags over environment over defaults, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import DEFAULT_LISTEN, build_parser, load, parse_bool, parse_duration, parse_listen
from shared.errors import ConfigError


def test_durations_and_booleans() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("30s") == parse_duration("30") == 30.0
    assert parse_duration("5m") == 300.0 and parse_duration("1h") == 3600.0 and parse_duration("1.5") == 1.5
    for bad in ("", "5 minutes", "-1s", "1d", "1s\n5", "\u0663s"):  # \u0663: an Arabic-Indic 3
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_bool("Yes") and parse_bool("1") and not parse_bool("off") and not parse_bool("")
    with pytest.raises(ValueError):
        parse_bool("maybe")


def test_manifests_source_defaults(tmp_path: Path) -> None:
    config = load(["--manifests-dir", str(tmp_path)], {})
    assert config.source == "manifests" and config.manifests_dir == str(tmp_path)
    assert config.state_dir == "/run/mnp/state" and config.status_file == "/run/mnp/mnpd-status.json"
    assert config.listen == DEFAULT_LISTEN and config.listen_address == ("127.0.0.1", 9741)
    assert (config.accept_icmp, config.accept_icmpv6, config.flush_conntrack) == (False, False, True)
    assert (config.resync_period, config.min_sync_interval, config.watch_timeout) == (60.0, 0.2, 300.0)
    assert (config.log_format, config.log_level) == ("text", "info")
    assert dict(config.settings())["source"] == "manifests"


def test_environment_and_flags(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}")
    env = {
        "MNP_KUBECONFIG": str(kubeconfig),
        "NODE_NAME": "node-from-downward-api",
        "MNP_STATE_DIR": "/var/lib/mnp/state",
        "MNP_ACCEPT_ICMPV6": "true",
        "MNP_RESYNC_PERIOD": "5m",
        "MNP_LOG_FORMAT": "json",
        "MNP_LISTEN": "[::1]:9000",
    }
    config = load(["--accept-icmp", "--log-format", "text", "--listen", "off"], env)
    assert config.source == "api" and config.kubeconfig == str(kubeconfig)
    assert config.node_name == "node-from-downward-api"
    assert config.status_file == "/var/lib/mnp/mnpd-status.json"
    assert config.accept_icmp and config.accept_icmpv6 and config.resync_period == 300.0
    assert config.log_format == "text"  # the flag wins
    assert config.listen is None and config.listen_address is None
    assert load(["--node-name", "flag-node"], env).node_name == "flag-node"
    assert load([], env).listen_address == ("::1", 9000)


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9741", ("127.0.0.1", 9741)),
        ("localhost:0", ("localhost", 0)),
        ("[fd00::1]:9741", ("fd00::1", 9741)),
        ("fd00::1:9741", ("fd00::1", 9741)),  # the DaemonSet's $(HOST_IP):9741 on an IPv6 node
        ("[::]:9741", ("::", 9741)),
        (":::9741", ("::", 9741)),
        ("[fe80::1%eth0]:9741", ("fe80::1%eth0", 9741)),
        ("off", None),
    ],
)
def test_listen_takes_ipv4_names_and_ipv6_bracketed_or_not(listen: str, address: tuple[str, int] | None) -> None:
    env = {"MNP_MANIFESTS_DIR": "/", "MNP_LISTEN": listen}
    assert parse_listen(listen) == address and load([], env).listen_address == address


@pytest.mark.parametrize(
    ("listen", "why"),
    [
        ("fd00::1", "'fd00::1' is an IPv6 address without a port (e.g. [fd00::1]:9741)"),
        ("[fd00::1]", "is not host:port"),
        ("[10.0.0.5]:9741", "'10.0.0.5' is not an IPv6 address"),
        ("fd00::zz:9741", "'fd00::zz' is not an IPv6 address"),
        (":9741", "'' is not an IPv4 address or a host name"),
        ("my host:9741", "'my host' is not an IPv4 address or a host name"),
        ("10.0.0.5:65536", "is not host:port"),
        ("10.0.0.5", "is not host:port"),
    ],
)
def test_listen_refuses_what_it_cannot_bind_with_a_reason(listen: str, why: str) -> None:
    """A bare IPv6 address used to pass as host `fd00:`, port 1, and fail only at bind time."""
    with pytest.raises(ConfigError) as info:
        load(["--manifests-dir", "/", "--listen", listen], {})
    assert f"--listen: {listen!r}" in str(info.value) and why in str(info.value)


def test_in_cluster_needs_only_the_service_host_and_a_node_name() -> None:
    config = load([], {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "MNP_NODE_NAME": "n1"})
    assert config.source == "api" and config.kubeconfig is None


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(
            [
                "--manifests-dir", str(tmp_path / "missing"), "--kubeconfig", str(tmp_path / "kc"),
                "--state-dir", "relative/dir", "--listen", "nohost", "--resync-period", "soon",
                "--min-sync-interval", "2h", "--log-level", "loud", "--flush-conntrack", "perhaps",
            ],
            {},
        )  # fmt: skip
    text = str(info.value)
    for expected in (
        "two sources of objects",
        "is not a directory",
        "--state-dir: 'relative/dir' must be an absolute path",
        "--listen: 'nohost'",
        "--resync-period: 'soon'",
        "--log-level: 'loud'",
        "--flush-conntrack: 'perhaps'",
    ):
        assert expected in text
    assert text.count("\n  - ") == 8  # the seven above and "--min-sync-interval (2h) is longer than --resync-period"


def test_api_source_needs_a_node_name_and_a_cluster() -> None:
    with pytest.raises(ConfigError) as info:
        load([], {})
    assert "no source of objects" in str(info.value) and "--node-name (or NODE_NAME) is required" in str(info.value)


def test_status_file_must_stay_out_of_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must not be inside the state dir"):
        load(["--manifests-dir", str(tmp_path), "--state-dir", "/run/x", "--status-file", "/run/x/s.json"], {})


def test_help_names_every_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    from daemon.config import OPTIONS

    assert len(OPTIONS) == 23
    for option in OPTIONS:
        assert option.flag in out and f"[{option.env}]" in out


def test_adoption_is_on_by_default_with_the_anchors_plugin_filter(tmp_path: Path) -> None:
    base = ["--manifests-dir", str(tmp_path)]
    config = load(base, {})
    assert config.adopt and config.network_plugins == ("macvlan", "ipvlan", "sriov")
    assert config.netns_dirs == ("/run/netns", "/var/run/netns")
    off = load([*base, "--no-adopt", "--network-plugins", " macvlan, bond ,macvlan"], {})
    assert not off.adopt and off.network_plugins == ("macvlan", "bond")
    assert not load(base, {"MNP_ADOPT": "false"}).adopt
    with pytest.raises(ConfigError) as info:
        load([*base, "--network-plugins", ",", "--netns-dirs", "run/netns"], {})
    assert "--network-plugins: empty" in str(info.value) and "--netns-dirs" in str(info.value)
