"""A traffic router for HAProxy: server weights through the runtime API, read back.

How this works. `HAProxyRouter` knows one backend and the names of its stable and its
canary servers. For a split it computes one weight per server (HAProxy weights are
integers from 0 to 256; see `weights_for`) and talks to HAProxy's runtime API (the
``stats socket``, UNIX or TCP, at ``level admin``) in non-interactive mode: one
connection per command line, several commands on a line separated by ``;``, HAProxy
answers and closes. Every exchange is bounded by `timeout`. `apply`:

1. reads every server's weight (``get weight BACKEND/SERVER``), which also proves that
   the backend and every server exist before anything changes;
2. with `persist_config`, writes the config file with the new weights to a temporary
   file beside it and checks it with ``haproxy -c -f``;
3. sets the weights (``set weight BACKEND/SERVER W``) on one command line, the servers
   whose weight rises first, so that no instant has every server at 0 (a switch from
   100% to 0% never leaves the backend without a server);
4. reads the weights back and fails unless they are exactly the ones set;
5. renames the checked config file into place (nothing is written when 2-4 fail);
6. with `verify`, sends a `SplitProbe` through HAProxy, in convergence mode.

Answers. ``set weight`` answers an empty line; ``get weight`` answers ``50 (initial 10)``
and an empty line. Anything else (``No such server.``, ``No such backend.``,
``Permission denied``, an unknown command, garbage, silence, a closed connection) is a
`RouterError` that quotes the answer and the command it answered.

Precision. HAProxy's weight is per server and at most 256, so a split is the ratio of
two integer sums: canary share = sum(canary weights) / sum(all weights). `weights_for`
picks the arm totals with the smallest error (any total up to 256 per server, spread
over the arm's servers as evenly as integers allow: they differ by at most 1), preferring
totals that spread evenly and then the largest ones. With one stable and one canary
server every percent from 100/257 = 0.39% to 99.61% is within 0.05 points (0.5% is
exactly 1:199; 33.3% becomes 1:2, 33.333%); more servers in an arm widen that range
(the smallest canary share is 1 / (1 + 256 * stable servers)). A share strictly between
0 and 100 always keeps both arms above 0 (a canary asked for traffic gets some), so a
share closer to 0 or 100 than the smallest step gets that step; the router refuses a
split whose weights miss it by more than `weight_tolerance` points (default 0.1). 0% and
100% use weight 0, which HAProxy allows: the server then gets no traffic.

Read-back. `read` reconstructs the split from the weights. Weights equal to those of the
split this router last applied read back as that split (so 33.3% reads back as 33.3,
not 33.333...); other weights read back as the shortest decimal percent whose weights
they are, or else as the exact ratio. Only weights count: a server that is down, in
maintenance or draining gets no traffic whatever its weight.

Convergence. HAProxy's ``balance roundrobin`` is dynamic: it takes runtime weights and
re-positions the changed servers in its weighted tree at once. Measured with HAProxy
2.6.12 and sequential requests (benchmarks/haproxy.py), moving to 1%, 10% and 50% from
0%, 10%, 50% and 90% part-way through a cycle, every prefix of the next 1,000 requests
was within 1 point (or one request) of the target, and 90/10 -> 50/50 gave 500 / 500.
The one lag: a server whose weight rises from 0 waits for its turn in the cycle (the
first canary answer came after about 100 requests at 1%, and at request 257 in one run
at 0.5%, whose cycle is 200 requests). Verification still runs in convergence
mode, so that a slower-converging HAProxy passes once it has converged.
``balance static-rr`` ignores weight changes at run time and must not be used.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .._binaries import router_binary
from .._errors import ConfigError, RouterError
from .._looplock import loop_lock
from .._protocols import RouterCapabilities
from .._safe import check_address, check_name
from .._split import TrafficSplit, check_percent
from .._validate import finite
from ._nginx import _read_regular
from ._probe import SplitProbe

__all__ = ["MAX_WEIGHT", "HAProxyRouter", "HAProxyWeights", "rewrite_weights", "weights_for"]

MAX_WEIGHT = 256
"""The largest weight HAProxy accepts for one server (``set weight`` and ``weight``)."""

# A runtime API that answers more than this is not answering our command.
_MAX_ANSWER = 1 << 20
# HAProxy reads a command line into one buffer (tune.bufsize, 16 kB by default); longer
# batches are split over several connections, in order.
_MAX_LINE = 4000
_GET_ANSWER = re.compile(r"(\d{1,3}) \(initial (\d{1,3})\)\n\n")
# Decimals a read-back percent is snapped to: plans keep percents to 6 decimals.
_SNAP_DECIMALS = 6
_QUOTE_LIMIT = 300
_MAX_CONFIG_BYTES = 16 * 1024 * 1024  # far beyond any haproxy.cfg; a bound on what is read


def _ints(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class HAProxyWeights:
    """One HAProxy weight (0-256) per server of each arm, in the router's server order.

    >>> HAProxyWeights(stable=(199,), canary=(1,)).canary_percent
    0.5
    """

    stable: tuple[int, ...] = attrs.field(converter=_ints)
    canary: tuple[int, ...] = attrs.field(converter=_ints)

    def __attrs_post_init__(self) -> None:
        for arm, weights in (("stable", self.stable), ("canary", self.canary)):
            if not weights:
                raise ConfigError(arm, weights, "must hold one weight per server")
            for index, weight in enumerate(weights):
                if (
                    isinstance(weight, bool)
                    or not isinstance(weight, int)
                    or not 0 <= weight <= MAX_WEIGHT
                ):
                    raise ConfigError(
                        f"{arm}[{index}]", weight, f"must be an integer in [0, {MAX_WEIGHT}]"
                    )
        if not any(self.stable) and not any(self.canary):
            raise ConfigError("weights", self, "must give at least one server a weight above 0")

    @property
    def canary_percent(self) -> float:
        """The canary's share of the weighted traffic these weights give, in percent."""
        canary = sum(self.canary)
        return 100.0 * canary / (canary + sum(self.stable))


