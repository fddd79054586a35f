"""Typed nftables objects of one table, and how each is written in `nft -f` syntax.

Modelled on knftables: the objects are plain data; `Transaction` (shared.nft.transaction) puts verbs on them and
its text is exactly what `nft -f -` reads; the in-memory `FakeNft` (shared.nft.fake) applies the same operations.
Only the small grammar mnp emits is modelled. Every object belongs to the one table named by the transaction.
"""

from __future__ import annotations

from shared.ifname import check_ifname
from shared.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Literal

    Verb = Literal["add", "flush", "delete"]


_TEXT_REPLACED = str.maketrans({'"': "'", "\\": "/", "$": "_"})


def quote(text: str) -> str:
    """`text` (a comment, a log prefix: free text mnp composes, e.g. from policy names) as a double-quoted nft
    string that no character can end or bend. nft 1.0.6's quoted strings have no escapes (its scanner reads
    `"[^"]*"`), so characters are replaced instead: `"` by `'`, `\\` by `/`, `$` (nft expands `$name` inside a
    log prefix) by `_`, and every character that is not printable — newlines, other control characters, line
    separators — by `?`. Names are never rewritten: they are checked (`quote_ifname`)."""
    safe = text.translate(_TEXT_REPLACED)
    if not safe.isprintable():
        safe = "".join(char if char.isprintable() else "?" for char in safe)
    return '"' + safe + '"'


def quote_ifname(name: str) -> str:
    """An interface name as a double-quoted nft string; InvalidInterfaceName unless `name` passes the one rule
    (shared.ifname), which leaves nothing in it that could end the string."""
    return '"' + check_ifname(name) + '"'


def comment(text: str | None) -> str:
    # nft limits comments to 128 bytes (NFT_USERDATA_MAXLEN 256 for rules, 128 for objects): keep under both.
    if not text:
        return ""
    data = text.encode()[:120].decode(errors="ignore")
    return f" comment {quote(data)}"


class Table(Value):
    __slots__ = ()

    def body(self) -> str:
        return ""


class Chain(Value):
    __slots__ = ("hook", "name", "policy", "priority")

    def __init__(self, name: str, hook: str | None = None, priority: str = "filter", policy: str = "accept") -> None:
        self.name = name
        self.hook = hook  # base chains: "input" | "output"
        self.priority = priority
        self.policy = policy

    def body(self) -> str:
        if self.hook is None:
            return ""
        return f" {{ type filter hook {self.hook} priority {self.priority}; policy {self.policy}; }}"


class Rule(Value):
    __slots__ = ("chain", "comment", "text")

    def __init__(self, chain: str, text: str, comment: str | None = None) -> None:
        self.chain = chain
        self.text = text
        self.comment = comment


class Set(Value):
    """A named set or, with `value_type`, a map."""

    __slots__ = ("comment", "flags", "key_type", "name", "value_type")

    def __init__(
        self,
        name: str,
        key_type: str,
        flags: tuple[str, ...] = (),
        comment: str | None = None,
        value_type: str | None = None,
    ) -> None:
        self.name = name
        self.key_type = key_type
        self.flags = flags
        self.comment = comment
        self.value_type = value_type

    @property
    def is_map(self) -> bool:
        return self.value_type is not None

    def body(self) -> str:
        type_ = f"{self.key_type} : {self.value_type}" if self.value_type else self.key_type
        flags = f" flags {','.join(self.flags)};" if self.flags else ""
        return f" {{ type {type_};{flags}{comment(self.comment)} }}"


class Element(Value):
    """One element of set `set`: its key as nft text (`10.0.0.0/24 . tcp . 80-90`), and a map value."""

    __slots__ = ("comment", "key", "set", "value")

    def __init__(self, set: str, key: str, value: str | None = None, comment: str | None = None) -> None:
        self.set = set
        self.key = key
        self.value = value
        self.comment = comment

    def text(self, with_value: bool = True) -> str:
        if not with_value:
            return self.key
        if self.value is not None:  # a map element's comment goes before its value (nft's grammar)
            return f"{self.key}{comment(self.comment)} : {self.value}"
        return f"{self.key}{comment(self.comment)}"


NftObject = Table | Chain | Rule | Set | Element
