"""An in-process traffic router: the application asks it which version serves each request.

For applications that choose the version themselves (a worker pool, an internal RPC
client): the rollout applies splits to a `WeightedRouter` like to any load balancer, and
request code calls `pick()` (or `pick_for(user_id)`) to learn which arm to use.

How this works.

- `pick()` is smooth weighted round-robin, nginx's algorithm. The canary's share is
  turned into integer weights (canary : stable), the nearest fraction with a denominator
  of at most 10,000, so 0.5% is 1 : 199 and 33.3% is 333 : 667. The sequence repeats
  with a period of the weights' total, so it is computed once per weight change, stored
  as one byte per request of the period (10 kB at most), and read by a counter. Every
  prefix of the sequence is within one request of its exact share.
- `pick_for(key)` is sticky: the key, hashed with a salt (blake2b, first 8 bytes), is a
  uniform number u in [0, 1); the key goes to the canary when ``u < percent / 100``.
  Raising the percent only ever adds keys, so a user never flips back and forth.
- A request whose headers match one of the split's header routes goes to the canary in
  both, and does not take a turn in the round-robin.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from .._errors import ConfigError
from .._observe import Arm
from .._protocols import RouterCapabilities
from .._safe import backtracking_steps
from .._split import MAX_MATCHED_VALUE, STABLE_ONLY, HeaderMatch, HeaderRoute, TrafficSplit

__all__ = [
    "DEFAULT_SALT",
    "MAX_PERIOD",
    "MAX_BACKTRACKING",
    "WeightedRouter",
    "canary_share",
    "smooth_sequence",
]

MAX_PERIOD = 10_000
"""The largest round-robin period: shares are fractions with at most this denominator."""

MAX_BACKTRACKING = 2**25
"""The most steps a header regex may take here on a value of `MAX_MATCHED_VALUE` characters.

Estimated by `backtracking_steps`: ``.*Chrome.*`` takes about 2**24. Measured over
20,000 generated patterns within the budget (CPython 3.11), the slowest took 0.17 s on
a 4,094-character value built to fail; a usual header value takes microseconds.
"""

DEFAULT_SALT = "canarykit"
"""The salt `WeightedRouter` hashes keys with unless given another."""

_STABLE = Arm.STABLE
_CANARY = Arm.CANARY
_ARMS = (Arm.STABLE, Arm.CANARY)  # indexed by the bytes of a sequence
_HASH_SPACE = 1 << 64
_from_bytes = int.from_bytes


def canary_share(percent: float) -> Fraction:
    """The canary's share of round-robin turns for `percent`, a fraction of denominator <= 10,000.

    Exact for any percent with up to two decimals (and for ones such as 100/3); others get
    the nearest such fraction. A percent above 0 never rounds to 0, nor one below 100 to 1.

    >>> canary_share(0.5), canary_share(33.3), canary_share(100 / 3)
    (Fraction(1, 200), Fraction(333, 1000), Fraction(1, 3))
    """
    if percent <= 0:
        return Fraction(0)
    if percent >= 100:
        return Fraction(1)
    share = (Fraction(percent) / 100).limit_denominator(MAX_PERIOD)
    if share == 0:
        return Fraction(1, MAX_PERIOD)
    if share == 1:
        return Fraction(MAX_PERIOD - 1, MAX_PERIOD)
    return share


def smooth_sequence(canary_weight: int, stable_weight: int) -> bytes:
    """One period of nginx's smooth weighted round-robin over the two arms, 1 = canary.

    Each turn adds every arm's weight to its running score, picks the highest score (the
    stable arm on a tie, as it is listed first) and takes the total off the winner's.

    >>> list(smooth_sequence(1, 4))
    [0, 0, 1, 0, 0]
    """
    total = canary_weight + stable_weight
    canary_score = stable_score = 0
    turns = bytearray(total)
    for turn in range(total):
        canary_score += canary_weight
        stable_score += stable_weight
        if canary_score > stable_score:
            turns[turn] = 1
            canary_score -= total
        else:
            stable_score -= total
    return bytes(turns)


def _key_bytes(key: Any) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode("ascii")
    raise ConfigError("key", key, "must be a str, bytes or int")


def _header_value(headers: Mapping[str, str], name: str, lower: str) -> str | None:
    """`name`'s value in `headers`, whatever the case of the names there (HTTP ignores it)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(lower)
        if value is None:
            # Case-insensitive mappings (httpx, starlette, requests) answered already;
            # a plain dict may hold the name in any case.
            for key, candidate in headers.items():
                if key.lower() == lower:
                    return candidate
    return value