def _spread(total: int, servers: int) -> tuple[int, ...]:
    """`total` over `servers` as evenly as integers allow (the first ones get the extra 1s)."""
    base, extra = divmod(total, servers)
    return tuple(base + 1 if index < extra else base for index in range(servers))


@functools.lru_cache(maxsize=1024)
def _arm_totals(percent: float, stable_servers: int, canary_servers: int) -> tuple[int, int]:
    """The (stable, canary) weight totals whose ratio is nearest to `percent`."""
    most_stable = MAX_WEIGHT * stable_servers
    most_canary = MAX_WEIGHT * canary_servers
    if percent <= 0:
        return most_stable, 0
    if percent >= 100:
        return 0, most_canary
    ratio = (100.0 - percent) / percent
    best: tuple[tuple[float, bool, int], int, int] | None = None
    # For each canary total the best stable total is the floor or the ceiling of the
    # exact one, so this visits every candidate: at most 2 * 256 * canary_servers.
    for canary in range(1, most_canary + 1):
        exact = min(canary * ratio, most_stable)  # a tiny percent makes the ratio huge
        for stable_total in {int(exact), int(exact) + 1}:
            stable_total = min(max(stable_total, 1), most_stable)
            error = abs(100.0 * canary / (canary + stable_total) - percent)
            uneven = bool(canary % canary_servers or stable_total % stable_servers)
            # Errors equal to 1e-9 points are ties; then even spreads, then finer weights.
            key = (round(error, 9), uneven, -(canary + stable_total))
            if best is None or key < best[0]:
                best = (key, stable_total, canary)
    assert best is not None
    return best[1], best[2]


