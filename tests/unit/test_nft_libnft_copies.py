"""How many loaded copies of libnftables mnpd spreads its contexts over (shared/nft/libnft.py `COPIES`).

Each copy lets one more command parse at the same time, and a full form's parse holds several MB of C heap while
it runs: with 4 copies, mnpd's start-up at 10,000 pods peaked above its 100 MB goal (docs/benchmarks.md, Scale).
Loading a copy needs no namespace, only the library (and memfd_create, else the library alone is handed out).
"""

from __future__ import annotations

import pytest

from shared.nft import libnft

pytestmark = pytest.mark.skipif(not libnft.available(), reason="libnftables is not installed here")


def test_mnpd_binds_every_context_to_the_one_library() -> None:
    assert libnft.COPIES == 1
    handed = {id(libnft._any_instance()) for _ in range(6)}
    assert handed == {id(libnft.instance())}


def test_contexts_go_to_each_of_the_copies_in_turn_when_more_are_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libnft, "COPIES", 2)
    copies = libnft.instances(2)
    if len(copies) < 2:
        pytest.skip("no second copy of libnftables could be loaded here")
    handed = [libnft._any_instance() for _ in range(4)]
    assert {id(c) for c in handed} == {id(c) for c in copies}
    assert handed[0] is not handed[1] and handed[1] is not handed[2]  # in turn