def _routed(routes: tuple[tuple[HeaderRoute, str], ...], headers: Mapping[str, str]) -> bool:
    for route, lower in routes:
        if route.matches(_header_value(headers, route.header, lower)):
            return True
    return False


class _Table:
    """Everything a pick reads, replaced whole on every apply (one reference swap)."""

    __slots__ = ("counter", "period", "routes", "sequence", "split", "threshold", "weights")

    sequence: bytes  # one byte per turn of the period: 0 stable, 1 canary
    period: int
    counter: itertools.count[int]

    def __init__(self, split: TrafficSplit, previous: _Table | None) -> None:
        share = canary_share(split.canary_percent)
        weights = (share.denominator - share.numerator, share.numerator)
        self.split = split
        self.weights = weights
        if previous is not None and previous.weights == weights:
            # Same weights (a re-apply, or only the header routes changed): carry on in
            # the same sequence, so the share stays exact across the apply.
            self.sequence, self.period, self.counter = (
                previous.sequence,
                previous.period,
                previous.counter,
            )
        else:
            self.sequence = smooth_sequence(weights[1], weights[0])
            self.period = len(self.sequence)
            self.counter = itertools.count()
        self.routes = tuple((route, route.header.lower()) for route in split.header_routes)
        # Exact: a key's hash h goes to the canary iff h / 2**64 < percent / 100, and for
        # an integer h that is h < ceil(percent * 2**64 / 100).
        self.threshold = math.ceil(Fraction(split.canary_percent) * _HASH_SPACE / 100)


