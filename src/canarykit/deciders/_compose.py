"""Composing deciders: ``a & b`` (the worst verdict wins) and ``a | b`` (the best wins).

How this works. A composite keeps one state per member, as a list, so it stays JSON-able
and each member folds its own windows. Nested composites of the same kind flatten, as
tenacity's ``stop_any`` does. If any member answers with an awaitable (an async judge),
the composite returns one too and awaits the members in order.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any

import attrs

from .._errors import ConfigError
from .._observe import Observation
from .._protocols import Decider
from .._verdict import Judgement, Verdict, VerdictKind

__all__ = ["AllOf", "AnyOf", "Composable", "all_of", "any_of"]


class Composable:
    """Mixin giving a decider ``&`` and ``|``; every canarykit decider has it."""

    __slots__ = ()

    def __and__(self, other: Decider) -> AllOf:
        return all_of(self, other)  # type: ignore[arg-type]

    def __rand__(self, other: Decider) -> AllOf:
        return all_of(other, self)  # type: ignore[arg-type]

    def __or__(self, other: Decider) -> AnyOf:
        return any_of(self, other)  # type: ignore[arg-type]

    def __ror__(self, other: Decider) -> AnyOf:
        return any_of(other, self)  # type: ignore[arg-type]


def _members(kind: type[Any], deciders: Iterable[Decider]) -> tuple[Decider, ...]:
    flat: list[Decider] = []
    for index, decider in enumerate(deciders):
        if isinstance(decider, kind):
            flat.extend(decider.deciders)
        elif isinstance(decider, Decider):
            flat.append(decider)
        else:
            raise ConfigError(f"deciders[{index}]", decider, "must implement the Decider protocol")
    if len(flat) < 2:
        raise ConfigError("deciders", tuple(deciders), "must name at least two deciders")
    return tuple(flat)


def _all_members(deciders: Iterable[Decider]) -> tuple[Decider, ...]:
    return _members(AllOf, deciders)


def _any_members(deciders: Iterable[Decider]) -> tuple[Decider, ...]:
    return _members(AnyOf, deciders)


def _states(members: Sequence[Decider], state: Any) -> list[Any]:
    if state is None:
        return [member.initial_state() for member in members]
    if not isinstance(state, list) or len(state) != len(members):
        raise ConfigError("state", state, f"must be a list of {len(members)} member states")
    return state


def _combine(judgements: Sequence[Judgement], *, worst: bool) -> Judgement:
    kinds = [j.verdict.kind for j in judgements]
    kind = VerdictKind.worst(kinds) if worst else VerdictKind.best(kinds)
    deciding = [j.verdict for j in judgements if j.verdict.kind is kind]
    reason = "; ".join(v.reason for v in deciding)
    metrics = tuple(m for j in judgements for m in j.verdict.metrics)
    early = kind is VerdictKind.PASS and all(v.early_pass for v in deciding)
    verdict = Verdict(kind=kind, reason=reason, metrics=metrics, early_pass=early)
    return Judgement(verdict, [j.state for j in judgements])


def _judge_all(
    members: Sequence[Decider], state: Any, observation: Observation, *, worst: bool
) -> Judgement | Awaitable[Judgement]:
    results = [
        member.judge(member_state, observation)
        for member, member_state in zip(members, _states(members, state), strict=True)
    ]
    # The common case first: every member judged at once (a type check is far cheaper
    # than inspect.isawaitable, and this runs on every window).
    if all(type(result) is Judgement for result in results) or not any(
        inspect.isawaitable(result) for result in results
    ):
        return _combine(results, worst=worst)  # type: ignore[arg-type]

    async def gather() -> Judgement:
        done = [await r if inspect.isawaitable(r) else r for r in results]
        return _combine(done, worst=worst)

    return gather()


def _operand(member: Decider, other: type[Any]) -> str:
    # A composite of the other kind is parenthesised, so that ``(a | b) & c`` and
    # ``a | (b & c)`` read differently and the repr evaluates to the same tree.
    text = repr(member)
    return f"({text})" if isinstance(member, other) else text


@attrs.frozen
class AllOf(Composable):
    """Every member must pass: the worst verdict wins (``a & b``).

    Early pass only when every member that decided says so.
    """

    deciders: tuple[Decider, ...] = attrs.field(converter=_all_members)

    def initial_state(self) -> list[Any]:
        """Each member's initial state."""
        return [member.initial_state() for member in self.deciders]

    def judge(self, state: Any, observation: Observation) -> Judgement | Awaitable[Judgement]:
        """Judge with every member; the worst verdict wins."""
        return _judge_all(self.deciders, state, observation, worst=True)

    def __repr__(self) -> str:
        return " & ".join(_operand(member, AnyOf) for member in self.deciders)


@attrs.frozen
class AnyOf(Composable):
    """One passing member is enough: the best verdict wins (``a | b``)."""

    deciders: tuple[Decider, ...] = attrs.field(converter=_any_members)

    def initial_state(self) -> list[Any]:
        """Each member's initial state."""
        return [member.initial_state() for member in self.deciders]

    def judge(self, state: Any, observation: Observation) -> Judgement | Awaitable[Judgement]:
        """Judge with every member; the best verdict wins."""
        return _judge_all(self.deciders, state, observation, worst=False)

    def __repr__(self) -> str:
        return " | ".join(_operand(member, AllOf) for member in self.deciders)


def all_of(*deciders: Decider) -> AllOf:
    """A decider that passes only when all of `deciders` pass (same as ``a & b & ...``)."""
    return AllOf(deciders)


def any_of(*deciders: Decider) -> AnyOf:
    """A decider that passes when any of `deciders` passes (same as ``a | b | ...``)."""
    return AnyOf(deciders)
