"""Limits: Argo Rollouts' measurement limits around any decider.

`Limits` (made with `limited`) wraps a decider and counts its verdicts window by window,
so that one bad window need not roll back and one good window need not promote:

- ``failure_limit`` (default 1): roll back when the inner decider's FAIL windows *reach*
  this count, over the whole analysis (like Flagger's ``threshold``). Argo's
  ``failureLimit`` counts the failures it tolerates instead (it fails when failures
  *exceed* it), so Argo's ``failureLimit: k`` is ``failure_limit=k + 1`` here; the
  default 1 is Argo's default 0 (the first failure rolls back).
- ``consecutive_failures`` (optional): roll back after this many FAIL windows *in a
  row*; any other verdict restarts the run. Given alone, it replaces the cumulative
  count (``failure_limit`` is then None, no budget); given with ``failure_limit``,
  whichever is reached first rolls back ("3 in a row, or 5 in all").
- ``inconclusive_limit`` (default 1): pause when the inner INCONCLUSIVE windows reach
  this count (cumulative, as Argo's ``inconclusiveLimit`` + 1). Once it is reached,
  every further INCONCLUSIVE window pauses again.
- ``consecutive_success_limit`` (default 1): PASS only after this many PASS windows in a
  row (Argo's ``consecutiveSuccessLimit``); any other verdict restarts the run.
- ``dry_run``: the inner decider is judged and counted as above, and the result is
  reported (the reason and every metric verdict begin with "dry run:"), but never acted
  on: the verdict is always PASS without ``early_pass``, so a dry-run decider can neither
  roll back, nor pause, nor hold a promotion back. Combine it with ``&``: in ``a | dry``
  the dry-run PASS would always win.

Below a limit, a FAIL, INCONCLUSIVE or not-yet-long-enough PASS window gives NOT_YET:
the rollout carries on, but nothing is promoted on it. The metric verdicts are lowered
to the wrapper's kind too (with the count in their reason), so that combining verdicts
elsewhere cannot act before the limit. A rollback is final: once a failure limit is
reached, every later window is FAIL.

The state is plain data, ``{"inner": <the inner decider's state>, "failures": n,
"failure_run": n, "inconclusives": n, "success_run": n, "failed": bool}``, so counts
survive a save and a resume. An inner decider that answers with an awaitable keeps
working: the wrapper then returns one too. An inner decider that raises is the runner's
concern (an analysis error, counted against the plan's ``consecutive_error_limit``).

>>> from canarykit.deciders import bound, threshold
>>> decider = limited(threshold(bound("error_rate", max=0.02)), failure_limit=3)
>>> decider.initial_state()["failures"]
0
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping
from typing import Any

import attrs

from .._errors import ConfigError
from .._observe import Observation
from .._protocols import Decider
from .._validate import MAX_COUNT
from .._verdict import Judgement, MetricVerdict, Verdict, VerdictKind
from ._compose import Composable

__all__ = ["Limits", "limited"]

_PASS, _NOT_YET, _INCONCLUSIVE, _FAIL = (
    VerdictKind.PASS,
    VerdictKind.NOT_YET,
    VerdictKind.INCONCLUSIVE,
    VerdictKind.FAIL,
)
_COUNTERS = ("failures", "failure_run", "inconclusives", "success_run")


def _check_count(field: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            field, value, "must be an integer >= 1" + (" or None" if optional else "")
        )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@attrs.frozen(kw_only=True, repr=False)
class Limits(Composable):
    """Count a decider's verdicts and act only when a limit is reached (Argo's limits).

    See the module documentation for each limit; `limited` makes one.

    >>> from canarykit.deciders import bound, threshold
    >>> inner = threshold(bound("p99", max=0.5))
    >>> Limits(decider=inner, consecutive_failures=3)  # doctest: +ELLIPSIS
    limited(ThresholdDecider(...), consecutive_failures=3)
    >>> Limits(decider=inner).failure_limit
    1
    """

    decider: Decider
    failure_limit: int | None = None
    consecutive_failures: int | None = None
    inconclusive_limit: int = 1
    consecutive_success_limit: int = 1
    dry_run: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.decider, Decider):
            raise ConfigError("decider", self.decider, "must implement the Decider protocol")
        _check_count("consecutive_failures", self.consecutive_failures, optional=True)
        if self.failure_limit is None and self.consecutive_failures is None:
            object.__setattr__(self, "failure_limit", 1)
        _check_count("failure_limit", self.failure_limit, optional=True)
        _check_count("inconclusive_limit", self.inconclusive_limit)
        _check_count("consecutive_success_limit", self.consecutive_success_limit)
        if not isinstance(self.dry_run, bool):
            raise ConfigError("dry_run", self.dry_run, "must be true or false")

    def __repr__(self) -> str:
        parts = [repr(self.decider)]
        if self.failure_limit != 1 and not (
            self.failure_limit is None and self.consecutive_failures is not None
        ):
            parts.append(f"failure_limit={self.failure_limit!r}")
        for name, default in (
            ("consecutive_failures", None),
            ("inconclusive_limit", 1),
            ("consecutive_success_limit", 1),
            ("dry_run", False),
        ):
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value!r}")
        return f"limited({', '.join(parts)})"

    def __str__(self) -> str:
        rules = []
        if self.failure_limit is not None:
            rules.append(f"roll back after {_plural(self.failure_limit, 'failed window')}")
        if self.consecutive_failures is not None:
            run = f"{_plural(self.consecutive_failures, 'failed window')} in a row"
            rules.append(f"or {run}" if rules else f"roll back after {run}")
        if self.inconclusive_limit > 1:
            rules.append(f"pause after {self.inconclusive_limit} inconclusive windows")
        if self.consecutive_success_limit > 1:
            rules.append(f"pass after {self.consecutive_success_limit} passes in a row")
        text = f"{self.decider}; {', '.join(rules)}"
        return f"dry run of {text}" if self.dry_run else text

    def initial_state(self) -> dict[str, Any]:
        """The inner decider's initial state and zero counts."""
        return {
            "inner": self.decider.initial_state(),
            "failures": 0,
            "failure_run": 0,
            "inconclusives": 0,
            "success_run": 0,
            "failed": False,
        }

    def judge(self, state: Any, observation: Observation) -> Judgement | Awaitable[Judgement]:
        """Judge with the inner decider, count its verdict, and apply the limits.

        Returns an awaitable when the inner decider does.
        """
        counts = self._counts(state)
        inner_state = counts.pop("inner")
        result = self.decider.judge(inner_state, observation)
        if inspect.isawaitable(result):

            async def finish() -> Judgement:
                return self._apply(counts, await result)

            return finish()
        return self._apply(counts, result)

    def _counts(self, state: Any) -> dict[str, Any]:
        """A checked copy of `state` (it may come back from JSON after a resume)."""
        if state is None:
            return self.initial_state()
        if not isinstance(state, Mapping) or "inner" not in state:
            raise ConfigError("state", state, "must be a Limits state with 'inner' and counts")
        counts = {"inner": state["inner"]}
        for name in _COUNTERS:
            value = state.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
                raise ConfigError(f"state[{name!r}]", value, "must be an integer >= 0")
            counts[name] = value
        failed = state.get("failed", False)
        if not isinstance(failed, bool):
            raise ConfigError("state['failed']", failed, "must be true or false")
        counts["failed"] = failed
        return counts

    def _apply(self, counts: dict[str, Any], judgement: Any) -> Judgement:
        if not isinstance(judgement, Judgement):
            raise TypeError(f"the inner decider's judge() returned {type(judgement).__name__}")
        inner = judgement.verdict
        kind = inner.kind
        failures, failure_run = counts["failures"], counts["failure_run"]
        inconclusives, success_run = counts["inconclusives"], counts["success_run"]
        failed_before = counts["failed"]
        if kind is _FAIL:
            failures, failure_run = failures + 1, failure_run + 1
        else:
            failure_run = 0
        if kind is _INCONCLUSIVE:
            inconclusives += 1
        success_run = success_run + 1 if kind is _PASS else 0
        limit, run_limit = self.failure_limit, self.consecutive_failures
        reached = (limit is not None and failures >= limit) or (
            run_limit is not None and failure_run >= run_limit
        )
        failed = failed_before or (kind is _FAIL and reached)
        early = False
        note = ""
        if failed_before:
            # A rollback is final: the limit was reached in an earlier window.
            verdict_kind = _FAIL
            reason = (
                f"failure limit already reached ({self._failure_note(failures, failure_run)}); "
                f"this window: {inner}"
            )
        else:
            if kind is _FAIL:
                note = self._failure_note(failures, failure_run)
                verdict_kind = _FAIL if reached else _NOT_YET
            elif kind is _INCONCLUSIVE:
                note = f"inconclusive window {inconclusives} of {self.inconclusive_limit}"
                reached_pause = inconclusives >= self.inconclusive_limit
                verdict_kind = _INCONCLUSIVE if reached_pause else _NOT_YET
            elif kind is _PASS:
                needed = self.consecutive_success_limit
                if needed > 1:
                    note = f"pass {min(success_run, needed)} of {needed} in a row"
                verdict_kind = _PASS if success_run >= needed else _NOT_YET
                early = verdict_kind is _PASS and inner.early_pass
            else:
                verdict_kind = kind
            reason = f"{inner.reason} ({note})" if note else inner.reason
        metrics = _lowered(inner.metrics, verdict_kind, note)
        verdict = Verdict(kind=verdict_kind, reason=reason, metrics=metrics, early_pass=early)
        if self.dry_run:
            verdict = _dry(verdict)
        state = {
            "inner": judgement.state,
            "failures": failures,
            "failure_run": failure_run,
            "inconclusives": inconclusives,
            "success_run": success_run,
            "failed": failed,
        }
        return Judgement(verdict, state)

    def _failure_note(self, failures: int, failure_run: int) -> str:
        limit, run_limit = self.failure_limit, self.consecutive_failures
        parts = []
        if limit is not None:
            parts.append(f"failed window {failures} of {limit}")
        if run_limit is not None:
            parts.append(f"{failure_run} of {run_limit} in a row")
        return ", ".join(parts)