def weights_for(percent: float, stable_servers: int = 1, canary_servers: int = 1) -> HAProxyWeights:
    """The HAProxy weights (0-256 per server) that come nearest to `percent` on the canary.

    >>> weights_for(10)
    HAProxyWeights(stable=(252,), canary=(28,))
    >>> weights_for(0.5)
    HAProxyWeights(stable=(199,), canary=(1,))
    >>> round(weights_for(33.3).canary_percent, 3)
    33.333
    >>> weights_for(10, stable_servers=3, canary_servers=2)
    HAProxyWeights(stable=(252, 252, 252), canary=(42, 42))
    >>> weights_for(0), weights_for(100)
    (HAProxyWeights(stable=(256,), canary=(0,)), HAProxyWeights(stable=(0,), canary=(256,)))

    A percent strictly between 0 and 100 gives both arms some weight, however small the
    share. It never refuses: `HAProxyWeights.canary_percent` says what the weights give,
    and `HAProxyRouter` refuses a split they miss by more than its `weight_tolerance`.
    """
    share = check_percent("canary_percent", percent)
    for field, count in (("stable_servers", stable_servers), ("canary_servers", canary_servers)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(field, count, "must be a positive integer")
    stable_total, canary_total = _arm_totals(share, stable_servers, canary_servers)
    return HAProxyWeights(
        stable=_spread(stable_total, stable_servers), canary=_spread(canary_total, canary_servers)
    )


def _check_servers(field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(field, value, "must be a non-empty list of HAProxy server names")
    servers = tuple(check_name(f"{field}[{i}]", item) for i, item in enumerate(value))
    for i, server in enumerate(servers):
        if server in servers[:i]:
            raise ConfigError(f"{field}[{i}]", server, "is listed twice")
    return servers


def _check_runtime_api(value: Any) -> tuple[str, str, int]:
    """("unix", path, 0) or ("tcp", host, port) from a socket path or a `host:port`.

    `[v6]:port` gives the bare IPv6 address as the host.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise ConfigError("runtime_api", value, "must be a socket path or 'host:port'")
    if value.startswith("/"):
        value = "unix:" + value
    address = check_address("runtime_api", value)
    if address.startswith("unix:"):
        return "unix", address[len("unix:") :], 0
    host, _, port = address.rpartition(":")
    return "tcp", host.strip("[]"), int(port)


def _check_path(field: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(field, value, "must be a path")
    text = os.fspath(value)
    if not isinstance(text, str) or not text or not text.isprintable():
        raise ConfigError(field, value, "must be a printable path")
    return Path(text).absolute()


def _quote(answer: str) -> str:
    """HAProxy's answer as a short, single-line Python literal for an error message."""
    text = answer.strip("\n")
    if len(text) > _QUOTE_LIMIT:
        text = text[:_QUOTE_LIMIT] + "..."
    return repr(text) if text else "an empty answer"


def _one_answer(answer: str, position: int) -> str:
    """The answer to one command starting at `position`: up to its closing empty line."""
    end = answer.find("\n\n", position)
    return answer[position:] if end < 0 else answer[position : end + 2]


def _batches(commands: Sequence[str]) -> list[list[str]]:
    """`commands` grouped into command lines of at most `_MAX_LINE` characters, in order."""
    lines: list[list[str]] = []
    length = 0
    for command in commands:
        if lines and length + 2 + len(command) <= _MAX_LINE:
            lines[-1].append(command)
            length += 2 + len(command)
        else:
            lines.append([command])
            length = len(command)
    return lines


# -- the config file, for persist_config --

# Section keywords of haproxy.cfg (HAProxy 2.6); a line starting with one opens a section.
_SECTIONS = frozenset(
    (
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "peers",
        "resolvers",
        "userlist",
        "mailers",
        "program",
        "http-errors",
        "ring",
        "cache",
        "fcgi-app",
    )
)
_SERVER_LINE = re.compile(
    r"(?P<head>[ \t]*server[ \t]+(?P<name>\S+)[ \t]+\S+)"
    r"(?P<params>[^#\r\n]*?)"
    r"(?P<tail>[ \t]*(?:#[^\r\n]*)?(?:\r?\n)?)"
)
_WEIGHT_PARAM = re.compile(r"(?<=[ \t])weight[ \t]+(\d+)(?=[ \t]|$)")


def rewrite_weights(text: str, backend: str, weights: Mapping[str, int]) -> str:
    r"""`text` (a haproxy.cfg) with ``weight N`` set on the named servers of `backend`.

    Only those ``server`` lines of the ``backend`` (or ``listen``) section change: an
    existing ``weight`` gets the new number, otherwise `` weight N`` goes after the last
    parameter (before a comment). Every other byte stays. Raises `RouterError` when the
    section or a server is missing or listed twice, or a server line holds quotes or
    backslashes (canarykit does not rewrite what it cannot tokenise for sure).

    >>> cfg = "backend app\n    server v1 10.0.0.1:80 check weight 9 # old\n"
    >>> cfg += "    server v2 10.0.0.2:80\n"
    >>> print(rewrite_weights(cfg, "app", {"v1": 250, "v2": 6}), end="")
    backend app
        server v1 10.0.0.1:80 check weight 250 # old
        server v2 10.0.0.2:80 weight 6
    """
    lines = text.splitlines(keepends=True)
    found: dict[str, int] = {}
    section: tuple[str, str] | None = None
    seen_sections = 0
    for number, line in enumerate(lines):
        words = line.split()
        if words and words[0] in _SECTIONS:
            section = (words[0], words[1] if len(words) > 1 else "")
            if section in (("backend", backend), ("listen", backend)):
                seen_sections += 1
            continue
        if section not in (("backend", backend), ("listen", backend)) or not words:
            continue
        if words[0] != "server" or len(words) < 3 or words[1] not in weights:
            continue
        name = words[1]
        if name in found:
            raise RouterError(
                f"server {name} is listed twice in backend {backend} "
                f"(lines {found[name] + 1} and {number + 1})"
            )
        if any(char in line for char in "\"'\\"):
            raise RouterError(
                f"line {number + 1} (server {name}) uses quotes or backslashes; "
                f"canarykit does not rewrite it"
            )
        match = _SERVER_LINE.fullmatch(line)
        if match is None:  # pragma: no cover - the pattern accepts any server line
            raise RouterError(f"line {number + 1} (server {name}) is not a server line")
        params = match.group("params")
        weight = str(weights[name])
        params, replaced = _WEIGHT_PARAM.subn(f"weight {weight}", params)
        if replaced > 1:
            raise RouterError(f"line {number + 1} (server {name}) sets weight more than once")
        if not replaced:
            params += f" weight {weight}"
        lines[number] = match.group("head") + params + match.group("tail")
        found[name] = number
    if seen_sections != 1:
        problem = "has no" if seen_sections == 0 else "has more than one"
        raise RouterError(f"the config file {problem} section 'backend {backend}'")
    missing = [name for name in weights if name not in found]
    if missing:
        raise RouterError(f"backend {backend} in the config file has no server {missing}")
    return "".join(lines)


class HAProxyRouter:
    """Set and read HAProxy server weights through its runtime API.

    >>> from canarykit import TrafficSplit
    >>> from canarykit.routers import HAProxyRouter
    >>> router = HAProxyRouter(
    ...     runtime_api="/run/haproxy/admin.sock",
    ...     backend="app",
    ...     stable=["v1a", "v1b"],
    ...     canary=["v2"],
    ... )
    >>> router.weights(TrafficSplit(canary_percent=10)).canary_percent
    10.0
    >>> router.commands(router.weights(TrafficSplit(canary_percent=10)))
    ['set weight app/v1a 252', 'set weight app/v1b 252', 'set weight app/v2 56']

    - `runtime_api`: HAProxy's ``stats socket``: a UNIX socket path (``/run/x.sock`` or
      ``unix:/run/x.sock``) or ``host:port`` for a TCP one; it needs ``level admin``.
    - `backend`: the backend (or ``listen`` section) holding the servers.
    - `stable`, `canary`: server names (as in ``server NAME ADDRESS``) of each arm.
    - `timeout`: seconds allowed for each exchange with the runtime API (connect, send,
      answer) and for ``haproxy -c``.
    - `weight_tolerance`: the largest distance, in percentage points, between a split and
      what its weights give; a split further off is refused with `RouterError`.
    - `verify`: a `SplitProbe` sent through HAProxy after each apply; the apply fails with
      the numbers unless the split converges within the probe's tolerance and budget
      (the probe is used in convergence mode, ``converge=True``, whatever it says).
    - `persist_config`: opt-in; the haproxy.cfg to write the weights into as well, so that
      a restart keeps them (see `rewrite_weights`); checked with ``haproxy -c -f`` first.
    - `haproxy`: the haproxy binary for that check (found on PATH and in sbin when None).

    Names are letters, digits, ``_``, ``.`` and ``-``: nothing that could end a runtime
    command (``;``, a newline) or split an argument. Applies through one router do not
    overlap (they take turns); the router may be used from one event loop after another.
    """

    def __init__(
        self,
        *,
        runtime_api: str | os.PathLike[str],
        backend: str,
        stable: Sequence[str],
        canary: Sequence[str],
        timeout: float = 5.0,
        weight_tolerance: float = 0.1,
        verify: SplitProbe | None = None,
        persist_config: str | os.PathLike[str] | None = None,
        haproxy: str | None = None,
    ) -> None:
        self._endpoint = _check_runtime_api(runtime_api)
        kind, host, port = self._endpoint
        if kind == "unix":
            self.runtime_api = f"unix:{host}"
        else:
            self.runtime_api = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.backend = check_name("backend", backend)
        self.stable = _check_servers("stable", stable)
        self.canary = _check_servers("canary", canary)
        for index, name in enumerate(self.canary):
            if name in self.stable:
                raise ConfigError(f"canary[{index}]", name, "is also a stable server")
        if finite("timeout", timeout) <= 0:
            raise ConfigError("timeout", timeout, "must be a positive number of seconds")
        self.timeout = float(timeout)
        if not 0 <= finite("weight_tolerance", weight_tolerance) <= 100:
            raise ConfigError(
                "weight_tolerance", weight_tolerance, "must be in [0, 100] percentage points"
            )
        self.weight_tolerance = float(weight_tolerance)
        if verify is not None and not isinstance(verify, SplitProbe):
            raise ConfigError("verify", verify, "must be a SplitProbe or None")
        self.verify = verify
        self.persist_config = (
            None if persist_config is None else _check_path("persist_config", persist_config)
        )
        if haproxy is not None:
            _check_path("haproxy", haproxy)
        self.haproxy = haproxy
        self._applied: tuple[TrafficSplit, HAProxyWeights] | None = None
        self.last_apply_seconds: float | None = None
        """Seconds the last successful `apply` took until read-back confirmed (no probe)."""

    @property
    def capabilities(self) -> RouterCapabilities:
        """Weights and read-back; no header routes or mirroring at run time."""
        return RouterCapabilities(
            weights=True, header_routes=False, mirroring=False, read_back=True
        )

    @property
    def traffic_target(self) -> str:
        """What this router controls: ``haproxy:``, the runtime API and the backend."""
        kind, where, _port = self._endpoint
        if kind == "unix":
            return f"haproxy:unix:{os.path.realpath(where)} backend {self.backend}"
        return f"haproxy:{self.runtime_api} backend {self.backend}"

    def check_split(self, split: TrafficSplit) -> None:
        """Raise `ConfigError` for a split `apply` would refuse (see `weights`).

        A rollout calls it for every split of its plan before traffic moves.
        """
        try:
            self.weights(split)
        except RouterError as exc:
            value: Any
            if split.header_routes:
                field, value = "header_routes", split.header_routes
            elif split.mirror_percent:
                field, value = "mirror_percent", split.mirror_percent
            else:
                field, value = "canary_percent", split.canary_percent
            raise ConfigError(field, value, str(exc)) from None

    @property
    def servers(self) -> tuple[str, ...]:
        """Every server this router sets, stable ones first."""
        return self.stable + self.canary

    weights_for = staticmethod(weights_for)

    def weights(self, split: TrafficSplit) -> HAProxyWeights:
        """The weights `apply` sets for `split`; `RouterError` if they miss it too far.

        Header routes and mirroring are refused too: HAProxy's runtime API has neither.
        """
        if not isinstance(split, TrafficSplit):
            raise ConfigError("split", split, "must be a TrafficSplit")
        if split.header_routes:
            raise RouterError(
                "HAProxyRouter cannot route by header (the runtime API sets weights only)"
            )
        if split.mirror_percent:
            raise RouterError("HAProxyRouter cannot mirror traffic (the runtime API sets weights)")
        weights = weights_for(split.canary_percent, len(self.stable), len(self.canary))
        miss = abs(weights.canary_percent - split.canary_percent)
        if miss > self.weight_tolerance + 1e-12:
            raise RouterError(
                f"HAProxy weights (0-{MAX_WEIGHT} per server) cannot give "
                f"{split.canary_percent:g}% to the canary with {len(self.stable)} stable and "
                f"{len(self.canary)} canary servers within {self.weight_tolerance:g} points: "
                f"the nearest is {weights.canary_percent:.4g}% "
                f"(stable {list(weights.stable)}, canary {list(weights.canary)}); add stable "
                f"or canary servers, or raise weight_tolerance"
            )
        return weights

    def commands(self, weights: HAProxyWeights) -> list[str]:
        """The ``set weight`` commands for `weights`, in server order."""
        values = weights.stable + weights.canary
        if len(weights.stable) != len(self.stable) or len(weights.canary) != len(self.canary):
            raise ConfigError("weights", weights, "must hold one weight per server of each arm")
        return [
            self._set_command(name, value) for name, value in zip(self.servers, values, strict=True)
        ]

    async def apply(self, split: TrafficSplit) -> None:
        """Set the weights for `split`, and return once HAProxy reports exactly them.

        Raises `RouterError` quoting HAProxy when it refuses a command or answers
        something unexpected. With `persist_config`, the config file is replaced only
        once the new weights are in force; with `verify`, a probe must see the split.
        """
        target = self.weights(split)
        wanted = dict(zip(self.servers, target.stable + target.canary, strict=True))
        async with loop_lock(self):
            started = time.perf_counter()
            before = await self.current_weights()
            staged = None if self.persist_config is None else await self._stage_config(wanted)
            try:
                # Rising weights first: never an instant with every server at 0.
                rising = [name for name in self.servers if wanted[name] > before[name]]
                falling = [name for name in self.servers if wanted[name] < before[name]]
                commands = [self._set_command(name, wanted[name]) for name in rising + falling]
                if commands:
                    await self._set(commands)
                after = await self.current_weights()
                if after != wanted:
                    raise RouterError(
                        f"HAProxy reports weights {after} in backend {self.backend} after "
                        f"setting {wanted}: something else changed them"
                    )
                if staged is not None:
                    await anyio.to_thread.run_sync(_commit, staged, self.persist_config)
                    staged = None
            finally:
                if staged is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(staged)
            self._applied = (split, target)
            self.last_apply_seconds = time.perf_counter() - started
        if self.verify is not None:
            probe = (
                self.verify if self.verify.converge else attrs.evolve(self.verify, converge=True)
            )
            await probe.check(split)

    async def read(self) -> TrafficSplit:
        """The split the servers' weights give now (see the module notes on read-back).

        Raises `RouterError` when every server has weight 0: HAProxy then serves nothing,
        which no split describes.
        """
        weights = await self.current_weights()
        if not any(weights.values()):
            raise RouterError(
                f"every server of backend {self.backend} has weight 0 "
                f"({', '.join(self.servers)}): HAProxy serves no request"
            )
        found = HAProxyWeights(
            stable=tuple(weights[name] for name in self.stable),
            canary=tuple(weights[name] for name in self.canary),
        )
        if self._applied is not None and self._applied[1] == found:
            return self._applied[0]
        exact = found.canary_percent
        for decimals in range(_SNAP_DECIMALS + 1):
            candidate = round(exact, decimals)
            if weights_for(candidate, len(self.stable), len(self.canary)) == found:
                return TrafficSplit(canary_percent=candidate)
        return TrafficSplit(canary_percent=exact)

    async def current_weights(self) -> dict[str, int]:
        """Every server's current weight, by name, from ``get weight``.

        Raises `RouterError` quoting HAProxy for an unknown backend or server.
        """
        commands = [self._get_command(name) for name in self.servers]
        weights: dict[str, int] = {}
        names = iter(self.servers)
        for batch in _batches(commands):
            answer = await self._exchange(batch)
            position = 0
            for command in batch:
                found = _GET_ANSWER.match(answer, position)
                if found is None or int(found.group(1)) > MAX_WEIGHT:
                    raise self._refused(_one_answer(answer, position), command)
                weights[next(names)] = int(found.group(1))
                position = found.end()
            if position != len(answer):
                raise self._refused(answer[position:], "; ".join(batch), what="more than")
        return weights

    def __repr__(self) -> str:
        return (
            f"HAProxyRouter(runtime_api={self.runtime_api!r}, backend={self.backend!r}, "
            f"stable={list(self.stable)!r}, canary={list(self.canary)!r})"
        )

    # -- the runtime API --

    # The only two command shapes sent. Backend and server names passed `check_name`, so
    # they hold no ';' (HAProxy's command separator), space, quote or line break.
    def _get_command(self, server: str) -> str:
        return f"get weight {self.backend}/{server}"

    def _set_command(self, server: str, weight: int) -> str:
        return f"set weight {self.backend}/{server} {weight}"

    async def _set(self, commands: Sequence[str]) -> None:
        for batch in _batches(commands):
            answer = await self._exchange(batch)
            # A successful `set weight` answers one empty line.
            position = 0
            for command in batch:
                if answer[position : position + 1] != "\n":
                    raise self._refused(
                        _one_answer(answer, position), command, after="; weights may be partly set"
                    )
                position += 1
            if position != len(answer):
                raise self._refused(answer[position:], "; ".join(batch), what="more than")

    def _refused(
        self, answer: str, command: str, *, after: str = "", what: str = "to"
    ) -> RouterError:
        return RouterError(
            f"HAProxy's runtime API at {self.runtime_api} answered {_quote(answer)} "
            f"{what} {command!r}{after}"
        )

    async def _connect(self) -> anyio.abc.ByteStream:
        kind, host, port = self._endpoint
        if kind == "unix":
            return await anyio.connect_unix(host)
        return await anyio.connect_tcp(host, port)

    async def _exchange(self, commands: Sequence[str]) -> str:
        """Send `commands` as one command line through `send`; HAProxy's whole answer."""
        return await self.send("; ".join(commands))

    async def send(self, line: str) -> str:
        r"""Send one runtime-API command line and return HAProxy's whole answer to it.

        Override point (where the commands go): a subclass sends the line through another
        transport (``ssh HOST socat stdio SOCKET``, an agent, an HTTP bridge) and returns
        the answer text as the runtime API gives it; see docs/custom_router.md. `line` is
        one or more commands joined by ``"; "``, without the final newline: ``get weight
        BACKEND/SERVER`` (answered ``"W (initial I)\n\n"``) and ``set weight
        BACKEND/SERVER W`` (answered ``"\n"``). Raise `RouterError` when it cannot be sent.

        The default connects to `runtime_api` (one connection per line, non-interactive
        mode) and reads until HAProxy closes it, within `timeout` and at most 1 MiB.
        """
        line += "\n"
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.timeout):
                stream = await self._connect()
                async with stream:
                    await stream.send(line.encode("ascii"))
                    while True:
                        try:
                            chunk = await stream.receive(65536)
                        except anyio.EndOfStream:
                            break
                        size += len(chunk)
                        if size > _MAX_ANSWER:
                            raise RouterError(
                                f"HAProxy's runtime API at {self.runtime_api} answered more "
                                f"than {_MAX_ANSWER} bytes to {line.strip()!r}"
                            )
                        chunks.append(chunk)
        except TimeoutError:
            raise RouterError(
                f"HAProxy's runtime API at {self.runtime_api} did not answer "
                f"{line.strip()!r} within {self.timeout:g} s"
            ) from None
        except (OSError, anyio.BrokenResourceError) as exc:
            raise RouterError(
                f"cannot talk to HAProxy's runtime API at {self.runtime_api}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return b"".join(chunks).decode("utf-8", errors="replace")

    # -- the config file --

    async def _stage_config(self, wanted: Mapping[str, int]) -> str:
        """Write the config with `wanted` beside it and check it; the temporary file's path."""
        assert self.persist_config is not None
        path = self.persist_config
        staged = await anyio.to_thread.run_sync(_stage, path, self.backend, wanted)
        try:
            binary = router_binary(self.haproxy, "haproxy", "haproxy")
            try:
                with anyio.fail_after(self.timeout):
                    result = await anyio.run_process([binary, "-c", "-f", staged], check=False)
            except TimeoutError:
                raise RouterError(f"haproxy -c did not finish within {self.timeout:g} s") from None
            except OSError as exc:
                raise RouterError(f"haproxy -c could not run: {exc}") from None
            if result.returncode != 0:
                output = (result.stdout + result.stderr).decode(errors="replace")
                lines = [line.strip() for line in output.splitlines() if line.strip()]
                alerts = [line for line in lines if "ALERT" in line] or lines
                raise RouterError(
                    f"haproxy -c refused {path} with the new weights; nothing changed: "
                    f"{' | '.join(alerts[:5]) or '(no message)'}"
                )
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            raise
        return staged


def _stage(path: Path, backend: str, wanted: Mapping[str, int]) -> str:
    """Write `path` with the new weights to a synced temporary file beside it."""
    # Not through a symbolic link (it would be replaced by a file), nor from a FIFO,
    # whose read would block a thread no timeout can stop.
    raw = _read_regular(path, "the config file", _MAX_CONFIG_BYTES)
    if raw is None:
        raise RouterError(f"cannot read the config file {path}: it does not exist")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise RouterError(f"cannot read the config file {path}: {exc.strerror or exc}") from None
    # surrogateescape: bytes that are not UTF-8 come back out unchanged.
    text = raw.decode("utf-8", errors="surrogateescape")
    try:
        new = rewrite_weights(text, backend, wanted)
    except RouterError as exc:
        raise RouterError(f"cannot write the weights into {path}: {exc}") from None
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise RouterError(f"cannot write beside {path}: {exc}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(new.encode("utf-8", errors="surrogateescape"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise RouterError(f"cannot write beside {path}: {exc}") from None
        raise
    return temporary


def _commit(staged: str, path: Path | None) -> None:
    """Rename the checked temporary file over the config file, and sync the directory."""
    assert path is not None
    try:
        os.replace(staged, path)
    except OSError as exc:
        raise RouterError(
            f"the weights are in force but {path} could not be replaced: {exc}"
        ) from None
    # The rename itself is durable only once the directory is synced.
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
