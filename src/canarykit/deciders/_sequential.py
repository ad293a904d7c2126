"""Anytime-valid sequential deciders: check after every window, pay no extra false rollbacks.

A fixed-sample test re-run on a growing window rolls back healthy canaries far more often
than its nominal level (Netflix saw 66 of 100 A/A streams rejected at 0.05). The two
deciders here are *anytime-valid*: `alpha` bounds the probability of a false rollback
per rollout and per metric over the whole rollout, however often it is checked.

Three facts of real traffic shape them:

- **The window is the unit of evidence.** Both tests compare the arms inside each
  window, never the canary's later hours with the stable arm's earlier ones, so a
  daily cycle, a drift that both arms share and a split that steps from 1% to 50% do
  not read as a difference.
- **Requests are not independent.** One failure is logged several times, a retry storm
  hits a sticky arm, a pause slows a share of one instance's requests. The errors test
  bets on each window's share of events (`canarykit.deciders._betting`): exact whatever
  the clustering inside a window, as long as clusters are no larger on one arm.
- **Small differences are not regressions.** A canary on another host or with colder
  caches runs a few percent differently. By default a canary within 5% of the stable
  error rate and within 3% of its latency is not a regression (`margin`): with hours at
  100 requests per second a test at margin 0 detects any difference, however small.

`SequentialErrors`: in each window the canary's expected share of the window's events is
at most ``q0 = theta0 p / (theta0 p + 1 - p)`` when its rate is at most ``theta0 = 1 +
margin`` times the stable one (``p`` its share of requests); a mixture of bettors on
``e_c - q0 E`` crosses ``1 / alpha`` with probability at most `alpha` under that null.

`SequentialLatency`: in each window, the probability that a canary request is slower
than a stable one after shifting the canary down by ``1 + margin`` (the Mann-Whitney
AUC on the histograms, `canarykit.deciders._ranks`), minus 1/2, is sub-Gaussian with a
variance known from the counts when the shifted canary and the stable latencies are
exchangeable in the window. A mixture over bet sizes of ``exp(lam x - lam**2 v / 2)``
is then a test supermartingale. Opt-in tail guards (`quantiles`) catch regressions of
the tail alone sooner: the canary's share of the latencies above the stable arm's
running quantile (known before the window) is bet on like errors.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate
from operator import add
from typing import Any

import attrs

from .._errors import ConfigError
from .._histogram import MAX_INDEX, MIN_INDEX, LatencyHistogram, resolution_of_counts
from .._observe import Observation
from .._validate import MAX_COUNT, bounded_items, printable_name
from .._verdict import Judgement, MetricVerdict, Verdict, VerdictKind
from ._betting import MEMORIES, ShareBets, half_and_half, log_mean_exp
from ._compose import Composable
from ._ranks import above, shift_of, window_auc

__all__ = [
    "SequentialErrors",
    "SequentialLatency",
    "sequential_errors",
    "sequential_latency",
]

_exp = math.exp
_log = math.log

# Stable windows kept to compare a canary alone with (at 100%): an hour of 10 s windows,
# pooled for each canary window until they hold this many times its requests.
_RECORD = 360
_RECORD_RATIO = 3
# The state format; an older state (before the window-level tests) restarts the
# evidence, keeping a FAIL it had reached.
_STATE_VERSION = 2


def _number(field: str, value: Any, *, low: float, high: float, open_low: bool) -> float:
    """Return `value` as a float in the range, or raise ConfigError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, "must be a number")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        number = math.inf
    below = number <= low if open_low else number < low
    if math.isnan(number) or below or number > high:
        bracket = "(" if open_low else "["
        top = "inf)" if high == math.inf else f"{high:g}]"
        raise ConfigError(field, value, f"must be in {bracket}{low:g}, {top}")
    return number


