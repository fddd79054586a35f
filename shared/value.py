"""`Value`: the base of the small immutable records on the CNI plugin's ADD path — the rules IR (shared/rules.py),
the nft objects and transaction (shared/nft/), the state entry (shared/state.py), the plugin's parsed call.

What `@dataclass(frozen=True)` gives — equality, hash and repr over the fields, no assignment after `__init__` —
for a class that lists its fields in `__slots__` and writes its own `__init__`. Not dataclasses, because the
plugin runs once per pod ADD and dataclasses is a large part of its CPU: importing it pulls inspect (ast, dis,
tokenize, …), and every decorated class compiles its generated methods at import (docs/benchmarks.md, CNI ADD).
Slots also make these records smaller and their attributes faster for the daemon, which holds many of them.
"""

from __future__ import annotations

from _operator import attrgetter  # the C module: operator.py is not on the plugin's path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self


def _no_fields(_: object) -> tuple[()]:
    return ()


class Value:
    """Subclasses set `__slots__` to their fields (sorted, as ruff wants: repr lists them in that order) and
    assign each once in `__init__`."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _get: Callable[[object], tuple[object, ...]] = staticmethod(_no_fields)  # the fields' values, in order

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls._fields = tuple(cls.__slots__)
        if len(cls._fields) == 1:
            one = attrgetter(cls._fields[0])
            cls._get = staticmethod(lambda self: (one(self),))
        elif cls._fields:
            cls._get = staticmethod(attrgetter(*cls._fields))

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._get(self) == self._get(other)

    def __hash__(self) -> int:
        return hash(self._get(self))

    def replace(self, **changes: object) -> Self:
        """A copy with `changes` (as `dataclasses.replace`; `__init__` takes every field by its name)."""
        values = dict(zip(self._fields, self._get(self), strict=True))
        values.update(changes)
        return type(self)(**values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self._get(self), strict=True))
        return f"{type(self).__name__}({fields})"


class HashedValue(Value):
    """A `Value` hashed once, for big records used as cache keys and compared on every daemon sync (the rules IR:
    hundreds of peers per record). Unequal hashes make `==` answer at once; equal ones compare the fields."""

    __slots__ = ("_hash",)  # not a field: subclasses list their own fields in their own `__slots__`
    _hash: int

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            value = hash(self._get(self))
            object.__setattr__(self, "_hash", value)
            return value

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        return hash(self) == hash(other) and self._get(self) == self._get(other)

    def __getstate__(self) -> tuple[None, dict[str, object]]:
        # The fields only: a hash is only valid in the process that computed it (PYTHONHASHSEED).
        return None, dict(zip(self._fields, self._get(self), strict=True))
