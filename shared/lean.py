"""`functools.lru_cache` and `collections.defaultdict` from the C modules that implement them.

`functools` imports `collections` (→ keyword, reprlib, operator …), ≈ 2 ms of CPU on every start of the frozen
CNI plugin, whose renderer needs only these two (docs/benchmarks.md, CNI ADD). `_functools._lru_cache_wrapper`
is the C cache behind `functools.lru_cache` (same hits, same `cache_clear`); `cache_info()` returns a plain
(hits, misses, maxsize, currsize) tuple instead of the named one.
"""

from __future__ import annotations

from _collections import defaultdict  # type: ignore[import-not-found]  # no stub; collections' own source
from _functools import _lru_cache_wrapper  # type: ignore[import-not-found]  # functools' own source

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

__all__ = ["defaultdict", "lru_cache"]


def _cache_info(hits: int, misses: int, maxsize: int | None, currsize: int) -> tuple[int, int, int | None, int]:
    return hits, misses, maxsize, currsize


def lru_cache(maxsize: int) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """`functools.lru_cache(maxsize=…)` (untyped keys, as its default)."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        wrapper: Callable[..., T] = _lru_cache_wrapper(function, maxsize, False, _cache_info)
        for name in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(function, name):
                setattr(wrapper, name, getattr(function, name))
        wrapper.__wrapped__ = function  # type: ignore[attr-defined]
        return wrapper

    return decorate
