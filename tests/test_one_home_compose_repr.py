"""A composite's repr says where the parentheses are, and evaluates to the same tree."""

from __future__ import annotations

import canarykit.deciders as deciders
from canarykit.deciders import AllOf, AnyOf, bound, threshold


def _named(metric: str):
    return threshold(bound(metric, max=0.01))


A, B, C = _named("a_rate"), _named("b_rate"), _named("c_rate")


def _short(decider) -> str:
    text = repr(decider)
    for letter, member in zip("abc", (A, B, C), strict=True):
        text = text.replace(repr(member), letter)
    return text


def test_an_any_of_inside_an_all_of_is_parenthesised():
    assert _short((A | B) & C) == "(a | b) & c"
    assert _short(C & (A | B)) == "c & (a | b)"


def test_an_all_of_inside_an_any_of_is_parenthesised():
    assert _short(A | (B & C)) == "a | (b & c)"
    assert _short((A & B) | C) == "(a & b) | c"


def test_the_two_groupings_no_longer_print_alike():
    assert repr((A | B) & C) != repr(A | (B & C))


def test_flat_composites_need_no_parentheses():
    assert _short(A & B & C) == "a & b & c"
    assert _short(A | B | C) == "a | b | c"


def test_a_composite_repr_evaluates_to_an_equal_composite():
    names = dict(vars(deciders))  # the reprs name what canarykit.deciders exports
    for composite in [(A | B) & C, A | (B & C), (A & B) | C, C & (A | B), A & B & C]:
        again = eval(repr(composite), names)
        assert again == composite
        assert isinstance(again, (AllOf, AnyOf))
