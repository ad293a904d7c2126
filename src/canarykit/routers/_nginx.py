r"""A traffic router for nginx: one include file with the upstreams, validated, then reloaded.

How this works. `NginxRouter` owns one file, included inside ``http { }`` of the user's
nginx.conf. For a split it renders, from scratch:

- ``upstream canarykit_split``: every stable and canary server with integer weights in
  the split's ratio (smooth weighted round-robin, so sequential requests split exactly);
  an arm at 0% is marked ``down`` (nginx weights are at least 1);
- ``upstream canarykit_stable`` and ``upstream canarykit_canary``: each arm alone;
- a chain of ``map`` blocks ending in ``$canarykit_upstream``: ``canarykit_canary`` for a
  request whose header matches a header route, else ``canarykit_split``;
- ``split_clients`` on ``$request_id`` into ``$canarykit_mirror`` and, when the split
  mirrors, ``mirror /_canarykit_mirror;``.

Applying writes the file atomically (a temporary file in the same directory, fsync,
rename), runs ``nginx -T`` on the main config (which also shows that the main config
really includes the file and proxies through ``$canarykit_upstream``), puts the old
file back and raises `RouterError` quoting nginx when that fails, and otherwise
reloads the master (SIGHUP to the pid file's process, or ``nginx -s reload``). A reload
is asynchronous: the master starts new workers, sleeps 100 ms ("allow new processes to
start", ngx_process_cycle.c) and only then tells the old workers to stop accepting. So
`apply` returns once every old worker is gone or titled "worker process is shutting
down" and a new worker runs: from then on every new connection gets the new split.
The first line of the file records the split as JSON; `read` parses the file strictly
and re-renders it, so a file changed by anyone else is an error, never a guess.

The include contract (the prefix ``canarykit`` is the router's `name`)::

    http {
        include /etc/nginx/canary.conf;              # the router's include_path
        server {
            location / {
                proxy_pass http://$canarykit_upstream;
            }
            location = /_canarykit_mirror {          # only if a plan mirrors
                internal;
                if ($canarykit_mirror = "") { return 204; }
                proxy_pass http://canarykit_canary$request_uri;
            }
        }
    }

`NginxRouter.render_main_config` writes a complete example. The router's own names
(``canarykit_split``, ``canarykit_stable``, ``canarykit_canary``, ``$canarykit_upstream``,
``$canarykit_mirror``, ``$canarykit_route_N``) must not be used for anything else. A
``mirror`` directive of the user's own in a server or location overrides the router's.

Header routes. Each route is a PCRE that matches what `HeaderRoute.matches` does: a
full, case-sensitive match (exact and prefix values are escaped and anchored; nginx's
plain map keys would compare case-insensitively). Regexes are checked by Python's `re`
first and then by nginx's PCRE in ``nginx -T``, which refuses some of what Python takes
(``\u0041``, ``\N{...}``) and takes some of what Python refuses (variable-width
lookbehind, possessive quantifiers before Python 3.11). PCRE here is byte-based: ``\w``
and ``.`` see bytes, not Unicode characters. A refused regex leaves the old file.

Mirroring. ``mirror`` copies every request; the share comes from ``split_clients`` on
``$request_id`` (random per request, so the mirrored share is binomial, not exact), and
the mirror location answers 204 without proxying for the requests not chosen. Shares keep
2 decimals (split_clients' precision); a finer share is refused. Mirrored copies go to
the canary whichever arm served the original.

Weights are balanced per nginx worker: with several workers, each keeps its own smooth
round-robin, so an exact split holds per worker (and within one request per worker in
total). Passive health checks (``max_fails``) take a failing server out for a while,
which shifts the split.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread
import attrs

from .._binaries import router_binary
from .._errors import ConfigError, FileRefusedError, RouterError
from .._files import read_regular
from .._looplock import loop_lock
from .._protocols import RouterCapabilities
from .._safe import check_address, check_name, check_pattern
from .._split import STABLE_ONLY, HeaderMatch, HeaderRoute, TrafficSplit
from .._validate import finite
from ._probe import SplitProbe

__all__ = ["NginxRouter"]

FORMAT = 1
_BANNER = "# Written by canarykit's NginxRouter. Do not edit: read-back refuses a changed file."
# Weights keep micro-percents: plans round their percents to 6 decimals.
_PER_PERCENT = 10**6
_WHOLE = 100 * _PER_PERCENT
# nginx's split_clients reads percents with 2 decimals (ngx_atofp(..., 2)).
_MIRROR_DECIMALS = 2
# nginx variable names are letters, digits and `_`; `$http_x_y` reads header `X-Y`.
_VARIABLE_PART = re.compile(r"[A-Za-z0-9_]+")
_HEADER_FOR_NGINX = re.compile(r"[A-Za-z0-9-]+")
# Characters that must not reach an nginx path argument (quoted or not).
_NOT_IN_PATH = frozenset("\"'`\\;{}$#")
_PROC = Path("/proc")
MAX_INCLUDE_BYTES = 4 * 1024 * 1024
"""The largest include file `NginxRouter` reads; its own files are a few kilobytes."""
_MAX_PID_BYTES = 64
_WORKER_TITLE = "nginx: worker process"
_SHUTTING_DOWN = "is shutting down"


def _check_path(field: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(field, value, "must be a path")
    text = os.fspath(value)
    if not isinstance(text, str) or not text or not text.isprintable():
        raise ConfigError(field, value, "must be a printable path")
    if any(char in _NOT_IN_PATH or char.isspace() for char in text):
        raise ConfigError(
            field, value, "must not contain spaces, quotes, ';', '{', '}', '$' or '#'"
        )
    return Path(text).absolute()


def _check_servers(field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(field, value, "must be a non-empty list of 'host:port' addresses")
    servers = tuple(check_address(f"{field}[{i}]", item) for i, item in enumerate(value))
    for i, server in enumerate(servers):
        if server in servers[:i]:
            raise ConfigError(f"{field}[{i}]", server, "is listed twice")
    return servers


def _quote(text: str) -> str:
    """`text` in double quotes for nginx, whose parser reads two backslashes as one."""
    return '"' + text.replace("\\", "\\\\") + '"'


@attrs.frozen
class _Names:
    """The names a router writes, all derived from its `name`."""

    name: str

    @property
    def split(self) -> str:
        return f"{self.name}_split"

    @property
    def stable(self) -> str:
        return f"{self.name}_stable"

    @property
    def canary(self) -> str:
        return f"{self.name}_canary"

    @property
    def upstream_variable(self) -> str:
        return f"${self.name}_upstream"

    @property
    def mirror_variable(self) -> str:
        return f"${self.name}_mirror"

    @property
    def mirror_location(self) -> str:
        return f"/_{self.name}_mirror"

    def route_variable(self, index: int) -> str:
        return self.upstream_variable if index == 0 else f"${self.name}_route_{index}"


def weights_for(
    percent: float, stable_servers: int = 1, canary_servers: int = 1
) -> tuple[int, int]:
    """Per-server nginx weights (stable, canary) for `percent` on the canary; 0 means down.

    The ratio is exact to a micro-percent: each arm's total weight is its share in
    millionths of a percent, spread evenly over the arm's servers, then reduced by the
    greatest common divisor. nginx 1.22 sets no maximum weight (it reads it with
    `ngx_atoi`), and the smooth round-robin's cost does not depend on the weights.

    >>> weights_for(10)
    (9, 1)
    >>> weights_for(0.5)
    (199, 1)
    >>> weights_for(33.3)
    (667, 333)
    >>> weights_for(10, stable_servers=3, canary_servers=2)
    (6, 1)
    >>> weights_for(0), weights_for(100)
    ((1, 0), (0, 1))
    """
    share = round(finite("canary_percent", percent) * _PER_PERCENT)
    if not 0 <= share <= _WHOLE:
        raise ConfigError("canary_percent", percent, "must be in [0, 100]")
    for field, count in (("stable_servers", stable_servers), ("canary_servers", canary_servers)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(field, count, "must be a positive integer")
    # Arm totals in the ratio (100% - p) : p, each divisible by its number of servers.
    stable_each = (_WHOLE - share) * canary_servers
    canary_each = share * stable_servers
    common = math.gcd(stable_each, canary_each)
    return stable_each // common, canary_each // common


def _header_variable(index: int, route: HeaderRoute) -> str:
    if not _HEADER_FOR_NGINX.fullmatch(route.header):
        raise ConfigError(
            f"header_routes[{index}].header",
            route.header,
            "nginx matches only header names of letters, digits and '-' "
            "(it drops headers with '_' by default)",
        )
    return "$http_" + route.header.lower().replace("-", "_")


def _header_regex(index: int, route: HeaderRoute) -> str:
    """A PCRE that matches exactly what `route.matches` does (a full, case-sensitive match)."""
    check_pattern(f"header_routes[{index}].value", route.value)
    if route.match is HeaderMatch.EXACT:
        # Not nginx's plain string keys: map compares those case-insensitively.
        regex = "^" + re.escape(route.value) + "$"
    elif route.match is HeaderMatch.PREFIX:
        regex = "^" + re.escape(route.value)
    else:
        if re.compile(route.value).groupindex:
            # nginx makes a variable of every named capture in a map's regex, which could
            # overwrite one of the router's own ($canarykit_upstream) or the user's.
            raise ConfigError(
                f"header_routes[{index}].value",
                route.value,
                "must not name a group for nginx (it makes a variable of it); use (?:...)",
            )
        regex = "^(?:" + route.value + ")$"
    return check_pattern(f"header_routes[{index}].value", "~" + regex)


def _mirror_percent(percent: float) -> str:
    text = f"{percent:.{_MIRROR_DECIMALS}f}".rstrip("0").rstrip(".")
    if abs(float(text) - percent) > 1e-9:
        raise ConfigError(
            "mirror_percent",
            percent,
            f"nginx's split_clients keeps {_MIRROR_DECIMALS} decimals; round it",
        )
    return text


def _render(
    names: _Names, stable: Sequence[str], canary: Sequence[str], split: TrafficSplit
) -> str:
    stable_weight, canary_weight = weights_for(split.canary_percent, len(stable), len(canary))
    record = json.dumps(split.to_json(), sort_keys=True, separators=(",", ":"))
    lines = [
        _BANNER,
        f"# canarykit-nginx format={FORMAT} name={names.name}",
        f"# split={record}",
        f"# canary {split.canary_percent:g}%: weight {stable_weight} per stable server, "
        f"{canary_weight} per canary server",
    ]

    def server(address: str, weight: int) -> str:
        return f"    server {address} weight={weight};" if weight else f"    server {address} down;"

    lines.append(f"upstream {names.split} {{")
    lines += [server(address, stable_weight) for address in stable]
    lines += [server(address, canary_weight) for address in canary]
    lines.append("}")
    for upstream, servers in ((names.stable, stable), (names.canary, canary)):
        lines.append(f"upstream {upstream} {{")
        lines += [f"    server {address};" for address in servers]
        lines.append("}")
    routes = split.header_routes
    if not routes:
        lines += [f'map "" {names.upstream_variable} {{', f"    default {names.split};", "}"]
    for index, route in enumerate(routes):
        otherwise = names.route_variable(index + 1) if index + 1 < len(routes) else names.split
        lines += [
            f"map {_header_variable(index, route)} {names.route_variable(index)} {{",
            f"    {_quote(_header_regex(index, route))} {names.canary};",
            f"    default {otherwise};",
            "}",
        ]
    mirror = split.mirror_percent
    lines.append(f'split_clients "${{request_id}}" {names.mirror_variable} {{')
    if 0 < mirror < 100:
        lines.append(f"    {_mirror_percent(mirror)}% 1;")
    lines.append("    * 1;" if mirror == 100 else '    * "";')
    lines.append("}")
    if mirror > 0:
        lines.append(f"mirror {names.mirror_location};")
    return "\n".join(lines) + "\n"


# The file's grammar, line by line. Anything else is a foreign edit.
_HEAD = re.compile(rf"# canarykit-nginx format=(\d+) name=({_VARIABLE_PART.pattern})")
_SPLIT = re.compile(r"# split=(\{.*\})")
_UPSTREAM = re.compile(r"upstream ([A-Za-z0-9_]+) \{")
_SERVER = re.compile(r"    server (\S+?)(?: weight=([1-9][0-9]*)| down)?;")
_BLOCK = re.compile(
    r'(?:map \S+ \$[A-Za-z0-9_]+|split_clients "\$\{request_id\}" \$[A-Za-z0-9_]+) \{'
)
_ENTRY = re.compile(r'    (?:"[^"]*"|\S+) \S+;')
_MIRROR = re.compile(r"mirror \S+;")


def _parse(
    text: str, *, path: str = "the include file"
) -> tuple[str, tuple[str, ...], tuple[str, ...], TrafficSplit]:
    """(name, stable servers, canary servers, split) from a file `_render` wrote, or RouterError."""

    def refuse(line: int, problem: str) -> RouterError:
        return RouterError(
            f"{path} is not canarykit's (edited by hand?): line {line}: {problem}; "
            "`canarykit init POLICY --force` keeps it aside and writes one at stable"
        )

    lines = text.split("\n")
    if not text.endswith("\n") or len(lines) < 4:
        raise refuse(1, "the file is truncated")
    if lines[0] != _BANNER:
        # Not a file canarykit wrote: nothing of it is shown (a symlink planted at the
        # include path may point at secrets).
        raise RouterError(
            f"{path} is not canarykit's: its first line is not canarykit's banner "
            "(its contents are not shown)"
        )
    head = _HEAD.fullmatch(lines[1])
    if head is None or int(head.group(1)) != FORMAT:
        raise refuse(
            2, f"expected '# canarykit-nginx format={FORMAT} name=...', found {lines[1][:80]!r}"
        )
    names = _Names(head.group(2))
    record = _SPLIT.fullmatch(lines[2])
    if record is None:
        raise refuse(3, "expected '# split={...}'")
    try:
        split = TrafficSplit.from_json(json.loads(record.group(1)))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise refuse(3, f"the recorded split is invalid: {exc}") from None
    upstreams: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_block = False
    for number, line in enumerate(lines[4:-1], start=5):
        if current is not None or in_block:
            if line == "}":
                current, in_block = None, False
            elif current is not None and (server := _SERVER.fullmatch(line)):
                current.append(server.group(1))
            elif in_block and _ENTRY.fullmatch(line):
                pass
            else:
                raise refuse(number, f"unexpected {line[:80]!r}")
        elif upstream := _UPSTREAM.fullmatch(line):
            current = upstreams.setdefault(upstream.group(1), [])
        elif _BLOCK.fullmatch(line):
            in_block = True
        elif not _MIRROR.fullmatch(line):
            raise refuse(number, f"unexpected {line[:80]!r}")
    if current is not None or in_block:
        raise refuse(len(lines) - 1, "a block is not closed")
    if names.stable not in upstreams or names.canary not in upstreams:
        raise refuse(5, f"upstreams {names.stable} and {names.canary} are missing")
    stable, canary = tuple(upstreams[names.stable]), tuple(upstreams[names.canary])
    try:
        expected = _render(names, stable, canary, split)
    except ConfigError as exc:
        raise refuse(3, f"the recorded split cannot be rendered: {exc}") from None
    if expected != text:
        want = expected.split("\n")
        for number, (found, wanted) in enumerate(zip(lines, want, strict=False), start=1):
            if found != wanted:
                raise refuse(number, f"found {found[:80]!r}, canarykit writes {wanted[:80]!r}")
        raise refuse(min(len(lines), len(want)), "the file has extra or missing lines")
    return names.name, stable, canary, split


class NginxRouter:
    """Drive an nginx upstream through one include file that this router owns.

    >>> from canarykit import TrafficSplit
    >>> from canarykit.routers import NginxRouter
    >>> router = NginxRouter(
    ...     include_path="/etc/nginx/canary.conf",
    ...     main_config="/etc/nginx/nginx.conf",
    ...     pid_file="/run/nginx.pid",
    ...     stable=["10.0.0.1:8080", "10.0.0.2:8080"],
    ...     canary=["10.0.0.3:8080"],
    ... )
    >>> print(router.render(TrafficSplit(canary_percent=10)))  # doctest: +ELLIPSIS
    # Written by canarykit's NginxRouter. Do not edit: read-back refuses a changed file.
    ...
    upstream canarykit_split {
        server 10.0.0.1:8080 weight=9;
        server 10.0.0.2:8080 weight=9;
        server 10.0.0.3:8080 weight=2;
    }
    ...

    - `include_path`: the file this router owns (included inside ``http { }``).
    - `main_config`, `prefix`: the nginx.conf that includes it and nginx's prefix, as
      given to nginx (``nginx -p PREFIX -c MAIN_CONFIG``) for validation and reloads.
    - `pid_file`: the master's pid file (the ``pid`` directive).
    - `stable`, `canary`: the servers of each arm (``host:port``, ``[v6]:port`` or
      ``unix:/path``); weight is spread evenly over an arm's servers.
    - `name`: prefix of every upstream and variable written (letters, digits, `_`).
    - `nginx`: the nginx binary (found on PATH and in sbin when None).
    - `reload`: ``"signal"`` sends SIGHUP to the pid file's process (checked to be an
      nginx master); ``"command"`` runs ``nginx -s reload``.
    - `timeout`: seconds allowed for each step (validation, reload, switch-over).
    - `verify`: a `SplitProbe` sent through nginx after each apply; the apply fails with
      the numbers when the observed split is outside its tolerance.

    Precision: canary percents keep 6 decimals (micro-percents), the mirrored percent 2
    (nginx's split_clients). One router serves one event loop; applies do not overlap.
    """

    def __init__(
        self,
        *,
        include_path: str | os.PathLike[str],
        main_config: str | os.PathLike[str],
        pid_file: str | os.PathLike[str],
        stable: Sequence[str],
        canary: Sequence[str],
        prefix: str | os.PathLike[str] | None = None,
        name: str = "canarykit",
        nginx: str | None = None,
        reload: Literal["signal", "command"] = "signal",
        timeout: float = 10.0,
        verify: SplitProbe | None = None,
    ) -> None:
        self.include_path = _check_path("include_path", include_path)
        self.main_config = _check_path("main_config", main_config)
        self.pid_file = _check_path("pid_file", pid_file)
        self.prefix = None if prefix is None else _check_path("prefix", prefix)
        self.stable = _check_servers("stable", stable)
        self.canary = _check_servers("canary", canary)
        for index, address in enumerate(self.canary):
            if address in self.stable:
                raise ConfigError(f"canary[{index}]", address, "is also a stable server")
        check_name("name", name)
        if not _VARIABLE_PART.fullmatch(name):
            raise ConfigError("name", name, "must be letters, digits and '_' (nginx variables)")
        self.name = name
        if nginx is not None:
            _check_path("nginx", nginx)
        self.nginx = nginx
        if reload not in ("signal", "command"):
            raise ConfigError("reload", reload, "must be 'signal' or 'command'")
        self.reload: Literal["signal", "command"] = reload
        if finite("timeout", timeout) <= 0:
            raise ConfigError("timeout", timeout, "must be a positive number of seconds")
        self.timeout = float(timeout)
        if verify is not None and not isinstance(verify, SplitProbe):
            raise ConfigError("verify", verify, "must be a SplitProbe or None")
        self.verify = verify
        self._names = _Names(name)
        self.last_apply_seconds: float | None = None
        # How far the current apply's default `reload` got (one apply at a time).
        self._progress = _Reload()

    @property
    def capabilities(self) -> RouterCapabilities:
        """Weights, header routes, mirroring and read-back."""
        return RouterCapabilities(weights=True, header_routes=True, mirroring=True, read_back=True)

    @property
    def traffic_target(self) -> str:
        """What this router controls: ``nginx:`` and the include file's resolved path.

        Two routers on one include file (through any symbolic links in its folders) have
        the same target, so a rollout's lease keeps a second runner off it.
        """
        return f"nginx:{os.path.realpath(self.include_path)}"

    def check_split(self, split: TrafficSplit) -> None:
        """Raise `ConfigError` for a split `apply` would refuse (what `render` refuses).

        A rollout calls it for every split of its plan before traffic moves.
        """
        self.render(split)

    weights_for = staticmethod(weights_for)

    def render(self, split: TrafficSplit) -> str:
        """The include file for `split`; raises `ConfigError` for what nginx cannot express."""
        if not isinstance(split, TrafficSplit):
            raise ConfigError("split", split, "must be a TrafficSplit")
        return _render(self._names, self.stable, self.canary, split)

    def parse(self, text: str) -> TrafficSplit:
        """The split in a file this router wrote; `RouterError` for anything else."""
        name, stable, canary, split = _parse(text, path=str(self.include_path))
        if (name, stable, canary) != (self.name, self.stable, self.canary):
            raise RouterError(
                f"{self.include_path} was written for name={name}, stable={list(stable)}, "
                f"canary={list(canary)}; this router has name={self.name}, "
                f"stable={list(self.stable)}, canary={list(self.canary)}"
            )
        return split

    def write(self, split: TrafficSplit = STABLE_ONLY) -> None:
        """Write the include file for `split` without validating or reloading.

        For the first start of nginx, which needs the file to exist; use `apply` after.
        """
        _write_atomically(self.include_path, self.render(split))

    async def apply(self, split: TrafficSplit) -> None:
        """Write, validate, reload and wait until the new workers serve `split`.

        On a validation failure the previous file is put back and nginx is not reloaded.
        If the master starts no new workers within `timeout` (it refused the new
        configuration), the previous file is put back too. Both raise `RouterError`
        saying why. Once new workers run (or when cancelled after the reload signal),
        the new file stays: it is what nginx serves, so that `read` stays truthful.

        The steps are methods a subclass may override (see docs/custom_router.md):
        `render`, then `read_text` (the file to put back on failure), `deliver`,
        `validate`, `reload_nginx`; `read` parses what `read_text` returns. An override's
        `RouterError` fails the apply (the runner retries it), its `ConfigError` is
        never retried; on a failure before the reload took effect, `deliver` puts the
        previous text back.
        """
        text = self.render(split)
        async with loop_lock(self):
            started = time.perf_counter()
            previous = await self.read_text()
            await self.deliver(text)
            progress = self._progress = _Reload()
            try:
                await self.validate(split)
                await self.reload_nginx()
            except BaseException as exc:
                cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
                if not (progress.new_workers or (progress.signalled and cancelled)):
                    with anyio.CancelScope(shield=True):
                        await self.deliver(previous)
                        if progress.resignal is not None:
                            with contextlib.suppress(OSError):
                                os.kill(progress.resignal, signal.SIGHUP)
                raise
            self.last_apply_seconds = time.perf_counter() - started
        if self.verify is not None:
            await self.verify.check(split)

    async def read(self) -> TrafficSplit | None:
        """The split in the include file (in force once `apply` returned), or `RouterError`.

        None when the file does not exist yet. The text comes from `read_text`.
        """
        text = await self.read_text()
        return None if text is None else self.parse(text)

    # -- override points: the steps of apply, each replaceable by a subclass --

    async def read_text(self) -> str | None:
        """The include file's text as it is now, or None when there is none.

        Override point (read back): a subclass whose file lives elsewhere fetches it
        here. The default reads `include_path` through ``canarykit._files`` (no link,
        FIFO or device followed; at most `MAX_INCLUDE_BYTES`); `RouterError` when the
        file cannot be read or is not UTF-8 text.
        """
        return await anyio.to_thread.run_sync(self._read_text)

    async def deliver(self, text: str | None) -> None:
        """Make the include file hold `text`; None removes it (there was none before).

        Override point (deliver the file): a subclass sends it to its hosts here. The
        default replaces `include_path` atomically (temporary file, fsync, rename; a
        symbolic link is refused). `apply` calls it with the new text, and with the
        previous text (from `read_text`) to put it back when the apply fails. A
        `deliver` that raises has its own changes to undo: `apply` puts nothing back
        then (a delivery to several hosts that stops part way is overwritten by the
        next apply, which the runner makes; until then `read_text` should refuse).
        """
        await anyio.to_thread.run_sync(self._deliver_local, text)

    async def validate(self, split: TrafficSplit) -> None:
        """Check the delivered file before nginx reloads it; `RouterError` saying why not.

        Override point (validate). The default runs ``nginx -T`` on `main_config` within
        `timeout` and checks that it includes the file, proxies through the router's
        upstream variable and, when `split` mirrors, has the mirror location.
        """
        binary = router_binary(self.nginx, "nginx", "nginx-light")
        await self._validate(binary, split)

    async def reload_nginx(self) -> None:
        """Make nginx serve the delivered file; return once new connections get it.

        Override point (reload): a subclass runs ``systemctl reload nginx`` or calls an
        API here, and raises `RouterError` when the reload failed (`apply` then puts the
        previous file back). The default, as the `reload` setting says, signals the
        master (or runs ``nginx -s reload``) and waits, at most `timeout`, until every
        old worker is gone or shutting down and a new worker runs.
        """
        binary = router_binary(self.nginx, "nginx", "nginx-light")
        await self._reload_and_wait(binary, self._progress)

    async def initialize(self, *, force: bool = False) -> str:
        """Make the starting state: the include file with all traffic on stable; what was done.

        For ``canarykit init``. A file this router wrote is rewritten at stable (a no-op
        when it is already there); a missing one is written. When nginx runs (its pid
        file exists) this is `apply`: validated by ``nginx -T``, reloaded. When it does
        not, the file is written and validated, and nginx serves it when started. A file
        canarykit did not write is refused (`RouterError`, saying what it holds without
        quoting it) unless `force`: then it is kept aside, readable by this user only, as
        ``<include>.before-canarykit``, and replaced.
        """
        data = await anyio.to_thread.run_sync(
            _read_regular, self.include_path, "the include file", MAX_INCLUDE_BYTES
        )
        kept = ""
        if data is not None:
            try:
                current: TrafficSplit | None = self.parse(data.decode("utf-8"))
            except (UnicodeDecodeError, RouterError):
                current = None
            if current is None:
                if not force:
                    raise RouterError(
                        f"{self.include_path} {self._whose(data)}; canarykit init leaves it "
                        "alone: move it away, or replace it with --force (it is kept aside "
                        "first)"
                    )
                backup = self.include_path.with_name(f"{self.include_path.name}.before-canarykit")
                await anyio.to_thread.run_sync(_keep_aside, backup, data)
                kept = f"; the file that was there is kept as {backup}"
            elif current.is_stable_only:
                binary = router_binary(self.nginx, "nginx", "nginx-light")
                await self._validate(binary, STABLE_ONLY)
                return f"{self.include_path} already sends all traffic to stable (nginx -T: ok)"
        text = self.render(STABLE_ONLY)
        if os.path.lexists(self.pid_file):
            await self.apply(STABLE_ONLY)
            return (
                f"wrote {self.include_path} with all traffic on stable, validated by nginx -T "
                f"and reloaded{kept}"
            )
        async with loop_lock(self):
            binary = router_binary(self.nginx, "nginx", "nginx-light")
            previous = await anyio.to_thread.run_sync(self._swap_in_raw, text)
            try:
                await self._validate(binary, STABLE_ONLY)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._restore_raw, previous)
                raise
        return (
            f"wrote {self.include_path} with all traffic on stable, validated by nginx -T; "
            f"nginx is not running (no {self.pid_file}): it serves this file once started{kept}"
        )

    def _whose(self, data: bytes) -> str:
        """What a file this router cannot use is: canarykit's for other settings, or not ours."""
        try:
            name, stable, canary, _ = _parse(data.decode("utf-8"), path=str(self.include_path))
        except (UnicodeDecodeError, RouterError):
            return f"is not canarykit's: {_describe_foreign(data)}"
        # Intact and canarykit's own (its contents are canarykit's, safe to name).
        return (
            f"was written by canarykit for other settings (name={name}, stable={list(stable)}, "
            f"canary={list(canary)}; this policy has name={self.name}, "
            f"stable={list(self.stable)}, canary={list(self.canary)})"
        )

    def _swap_in_raw(self, text: str) -> bytes | None:
        previous = _read_regular(self.include_path, "the include file", MAX_INCLUDE_BYTES)
        try:
            _write_atomically(self.include_path, text)
        except OSError as exc:
            raise RouterError(f"cannot write {self.include_path}: {exc}") from None
        return previous

    def _restore_raw(self, previous: bytes | None) -> None:
        if previous is None:
            with contextlib.suppress(FileNotFoundError):
                self.include_path.unlink()
        else:  # byte for byte, whatever it holds; readable by nginx as before
            _keep_aside(self.include_path, previous)
            with contextlib.suppress(OSError):
                os.chmod(self.include_path, 0o644)

    def render_main_config(
        self,
        *,
        listen: str = "127.0.0.1:8080",
        directory: str | os.PathLike[str] | None = None,
        foreground: bool = False,
        worker_processes: int | Literal["auto"] = "auto",
    ) -> str:
        """A complete nginx.conf that follows the include contract, for a start or a test.

        `directory` holds the error log and nginx's temporary files (default: the include
        file's directory); `foreground` adds ``daemon off;`` for a supervised process.
        """
        check_address("listen", listen)
        if listen.startswith("unix:"):
            raise ConfigError("listen", listen, "must be 'host:port' (a TCP listener)")
        folder = (
            self.include_path.parent if directory is None else _check_path("directory", directory)
        )
        if worker_processes != "auto" and (
            isinstance(worker_processes, bool)
            or not isinstance(worker_processes, int)
            or worker_processes < 1
        ):
            raise ConfigError("worker_processes", worker_processes, "must be 'auto' or >= 1")
        names = self._names
        temp = "\n".join(
            f"    {kind}_temp_path {_quote(str(folder / f'{kind}_temp'))};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            f"# nginx.conf for canarykit's NginxRouter (the include contract).\n"
            f"{'daemon off;' if foreground else ''}\n"
            f"worker_processes {worker_processes};\n"
            f"pid {_quote(str(self.pid_file))};\n"
            f"error_log {_quote(str(folder / 'error.log'))} notice;\n"
            f"events {{\n    worker_connections 1024;\n}}\n"
            f"http {{\n"
            f"    access_log off;\n"
            f"{temp}\n"
            f"    # 1. The router's file: upstreams, header-route maps, the mirror switch.\n"
            f"    include {_quote(str(self.include_path))};\n"
            f"    server {{\n"
            f"        listen {listen};\n"
            f"        location / {{\n"
            f"            # 2. Proxy to the upstream the router picks for each request.\n"
            f"            proxy_pass http://{names.upstream_variable};\n"
            f"        }}\n"
            f"        # 3. Only for mirroring: where mirrored copies of requests go.\n"
            f"        location = {names.mirror_location} {{\n"
            f"            internal;\n"
            f'            if ({names.mirror_variable} = "") {{\n'
            f"                return 204;\n"
            f"            }}\n"
            f"            proxy_pass http://{names.canary}$request_uri;\n"
            f"        }}\n"
            f"    }}\n"
            f"}}\n"
        )

    def __repr__(self) -> str:
        return (
            f"NginxRouter(include_path={str(self.include_path)!r}, stable={list(self.stable)!r}, "
            f"canary={list(self.canary)!r}, name={self.name!r})"
        )

    # -- the steps of apply --

    def _nginx_argv(self, binary: str, *args: str) -> list[str]:
        argv = [binary]
        if self.prefix is not None:
            argv += ["-p", str(self.prefix)]
        return [*argv, "-c", str(self.main_config), *args]

    def _read_text(self) -> str | None:
        data = _read_regular(self.include_path, "the include file", MAX_INCLUDE_BYTES)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise RouterError(
                f"{self.include_path} is not canarykit's: it is not UTF-8 text "
                "(its contents are not shown)"
            ) from None

    def _swap_in(self, text: str) -> str | None:
        """Deliver `text` locally; the text it replaced (benchmarks/nginx.py times this)."""
        previous = self._read_text()
        self._deliver_local(text)
        return previous

    def _deliver_local(self, text: str | None) -> None:
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                self.include_path.unlink()
            return
        try:
            _write_atomically(self.include_path, text)
        except OSError as exc:
            raise RouterError(f"cannot write {self.include_path}: {exc}") from None

    async def _run(self, argv: list[str], what: str) -> tuple[int, str, str]:
        try:
            with anyio.fail_after(self.timeout):
                result = await anyio.run_process(argv, check=False)
        except TimeoutError:
            raise RouterError(f"{what} did not finish within {self.timeout:g} s") from None
        except OSError as exc:
            raise RouterError(f"{what} could not run: {exc}") from None
        return (
            result.returncode,
            result.stdout.decode(errors="replace"),
            result.stderr.decode(errors="replace"),
        )

    async def _validate(self, binary: str, split: TrafficSplit) -> None:
        code, dump, messages = await self._run(self._nginx_argv(binary, "-T"), "nginx -T")
        if code != 0:
            raise RouterError(
                f"nginx refused the configuration, kept the previous {self.include_path.name}: "
                f"{_quote_nginx(messages)}"
            )
        files = _config_files(dump)
        mine = os.path.realpath(self.include_path)
        if not any(os.path.realpath(path) == mine for path in files):
            raise RouterError(
                f"{self.main_config} does not include {self.include_path}: add "
                f"'include {self.include_path};' inside http {{ }}"
            )
        others = "\n".join(body for path, body in files.items() if os.path.realpath(path) != mine)
        names = self._names
        if names.upstream_variable not in others:
            raise RouterError(
                f"nothing in {self.main_config} proxies through {names.upstream_variable}: the "
                f"proxying location needs 'proxy_pass http://{names.upstream_variable};'"
            )
        location = re.compile(rf"location\s+=\s*{re.escape(names.mirror_location)}\s*\{{")
        if split.mirror_percent > 0 and not location.search(others):
            raise RouterError(
                f"mirroring needs 'location = {names.mirror_location} {{ ... }}' in the server "
                f"block (see NginxRouter.render_main_config)"
            )

    async def _reload_and_wait(self, binary: str, progress: _Reload) -> None:
        master = await anyio.to_thread.run_sync(self._master_pid)
        before = await anyio.to_thread.run_sync(_children, master)
        old_workers = {
            pid
            for pid, title in (before or {}).items()
            if _is_worker(title) and not _retiring(title)
        }
        if self.reload == "signal":
            try:
                os.kill(master, signal.SIGHUP)
            except OSError as exc:
                raise RouterError(f"cannot signal the nginx master {master}: {exc}") from None
            progress.signalled = True
        else:
            code, _, messages = await self._run(
                self._nginx_argv(binary, "-s", "reload"), "nginx -s reload"
            )
            progress.signalled = True  # it may have signalled before failing
            if code != 0:
                raise RouterError(f"nginx -s reload failed: {_quote_nginx(messages)}")
        if before is None:
            # No /proc to watch the workers: wait out the master's 100 ms pause instead.
            await anyio.sleep(0.15)
            progress.new_workers = True
            return
        deadline = anyio.current_time() + self.timeout
        while True:
            now = await anyio.to_thread.run_sync(_children, master)
            if now is None:
                raise RouterError(
                    f"the nginx master {master} exited during the reload; kept the previous "
                    f"{self.include_path.name}"
                )
            progress.new_workers = any(
                pid not in old_workers and _is_worker(title) and not _retiring(title)
                for pid, title in now.items()
            )
            retired = all(pid not in now or _retiring(now[pid]) for pid in old_workers)
            if progress.new_workers and retired:
                return
            if anyio.current_time() > deadline:
                if progress.new_workers:
                    raise RouterError(
                        f"nginx started new workers but its old workers still accept "
                        f"connections after {self.timeout:g} s"
                    )
                # The master may still be busy with the reload (it retries a failed bind
                # for 2.5 s): the caller puts the old file back and signals once more, so
                # that whatever the master does last, it ends on the file.
                progress.resignal = master
                raise RouterError(
                    f"nginx started no workers with the new configuration within "
                    f"{self.timeout:g} s (its error_log says why); put the previous "
                    f"{self.include_path.name} back and reloaded again"
                )
            await anyio.sleep(0.002)

    def _master_pid(self) -> int:
        data = _read_regular(self.pid_file, "the nginx pid file", _MAX_PID_BYTES)
        if data is None:
            raise RouterError(
                f"the nginx pid file {self.pid_file} does not exist: is nginx running?"
            )
        text = data.decode("ascii", errors="replace").strip()
        if not (text.isascii() and text.isdigit()) or int(text) < 1:
            # Not shown: whatever the file holds, it is not nginx's pid.
            raise RouterError(f"the nginx pid file {self.pid_file} does not hold a process id")
        pid = int(text)
        title = _title(pid)
        if title is None and _PROC.is_dir():
            raise RouterError(f"no process {pid} from {self.pid_file}: is nginx running?")
        if title is not None and not title.startswith("nginx: master process"):
            raise RouterError(
                f"process {pid} from {self.pid_file} is not an nginx master: {title!r}"
            )
        return pid


@attrs.define
class _Reload:
    """How far a reload got: whether nginx was signalled, whether new workers run."""

    signalled: bool = False
    new_workers: bool = False
    resignal: int | None = None  # the master to signal again after putting the file back


def _read_regular(path: Path, what: str, limit: int) -> bytes | None:
    """`path`'s bytes (None if it does not exist), or RouterError saying why not.

    `canarykit._files.read_regular` does the reading: a symbolic link, a FIFO, a device or
    a directory is refused without being followed or read, as is a file of more than
    `limit` bytes. Messages never quote the contents.
    """
    try:
        return read_regular(path, limit=limit, what=what)
    except FileNotFoundError:
        return None
    except FileRefusedError as exc:
        raise RouterError(str(exc)) from None
    except OSError as exc:
        raise RouterError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


# nginx directives worth naming when describing a file that is not canarykit's: names
# only, never values (a foreign file may hold credentials in its arguments).
_KNOWN_DIRECTIVES = frozenset(
    [
        "upstream",
        "server",
        "map",
        "split_clients",
        "mirror",
        "location",
        "include",
        "proxy_pass",
        "set",
        "if",
        "return",
        "listen",
        "http",
        "events",
        "geo",
        "keepalive",
        "zone",
        "hash",
        "ip_hash",
        "least_conn",
    ]
)


def _describe_foreign(data: bytes) -> str:
    """What a file that is not canarykit's holds, without quoting any of it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"it holds {len(data)} bytes that are not UTF-8 text (not shown)"
    counts: dict[str, int] = {}
    lines = text.splitlines()
    for line in lines:
        word = line.strip().split(" ", 1)[0].rstrip(";{")
        if word and not word.startswith("#"):
            name = word if word in _KNOWN_DIRECTIVES else "other"
            counts[name] = counts.get(name, 0) + 1
    found = ", ".join(
        f"{name} x{count}" for name, count in sorted(counts.items(), key=lambda i: (-i[1], i[0]))
    )
    return (
        f"it holds {len(lines)} lines ({len(data)} bytes; directives: {found or 'none'}; "
        "values not shown)"
    )


def _keep_aside(path: Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600, never through a link): a foreign file's copy."""
    _refuse_unless_regular(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _refuse_unless_regular(path: Path) -> None:
    """RouterError when `path` exists and is not a regular file (a symbolic link, say)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(status.st_mode):
        raise RouterError(
            f"the include file {path} is a symbolic link: canarykit does not follow or "
            f"replace it; give the path of the file itself"
        )
    if not stat.S_ISREG(status.st_mode):
        raise RouterError(f"the include file {path} is not a regular file")


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: a temporary file in the same directory, fsync, rename.

    A symbolic link or any other non-regular file at `path` is refused (RouterError).
    """
    _refuse_unless_regular(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, 0o644)  # mkstemp makes it 0600; nginx may run as another user
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename itself is durable only once the directory is synced.
    with contextlib.suppress(OSError):
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _quote_nginx(messages: str) -> str:
    lines = [line.strip() for line in messages.splitlines() if line.strip()]
    important = [line for line in lines if "[emerg]" in line or "[crit]" in line] or lines
    return " | ".join(important[:5]) or "(no message)"


def _config_files(dump: str) -> dict[str, str]:
    """The files in `nginx -T`'s output, each with its text."""
    files: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in dump.splitlines():
        header = re.fullmatch(r"# configuration file (.+):", line)
        if header:
            current = files.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    return {path: "\n".join(lines) for path, lines in files.items()}


def _title(pid: int) -> str | None:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _is_worker(title: str) -> bool:
    return title.startswith(_WORKER_TITLE)


def _retiring(title: str) -> bool:
    return _SHUTTING_DOWN in title


def _children(master: int) -> dict[int, str] | None:
    """The master's child processes and their titles; None without /proc or master."""
    if not (_PROC / str(master)).is_dir():
        return None
    try:
        listed = (_PROC / str(master) / "task" / str(master) / "children").read_text().split()
        pids = [int(pid) for pid in listed]
    except OSError:
        # Kernels without CONFIG_PROC_CHILDREN: find the children by their parent id.
        pids = []
        for entry in _PROC.iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    pids.append(int(entry.name))
    titles = {pid: _title(pid) for pid in pids}
    return {pid: title for pid, title in titles.items() if title is not None}
