"""A bounded memo keyed by the *identity* of its arguments, for functions of big immutable records.

Why not `functools.lru_cache`: it keys by value. The daemon makes equal rules one object per sync
(daemon.controller `_canonical`), so the pods of a Deployment ask the same question with the very same objects —
but once a cached key's objects are no longer the ones the controller holds (the same rules compiled again after
their object was dropped), every lookup with the new, equal objects compares them peer by peer (hundreds of
prefixes per direction) before it hits. Here a lookup is one dict probe on the objects' ids and an `is` check:
equal objects of another identity miss once and are computed again (the result is the same — the functions
memoised are pure), then hit. Each entry holds its argument objects, so an id in the memo is never another
object's while the entry is kept; when full, the oldest entry goes.

Positional arguments are keyed by identity, keyword arguments by value (small hashable values: an interface
name, options, flags). Thread-safe (the apply workers render concurrently); two threads missing the same key at
once both compute it.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

__all__ = ["identity_memo"]


def identity_memo(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Memoise a pure function by the identity of its positional arguments and the value of its keyword ones,
    keeping at most `maxsize` results. The wrapper's `cache_clear()` empties it, `cache_len()` counts entries."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        entries: dict[tuple[object, ...], tuple[tuple[object, ...], T]] = {}
        lock = _thread.allocate_lock()

        def wrapper(*args: object, **kwargs: object) -> T:
            key = (*map(id, args), *kwargs.items()) if kwargs else tuple(map(id, args))
            with lock:
                hit = entries.get(key)
            if hit is not None and all(a is b for a, b in zip(hit[0], args, strict=True)):
                return hit[1]
            result = function(*args, **kwargs)
            with lock:
                entries.pop(key, None)
                while len(entries) >= maxsize:
                    del entries[next(iter(entries))]  # the oldest (dicts keep insertion order)
                entries[key] = (args, result)
            return result

        def cache_clear() -> None:
            with lock:
                entries.clear()

        def cache_len() -> int:
            with lock:
                return len(entries)

        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(wrapper, name, getattr(function, name))
        wrapper.__wrapped__ = function  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        wrapper.cache_len = cache_len  # type: ignore[attr-defined]
        return wrapper

    return decorate
