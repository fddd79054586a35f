"""JSON for the CNI plugin through CPython's C accelerator `_json` alone.

`import json` imports `re` (→ enum, functools, collections …) for its whitespace pattern: ≈ 5–6 ms of CPU on
every start of the frozen plugin, ≈ a fifth of its whole ADD (docs/benchmarks.md, CNI ADD). The parsing and
the encoding themselves are `_json`'s C scanner and encoder, the very ones `json.loads` and `json.dumps` use;
only their set-up is done here: `loads` is `json.loads` of a str (strict, no hooks, `parse_constant` for
NaN/Infinity), `dumps` is `json.dumps` with its defaults (ASCII, `", "` and `": "`), `dumps_flat(…, indent=1)`
the indented form of an object whose values are scalars or lists of scalars (a state entry). A malformed
document raises ValueError (json's JSONDecodeError where the C scanner raises it: that error path imports `json`).
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

WHITESPACE = " \t\n\r"  # JSON's insignificant whitespace (RFC 8259, section 2)
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _ScannerContext:
    """The attributes `_json.make_scanner` reads (those of json.JSONDecoder with its defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    def __init__(self, parse_constant: Callable[[str], Any]) -> None:
        self.parse_constant = parse_constant


def loads(text: str | bytes, parse_constant: Callable[[str], Any] = _CONSTANTS.__getitem__) -> Any:
    """`json.loads(text)`; bytes are decoded as UTF-8 (UnicodeDecodeError, a ValueError, otherwise)."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    if text.startswith("\ufeff"):
        raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
    scan = _json.make_scanner(_ScannerContext(parse_constant))  # type: ignore[arg-type]  # duck-typed context
    start = len(text) - len(text.lstrip(WHITESPACE))
    try:
        value, end = scan(text, start)
    except StopIteration as err:
        raise ValueError(f"Expecting value: char {err.value}") from None
    if text[end:].strip(WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


def _unserialisable(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: object) -> str:
    """`json.dumps(value)`: one line, ASCII."""
    if isinstance(value, str):
        return str(_json.encode_basestring_ascii(value))
    # a new encoder per call, as json.dumps: its `markers` (circular references) must start empty
    encode = _json.make_encoder(
        {}, _unserialisable, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    return "".join(encode(value, 0))


def dumps_flat(value: dict[str, object], indent: int = 1) -> str:
    """`json.dumps(value, indent=indent)` of an object whose values are scalars or lists of scalars."""
    pad, inner = " " * indent, " " * (2 * indent)
    items = []
    for key, item in value.items():
        if isinstance(item, list | tuple) and item:
            body = ",\n".join(inner + dumps(element) for element in item)
            text = f"[\n{body}\n{pad}]"
        else:
            text = dumps(list(item) if isinstance(item, tuple) else item)
        items.append(f"{pad}{dumps(key)}: {text}")
    return "{\n" + ",\n".join(items) + "\n}" if items else "{}"
