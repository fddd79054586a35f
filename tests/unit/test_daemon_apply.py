"""The actuator (daemon.apply.Applier) on its own: the namespace a path names, and the contexts it keeps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.apply import Applier, Work
from shared.errors import NetnsGone
from shared.netns import netns_identity
from shared.nft.fake import FakeNft
from shared.nft.render import RenderOptions
from shared.rules import InterfaceRules


class Closable(FakeNft):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.closed = False
        self.identity = netns_identity(path)

    def close(self) -> None:
        self.closed = True


def test_a_path_that_names_another_namespace_now_is_refused(tmp_path: Path) -> None:
    """A netns path can come to name another pod's namespace (a reused /proc/PID): this interface's rules must
    not land there. Files stand in for namespace files: identity is (st_dev, st_ino)."""
    path = tmp_path / "netns"
    path.touch()
    identity = netns_identity(str(path))
    made: list[Closable] = []
    applier = Applier(lambda p: made.append(Closable(p)) or made[-1], RenderOptions())
    rules = InterfaceRules.pending("net1")
    applier.apply(str(path), rules, None, identity)
    assert made[0].transactions == 1
    replacement = tmp_path / "other"
    replacement.touch()
    os.replace(replacement, path)  # the same path, another file
    assert netns_identity(str(path)) != identity
    with pytest.raises(NetnsGone, match="another network namespace"):
        applier.apply(str(path), rules, None, identity)
    (outcome,) = applier.apply_all([Work(str(path), rules, None, identity)])
    assert isinstance(outcome, NetnsGone)
    applier.close()  # waits for the closer threads
    assert made[0].closed and len(made) == 1  # its context was let go, nothing new was opened or run
    assert made[0].transactions == 1


def test_contexts_of_vanished_paths_are_released(tmp_path: Path) -> None:
    paths = [tmp_path / f"ns{i}" for i in range(3)]
    for p in paths:
        p.touch()
    made: dict[str, Closable] = {}

    def factory(p: str) -> Closable:
        made[p] = Closable(p)
        return made[p]

    applier = Applier(factory, RenderOptions())
    outcomes = applier.apply_all([Work(str(p), InterfaceRules.pending("net1")) for p in paths])
    assert outcomes == [None, None, None]
    os.unlink(paths[0])  # gone without a DEL
    (tmp_path / "other").touch()
    os.replace(tmp_path / "other", paths[1])  # the same path, another file
    applier.release_missing()
    applier.wait_closed()
    assert [made[str(p)].closed for p in paths] == [True, True, False]
    applier.close()
    assert made[str(paths[2])].closed


def test_only_the_most_recently_used_contexts_stay_open(tmp_path: Path) -> None:
    paths = [tmp_path / f"ns{i}" for i in range(10)]
    for p in paths:
        p.touch()
    made: dict[str, Closable] = {}

    def factory(p: str) -> Closable:
        made[p] = Closable(p)
        return made[p]

    applier = Applier(factory, RenderOptions(), workers=1, keep=3)
    for p in paths:
        assert applier.apply_all([Work(str(p), InterfaceRules.pending("net1"))]) == [None]
    applier.wait_closed()
    assert [made[str(p)].closed for p in paths] == [True] * 7 + [False] * 3
    before = len(made)
    applier.apply_all([Work(str(paths[0]), InterfaceRules.pending("net2"))])  # reopened on demand
    assert len(made) == before and made[str(paths[0])].transactions == 1  # a new object replaced the closed one
    applier.close()
