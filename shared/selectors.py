"""Kubernetes label selectors (metav1.LabelSelector): parse with every problem reported, then match.

No well-kept Python library evaluates LabelSelectors (the official client only carries them as data), so this is
the one hand-written piece of selector logic, kept to the API's documented semantics:

* "matchLabels is a map of {key,value} pairs. A single {key,value} in the matchLabels map is equivalent to an
  element of matchExpressions, whose key field is "key", the operator is "In", and the values array contains
  only "value". The requirements are ANDed."
* "An empty label selector matches all objects. A null label selector matches no objects."
* operators: "In, NotIn, Exists and DoesNotExist. If the operator is In or NotIn, the values array must be
  non-empty. If the operator is Exists or DoesNotExist, the values array must be empty."
* NotIn and DoesNotExist match objects that do not carry the key at all (labels.Requirement.Matches).

Labels that could not be read (`UNREADABLE_LABELS`: a hostile or buggy API server sent no map of string to
string) match only a selector without requirements: any requirement, NotIn and DoesNotExist included, might
select or spare the object depending on what the labels were meant to be, so none is taken to hold.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# apimachinery validation: a qualified name is an optional DNS-subdomain prefix and a 63-character name. `\Z`, not
# `$`: `$` matches before a final newline too, and "server\n" is no label value.
_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

_EXCERPT = reprlib.Repr()
_EXCERPT.maxstring = _EXCERPT.maxother = 60
_EXCERPT.maxlevel = 3


def present(value: Any, default: Any) -> Any:
    """`value`, or `default` when the field is absent (None). Not `value or default`: hostile input's 0, False or
    "" must reach the type check and be refused, not pass as an empty list or map — an empty `from` allows from
    everyone, an empty `matchLabels` selects every pod."""
    return default if value is None else value


def excerpt(value: object) -> str:
    """A short repr of hostile input for messages and logs: bounded in length and depth, whatever `value` holds
    (a 600-deep list, a 5 MB string)."""
    return _EXCERPT.repr(value)


def label_key_problem(key: object) -> str | None:
    """Why `key` is not a valid label key, or None."""
    if not isinstance(key, str) or not key:
        return f"label key {excerpt(key)} must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"label key {excerpt(key)} has an invalid prefix (a lowercase DNS subdomain of at most 253 characters)"
    if len(name) > 63 or not _NAME.match(name):
        return (
            f"label key {excerpt(key)}: the name part must be at most 63 characters, alphanumeric, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


def label_value_problem(value: object) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if not isinstance(value, str):
        return f"label value {excerpt(value)} must be a string"
    if len(value) > 63 or not _VALUE.match(value):
        return (
            f"label value {excerpt(value)} must be at most 63 characters, alphanumeric, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return None


class UnreadableLabels(Mapping[str, str]):
    """An object's labels that could not be read: no label at all, and equal only to itself, so that labels
    turning unreadable (or readable again) are a change; `LabelSelector.matches` gives it only to selectors
    without requirements."""

    def __getitem__(self, key: str) -> str:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableLabels)

    def __hash__(self) -> int:
        return hash(UnreadableLabels)

    def __repr__(self) -> str:
        return "UNREADABLE_LABELS"


UNREADABLE_LABELS = UnreadableLabels()


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A parsed selector: the AND of its requirements. No requirements matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if isinstance(labels, UnreadableLabels):
            return not self.requirements
        return all(r.matches(labels) for r in self.requirements)

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        if not self.requirements:
            return "{}"
        parts = []
        for r in self.requirements:
            values = ",".join(sorted(r.values))
            parts.append(
                {
                    "In": f"{r.key} in ({values})",
                    "NotIn": f"{r.key} notin ({values})",
                    "Exists": r.key,
                    "DoesNotExist": f"!{r.key}",
                }[r.operator]
            )
        return ",".join(parts)


MATCH_EVERYTHING = LabelSelector()

# Requirements are immutable, and a thousand policies repeat a handful of them (`role in (client)`): equal ones are
# shared rather than kept once per peer. Bounded, so a stream of distinct selectors cannot grow it without end.
_SHARED: dict[tuple[str, str, frozenset[str]], Requirement] = {}
_SHARED_MAX = 4096


def _requirement(key: str, operator: str, values: frozenset[str]) -> Requirement:
    found = _SHARED.get((key, operator, values))
    if found is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        found = _SHARED[(key, operator, values)] = Requirement(key, operator, values)
    return found


def parse_selector(raw: object, where: str) -> tuple[LabelSelector, list[str]]:
    """Parse a LabelSelector dict. Returns the selector and every problem found, each prefixed with `where`."""
    problems: list[str] = []
    if raw is None:
        return MATCH_EVERYTHING, problems
    if not isinstance(raw, dict):
        return MATCH_EVERYTHING, [f"{where}: must be a label selector object, got {type(raw).__name__}"]
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        problems.append(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    requirements: list[Requirement] = []
    match_labels: Any = present(raw.get("matchLabels"), {})
    if not isinstance(match_labels, dict):
        problems.append(f"{where}.matchLabels: must be a map of label key to value")
        match_labels = {}
    for key, value in sorted(match_labels.items(), key=lambda kv: str(kv[0])):
        for problem in (label_key_problem(key), label_value_problem(value)):
            if problem:
                problems.append(f"{where}.matchLabels: {problem}")
        requirements.append(_requirement(str(key), "In", frozenset({str(value)})))
    expressions: Any = present(raw.get("matchExpressions"), [])
    if not isinstance(expressions, list):
        problems.append(f"{where}.matchExpressions: must be a list")
        expressions = []
    for i, expr in enumerate(expressions):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(expr, dict):
            problems.append(f"{at}: must be an object with key, operator and values")
            continue
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values")
        key_problem = label_key_problem(key)
        if key_problem:
            problems.append(f"{at}.key: {key_problem}")
        if operator not in OPERATORS:
            problems.append(f"{at}.operator: {excerpt(operator)} is not one of {', '.join(OPERATORS)}")
            continue
        if values is not None and not isinstance(values, list):
            problems.append(f"{at}.values: must be a list of strings")
            continue
        values = present(values, [])
        if operator in ("In", "NotIn") and not values:
            problems.append(f"{at}.values: must be non-empty when the operator is {operator}")
        if operator in ("Exists", "DoesNotExist") and values:
            problems.append(f"{at}.values: must be empty when the operator is {operator}")
        for value in values:
            value_problem = label_value_problem(value)
            if value_problem:
                problems.append(f"{at}.values: {value_problem}")
        requirements.append(_requirement(str(key), str(operator), frozenset(str(v) for v in values)))
    return LabelSelector(tuple(requirements)), problems
