"""Testing by betting on each window's share of events: valid when events cluster.

The question for errors (and for latencies above a threshold): is the canary's rate of
events per request more than ``theta0`` times the stable arm's? In a window where the
canary served a share ``p`` of the requests and the two arms logged ``E`` events, the
canary's expected share of those events is at most
``q0 = theta0 p / (theta0 p + 1 - p)`` under that null. That holds *given E* when
events are independent (the conditional binomial), and also when they come in clusters
(one failure logged several times, a retry storm on a sticky arm), as long as a cluster
is no larger on one arm than on the other: each cluster then belongs to the canary with
the same probability whatever its size. So ``S = e_c - q0 E`` has conditional mean at
most 0 given everything known before the window and the window's ``E`` and ``p``.

A bettor who stakes ``lam * S`` on each window, ``lam >= 0`` chosen before ``S`` is
seen and small enough that ``1 + lam S > 0``, holds a wealth ``prod (1 + lam_t S_t)``
that is a nonnegative supermartingale under the null (Shafer & Vovk; Waudby-Smith &
Ramdas, JRSS-B 2024). An average of such wealths is one too, so by Ville's inequality
the average ever reaches ``1 / alpha`` with probability at most ``alpha``: the rule.

The stakes. One bettor per alternative ``theta_j`` on a log grid above ``theta0``. When
each window holds one event, the stake ``(q_j - q0) / (q0 (1 - q0))`` makes the factor
exactly the likelihood ratio of ``q_j`` against ``q0``, so with independent events the
test keeps the power of the per-request test it replaces. The stake is capped at
``cap / (q0 E)``, so one window can lose at most the share `cap` of the wealth. Clustered
events spread the window's share more than a binomial does and make the large stakes
lose; the bettors of the alternatives nearer the null stake less and carry the mixture
then, so no dispersion needs estimating (an estimate read a regression's onset as
dispersion and stopped betting just when it mattered).

Half the prior goes to fixed bettors, half to learning ones. A fixed bettor for a large
ratio loses quickly while the canary is healthy, so a regression that starts an hour
into the rollout finds it broke. A learning bettor stakes ``mu / v`` per event, its
running estimates (exponentially weighted, from the windows before: predictable) of
the shift of the canary's share per event and of its spread; it stakes almost nothing
while the canary looks healthy and the Kelly stake soon after a regression starts, and
it learns the spread of clustered events as it goes.

The price of validity under clustering: a window multiplies a bettor's wealth by at most
``1 + cap (1 - q0) / q0``, about ``1 / q0``; the fastest rollback takes about
``ln(1 / alpha) / ln(1 / q0)`` windows (3 at a 10% canary), and at canary shares of 50%
and more, where ``q0`` is large, a window holding many events adds far less than the
per-request likelihood ratio would.
"""

from __future__ import annotations

import math

__all__ = ["MEMORIES", "ShareBets", "half_and_half", "log_mean_exp"]

_log = math.log
_exp = math.exp
_log1p = math.log1p

# The share of requests is rounded outwards to a multiple of 1 / _SHARE_STEPS: for the
# failing test up (a larger q0 makes S smaller), for the passing test down. That keeps
# the wealth a supermartingale and lets the stakes of a rounded share be cached.
_SHARE_STEPS = 4096
# At most this share of the wealth is staked on one window.
_CAP = 0.9
# The learning bettors: how much of its estimate each moves towards the newest window
# (a short and a longer memory), and the per-event variance they start from.
MEMORIES = (0.1, 0.3)
_START_VARIANCE = 0.25


def log_mean_exp(logs: list[float], log_size: float) -> float:
    """ln(mean(exp(logs))) without overflow: the log of a uniform mixture."""
    try:
        total = sum(map(_exp, logs))
        if total > 0.0:
            return _log(total) - log_size
    except OverflowError:
        pass
    top = max(logs)
    return top + _log(sum(_exp(x - top) for x in logs)) - log_size


def _log_grid(low: float, high: float, points: int) -> list[float]:
    if points == 1:
        return [low]
    step = (_log(high) - _log(low)) / (points - 1)
    return [_exp(_log(low) + i * step) for i in range(points)]