def _integer(field: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(field, value, f"must be an int >= {low}")
    return int(value)


def _boolean(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(field, value, "must be True or False")


def _show_evidence(log_value: float) -> str:
    if log_value > 690.0:  # beyond a float's range; any such value is overwhelming
        return "inf" if log_value == math.inf else "> 1e299"
    return f"{_exp(log_value):.3g}"


def _not_nan(value: Any) -> bool:
    return type(value) is float and value == value


_NUMBER_TYPES = frozenset((int, float))


def _numbers(values: Any, size: int) -> bool:
    """Whether saved `values` is a list of `size` numbers, none NaN or infinite (state check).

    Checked on every window, so in C-speed passes: the types, then the range (a NaN or
    an infinity fails a comparison or makes the sum NaN).
    """
    if type(values) is not list or len(values) != size:
        return False
    if not _NUMBER_TYPES.issuperset(map(type, values)):
        return False
    if not values:
        return True
    total = sum(values)
    return total == total and min(values) >= -MAX_COUNT and max(values) <= MAX_COUNT


def _counts_list(values: Any) -> bool:
    """Whether saved `values` is a list of ints >= 0 (a histogram's counts in a state)."""
    if type(values) is not list:
        return False
    if not values:
        return True
    return _INT.issuperset(map(type, values)) and min(values) >= 0 and max(values) <= MAX_COUNT


_INT = frozenset((int,))


class _Built(dict[str, Any]):
    """A state a decider returned: valid by construction, so not checked again.

    Checking a saved state costs more than judging a window; a state that comes back
    from disk or from anyone else's hands is a plain dict and is checked in full.
    """

    __slots__ = ("built_by",)
    built_by: object


def _built(state: dict[str, Any], decider: object) -> _Built:
    built = _Built(state)
    built.built_by = decider
    return built


def _bad_state(kind: str, state: Any, example: str) -> ConfigError:
    return ConfigError("state", state, f"must be a {kind} state such as {example}")


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _full_canary_note(seen: Any, end: float, record_left: int | None = None) -> str:
    """Why a window with no stable requests adds what it adds, and how old the comparison is.

    `record_left`: the stable windows still recorded for the errors test to compare a
    canary alone with (None for the latency test, which keeps no record).
    """
    if seen is None:
        return "no stable requests yet"
    age = _age(max(end - seen, 0.0))
    if record_left:
        return (
            "canary alone (at 100%?): compared with the stable arm's recorded windows, "
            f"the newest {age} old ({record_left} left)"
        )
    if record_left == 0:
        return f"canary alone (at 100%?) and the stable record used up: judged up to {age} ago"
    return (
        "no stable requests in this window (canary at 100%?): judged on the comparison "
        f"up to {age} ago"
    )


# -- errors ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SequentialErrors(Composable):
    """Roll back once the canary's error rate is shown more than `margin` above the stable one.

    An anytime-valid test (see the module docstring): `alpha` is the probability of a
    false rollback per rollout for this metric, over the whole rollout, however many
    windows are judged, when the canary's rate is at most ``1 + margin`` times the
    stable one. Each window is judged on its own split, so the split may change between
    windows, and on its share of events, so events may come in clusters (a failure
    logged several times, retries on a sticky arm): what is assumed is only that a
    cluster is no larger on one arm than on the other. FAIL once the evidence reaches
    ``1 / alpha``, and FAIL from then on.

    - `metric`: ``"errors"``, or the name of a gauge holding a count of events per window
      (compared per request, like errors).
    - `margin`: the increase that is not a regression (default 5%: a canary at 1.05x
      the stable error rate passes). Detection time grows as the true ratio nears
      ``1 + margin``; with ``margin=0`` any difference, however small, is eventually
      caught.
    - `min_ratio`, `max_ratio`, `points`: the bettors' alternatives, ``points`` ratios
      log-spaced from ``(1 + margin) min_ratio`` to ``(1 + margin) max_ratio``.
    - `min_errors`: below this many events in both arms together, NOT_YET.
    - `early_pass` with `pass_margin`: PASS with ``early_pass=True`` once a rate more
      than ``1 + pass_margin`` times the stable one is ruled out at level `alpha`.

    Verdicts: NOT_YET before both arms have served a request (no data is never a pass)
    or before `min_errors`; FAIL as above; otherwise PASS with the current evidence and
    the margin used. A window where the stable arm served nothing (the canary at 100%)
    adds no evidence; the verdict says how old the comparison it rests on is.

    Measured (``benchmarks/deciders.py``; 100 requests/s, 10% canary, 1% errors, 10 s
    windows, ``alpha=0.01``, 3-hour rollouts): 0.45% false rollbacks together with
    `SequentialLatency`, 0.33% with each failure logged 1 to 10 times; 2x errors caught
    at a median of 205 s (1.5 times Wald's limit for a test that knows the ratio), 5x in
    50 s. A window can at most multiply the evidence by about ``1 / q0``, so at canary
    shares of 50% and more, where one window's errors might be one burst, detection is
    slower than a per-request test's (see docs/deciders.md).

    >>> decider = SequentialErrors(alpha=0.01)
    >>> decider
    SequentialErrors(metric='errors', alpha=0.01, margin=0.05, min_ratio=1.05, max_ratio=10.0, \
points=20, min_errors=0, early_pass=False, pass_margin=0.2)
    >>> len(decider.initial_state()["log_fail"])  # 20 fixed bettors, 2 learning, 4 learned
    26
    """

    metric: str = "errors"
    alpha: float = 0.01
    margin: float = 0.05
    min_ratio: float = 1.05
    max_ratio: float = 10.0
    points: int = 20
    min_errors: int = 0
    early_pass: bool = False
    pass_margin: float = 0.2
    _fail: ShareBets = attrs.field(init=False, repr=False, eq=False, hash=False)
    _pass: ShareBets | None = attrs.field(init=False, repr=False, eq=False, hash=False)
    _log_threshold: float = attrs.field(init=False, repr=False, eq=False)
    _needed: str = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        printable_name("metric", self.metric, "metric name")
        set_ = object.__setattr__
        alpha = _number("alpha", self.alpha, low=0.0, high=0.5, open_low=True)
        margin = _number("margin", self.margin, low=0.0, high=100.0, open_low=False)
        low = _number("min_ratio", self.min_ratio, low=1.0, high=math.inf, open_low=True)
        high = _number("max_ratio", self.max_ratio, low=low, high=1e6, open_low=True)
        points = _integer("points", self.points, low=1)
        if points > 10_000:
            raise ConfigError("points", points, "must be at most 10000")
        _integer("min_errors", self.min_errors, low=0)
        _boolean("early_pass", self.early_pass)
        pass_margin = _number("pass_margin", self.pass_margin, low=0.0, high=100.0, open_low=False)
        for name, value in (
            ("alpha", alpha),
            ("margin", margin),
            ("min_ratio", low),
            ("max_ratio", high),
            ("pass_margin", pass_margin),
        ):
            set_(self, name, value)
        set_(self, "_fail", ShareBets(1.0 + margin, low, high, points, "above"))
        bets = ShareBets(1.0 + pass_margin, low, high, points, "below") if self.early_pass else None
        set_(self, "_pass", bets)
        set_(self, "_log_threshold", -_log(alpha))
        set_(self, "_needed", f"{1 / alpha:.3g}")

    def __str__(self) -> str:
        text = (
            f"sequential {self.metric}: roll back when the canary's rate is shown more than "
            f"{_percent(self.margin)} higher (alpha {self.alpha:g})"
        )
        if self.early_pass:
            text += f"; early pass when over {1 + self.pass_margin:g}x is ruled out"
        return text

    def initial_state(self) -> dict[str, Any]:
        """No evidence yet: every bettor at wealth 1 and no requests or events counted."""
        state: dict[str, Any] = {
            "v": _STATE_VERSION,
            "failed": False,
            "stable": [0, 0],
            "canary": [0, 0],
            "log_fail": self._fail.initial(),
            "seen": None,
            # the stable arm's last windows (requests, events), newest last: what a
            # window with the canary alone (at 100%) is compared with, each used once
            "record": [],
        }
        if self._pass is not None:
            state["log_pass"] = self._pass.initial()
        return state

    def _read_state(self, state: Any) -> dict[str, Any]:
        if state is None:
            return self.initial_state()
        if type(state) is _Built and state.built_by is self:
            return dict(state)
        try:
            if state.get("v") != _STATE_VERSION and isinstance(state.get("failed"), bool):
                fresh = self.initial_state()  # an older state: keep only its FAIL
                fresh["failed"] = state["failed"]
                return fresh
            log_pass = state.get("log_pass")
            seen = state["seen"]
            ok = (
                isinstance(state["failed"], bool)
                and _numbers(state["stable"], 2)
                and _numbers(state["canary"], 2)
                and _numbers(state["log_fail"], self._fail.size)
                and (log_pass is None) is (self._pass is None)
                and (log_pass is None or _numbers(log_pass, self._fail.size))
                and (seen is None or _not_nan(seen) or type(seen) is int)
                and isinstance(state["record"], list)
                and len(state["record"]) <= _RECORD
                and all(type(pair) is list and _numbers(pair, 2) for pair in state["record"])
            )
        except (TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise _bad_state("SequentialErrors", state, "the one initial_state() returns")
        return dict(state)

    def _counts(self, observation: Observation) -> tuple[int, float, int, float] | None:
        stable, canary = observation.stable, observation.canary
        if self.metric == "errors":
            return stable.requests, stable.errors, canary.requests, canary.errors
        gauge_s = stable.gauges.get(self.metric)
        gauge_c = canary.gauges.get(self.metric)
        if gauge_s is None or gauge_c is None:
            return None
        if not (0.0 <= gauge_s < math.inf and 0.0 <= gauge_c < math.inf):
            return None
        return stable.requests, gauge_s, canary.requests, gauge_c

    def judge(self, state: Any, observation: Observation) -> Judgement:
        """Fold one more window into the evidence; return the verdict and the new state."""
        state = self._read_state(state)
        counts = self._counts(observation)
        full_canary = False
        if counts is not None:
            n_s, e_s, n_c, e_c = counts
            stable, canary = state["stable"], state["canary"]
            state["stable"] = [stable[0] + n_s, stable[1] + e_s]
            state["canary"] = [canary[0] + n_c, canary[1] + e_c]
            full_canary = bool(n_c) and not n_s
            if n_s and n_c:
                state["seen"] = observation.end
                state["record"] = [*state["record"][1 - _RECORD :], [n_s, e_s]]
            elif full_canary and state["record"]:
                # The canary alone (at 100%): compared with the stable arm's most recent
                # recorded windows instead, pooled until they hold three times the
                # canary's requests (a 25% share, where a window's bet is strong), each
                # recorded window used once so that the bets stay independent. This
                # assumes the stable arm's rate has not changed since (minutes, not hours).
                record = state["record"]
                while record and n_s < _RECORD_RATIO * n_c:
                    *record, (more_n, more_e) = record
                    n_s, e_s = n_s + more_n, e_s + more_e
                state["record"] = record
            self._bet(state, n_s, e_s, n_c, e_c)
        log_evidence = self._fail.log_evidence(state["log_fail"])
        state["failed"] = state["failed"] or log_evidence >= self._log_threshold
        note = ""
        if full_canary:
            note = _full_canary_note(state["seen"], observation.end, len(state["record"]))
        return Judgement(self._verdict(state, log_evidence, note), _built(state, self))

    def _bet(self, state: dict[str, Any], n_s: int, e_s: float, n_c: int, e_c: float) -> None:
        # A window where either arm served nothing says nothing about the ratio, nor
        # does one without events. After a FAIL the evidence is frozen.
        events = e_s + e_c
        if n_s and n_c and events and not state["failed"]:
            share = n_c / (n_s + n_c)
            state["log_fail"] = self._fail.bet(state["log_fail"], share, e_c, events)
            if self._pass is not None:
                state["log_pass"] = self._pass.bet(state["log_pass"], share, e_c, events)

    def _verdict(self, state: dict[str, Any], log_evidence: float, note: str) -> Verdict:
        metric = self.metric
        n_s, e_s = state["stable"]
        n_c, e_c = state["canary"]
        ratio = (e_c * n_s) / (n_c * e_s) if n_c and e_s else None
        shown = "n/a" if ratio is None else f"~{ratio:.3g}"
        counted = f"{e_c:g}/{n_c} canary, {e_s:g}/{n_s} stable"
        margin = f"margin {_percent(self.margin)}"
        early = False
        if state["failed"]:
            kind = VerdictKind.FAIL
            reason = (
                f"canary/stable rate ratio {shown}, shown above {1 + self.margin:g} "
                f"({margin}; evidence {_show_evidence(log_evidence)} of {self._needed} "
                f"needed; {counted})"
            )
        elif not n_c or not n_s:
            # Without both arms there is nothing to compare: no data is never a pass.
            kind = VerdictKind.NOT_YET
            reason = f"no {'canary' if not n_c else 'stable'} requests yet"
        elif e_s + e_c < self.min_errors:
            kind = VerdictKind.NOT_YET
            reason = f"{e_s + e_c:g} {metric} so far, {self.min_errors} needed ({counted})"
        else:
            kind = VerdictKind.PASS
            reason = (
                f"canary/stable rate ratio {shown}, evidence {_show_evidence(log_evidence)} "
                f"of {self._needed} needed ({margin}; {counted})"
            )
            if self._pass is not None:
                log_pass = self._pass.log_evidence(state["log_pass"])
                early = log_pass >= self._log_threshold
                if early:
                    reason += (
                        f"; over {1 + self.pass_margin:g}x ruled out "
                        f"(evidence {_show_evidence(log_pass)})"
                    )
        if note:
            reason += f"; {note}"
        item = MetricVerdict(metric=metric, kind=kind, reason=reason, value=ratio)
        return Verdict(kind=kind, reason=f"{metric}: {reason}", metrics=(item,), early_pass=early)


def sequential_errors(
    *,
    alpha: float = 0.01,
    metric: str = "errors",
    margin: float = 0.05,
    min_ratio: float = 1.05,
    max_ratio: float = 10.0,
    points: int = 20,
    min_errors: int = 0,
    early_pass: bool = False,
    pass_margin: float = 0.2,
) -> SequentialErrors:
    """Make a `SequentialErrors`: roll back when the canary's error rate is shown higher.

    `alpha` is the false-rollback probability per rollout for this metric, over the
    whole rollout however often it is checked; `margin` the increase that is not a
    regression (5% by default).

    >>> decider = sequential_errors(alpha=0.01, early_pass=True, pass_margin=0.2)
    >>> decider.early_pass, decider.margin, decider.pass_margin
    (True, 0.05, 0.2)
    """
    return SequentialErrors(
        alpha=alpha,
        metric=metric,
        margin=margin,
        min_ratio=min_ratio,
        max_ratio=max_ratio,
        points=points,
        min_errors=min_errors,
        early_pass=early_pass,
        pass_margin=pass_margin,
    )


# -- latency -----------------------------------------------------------------------------

# Bet sizes of the latency mixture: the AUC shifts (x's mean under a regression) the
# bettors expect, log-spaced. +10% at sigma 0.5 is about 0.04, +25% about 0.14.
_AUC_GRID = tuple(0.002 * (250.0 ** (k / 19)) for k in range(20))
_LOG_AUC_GRID_SIZE = math.log(len(_AUC_GRID))
# Prior weight of the latency dispersion estimate, in windows, and the weight of the
# newest window in the recent mean it measures against.
_PRIOR_WINDOWS = 10.0
_RECENT = 0.2
# Buckets wider than this around the median are too coarse to see a few percent.
_COARSE = 1.25
# The tail guards' bettors: canary-to-stable ratios of the share above the threshold.
_TAIL_GRID = (1.1, 10.0, 10)


_BODY_SIZE = 7 + 4 * len(MEMORIES)


def _learn(learning: list[float], x: float, weight: float) -> list[float]:
    """Fold `x` into the body's learning bettors: ``[log-wealth, shift] * memories``.

    Each stakes ``lam = max(shift, 0) * weight`` (its shift estimate from the windows
    before), for a log-factor ``lam x - lam**2 / (2 weight)``: the sub-Gaussian bound
    holds for any stake chosen before the window, so the wealth stays a supermartingale.
    """
    new = []
    for index, memory in enumerate(MEMORIES):
        wealth, shift = learning[2 * index], learning[2 * index + 1]
        bet = shift if shift > 0.0 else 0.0
        new.append(wealth + weight * bet * (x - bet / 2.0))
        new.append(shift + memory * (x - shift))
    return new


def _position(cumulative: list[int], offset: int, level: float) -> float:
    """The `level`-quantile of an accumulated histogram as a fractional bucket position.

    Bucket ``i`` spans positions ``[i, i + 1)``; mass is spread uniformly inside it.
    """
    total = cumulative[-1]
    rank = level * total
    k = min(bisect_left(cumulative, rank), len(cumulative) - 1)
    below = cumulative[k - 1] if k else 0
    count = cumulative[k] - below
    fraction = min(max((rank - below) / count, 0.0), 1.0) if count else 1.0
    return offset + k + fraction


def _seconds(position: float) -> float:
    return math.pow(2.0, (position - 1.0) / 8)


def _show_ms(seconds: float) -> str:
    if seconds == math.inf:
        return "unbounded"
    ms = seconds * 1000.0
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"


def _level_name(q: float) -> str:
    text = f"{q * 100:.10g}"
    return f"p{text}"


def _to_quantiles(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value,)  # the validator checks it
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return value  # the validator names the field
    return bounded_items("quantiles", value, _MAX_QUANTILES, "quantiles")


_MAX_QUANTILES = 100


@attrs.frozen(kw_only=True)
class SequentialLatency(Composable):
    """Roll back once the canary's latency is shown more than `margin` slower than stable's.

    An anytime-valid test (see the module docstring): `alpha` is the probability of a
    false rollback per rollout for latency, over the whole rollout, however many
    windows are judged, when the canary is at most ``1 + margin`` times slower.

    - The body: in each window, the probability that a canary request is slower than a
      stable one once the canary is shifted down by ``1 + margin`` (a Mann-Whitney AUC
      on the histograms). It sees a slowdown of the whole distribution quickly, and a
      slow tail more slowly (3% of requests 20 times slower: minutes).
    - Tail guards, opt-in, one per level in `quantiles` (none by default): the canary's
      share of the latencies above the stable arm's running quantile (times
      ``1 + margin`` for the canary), bet on like errors. They see a slow tail that
      leaves the median alone sooner; the body and the guards then share `alpha`
      (half to the body). They assume that slow requests cluster alike on both arms: a
      pause that slows a share of one arm's requests is a cluster as large as that
      arm's traffic, and makes them fire (one false rollback in 40 three-hour rollouts
      with each arm stalling in 10% of windows), so they are not on by default.

    FAIL once any test's evidence reaches its share of ``1 / alpha``, and FAIL from
    then on. NOT_YET while either arm has fewer than `min_samples` latencies. With
    `early_pass`, PASS with ``early_pass=True`` once every test rules out a slowdown
    beyond ``1 + pass_margin``.

    What is assumed: within a window, the canary's latencies (shifted by the margin)
    and the stable ones are exchangeable when the canary is no slower. Nothing is
    assumed across windows: traffic may swing, drift and change split. Clustered slow
    requests on one arm (a pause on one instance) break that within their window; the
    body test widens its variance by the dispersion it has measured in the windows
    before, which kept false rollbacks under `alpha` in simulation (stalls in 10% of
    windows) but is not a proof.

    `margin`: 3% by default, a canary 3% slower for reasons that are not the release
    (another host, colder caches) passes. Buckets: canarykit's native buckets are 9%
    wide and the tests spread each bucket's mass uniformly inside it (with
    ``interpolate=False`` the margin shift is rounded up to whole buckets instead:
    valid whatever the shape inside a bucket, and slower). Data from classic
    Prometheus buckets can be far coarser; the verdict says when the buckets around the
    median are too coarse to see the margin.

    >>> decider = sequential_latency(quantiles=(0.95,), margin=0.05)
    >>> decider
    SequentialLatency(alpha=0.01, quantiles=(0.95,), margin=0.05, min_samples=100)
    """

    alpha: float = 0.01
    quantiles: tuple[float, ...] = attrs.field(default=(), converter=_to_quantiles)
    margin: float = 0.03
    min_samples: int = 100
    early_pass: bool = attrs.field(default=False, repr=False)
    interpolate: bool = attrs.field(default=True, repr=False)
    pass_margin: float = attrs.field(default=0.2, repr=False)
    _shift: tuple[int, float] = attrs.field(init=False, repr=False, eq=False)
    _pass_shift: tuple[int, float] = attrs.field(init=False, repr=False, eq=False)
    _body_threshold: float = attrs.field(init=False, repr=False, eq=False)
    _tail_threshold: float = attrs.field(init=False, repr=False, eq=False)
    _tails: tuple[ShareBets, ...] = attrs.field(init=False, repr=False, eq=False, hash=False)
    _tail_pass: tuple[ShareBets, ...] = attrs.field(init=False, repr=False, eq=False, hash=False)
    _names: tuple[str, ...] = attrs.field(init=False, repr=False, eq=False)
    # Fixed parts of the verdict's text, made once: a verdict is built every window.
    _texts: dict[str, str] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        set_ = object.__setattr__
        alpha = _number("alpha", self.alpha, low=0.0, high=0.5, open_low=True)
        set_(self, "alpha", alpha)
        quantiles = self.quantiles
        if not isinstance(quantiles, tuple):
            raise ConfigError("quantiles", quantiles, "must be a sequence of levels")
        if len(quantiles) > _MAX_QUANTILES:
            raise ConfigError("quantiles", quantiles, f"must hold at most {_MAX_QUANTILES} levels")
        for index, q in enumerate(quantiles):
            level = _number(f"quantiles[{index}]", q, low=0.0, high=math.inf, open_low=True)
            if level >= 1.0:
                raise ConfigError(f"quantiles[{index}]", q, "must be in (0, 1)")
        set_(self, "quantiles", tuple(float(q) for q in quantiles))
        margin = _number("margin", self.margin, low=0.0, high=100.0, open_low=False)
        set_(self, "margin", margin)
        _integer("min_samples", self.min_samples, low=1)
        _boolean("early_pass", self.early_pass)
        _boolean("interpolate", self.interpolate)
        pass_margin = _number("pass_margin", self.pass_margin, low=0.0, high=100.0, open_low=False)
        set_(self, "pass_margin", pass_margin)
        whole = not self.interpolate
        set_(self, "_shift", shift_of(margin, whole=whole))
        pass_shift = shift_of(pass_margin)
        if whole:  # rounded down: conservative for the early pass
            pass_shift = (pass_shift[0], 0.0)
        set_(self, "_pass_shift", pass_shift)
        tails = len(self.quantiles)
        body_alpha = alpha / 2 if tails else alpha
        set_(self, "_body_threshold", -_log(body_alpha))
        set_(self, "_tail_threshold", -_log(alpha / 2 / tails) if tails else math.inf)
        low, high, points = _TAIL_GRID
        set_(self, "_tails", tuple(ShareBets(1.0, low, high, points, "above") for _ in quantiles))
        passes = tuple(ShareBets(1.0, low, high, points, "below") for _ in quantiles)
        set_(self, "_tail_pass", passes if self.early_pass else ())
        set_(self, "_names", tuple(f"latency {_level_name(q)}" for q in self.quantiles))
        texts = {
            "body": f"P(canary slower than stable x{1 + margin:g}) ~",
            "body_needed": f" of {_show_evidence(self._body_threshold)} needed",
            "tail_needed": f" of {_show_evidence(self._tail_threshold)} needed",
            "margin": f"margin {_percent(margin)}",
            "coarse": f", too coarse to see a {_percent(margin)} margin: use finer buckets",
            "passed": f"; no slowdown beyond {_percent(pass_margin)} at any level",
        }
        set_(self, "_texts", texts)

    def __str__(self) -> str:
        text = (
            f"sequential latency: roll back when the canary is shown more than "
            f"{_percent(self.margin)} slower (alpha {self.alpha:g})"
        )
        if self.quantiles:
            text += f", with tail guards at {', '.join(_level_name(q) for q in self.quantiles)}"
        return text

    def initial_state(self) -> dict[str, Any]:
        """No latencies yet: empty histograms, no evidence, not failed."""
        # per tail guard: the bettors and the counts above the thresholds so far
        # (canary, canary latencies, stable, stable latencies)
        tails = [{"log_fail": bets.initial(), "above": [0.0] * 4} for bets in self._tails]
        if self.early_pass:
            for tail, bets in zip(tails, self._tail_pass, strict=True):
                tail["log_pass"] = bets.initial()
        return {
            "v": _STATE_VERSION,
            "failed": "",
            "offset": 0,
            "stable": [],
            "canary_count": 0,
            # sum w x, sum w, recent mean of x, sum z**2, windows; the early-pass sums
            # then the learning bettors' log-wealth and shift estimate, for failing and
            # for the early pass
            "body": [0.0, 0.0, 0.0, 0.0, 0, 0.0, 0.0] + [0.0] * (4 * len(MEMORIES)),
            "tails": tails,
            # the tail guards' thresholds for the next window, from stable's totals
            "thresholds": [],
            "seen": None,
        }

    def _read_state(self, state: Any) -> dict[str, Any]:
        if state is None:
            return self.initial_state()
        if type(state) is _Built and state.built_by is self:
            return dict(state)
        try:
            failed = state["failed"]
            if state.get("v") != _STATE_VERSION and isinstance(failed, str):
                fresh = self.initial_state()  # an older state: keep only its FAIL
                fresh["failed"] = failed
                return fresh
            offset, stable = state["offset"], state["stable"]
            tails = state["tails"]
            seen = state["seen"]
            ok = (
                isinstance(failed, str)
                and type(offset) is int
                and _counts_list(stable)
                and type(state["canary_count"]) is int
                and 0 <= state["canary_count"] <= MAX_COUNT
                and (not stable or MIN_INDEX <= offset <= MAX_INDEX - len(stable) + 1)
                and _numbers(state["body"], _BODY_SIZE)
                and isinstance(tails, list)
                and len(tails) == len(self._tails)
                and all(self._tail_ok(tail) for tail in tails)
                and (
                    state["thresholds"] == [] or _numbers(state["thresholds"], len(self.quantiles))
                )
                and (seen is None or _not_nan(seen) or type(seen) is int)
            )
        except (TypeError, KeyError, AttributeError):
            ok = False
        if not ok:
            raise _bad_state("SequentialLatency", state, "the one initial_state() returns")
        return dict(state)

    def _tail_ok(self, tail: Any) -> bool:
        size = self._tails[0].size
        return (
            isinstance(tail, dict)
            and _numbers(tail.get("log_fail"), size)
            and _numbers(tail.get("above"), 4)
            and ("log_pass" in tail) is self.early_pass
            and (not self.early_pass or _numbers(tail.get("log_pass"), size))
        )

    def judge(self, state: Any, observation: Observation) -> Judgement:
        """Judge the window's histograms and add them to the totals; return the verdict."""
        state = self._read_state(state)
        window_s, window_c = observation.stable.latency, observation.canary.latency
        full_canary = bool(window_c and window_c.count) and not (window_s and window_s.count)
        if window_s is not None and window_c is not None and window_s.count and window_c.count:
            state["seen"] = observation.end
            if not state["failed"]:
                self._bet(state, window_s, window_c)
        offset, stable = _accumulate(state["offset"], state["stable"], window_s)
        state["offset"], state["stable"] = offset, stable
        if window_c is not None:
            state["canary_count"] += window_c.count
        cumulative_s = list(accumulate(stable))
        enough = bool(stable) and cumulative_s[-1] >= self.min_samples
        state["thresholds"] = (
            [_position(cumulative_s, offset, q) for q in self.quantiles] if enough else []
        )
        note = _full_canary_note(state["seen"], observation.end) if full_canary else ""
        verdict = self._verdict(state, cumulative_s, note)
        return Judgement(verdict, _built(state, self))

    def _bet(
        self, state: dict[str, Any], stable: LatencyHistogram, canary: LatencyHistogram
    ) -> None:
        """Fold one window into the body's and the tail guards' evidence."""
        x, variance, n_c, n_s = window_auc(stable, canary, self._shift)
        body = list(state["body"])
        sum_wx, sum_w, recent, sum_z2, windows, pass_wx, pass_w = body[:7]
        # The dispersion, measured on the windows before this one (predictable), each
        # window's x against the recent windows' mean: a regression's onset then reads
        # as dispersion for a few windows only.
        spread = max(1.0, (_PRIOR_WINDOWS + sum_z2) / (_PRIOR_WINDOWS + windows))
        weight = 1.0 / (spread * variance)
        learning = body[7:]
        body = [
            sum_wx + weight * x,
            sum_w + weight,
            recent + _RECENT * (x - recent),
            sum_z2 + (x - recent) ** 2 / variance,
            windows + 1,
            pass_wx,
            pass_w,
        ]
        half = 2 * len(MEMORIES)
        learn_fail = _learn(learning[:half], x, weight)
        learn_pass = learning[half:]
        if self.early_pass:
            # The mirror: the canary shifted down by the pass margin is still slower.
            y = -window_auc(stable, canary, self._pass_shift)[0]
            body[5] = pass_wx + weight * y
            body[6] = pass_w + weight
            learn_pass = _learn(learn_pass, y, weight)
        state["body"] = body + learn_fail + learn_pass
        thresholds = state["thresholds"]
        if not thresholds:
            return  # no threshold yet: the guards start once stable has a quantile
        share = n_c / (n_c + n_s)
        shift = self._shift[0] + self._shift[1]
        pass_shift = self._pass_shift[0] + self._pass_shift[1]
        tails = []
        for position, tail, bets, passing in zip(
            thresholds, state["tails"], self._tails, self._tail_pass or self._tails, strict=True
        ):
            tail = dict(tail)
            e_s = above(stable, position)
            e_c = above(canary, position + shift)
            events = e_s + e_c
            if events > 0.0:
                tail["log_fail"] = bets.bet(tail["log_fail"], share, e_c, events)
                counted = tail["above"]
                tail["above"] = [
                    counted[0] + e_c,
                    counted[1] + n_c,
                    counted[2] + e_s,
                    counted[3] + n_s,
                ]
            if self.early_pass:
                e_c = above(canary, position + pass_shift)
                if e_s + e_c > 0.0:
                    tail["log_pass"] = passing.bet(tail["log_pass"], share, e_c, e_s + e_c)
            tails.append(tail)
        state["tails"] = tails

    def _verdict(
        self,
        state: dict[str, Any],
        cumulative_s: list[int],
        note: str,
    ) -> Verdict:
        total_s = cumulative_s[-1] if cumulative_s else 0
        total_c = state["canary_count"]
        counted = f"{total_c} canary, {total_s} stable latencies"
        texts = self._texts
        if total_s < self.min_samples or total_c < self.min_samples:
            if state["failed"]:
                return self._failed_again(state["failed"])
            reason = f"{counted}, {self.min_samples} per arm needed"
            if note:
                reason += f"; {note}"
            items = [
                MetricVerdict(metric=name, kind=VerdictKind.NOT_YET, reason=reason)
                for name in ("latency", *self._names)
            ]
            return Verdict(kind=VerdictKind.NOT_YET, reason=f"latency: {reason}", metrics=items)
        body = state["body"]
        sum_wx, sum_w, _, _, _, pass_wx, pass_w = body[:7]
        half = 2 * len(MEMORIES)
        log_body = half_and_half(
            log_mean_exp([a * sum_wx - a * a * sum_w / 2 for a in _AUC_GRID], _LOG_AUC_GRID_SIZE),
            body[7 : 7 + half : 2],
        )
        resolution = resolution_of_counts(state["stable"], 0.5) or math.inf
        if resolution == math.inf:  # the median in the lowest occupied bucket
            buckets = "buckets unbounded below p50"
        else:
            buckets = f"buckets {resolution:.3g}x wide near p50"
        if resolution > max(_COARSE, 1.0 + self.margin * 3):
            buckets += texts["coarse"]
        auc = 0.5 + sum_wx / sum_w if sum_w else 0.5  # the windows' weighted mean
        items = []
        failing = []
        passing = self.early_pass
        kind = VerdictKind.FAIL if log_body >= self._body_threshold else VerdictKind.PASS
        reason = (
            f"{texts['body']}{auc:.3f}, evidence {_show_evidence(log_body)}{texts['body_needed']}"
        )
        if kind is VerdictKind.FAIL:
            failing.append(f"latency: {reason}")
        if self.early_pass:
            log_pass = half_and_half(
                log_mean_exp(
                    [a * pass_wx - a * a * pass_w / 2 for a in _AUC_GRID], _LOG_AUC_GRID_SIZE
                ),
                body[7 + half :: 2],
            )
            passing = log_pass >= self._body_threshold
        items.append(MetricVerdict(metric="latency", kind=kind, reason=reason, value=auc))
        for position, name, tail, bets, pass_bets in zip(
            state["thresholds"],
            self._names,
            state["tails"],
            self._tails,
            self._tail_pass or self._tails,
            strict=True,
        ):
            log_tail = bets.log_evidence(tail["log_fail"])
            kind = VerdictKind.FAIL if log_tail >= self._tail_threshold else VerdictKind.PASS
            # how much more often than stable the canary lands above the threshold
            e_c, n_c, e_s, n_s = tail["above"]
            value = (e_c * n_s) / (n_c * e_s) if n_c and e_s else None
            ratio = "n/a" if value is None else f"{value:.3g}x"
            reason = (
                f"canary above stable's ~{_show_ms(_seconds(position))} {ratio} as often; "
                f"evidence {_show_evidence(log_tail)}{texts['tail_needed']}"
            )
            if kind is VerdictKind.FAIL:
                failing.append(f"{name}: {reason}")
            if self.early_pass:
                passing = (
                    passing and pass_bets.log_evidence(tail["log_pass"]) >= self._tail_threshold
                )
            items.append(MetricVerdict(metric=name, kind=kind, reason=reason, value=value))
        context = f"{texts['margin']}, {buckets}; {counted}"
        if failing:
            failed = "; ".join(failing)
            state["failed"] = failed
            return Verdict(kind=VerdictKind.FAIL, reason=f"{failed} ({context})", metrics=items)
        if state["failed"]:
            return self._failed_again(state["failed"], items)
        reason = "; ".join(f"{m.metric}: {m.reason}" for m in items) + f" ({context})"
        if passing:
            reason += texts["passed"]
        if note:
            reason += f"; {note}"
        return Verdict(kind=VerdictKind.PASS, reason=reason, metrics=items, early_pass=passing)

    def _failed_again(self, failed: str, items: list[MetricVerdict] | None = None) -> Verdict:
        # A FAIL is final: later windows repeat it whatever they show.
        reason = f"failed earlier: {failed}"
        metrics = [
            MetricVerdict(metric=name, kind=VerdictKind.FAIL, reason=reason)
            for name in ("latency", *self._names)
        ]
        return Verdict(kind=VerdictKind.FAIL, reason=f"latency {reason}", metrics=items or metrics)


def _accumulate(
    offset: int, counts: list[int], more: LatencyHistogram | None
) -> tuple[int, list[int]]:
    """Add a window's histogram to running counts: the new offset and counts."""
    if more is None or not more.counts:
        return offset, counts
    if not counts:
        return more.offset, list(more.counts)
    low = min(offset, more.offset)
    high = max(offset + len(counts), more.offset + len(more.counts))
    if low == offset and high == offset + len(counts):
        merged = list(counts)
    else:
        merged = [0] * (high - low)
        merged[offset - low : offset - low + len(counts)] = counts
    at = more.offset - low
    stop = at + len(more.counts)
    merged[at:stop] = map(add, merged[at:stop], more.counts)
    return low, merged


def sequential_latency(
    *,
    alpha: float = 0.01,
    quantiles: Iterable[float] = (),
    margin: float = 0.03,
    min_samples: int = 100,
    early_pass: bool = False,
    interpolate: bool = True,
    pass_margin: float = 0.2,
) -> SequentialLatency:
    """Make a `SequentialLatency`: roll back when the canary is shown slower.

    `alpha` is the false-rollback probability per rollout for latency, over the whole
    rollout however often it is checked; `margin` the slowdown that is not a regression
    (3% by default); `quantiles` the tail guards.

    >>> decider = sequential_latency(quantiles=[0.5, 0.99], margin=0.1, early_pass=True)
    >>> decider.quantiles, decider.early_pass
    ((0.5, 0.99), True)
    """
    return SequentialLatency(
        alpha=alpha,
        quantiles=quantiles,  # the converter makes a tuple
        margin=margin,
        min_samples=min_samples,
        early_pass=early_pass,
        interpolate=interpolate,
        pass_margin=pass_margin,
    )
