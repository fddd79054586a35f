"""`FakeNft`: an in-memory nftables that applies `Transaction`s with the kernel's rules. Shipped with the code.

Why it ships (knftables' `Fake`, httpx's `MockTransport`): the CNI plugin's and the daemon's unit tests run their
production code against it instead of mocking "some nft call happened". So it must refuse what the kernel
refuses; every rule below was checked against nft 1.0.6 on a 6.x kernel, and tests/integration/
test_render_kernel.py keeps checking that the kernel accepts exactly what the Fake accepts.

* A transaction is atomic: it is applied to a copy of the tables, committed only if every operation succeeds.
* `add` of an existing table, chain, set or map is a no-op — but a set or map redeclared with another type or
  flags is `ExistsError`, a regular chain redeclared as a base chain (or a base chain with another hook or
  priority) is refused, and a base chain redeclared with another policy takes the new policy.
* `add element` of a key already present is a no-op if the value is the same (the old comment stays), else
  `ExistsError`; in an interval set an element overlapping another one is `ExistsError`. Keys are compared as
  intervals, so `10.2.0.0/16` and `10.2.0.0-10.2.255.255` are the same element.
* `delete` or `flush` of something missing, and a rule or element that refers to a missing set, map or chain,
  is `NotFoundError`.
* Deleting a set or map a rule refers to, a chain a rule or a verdict-map element jumps to, or a chain that
  still has rules, is `BusyError` (EBUSY). `flush chain` drops its rules and so their references.

Deliberately stricter than the kernel (6.x) with concatenated interval sets, where the kernel is surprising: it
refuses a new element only if its first or last point lies in an existing one (so an element around the inside
of another goes in), and a `delete element` removes whichever element contains the first point of the given key.
The Fake refuses every overlap — mnp's sets must be disjoint — and deletes exact keys only.
Not modelled: rule expressions beyond their references and counters (strings such as a log prefix are skipped when
looking for either; the packet tracer, shared.nft.trace, understands the rules mnp writes), chain priorities across
tables, timeouts, and every nft verb mnp does not use.

`list_table()` gives the structured view (`TableView`) that the tracer walks; the tracer also builds one from the
live `nft -j list table`, so both share the element representation defined here: an element key is parsed into
one closed integer interval per field — an address prefix or range, a protocol, a port range, an interface name
or index — which makes membership and overlap the same simple test for single-field and concatenated sets.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shared.nft.errors import BusyError, ExistsError, NftError, NotFoundError
from shared.nft.objects import Chain, Element, NftObject, Rule, Set, Table, comment
from shared.nft.transaction import Operation, Transaction

# ----------------------------------------------------------------------------------------- element keys

Interval = tuple[int, int]
Key = tuple[Interval, ...]

PROTOCOLS: dict[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "sctp": 132}
_PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
_ADDRESS_BITS = {"ipv4_addr": 32, "ipv6_addr": 128}
IFNAMSIZ = 16  # an interface name is compared as 16 bytes, NUL padded


def key_fields(key_type: str) -> tuple[str, ...]:
    """`ipv4_addr . inet_proto . inet_service` → its field types."""
    return tuple(part.strip() for part in key_type.split(" . "))


def parse_field(field_type: str, text: str) -> Interval:
    """One field of an element key (`10.0.0.0/24`, `10.0.0.1-10.0.0.9`, `tcp`, `80-90`, `"net1"`) as a closed
    interval of integers. Raises NftError for text nft would refuse (or that mnp never writes)."""
    try:
        if field_type in _ADDRESS_BITS:
            version = 4 if field_type == "ipv4_addr" else 6
            if "-" in text:
                first, last = (ipaddress.ip_address(part) for part in text.split("-", 1))
            else:
                net = ipaddress.ip_network(text, strict=False)  # nft, too, clears the host bits of a prefix
                first, last = net.network_address, net.broadcast_address
            if first.version != version or last.version != version:
                raise ValueError("wrong address family")
            lo, hi = int(first), int(last)
        elif field_type == "inet_proto":
            lo = hi = PROTOCOLS[text] if text in PROTOCOLS else _bounded(int(text), 255)
        elif field_type == "inet_service":
            first_text, _, last_text = text.partition("-")
            lo = _bounded(int(first_text), 65535)
            hi = _bounded(int(last_text), 65535) if last_text else lo
        elif field_type == "iface_index":
            # mnp writes `" 3"`: a quoted number with a leading space, which nft cannot take for an interface name
            # (names hold no whitespace), so it never looks the number up as a name in the caller's netns.
            number = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
            if not number.strip().isdigit():
                raise ValueError("not an interface index (a name is resolved by nft in the caller's netns)")
            lo = hi = _bounded(int(number), 2**32 - 1)
        elif field_type == "ifname":
            name = text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
            data = name.encode()
            if len(data) >= IFNAMSIZ or "*" in name or '"' in name:
                raise ValueError("not an interface name mnp writes")
            lo = hi = int.from_bytes(data.ljust(IFNAMSIZ, b"\0"), "big")
        else:
            raise ValueError(f"unsupported type {field_type}")
    except (ValueError, KeyError) as exc:
        raise NftError(f"{text!r} is not a valid {field_type}: {exc}") from exc
    if lo > hi:
        raise NftError(f"{text!r}: the range is empty")
    return lo, hi


def _bounded(number: int, maximum: int) -> int:
    if not 0 <= number <= maximum:
        raise ValueError(f"{number} is out of range")
    return number


def format_field(field_type: str, interval: Interval) -> str:
    """The inverse of `parse_field`, in the spelling `nft list` uses (a prefix when the range is one)."""
    lo, hi = interval
    if field_type in _ADDRESS_BITS:
        bits = _ADDRESS_BITS[field_type]
        make = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
        if lo == hi:
            return str(make(lo))
        size = hi - lo + 1
        if size & (size - 1) == 0 and lo % size == 0:
            return f"{make(lo)}/{bits - size.bit_length() + 1}"
        return f"{make(lo)}-{make(hi)}"
    if field_type == "inet_proto":
        return _PROTOCOL_NAMES.get(lo, str(lo))
    if field_type == "inet_service":
        return str(lo) if lo == hi else f"{lo}-{hi}"
    if field_type == "ifname":
        return '"' + lo.to_bytes(IFNAMSIZ, "big").rstrip(b"\0").decode() + '"'
    if field_type == "iface_index":
        return str(lo)
    raise NftError(f"unsupported type {field_type}")


def parse_key(key_type: str, text: str, *, interval: bool) -> Key:
    """An element key (`10.0.0.0/24 . tcp . 80-90`) of a set of `key_type`. Without the `interval` flag every
    field must be a single value, as nft demands."""
    types, parts = key_fields(key_type), text.split(" . ")
    if len(parts) != len(types):
        raise NftError(f"{text!r} does not have the {len(types)} fields of {key_type}")
    key = tuple(parse_field(t, part.strip()) for t, part in zip(types, parts, strict=True))
    if not interval and any(lo != hi for lo, hi in key):
        raise NftError(f"{text!r}: add 'flags interval' to the set to use prefixes or ranges")
    return key


def format_key(key_type: str, key: Key) -> str:
    return " . ".join(format_field(t, interval) for t, interval in zip(key_fields(key_type), key, strict=True))


# ----------------------------------------------------------------------------------------- the structured view


@dataclass(frozen=True)
class ElementView:
    """One set or map element: `key` as `nft list` writes it, `fields` its parsed intervals."""

    key: str
    fields: Key
    value: str | None = None
    comment: str | None = None

    @staticmethod
    def parse(
        key_type: str, text: str, *, interval: bool, value: str | None = None, comment: str | None = None
    ) -> ElementView:
        fields = parse_key(key_type, text, interval=interval)
        return ElementView(format_key(key_type, fields), fields, value, comment or None)

    def contains(self, point: Sequence[int]) -> bool:
        return all(lo <= value <= hi for (lo, hi), value in zip(self.fields, point, strict=True))


@dataclass(frozen=True)
class SetView:
    """A set or (with `value_type`) a map, its elements sorted by key."""

    name: str
    key_type: str
    value_type: str | None = None
    flags: tuple[str, ...] = ()
    elements: tuple[ElementView, ...] = ()
    comment: str | None = None

    @property
    def interval(self) -> bool:
        return "interval" in self.flags

    def lookup(self, values: Sequence[str]) -> ElementView | None:
        """The element containing the point `values` (one text per field: `["10.0.0.5", "tcp", "80"]`)."""
        types = key_fields(self.key_type)
        if len(values) != len(types):
            raise NftError(f"{list(values)} does not have the {len(types)} fields of {self.key_type}")
        point = []
        for field_type, text in zip(types, values, strict=True):
            lo, hi = parse_field(field_type, text)
            if lo != hi:
                raise NftError(f"{text!r} is not a single {field_type}")
            point.append(lo)
        return next((element for element in self.elements if element.contains(point)), None)


@dataclass(frozen=True)
class RuleView:
    """A rule: its text as `nft list` prints it (without the counter's values), its comment, its counter's
    packets. A listed rule (shared.nft.trace) also has its counter's bytes and its handle, both left out of
    comparisons: two listings of the same rules are equal whatever their handles."""

    text: str
    comment: str | None = None
    packets: int | None = None  # None: the rule has no counter
    bytes: int | None = field(default=None, compare=False)
    handle: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ChainView:
    name: str
    hook: str | None = None  # base chains only
    policy: str = "accept"
    rules: tuple[RuleView, ...] = ()


@dataclass(frozen=True)
class TableView:
    family: str
    name: str
    chains: dict[str, ChainView]
    sets: dict[str, SetView]  # and maps


# ----------------------------------------------------------------------------------------- the Fake

ENOENT = "No such file or directory"
EEXIST = "File exists"
EBUSY = "Device or resource busy"
EOPNOTSUPP = "Operation not supported"

_QUOTED = re.compile(r'"[^"]*"')  # a string (a log prefix): never a reference, a counter or a verdict
_SET_REF = re.compile(r"(vmap )?@([A-Za-z_]\w*)")
_CHAIN_REF = re.compile(r"\b(?:jump|goto) ([A-Za-z_]\w*)")
_COUNTER = re.compile(r"(?:^| )counter(?: |$)")
_VERDICT = re.compile(r"^(?:accept|drop|continue|return|(?:jump|goto) [A-Za-z_]\w*)$")


def _unquoted(text: str) -> str:
    """A rule's text with its strings emptied, for finding the references and statements in it."""
    return _QUOTED.sub('""', text)


def stored_comment(text: str | None) -> str | None:
    """A comment as the kernel keeps it: what `objects.comment` writes (truncated, quotes replaced), unquoted."""
    written = comment(text)
    return written[len(' comment "') : -1] if written else None


@dataclass
class _Chain:
    chain: Chain
    rules: list[RuleView] = field(default_factory=list)


@dataclass
class _Set:
    set: Set
    elements: dict[Key, ElementView] = field(default_factory=dict)
    # Interval sets only: for each value of the other fields, the first fields' intervals, sorted. Elements that
    # agree on the other fields must not overlap in the first, so each list is disjoint and an overlap check is a
    # binary search per distinct rest — mnp's sets have few (protocol × port range) and many prefixes.
    by_rest: dict[Key, list[Interval]] = field(default_factory=dict)

    def copy(self) -> _Set:
        return _Set(self.set, dict(self.elements), {rest: list(firsts) for rest, firsts in self.by_rest.items()})

    def overlaps(self, key: Key) -> bool:
        (lo, hi), rest = key[0], key[1:]
        for other_rest, firsts in self.by_rest.items():
            if all(a <= d and c <= b for (a, b), (c, d) in zip(rest, other_rest, strict=True)):
                i = bisect.bisect_right(firsts, hi, key=lambda first: first[0])  # the last one starting <= hi
                if i and firsts[i - 1][1] >= lo:
                    return True
        return False

    def put(self, element: ElementView) -> None:
        self.elements[element.fields] = element
        if "interval" in self.set.flags:
            bisect.insort(self.by_rest.setdefault(element.fields[1:], []), element.fields[0])

    def remove(self, key: Key) -> bool:
        if self.elements.pop(key, None) is None:
            return False
        if "interval" in self.set.flags:
            self.by_rest[key[1:]].remove(key[0])
        return True

    def clear(self) -> None:
        self.elements.clear()
        self.by_rest.clear()


@dataclass
class _Table:
    chains: dict[str, _Chain] = field(default_factory=dict)
    sets: dict[str, _Set] = field(default_factory=dict)

    def copy(self) -> _Table:
        # the views are immutable: copying the containers is a full copy
        return _Table(
            {name: _Chain(c.chain, list(c.rules)) for name, c in self.chains.items()},
            {name: s.copy() for name, s in self.sets.items()},
        )

    def set_in_use(self, name: str) -> bool:
        return any(
            name == ref
            for c in self.chains.values()
            for rule in c.rules
            for _, ref in _SET_REF.findall(_unquoted(rule.text))
        )

    def chain_in_use(self, name: str) -> bool:
        jumps = (_CHAIN_REF.findall(_unquoted(rule.text)) for c in self.chains.values() for rule in c.rules)
        values = (_CHAIN_REF.findall(e.value or "") for s in self.sets.values() for e in s.elements.values())
        return any(name in refs for refs in (*jumps, *values))

    def view(self, family: str, name: str) -> TableView:
        return TableView(
            family,
            name,
            {n: ChainView(n, c.chain.hook, c.chain.policy, tuple(c.rules)) for n, c in sorted(self.chains.items())},
            {
                n: SetView(
                    n,
                    s.set.key_type,
                    s.set.value_type,
                    s.set.flags,
                    tuple(sorted(s.elements.values(), key=lambda e: e.fields)),
                    stored_comment(s.set.comment),
                )
                for n, s in sorted(self.sets.items())
            },
        )


TableKey = tuple[str, str]  # (family, table)


class FakeNft:
    """In-memory nftables for any number of tables keyed by (family, name); see the module docstring.

    `transactions` and `operations` count every `run` (failed ones too: they were issued), so a test can assert
    that a no-op resync issued none; `last_transaction` is the last one run."""

    def __init__(self) -> None:
        self._tables: dict[TableKey, _Table] = {}
        self.last_transaction: Transaction | None = None
        self.transactions = 0
        self.operations = 0

    @classmethod
    def from_transaction(cls, *transactions: Transaction) -> FakeNft:
        """A Fake holding the state `transactions` build; its counters start at zero."""
        fake = cls()
        for tx in transactions:
            fake.run(tx)
        fake.last_transaction, fake.transactions, fake.operations = None, 0, 0
        return fake

    @classmethod
    def from_text(cls, text: str) -> FakeNft:
        """A Fake holding the state a `dump()` (or any text `Transaction` writes) builds."""
        return cls.from_transaction(*parse_transactions(text))

    # ------------------------------------------------------------------------------------- transactions

    def run(self, tx: Transaction) -> None:
        """Apply `tx` atomically. Raises `tx.error` (a TransactionError) or an NftError; then nothing changed."""
        self.last_transaction = tx
        self.transactions += 1
        self.operations += len(tx)
        self._tables = self._applied(tx)

    def apply_delta(self, tx: Transaction) -> None:
        """An element delta is a transaction like any other here (the real backends may send it otherwise)."""
        self.run(tx)

    def close(self) -> None:
        """Nothing to let go (the NftBackend protocol, shared.nft.backend)."""

    def check(self, tx: Transaction) -> None:
        """Raise what `run(tx)` would raise, changing nothing (`nft --check`)."""
        self._applied(tx)

    def _applied(self, tx: Transaction) -> dict[TableKey, _Table]:
        if tx.error is not None:
            raise tx.error
        tables = dict(self._tables)
        where = (tx.family, tx.table)
        if where in tables:
            tables[where] = tables[where].copy()
        for op in tx.operations:
            _apply(tables, where, op)
        return tables

    # ------------------------------------------------------------------------------------- reading

    def list_tables(self) -> list[TableKey]:
        return sorted(self._tables)

    def list_table(self, family: str = "inet", table: str = "mnp") -> TableView:
        if (family, table) not in self._tables:
            raise NotFoundError(f"{ENOENT}: list table {family} {table}")
        return self._tables[(family, table)].view(family, table)

    def dump(self) -> str:
        """Every table in `add …` syntax, deterministic: table, chains, sets and maps (by name), rules (by chain
        name, in chain order), elements (by set name, by key). `nft -f` of it recreates the tables."""
        return "".join(
            str(_dump_table(family, name, self.list_table(family, name))) for family, name in sorted(self._tables)
        )

    def count(self, chain: str, index: int, *, family: str = "inet", table: str = "mnp") -> None:
        """A packet hit rule `index` of `chain`: bump its counter, if it has one (see shared.nft.trace.send)."""
        rules = self._tables[(family, table)].chains[chain].rules
        packets = rules[index].packets
        if packets is not None:
            rules[index] = replace(rules[index], packets=packets + 1)


def _dump_table(family: str, name: str, view: TableView) -> Transaction:
    tx = Transaction(family, name).add(Table())
    for c in view.chains.values():
        tx.add(Chain(c.name, c.hook, policy=c.policy) if c.hook else Chain(c.name))
    for s in view.sets.values():
        tx.add(Set(s.name, s.key_type, s.flags, s.comment, s.value_type))
    for c in view.chains.values():
        for rule in c.rules:
            tx.add(Rule(c.name, rule.text, rule.comment))
    for s in view.sets.values():
        for e in s.elements:
            tx.add(Element(s.name, e.key, e.value, e.comment))
    return tx


def _describe(where: TableKey, op: Operation) -> str:
    """The operation in nft's words, for error messages: `delete set inet mnp ingress_net1_v4`."""
    obj = op.obj
    if isinstance(obj, Table):
        kind, name = "table", ""
    elif isinstance(obj, Chain):
        kind, name = "chain", f" {obj.name}"
    elif isinstance(obj, Set):
        kind, name = "map" if obj.is_map else "set", f" {obj.name}"
    elif isinstance(obj, Rule):
        kind, name = "rule", f" {obj.chain} {obj.text}"
    else:
        kind, name = "element", f" {obj.set} {{ {obj.key} }}"
    return f"{op.verb} {kind} {where[0]} {where[1]}{name}"


def _apply(tables: dict[TableKey, _Table], where: TableKey, op: Operation) -> None:
    """Apply one operation to `tables` (already a copy) as the kernel would, or raise."""
    verb, obj = op.verb, op.obj

    def fail(cls: type[NftError], reason: str) -> NftError:
        return cls(f"{reason}: {_describe(where, op)}")

    if isinstance(obj, Table):
        if verb == "add":
            tables.setdefault(where, _Table())
        elif tables.pop(where, None) is None:
            raise fail(NotFoundError, ENOENT)
        return
    if where not in tables:
        raise fail(NotFoundError, ENOENT)
    table = tables[where]

    def chain(name: str) -> _Chain:
        if name not in table.chains:
            raise fail(NotFoundError, ENOENT)
        return table.chains[name]

    def set_(name: str) -> _Set:
        if name not in table.sets:
            raise fail(NotFoundError, ENOENT)
        return table.sets[name]

    def jump_targets(text: str) -> None:
        for target in _CHAIN_REF.findall(text):
            if chain(target).chain.hook is not None:
                raise fail(NftError, EOPNOTSUPP)  # a base chain cannot be jumped to

    match verb, obj:
        case "add", Chain():
            old = table.chains.get(obj.name)
            if old is None:
                table.chains[obj.name] = _Chain(obj)
            elif obj.hook is not None:
                if (old.chain.hook, old.chain.priority) != (obj.hook, obj.priority):
                    raise fail(NftError, EOPNOTSUPP)
                old.chain = obj  # a base chain takes the policy it is redeclared with
        case "flush", Chain():
            chain(obj.name).rules.clear()
        case "delete", Chain():
            if chain(obj.name).rules or table.chain_in_use(obj.name):
                raise fail(BusyError, EBUSY)
            del table.chains[obj.name]
        case "add", Set():
            old_set = table.sets.get(obj.name)
            if old_set is None:
                table.sets[obj.name] = _Set(obj)
            elif (old_set.set.key_type, old_set.set.value_type, old_set.set.flags) != (
                obj.key_type,
                obj.value_type,
                obj.flags,
            ):
                raise fail(ExistsError, EEXIST)
        case "flush", Set():
            set_(obj.name).clear()
        case "delete", Set():
            set_(obj.name)
            if table.set_in_use(obj.name):
                raise fail(BusyError, EBUSY)
            del table.sets[obj.name]
        case "add", Rule():
            target = chain(obj.chain)
            statements = _unquoted(obj.text)
            for vmap, name in _SET_REF.findall(statements):
                if set_(name).set.is_map != bool(vmap):
                    raise fail(NftError, "Expression is not a map" if vmap else "datatype mismatch: a map")
            jump_targets(statements)
            packets = 0 if _COUNTER.search(statements) else None
            target.rules.append(RuleView(obj.text, stored_comment(obj.comment), packets))
        case "add", Element():
            s = set_(obj.set)
            if s.set.is_map != (obj.value is not None):
                raise fail(NftError, "map element without a value" if s.set.is_map else "set is not a map")
            if s.set.value_type == "verdict":
                if not _VERDICT.match(obj.value or ""):
                    raise fail(NftError, f"{obj.value!r} is not a verdict")
                jump_targets(obj.value or "")
            element = _parse_element(s.set, obj)
            old_element = s.elements.get(element.fields)
            if old_element is not None:
                if old_element.value != element.value:
                    raise fail(ExistsError, EEXIST)
            elif "interval" in s.set.flags and s.overlaps(element.fields):
                raise fail(ExistsError, "interval overlaps with an existing one")
            else:
                s.put(element)
        case "delete", Element():
            s = set_(obj.set)
            if not s.remove(_parse_element(s.set, obj).fields):
                raise fail(NotFoundError, ENOENT)
        case _:  # pragma: no cover - Transaction validation lets nothing else through
            raise fail(NftError, f"unsupported operation {verb} {type(obj).__name__}")


def _parse_element(s: Set, obj: Element) -> ElementView:
    try:
        return ElementView.parse(
            s.key_type, obj.key, interval="interval" in s.flags, value=obj.value, comment=stored_comment(obj.comment)
        )
    except NftError as exc:
        raise type(exc)(f"{exc.message}: element {obj.set} {{ {obj.key} }}") from None


# ----------------------------------------------------------------------------------------- text → transactions

_LINE = re.compile(
    r"^(?P<verb>add|flush|delete) (?P<kind>table|chain|set|map|rule|element) (?P<family>\S+) (?P<table>\S+)"
)
_BASE_CHAIN = re.compile(r"^\{ type filter hook (?P<hook>\w+) priority (?P<priority>\S+); policy (?P<policy>\w+); \}$")
_SET_BODY = re.compile(
    r"^\{ type (?P<key>[^:;]+?)(?: : (?P<value>[^;]+))?;"
    r'(?: flags (?P<flags>[\w,]+);)?(?: comment "(?P<comment>[^"]*)")? \}$'
)
_COMMENTED = re.compile(r'^(?P<body>.*?)(?: comment "(?P<comment>[^"]*)")?$')
_ELEMENT = re.compile(r'^(?P<key>.+?)(?: comment "(?P<comment>[^"]*)")?(?: : (?P<value>[^"]+?))?$')


def parse_transactions(text: str) -> list[Transaction]:
    """The transactions (one per run of lines on the same table) that `text` holds — text `Transaction` writes,
    such as a `FakeNft.dump()` or a golden file. Only that grammar is read; anything else raises ValueError."""
    out: list[Transaction] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head = _LINE.match(line)
        if head is None:
            raise ValueError(f"not a command mnp writes: {line!r}")
        verb, kind, rest = head["verb"], head["kind"], line[head.end() :].strip()
        if kind == "element":
            name, _, braced = rest.partition(" ")
            if braced == "{":  # one element per line, up to the closing brace
                texts = [inner.strip().removesuffix(",") for inner in iter(lines.__next__, "}")]
            else:
                texts = [braced.removeprefix("{ ").removesuffix(" }")]
            objects: list[NftObject] = [_element(name, t) for t in texts]
        else:
            objects = [_object(kind, rest, line)]
        where = (head["family"], head["table"])
        if not out or (out[-1].family, out[-1].table) != where:
            out.append(Transaction(*where))
        for obj in objects:
            if verb == "add":
                out[-1].add(obj)
            elif verb == "delete":
                out[-1].delete(obj)
            elif isinstance(obj, Chain | Set):
                out[-1].flush(obj)
            else:
                raise ValueError(f"not a command mnp writes: {line!r}")
    return out


def _object(kind: str, rest: str, line: str) -> NftObject:
    name, _, body = rest.partition(" ")
    if kind == "table" and not rest:
        return Table()
    if kind == "chain":
        base = _BASE_CHAIN.match(body)
        if not body or base:
            return Chain(name, base["hook"], base["priority"], base["policy"]) if base else Chain(name)
    if kind in ("set", "map"):
        if not body:  # flush / delete: the type is not written
            return Set(name, "", value_type="verdict" if kind == "map" else None)
        s = _SET_BODY.match(body)
        if s and (kind == "map") == (s["value"] is not None):
            flags = tuple(s["flags"].split(",")) if s["flags"] else ()
            return Set(name, s["key"], flags, s["comment"], s["value"])
    if kind == "rule" and body:
        rule = _COMMENTED.match(body)
        assert rule is not None  # the pattern matches any text
        return Rule(name, rule["body"], rule["comment"])
    raise ValueError(f"not a {kind} mnp writes: {line!r}")


def _element(set_name: str, text: str) -> Element:
    element = _ELEMENT.match(text)
    if element is None:
        raise ValueError(f"not an element mnp writes: {text!r}")
    return Element(set_name, element["key"], element["value"], element["comment"])