def _lowered(
    metrics: tuple[MetricVerdict, ...], kind: VerdictKind, note: str
) -> tuple[MetricVerdict, ...]:
    """`metrics`, none more severe than `kind` (the count noted in the lowered ones' reason)."""
    severity = kind.severity
    if all(m.kind.severity <= severity for m in metrics):
        return metrics
    suffix = f" ({note})" if note else ""
    return tuple(
        attrs.evolve(m, kind=kind, reason=m.reason + suffix) if m.kind.severity > severity else m
        for m in metrics
    )


def _dry(verdict: Verdict) -> Verdict:
    """Report `verdict` without acting on it: PASS, every reason marked "dry run:"."""
    metrics = tuple(
        MetricVerdict(
            metric=m.metric,
            kind=_PASS,
            reason=f"dry run: {m.kind.value}: {m.reason}",
            value=m.value,
        )
        for m in verdict.metrics
    )
    return Verdict(kind=_PASS, reason=f"dry run: {verdict}", metrics=metrics, early_pass=False)


def limited(
    decider: Decider,
    *,
    failure_limit: int | None = None,
    consecutive_failures: int | None = None,
    inconclusive_limit: int = 1,
    consecutive_success_limit: int = 1,
    dry_run: bool = False,
) -> Limits:
    """Wrap `decider` in `Limits`: act on its verdicts only when a limit is reached.

    ``failure_limit`` defaults to 1 unless ``consecutive_failures`` is given alone.

    >>> from canarykit.deciders import bound, threshold
    >>> decider = limited(threshold(bound("p99", max=0.5)), failure_limit=5, consecutive_failures=3)
    >>> str(decider).split("; ")[-1]
    'roll back after 5 failed windows, or 3 failed windows in a row'
    """
    return Limits(
        decider=decider,
        failure_limit=failure_limit,
        consecutive_failures=consecutive_failures,
        inconclusive_limit=inconclusive_limit,
        consecutive_success_limit=consecutive_success_limit,
        dry_run=dry_run,
    )
