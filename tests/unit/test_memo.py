"""shared.memo.identity_memo: hits only with the very same objects, never a stale answer, bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.memo import identity_memo


class Box:
    """An object equal by value to every Box of the same content (like the rules records), hashed alike."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


def test_the_same_objects_hit_equal_objects_of_another_identity_are_computed_again() -> None:
    calls: list[tuple[int, int]] = []

    @identity_memo(maxsize=8)
    def add(a: Box, b: Box) -> int:
        calls.append((a.value, b.value))
        return a.value + b.value

    one, two = Box(1), Box(2)
    assert add(one, two) == 3 and add(one, two) == 3
    assert calls == [(1, 2)]
    assert add(Box(1), two) == 3  # equal, another object: computed, not compared by value
    assert calls == [(1, 2), (1, 2)]
    assert add(two, one) == 3 and len(calls) == 3  # the order of the arguments is part of the key


def test_keyword_arguments_are_keyed_by_value() -> None:
    calls: list[str] = []

    @identity_memo(maxsize=8)
    def tag(a: Box, *, name: str) -> str:
        calls.append(name)
        return f"{name}{a.value}"

    box = Box(7)
    assert tag(box, name="net1") == "net17"
    assert tag(box, name="".join(["net", "1"])) == "net17"  # an equal string of another identity hits
    assert calls == ["net1"]
    assert tag(box, name="net2") == "net27" and calls == ["net1", "net2"]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.booleans()), max_size=60), st.integers(1, 6))
def test_never_a_stale_answer_and_bounded(calls: list[tuple[int, int, bool]], maxsize: int) -> None:
    """Random calls with objects that are dropped and recreated (ids get reused by new objects): every answer is
    the function's own, and the memo never holds more than `maxsize` entries."""
    pool: dict[int, Box] = {}

    @identity_memo(maxsize=maxsize)
    def double(a: Box) -> int:
        return a.value * 2

    for slot, value, replace in calls:
        if replace or slot not in pool:
            pool[slot] = Box(value)  # the old object may be freed and its id given to a new one
        box = pool[slot]
        assert double(box) == box.value * 2
        assert double.cache_len() <= maxsize  # type: ignore[attr-defined]
    double.cache_clear()  # type: ignore[attr-defined]
    assert double.cache_len() == 0  # type: ignore[attr-defined]