class ShareBets:
    """The bettors of one test: the null ``theta0`` and alternatives ``theta0 * g``.

    `direction` is ``"above"`` (the canary's rate is more than ``theta0`` times the
    stable one: the failing test) or ``"below"`` (less than ``theta0`` times: the
    early-pass test, with alternatives ``theta0 / g``).
    """

    __slots__ = ("_above", "_cache", "_log_size", "_ratios", "points", "size", "theta0")

    def __init__(
        self, theta0: float, min_ratio: float, max_ratio: float, points: int, direction: str
    ) -> None:
        self.theta0 = theta0
        self.points = points
        self._above = direction == "above"
        grid = _log_grid(min_ratio, max_ratio, points)
        self._ratios = tuple(theta0 * g if self._above else theta0 / g for g in grid)
        self._log_size = _log(points)
        self._cache: dict[int, tuple[float, tuple[float, ...]]] = {}
        # The state: the fixed bettors' log-wealths, the learning bettors' log-wealths,
        # then each learning bettor's estimates (shift, spread).
        self.size = points + 3 * len(MEMORIES)

    def initial(self) -> list[float]:
        """The bettors' state before the first window: wealth 1, nothing learned."""
        learned = [0.0, _START_VARIANCE] * len(MEMORIES)
        return [0.0] * (self.points + len(MEMORIES)) + learned

    def _stakes(self, share: float) -> tuple[float, tuple[float, ...]]:
        """``q0`` and the per-event stakes at `share`, rounded outwards and cached."""
        scaled_share = share * _SHARE_STEPS
        key = math.ceil(scaled_share) if self._above else math.floor(scaled_share)
        found = self._cache.get(key)
        if found is None:
            p = min(max(key, 0), _SHARE_STEPS) / _SHARE_STEPS
            theta0 = self.theta0
            q0 = theta0 * p / (theta0 * p + 1.0 - p) if p else 0.0
            if 0.0 < q0 < 1.0:
                scale = 1.0 / (q0 * (1.0 - q0))
                stakes = tuple(abs(r * p / (r * p + 1.0 - p) - q0) * scale for r in self._ratios)
            else:
                stakes = (0.0,) * self.points
            if len(self._cache) > 2 * _SHARE_STEPS:
                self._cache.clear()
            found = self._cache[key] = (q0, stakes)
        return found

    def bet(
        self, log_wealth: list[float], share: float, canary: float, total: float
    ) -> list[float]:
        """Fold one window in; return the new log-wealths.

        `canary` of `total` events were the canary's, at a canary share `share` of the
        window's requests (0 < share < 1, total > 0).
        """
        q0, stakes = self._stakes(share)
        if not 0.0 < q0 < 1.0:
            return log_wealth
        if self._above:
            gain = canary - q0 * total
            worst = q0 * total
        else:
            gain = q0 * total - canary
            worst = (1.0 - q0) * total
        cap = _CAP / worst
        points = self.points
        new = [
            w + _log1p((s if s < cap else cap) * gain)
            for w, s in zip(log_wealth[:points], stakes, strict=True)
        ]
        learning = len(MEMORIES)
        wealth = log_wealth[points : points + learning]
        learned = log_wealth[points + learning :]
        shift_now = gain / total
        for index, memory in enumerate(MEMORIES):
            shift, spread = learned[2 * index], learned[2 * index + 1]
            stake = min(shift / spread, cap) if shift > 0.0 and spread > 0.0 else 0.0
            new.append(wealth[index] + _log1p(stake * gain))
            spread_now = (gain - shift * total) ** 2 / total
            learned[2 * index] = shift + memory * (shift_now - shift)
            learned[2 * index + 1] = spread + memory * (spread_now - spread)
        new.extend(learned)
        return new

    def log_evidence(self, state: list[float]) -> float:
        """The log of the average wealth (half fixed, half learning): the evidence."""
        points = self.points
        fixed = log_mean_exp(state[:points], self._log_size)
        return half_and_half(fixed, state[points : points + len(MEMORIES)])


def half_and_half(fixed: float, learning: list[float]) -> float:
    """The log evidence: half the prior on `fixed` (the fixed bettors' log average
    wealth), half on the learning bettors' log-wealths.
    """  # noqa: D205
    learned = log_mean_exp(learning, _log(len(learning)))
    top = max(fixed, learned)
    return top + _log((_exp(fixed - top) + _exp(learned - top)) / 2.0)
