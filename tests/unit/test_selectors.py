"""Label selectors (metav1.LabelSelector) as the API documents them: matching and validation.

No addresses here; labels use a tiny alphabet (app, tier, env).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.selectors import MATCH_EVERYTHING, LabelSelector, Requirement, parse_selector


def selector(raw: object) -> LabelSelector:
    parsed, problems = parse_selector(raw, "sel")
    assert problems == []
    return parsed


def test_an_empty_selector_matches_every_object() -> None:
    assert selector({}).matches({})
    assert selector({}).matches({"app": "x"})
    assert selector({"matchLabels": {}, "matchExpressions": []}).is_empty


def test_an_absent_selector_parses_as_match_everything_without_problems() -> None:
    assert parse_selector(None, "sel") == (MATCH_EVERYTHING, [])


def test_match_labels_requires_every_pair() -> None:
    s = selector({"matchLabels": {"app": "web", "tier": "front"}})
    assert s.matches({"app": "web", "tier": "front", "extra": "1"})
    assert not s.matches({"app": "web"})
    assert not s.matches({"app": "web", "tier": "back"})


@pytest.mark.parametrize(
    ("operator", "values", "labels", "expected"),
    [
        ("In", ["a", "b"], {"k": "a"}, True),
        ("In", ["a", "b"], {"k": "c"}, False),
        ("In", ["a"], {}, False),  # In needs the key
        ("NotIn", ["a"], {"k": "b"}, True),
        ("NotIn", ["a"], {"k": "a"}, False),
        ("NotIn", ["a"], {}, True),  # NotIn matches a missing key
        ("Exists", None, {"k": ""}, True),  # any value, even empty
        ("Exists", None, {}, False),
        ("DoesNotExist", None, {}, True),  # DoesNotExist matches a missing key
        ("DoesNotExist", [], {"k": "a"}, False),
    ],
)
def test_match_expression_operators(
    operator: str, values: list[str] | None, labels: dict[str, str], expected: bool
) -> None:
    expression: dict[str, object] = {"key": "k", "operator": operator}
    if values is not None:
        expression["values"] = values
    assert selector({"matchExpressions": [expression]}).matches(labels) is expected


def test_match_labels_and_match_expressions_are_anded() -> None:
    s = selector(
        {"matchLabels": {"env": "prod"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}
    )
    assert s.matches({"env": "prod", "tier": "web"})
    assert s.matches({"env": "prod"})
    assert not s.matches({"env": "prod", "tier": "db"})
    assert not s.matches({"tier": "web"})


def test_a_match_label_is_an_in_requirement_with_one_value() -> None:
    assert selector({"matchLabels": {"app": "x"}}).requirements == (Requirement("app", "In", frozenset({"x"})),)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("app=x", "must be a label selector object"),
        ({"matchLabel": {"a": "b"}}, "unknown field(s) matchLabel"),
        ({"matchLabels": ["a"]}, "matchLabels: must be a map"),
        ({"matchLabels": {"-bad": "x"}}, "label key '-bad'"),
        ({"matchLabels": {"UPPER.example.com/x": "x"}}, "invalid prefix"),
        ({"matchLabels": {"a": "bad value"}}, "label value 'bad value'"),
        ({"matchLabels": {"a": "x" * 64}}, "at most 63 characters"),
        ({"matchExpressions": {"key": "a"}}, "matchExpressions: must be a list"),
        ({"matchExpressions": ["a"]}, "must be an object with key, operator and values"),
        ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}, "'Equals' is not one of"),
        ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "must be non-empty when the operator is In"),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]},
            "non-empty when the operator is NotIn",
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "must be empty when"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}, "values: must be a list"),
        ({"matchExpressions": [{"operator": "Exists"}]}, "key: label key None"),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["ok", "not ok"]}]}, "'not ok'"),
    ],
)
def test_invalid_selectors_are_reported_with_their_field(raw: object, fragment: str) -> None:
    _, problems = parse_selector(raw, "spec.podSelector")
    assert problems, raw
    assert all(p.startswith("spec.podSelector") for p in problems)
    assert any(fragment in p for p in problems), problems


def test_every_problem_of_a_selector_is_reported_at_once() -> None:
    _, problems = parse_selector(
        {
            "matchLabels": {"-k": "v v"},
            "matchExpressions": [
                {"key": "a", "operator": "Equals"},
                {"key": "b", "operator": "In", "values": []},
                {"key": "c", "operator": "Exists", "values": ["x"]},
            ],
        },
        "sel",
    )
    assert len(problems) == 5, problems


def test_prefixed_keys_and_empty_values_are_valid() -> None:
    s = selector({"matchLabels": {"kubernetes.io/metadata.name": "ns1", "app.example.com/tier": ""}})
    assert s.matches({"kubernetes.io/metadata.name": "ns1", "app.example.com/tier": ""})


def test_selectors_print_in_kubectl_syntax() -> None:
    s = selector(
        {
            "matchLabels": {"app": "x"},
            "matchExpressions": [
                {"key": "env", "operator": "NotIn", "values": ["b", "a"]},
                {"key": "t", "operator": "Exists"},
                {"key": "q", "operator": "DoesNotExist"},
            ],
        }
    )
    assert str(s) == "app in (x),env notin (a,b),t,!q"
    assert str(MATCH_EVERYTHING) == "{}"


label_maps = st.dictionaries(st.sampled_from(["app", "tier"]), st.sampled_from(["x", "y"]), max_size=2)


@given(label_maps, label_maps)
def test_match_labels_means_the_labels_contain_the_map(wanted: dict[str, str], labels: dict[str, str]) -> None:
    expected = all(labels.get(k) == v for k, v in wanted.items())
    assert selector({"matchLabels": wanted}).matches(labels) is expected


@given(st.sampled_from(["x", "y"]), label_maps)
def test_not_in_is_the_negation_of_in(value: str, labels: dict[str, str]) -> None:
    in_ = selector({"matchExpressions": [{"key": "app", "operator": "In", "values": [value]}]})
    not_in = selector({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [value]}]})
    assert in_.matches(labels) is not not_in.matches(labels)
