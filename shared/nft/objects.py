"""Typed nftables objects of one table, and how each is written in `nft -f` syntax.

Modelled on knftables: the objects are plain data; `Transaction` (shared.nft.transaction) puts verbs on them and
its text is exactly what `nft -f -` reads; the in-memory `FakeNft` (shared.nft.fake) applies the same operations.
Only the small grammar mnp emits is modelled. Every object belongs to the one table named by the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Verb = Literal["add", "flush", "delete"]


def quote(text: str) -> str:
    """A double-quoted nft string. nft strings cannot contain a double quote; comments are ours, so replace it."""
    return '"' + text.replace('"', "'").replace("\\", "/") + '"'


def comment(text: str | None) -> str:
    # nft limits comments to 128 bytes (NFT_USERDATA_MAXLEN 256 for rules, 128 for objects): keep under both.
    if not text:
        return ""
    data = text.encode()[:120].decode(errors="ignore")
    return f" comment {quote(data)}"


@dataclass(frozen=True)
class Table:
    def body(self) -> str:
        return ""


@dataclass(frozen=True)
class Chain:
    name: str
    hook: str | None = None  # base chains: "input" | "output"
    priority: str = "filter"
    policy: str = "accept"

    def body(self) -> str:
        if self.hook is None:
            return ""
        return f" {{ type filter hook {self.hook} priority {self.priority}; policy {self.policy}; }}"


@dataclass(frozen=True)
class Rule:
    chain: str
    text: str
    comment: str | None = None


@dataclass(frozen=True)
class Set:
    """A named set or, with `value_type`, a map."""

    name: str
    key_type: str
    flags: tuple[str, ...] = ()
    comment: str | None = None
    value_type: str | None = None

    @property
    def is_map(self) -> bool:
        return self.value_type is not None

    def body(self) -> str:
        type_ = f"{self.key_type} : {self.value_type}" if self.value_type else self.key_type
        flags = f" flags {','.join(self.flags)};" if self.flags else ""
        return f" {{ type {type_};{flags}{comment(self.comment)} }}"


@dataclass(frozen=True)
class Element:
    """One element of set `set`: its key as nft text (`10.0.0.0/24 . tcp . 80-90`), and a map value."""

    set: str
    key: str
    value: str | None = None
    comment: str | None = None

    def text(self, with_value: bool = True) -> str:
        value = f" : {self.value}" if self.value is not None and with_value else ""
        return f"{self.key}{value}{comment(self.comment) if with_value else ''}"


NftObject = Table | Chain | Rule | Set | Element