class WeightedRouter:
    """A `TrafficRouter` inside the application: request code asks it where to go.

    >>> import anyio
    >>> from canarykit import TrafficSplit
    >>> router = WeightedRouter(salt="checkout-2.4.0")
    >>> anyio.run(router.apply, TrafficSplit(canary_percent=20))
    >>> [router.pick().value for _ in range(5)]
    ['stable', 'stable', 'canary', 'stable', 'stable']
    >>> router.pick_for("user-42") is router.pick_for("user-42")
    True

    - `pick(headers=None)`: the arm for one request, by smooth weighted round-robin.
      Deterministic; after any number of picks since the weights last changed, the
      canary's count is within one request of its exact share. Shares are fractions with
      a denominator of at most 10,000 (`canary_share`): exact for percents with up to
      two decimals; a percent above 0 gets at least 1 request in 10,000.
    - `pick_for(key, headers=None)`: the arm for a user, session or tenant id (str, bytes
      or int), the same on every call and in every process that uses the same salt,
      while the percent stays the same; raising the percent only moves keys to the
      canary, never back. The share of keys is the percent within sampling error.
    - `headers`: a mapping of request header names to values; a request matching one of
      the split's header routes goes to the canary (names compare case-insensitively).
      It does not take a round-robin turn.

    `salt` picks which users a rollout sends first: keys are hashed as blake2b(salt +
    key). Give each rollout its own (the release name, say) so that it is not always the
    same users who meet new versions first, and the same one to every process of the
    application so that they agree. The default is the fixed `"canarykit"`: sticky
    across processes and restarts, but the same users in every rollout.

    Threads: `pick`, `pick_for` and `apply` may be called from any thread, and none of
    them blocks. `apply` builds the new state aside and installs it with one reference
    swap, so a pick sees the old split or the new one, never a mix. A pick takes its
    turn with `next()` on an `itertools.count`, which is atomic under CPython's GIL, so
    concurrent picks take distinct turns and the share stays exact (a lock instead costs
    about 3x per pick). Free-threaded builds of CPython do not promise that atomicity:
    picks remain valid there, but turns may repeat.

    It supports weights, header routes and read-back; not mirroring. The rollout's
    runner reads back every split it applies. Header regexes run on Python's
    backtracking engine: besides what `HeaderRoute` refuses for every router, a regex
    here may take at most `MAX_BACKTRACKING` steps on the longest value it is run on
    (at most two unbounded repetitions, as in ``.*Chrome.*``), and a header value
    longer than `MAX_MATCHED_VALUE` never matches one, so a match costs milliseconds
    whatever the request sends.
    """

    def __init__(
        self, *, initial: TrafficSplit = STABLE_ONLY, salt: str | bytes = DEFAULT_SALT
    ) -> None:
        if isinstance(salt, str):
            salt_bytes = salt.encode("utf-8")
        elif isinstance(salt, bytes):
            salt_bytes = salt
        else:
            raise ConfigError("salt", salt, "must be a str or bytes")
        self._check(initial, "initial")
        self._salt = salt_bytes
        self._hasher = hashlib.blake2b(salt_bytes, digest_size=8)
        self._table = _Table(initial, None)

    @staticmethod
    def _check(split: Any, field: str) -> None:
        if not isinstance(split, TrafficSplit):
            raise ConfigError(field, split, "must be a TrafficSplit")
        if split.mirror_percent:
            raise ConfigError(
                f"{field}.mirror_percent", split.mirror_percent, "WeightedRouter cannot mirror"
            )
        for index, route in enumerate(split.header_routes):
            if route.match is not HeaderMatch.REGEX:
                continue
            # Python's engine backtracks: k unbounded repetitions may cost time of the
            # order of the value's length to the power k. The budget allows ".*Chrome.*".
            steps = backtracking_steps(route.value, MAX_MATCHED_VALUE)
            if steps > MAX_BACKTRACKING:
                raise ConfigError(
                    f"{field}.header_routes[{index}].value",
                    route.value,
                    f"WeightedRouter matches in Python, whose engine backtracks: this regex "
                    f"may take {steps:.2g} steps on a {MAX_MATCHED_VALUE}-character value, "
                    f"more than {MAX_BACKTRACKING:.2g} (use at most two of *, + and {{n,}}, "
                    f"and few ? or {{n,m}} beside them)",
                )

    # -- the TrafficRouter protocol -----------------------------------------------------

    @property
    def traffic_target(self) -> None:
        """None: this router drives traffic only inside this process, in this object.

        (A host-wide lock on it, as the default lease takes for a load balancer, could
        never meet another runner's.)
        """
        return None

    def check_split(self, split: TrafficSplit) -> None:
        """Raise `ConfigError` for a split `apply` would refuse: a mirror, or a costly regex."""
        self._check(split, "split")

    @property
    def capabilities(self) -> RouterCapabilities:
        """Weights, header routes and read-back; no mirroring."""
        return RouterCapabilities(weights=True, header_routes=True, read_back=True)

    async def apply(self, split: TrafficSplit) -> None:
        """Install `split` for every pick from now on, atomically; a mirror is refused."""
        self._check(split, "split")
        self._table = _Table(split, self._table)

    async def read(self) -> TrafficSplit:
        """The split in force."""
        return self._table.split

    # -- per request --------------------------------------------------------------------

    def pick(self, headers: Mapping[str, str] | None = None) -> Arm:
        """The arm for one request: a header route's match, else the next round-robin turn."""
        table = self._table
        if headers is not None and table.routes and _routed(table.routes, headers):
            return _CANARY
        return _ARMS[table.sequence[next(table.counter) % table.period]]

    def pick_for(self, key: str | bytes | int, headers: Mapping[str, str] | None = None) -> Arm:
        """The arm for a user, session or tenant `key`: sticky, and monotone in the percent."""
        table = self._table
        if headers is not None and table.routes and _routed(table.routes, headers):
            return _CANARY
        data = key.encode("utf-8") if type(key) is str else _key_bytes(key)
        threshold = table.threshold
        if threshold == 0:
            return _STABLE
        if threshold == _HASH_SPACE:
            return _CANARY
        hasher = self._hasher.copy()  # blake2b already fed the salt: cheaper than anew
        hasher.update(data)
        return _CANARY if _from_bytes(hasher.digest(), "big") < threshold else _STABLE

    def key_position(self, key: str | bytes | int) -> float:
        """Where `key` stands in [0, 1): it is on the canary at any percent above 100 times this.

        >>> 0.0 <= WeightedRouter().key_position("user-42") < 1.0
        True
        """
        hasher = self._hasher.copy()
        hasher.update(_key_bytes(key))
        return _from_bytes(hasher.digest(), "big") / _HASH_SPACE

    # -- reading ------------------------------------------------------------------------

    @property
    def current(self) -> TrafficSplit:
        """The split in force (what `read()` returns), for synchronous code."""
        return self._table.split

    @property
    def weights(self) -> tuple[int, int]:
        """The round-robin weights in force, (stable, canary), in lowest terms.

        >>> from canarykit import TrafficSplit
        >>> WeightedRouter(initial=TrafficSplit(canary_percent=0.5)).weights
        (199, 1)
        """
        return self._table.weights

    def __repr__(self) -> str:
        table = self._table
        stable, canary = table.weights
        routes = len(table.routes)
        extra = f", {routes} header route{'s' if routes != 1 else ''}" if routes else ""
        return (
            f"<WeightedRouter canary {table.split.canary_percent:g}% "
            f"({canary} in {stable + canary}){extra}>"
        )
