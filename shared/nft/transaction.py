"""An nftables transaction for one table: an ordered list of (verb, object) whose text is what `nft -f -` reads.

`nft -f` applies a whole file as one kernel transaction: every operation or none. mnp changes a pod's rules only
through one `Transaction`, so a pod is never seen half-updated.

Validation is deferred and sticky (as in knftables): the first invalid operation is recorded in `error`, later
ones are ignored, and running the transaction raises it. Building code never checks an error per call.
"""

from __future__ import annotations

from shared.nft.objects import Chain, Element, NftObject, Rule, Set, Table, comment
from shared.value import Value

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterator

    from shared.nft.objects import Verb

# nft identifiers: a letter or underscore, then letters, digits, '_', '.', '-'. mnp emits a subset of that — a
# letter or underscore, then up to 63 letters, digits or underscores — checked without `re` (the CNI plugin's
# start-up time: shared.cjson).
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_WORD = _LETTERS | frozenset("0123456789")


def is_identifier(name: str) -> bool:
    return 0 < len(name) <= 64 and name[0] in _LETTERS and all(char in _WORD for char in name)


class TransactionError(ValueError):
    """An operation that cannot be written as nft text."""


class Operation(Value):
    __slots__ = ("obj", "verb")

    def __init__(self, verb: Verb, obj: NftObject) -> None:
        self.verb = verb
        self.obj = obj


class Transaction:
    def __init__(
        self,
        family: str = "inet",
        table: str = "mnp",
        operations: list[Operation] | None = None,
        error: TransactionError | None = None,
    ) -> None:
        self.family = family
        self.table = table
        self.operations: list[Operation] = [] if operations is None else operations
        self.error = error
        self._text: str | None = None  # str(self), until the next operation

    def __eq__(self, other: object) -> bool:
        if type(other) is not Transaction:
            return NotImplemented
        return (self.family, self.table, self.operations, self.error) == (
            other.family,
            other.table,
            other.operations,
            other.error,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Transaction({self.family!r}, {self.table!r}, {len(self.operations)} operations, error={self.error!r})"

    # ----------------------------------------------------------------------------------------- building

    def add(self, obj: NftObject) -> Transaction:
        return self._append("add", obj)

    def flush(self, obj: Chain | Set) -> Transaction:
        return self._append("flush", obj)

    def delete(self, obj: NftObject) -> Transaction:
        return self._append("delete", obj)

    def extend(self, other: Transaction) -> Transaction:
        for op in other.operations:
            self._append(op.verb, op.obj)
        if other.error and not self.error:
            self.error = other.error
        return self

    def _append(self, verb: Verb, obj: NftObject) -> Transaction:
        if self.error is not None:
            return self
        self._text = None
        problem = _validate(verb, obj)
        if problem:
            self.error = TransactionError(f"{verb} {type(obj).__name__.lower()}: {problem}")
        else:
            self.operations.append(Operation(verb, obj))
        return self

    def __len__(self) -> int:
        return len(self.operations)

    def __bool__(self) -> bool:
        return True

    # ----------------------------------------------------------------------------------------- text

    def __str__(self) -> str:
        # Kept: the daemon sends one rendered transaction to every pod of a Deployment.
        if self._text is None:
            self._text = "".join(line + "\n" for line in self.lines())
        return self._text

    def lines(self) -> Iterator[str]:
        ops = self.operations
        i = 0
        while i < len(ops):
            op = ops[i]
            if isinstance(op.obj, Element):
                # consecutive element operations on one set are written as one command
                j = i
                while (
                    j < len(ops)
                    and ops[j].verb == op.verb
                    and isinstance(ops[j].obj, Element)
                    and ops[j].obj.set == op.obj.set  # type: ignore[union-attr]
                ):
                    j += 1
                yield self._elements(op.verb, [o.obj for o in ops[i:j]])  # type: ignore[misc]
                i = j
                continue
            yield self._line(op.verb, op.obj)
            i += 1

    def _line(self, verb: Verb, obj: NftObject) -> str:
        where = f"{self.family} {self.table}"
        if isinstance(obj, Table):
            return f"{verb} table {where}"
        if isinstance(obj, Chain):
            return f"{verb} chain {where} {obj.name}{obj.body() if verb == 'add' else ''}"
        if isinstance(obj, Set):
            kind = "map" if obj.is_map else "set"
            return f"{verb} {kind} {where} {obj.name}{obj.body() if verb == 'add' else ''}"
        if isinstance(obj, Rule):
            return f"{verb} rule {where} {obj.chain} {obj.text}{comment(obj.comment)}"
        raise AssertionError(obj)  # pragma: no cover

    def _elements(self, verb: Verb, elements: list[Element]) -> str:
        with_value = verb == "add"
        head = f"{verb} element {self.family} {self.table} {elements[0].set} {{"
        if len(elements) == 1:
            return f"{head} {elements[0].text(with_value)} }}"
        body = ",\n".join(f"\t{e.text(with_value)}" for e in elements)
        return f"{head}\n{body}\n}}"


def _validate(verb: Verb, obj: NftObject) -> str | None:
    names = []
    if isinstance(obj, Chain | Set):
        names.append(obj.name)
    if isinstance(obj, Rule):
        names.append(obj.chain)
        if verb != "add":
            return "rules can only be added (flush their chain to replace them)"
        if not obj.text.strip() or "\n" in obj.text:
            return "rule text must be one non-empty line"
    if isinstance(obj, Element):
        names.append(obj.set)
        if not obj.key:
            return "element needs a key"
    if verb == "flush" and not isinstance(obj, Chain | Set):
        return "only chains and sets can be flushed"
    for name in names:
        if not is_identifier(name):
            return f"{name!r} is not a valid name"
    return None
