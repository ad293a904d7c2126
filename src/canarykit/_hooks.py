"""Hooks: gates, checks and lifecycle calls at the points Flagger names, in Python or HTTP.

How this works. The state machine says when a hook point is due (a `RunHook` action:
see `HookPoint` for the points and their order); the runner then asks the hooks given
for that point in `Hooks`, each call bounded by `Hooks.call_timeout`, and reports the
answer to the machine (`HookAnswered`) and to listeners (`GateWaiting`, `GateOpened`,
`HookRan`). A hook is any callable taking a `HookCall` and returning, or awaiting to,
its answer: a bool or a `HookAnswer`. `Webhook` (an HTTP POST), `Approval` (an operator
in this process) and `FileApproval` (an operator in another process) are hooks too.

What counts as yes:

- Gates (confirm-rollout, confirm-traffic-increase, confirm-promotion) and the rollback
  hook say yes only with a true answer (``True``, ``HookAnswer(True)``). False, None, an
  exception or a timeout is a no: a gate keeps the rollout waiting and is asked again
  every `Hooks.interval` seconds; the rollback hook lets the rollout go on. A gate never
  counts as a failed check. A no with ``stop=True`` (`Approval.deny`) ends the rollout
  instead, as does a gate still closed after `Hooks.gate_timeout`.
- Tasks (create-canary, pre-rollout, promote-stable, retire-stable, retire-canary,
  post-rollout)
  succeed unless they raise, time out, or answer False (or ``HookAnswer(False)``);
  None is a success, so a plain ``async def`` that returns nothing works. A failed
  create-canary or pre-rollout aborts the rollout before any traffic moves; a failed
  promote-stable pauses it with all traffic held at the canary (see `Hooks`); the hooks
  after the end are logged and reported when they fail, and never change the outcome.

Several hooks at one point are called in order: a gate or task stops at the first no
(all must say yes), the rollback point at the first yes, and the hooks after the end
are all called.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

import anyio
import anyio.to_thread
import attrs

from . import _text
from ._errors import ConfigError, FileRefusedError
from ._events import GateOpened, GateWaiting, HookRan, RolloutEvent
from ._files import read_regular_async
from ._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    ResponseTooLarge,
    check_max_bytes,
    default_tls,
    exchange,
    header_secrets,
    import_httpx,
    redacting_httpx_logs,
    secret_redactor,
    url_secrets,
    worth_retrying,
)
from ._machine import HookAnswered, HookPoint, Phase, RolloutState
from ._plan import Plan, SetWeight
from ._protocols import Clock
from ._retry import backoff_delay, describe_failure
from ._safe import check_name
from ._urls import check_url, shown_url
from ._validate import finite

__all__ = [
    "Approval",
    "FileApproval",
    "HookAnswer",
    "HookCall",
    "HookFunction",
    "Hooks",
    "Webhook",
]

logger = logging.getLogger("canarykit")

_EXTRA = "pip install 'canarykit[http]'"


# ---------------------------------------------------------------------------- values


@attrs.frozen(kw_only=True)
class HookCall:
    """What a hook is told: which point, which rollout, and where the rollout stands.

    - `hook`: the point being called (`HookPoint`), e.g. ``HookPoint.CONFIRM_PROMOTION``.
    - `rollout`: the rollout's key (its name). `phase`, `step` (index of the current
      step; equal to `steps` once all are done) and `reason` as in its state.
    - `weight`: the canary percent the router last confirmed (None when unknown);
      `next_weight`: for confirm-traffic-increase, the percent it is about to set.
    - `waiting_since`: for a gate, since when the rollout has waited there; `time`: now.
      Both are times on the rollout's clock.
    """

    hook: HookPoint
    rollout: str
    phase: Phase
    step: int
    steps: int
    weight: float | None
    next_weight: float | None = None
    waiting_since: float | None = None
    reason: str = ""
    time: float

    def to_json(self) -> dict[str, Any]:
        """Plain data: what a `Webhook` posts, besides its namespace and metadata.

        >>> call = HookCall(hook=HookPoint.CONFIRM_PROMOTION, rollout="web", step=4,
        ...                 phase=Phase.PROGRESSING, steps=4, weight=50.0, time=120.0)
        >>> call.to_json()["type"], call.to_json()["phase"]
        ('confirm-promotion', 'progressing')
        """
        return {
            "name": self.rollout,
            "type": self.hook.value,
            "phase": self.phase.value,
            "step": self.step,
            "steps": self.steps,
            "weight": self.weight,
            "next_weight": self.next_weight,
            "waiting_since": self.waiting_since,
            "reason": self.reason,
            "time": self.time,
        }


@attrs.frozen
class HookAnswer:
    """A hook's answer and why: ``HookAnswer(True, "approved by ana")``.

    It is true when `yes`, so ``if await hook(call):`` reads naturally. `stop` (with a
    no only) ends the rollout instead of holding it at a gate: a denial.
    """

    yes: bool
    reason: str = ""
    stop: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.yes, bool):
            raise ConfigError("yes", self.yes, "must be True or False")
        if not isinstance(self.reason, str):
            raise ConfigError("reason", self.reason, "must be a string")
        if not isinstance(self.stop, bool) or (self.stop and self.yes):
            raise ConfigError("stop", self.stop, "must be True or False, and True only with a no")

    def __bool__(self) -> bool:
        return self.yes


HookFunction: TypeAlias = Callable[[HookCall], "Awaitable[object] | object"]
"""A hook: called with a `HookCall`, returns (or awaits to) a bool, a `HookAnswer` or None."""


def _hooks_field(name: str) -> Any:
    def convert(value: Any) -> tuple[HookFunction, ...]:
        if value is None:
            return ()
        many = isinstance(value, (list, tuple))
        items = tuple(value) if many else (value,)
        for index, item in enumerate(items):
            if not callable(item):
                raise ConfigError(
                    f"{name}[{index}]" if many else name,
                    item,
                    "must be a hook: a callable taking a HookCall (a function, a Webhook, "
                    "an Approval, a FileApproval), or a list of them",
                )
        return items

    return attrs.field(default=(), converter=convert)


def _seconds(name: str, default: float | None, *, optional: bool = False) -> Any:
    def convert(value: Any) -> float | None:
        if value is None and optional:
            return None
        number = finite(name, value)
        if not number > 0:
            raise ConfigError(name, value, "must be > 0")
        return number

    return attrs.field(default=default, converter=convert)


def _traffic_back(value: Any) -> tuple[float, ...]:
    """Percents of canary traffic on the way back to stable: decreasing, ending at 0."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise ConfigError("traffic_back", value, "must be a list of percents ending at 0")
    steps = tuple(finite(f"traffic_back[{index}]", item) for index, item in enumerate(value))
    for index, percent in enumerate(steps):
        if not 0 <= percent < 100:
            raise ConfigError(f"traffic_back[{index}]", percent, "must be >= 0 and < 100")
        if index and percent >= steps[index - 1]:
            raise ConfigError(f"traffic_back[{index}]", percent, "must be below the step before")
    if steps[-1] != 0:
        raise ConfigError("traffic_back", list(steps), "must end at 0 (all traffic on stable)")
    return steps


def _hold_seconds(value: Any) -> float:
    number = finite("traffic_back_hold", value)
    if number < 0:
        raise ConfigError("traffic_back_hold", value, "must be >= 0")
    return number


@attrs.frozen(kw_only=True, repr=False)
class Hooks:
    """The hooks of a rollout, by point: give it to ``Rollout(..., hooks=Hooks(...))``.

    Each point takes a hook (a callable taking a `HookCall`: a function, `Webhook`,
    `Approval`, `FileApproval`) or a list of them; see the module's rules for what
    counts as yes. In the order a rollout meets them:

    - `confirm_rollout`: a gate before anything happens (Flagger's confirm-rollout).
    - `create_canary`: create the canary's instances (the seed's first step: deploy the
      new version to a few instances); a failure aborts before traffic moves.
    - `pre_rollout`: checks before traffic moves (smoke tests); a failure aborts.
    - `confirm_traffic_increase`: a gate before each weight increase, the first included.
    - `rollback`: asked every `interval` while progressing, paused or at a gate; a yes
      rolls back (Flagger's rollback webhook).
    - `confirm_promotion`: a gate before promotion; analysis keeps watching meanwhile.
    - `promote_stable`: promote by upgrading stable (Flagger's primary and canary). Once
      the canary has all traffic, upgrade the stable servers to the new version; on
      yes, canarykit moves traffic back to stable through `traffic_back` (percents of
      canary traffic, each applied and read back, held `traffic_back_hold` seconds
      before the next), then calls `retire_canary` (empty the canary slot), and the
      rollout succeeds with the router at stable: the same rollout serves the next
      release. On a no, traffic stays on the canary, which was judged good, and the
      rollout pauses saying why: it never rolls back to a stable that may be half
      upgraded. Resuming asks promote_stable again, so it must be safe to repeat, as
      it also is after a restart in the middle of moving traffic back.
    - `retire_stable`: after a promotion (without `promote_stable`), retire the old
      version's instances.
    - `retire_canary`: after a rollback or an abort, retire the canary's instances
      (skipped when the rollout ended before `create_canary` was called); after a
      promotion that upgraded stable, empty the canary slot.
    - `post_rollout`: after the end, whatever the outcome (notify, clean up).

    Timing: `interval` (seconds on the rollout's clock, 60) between asks of a closed
    gate and between rollback checks; `gate_timeout` (seconds, None) how long a gate may
    stay closed before the rollout is aborted (None: wait for ever; the plan's progress
    deadline and pause limit never end a wait at a gate); `call_timeout` (seconds of
    real time, 60) for each call of a hook, a `Webhook`'s retries included.

    >>> Hooks(confirm_promotion=Approval("release manager"), interval=30)
    Hooks(confirm_promotion=Approval('release manager'), interval=30.0)
    """

    confirm_rollout: tuple[HookFunction, ...] = _hooks_field("confirm_rollout")
    create_canary: tuple[HookFunction, ...] = _hooks_field("create_canary")
    pre_rollout: tuple[HookFunction, ...] = _hooks_field("pre_rollout")
    confirm_traffic_increase: tuple[HookFunction, ...] = _hooks_field("confirm_traffic_increase")
    rollback: tuple[HookFunction, ...] = _hooks_field("rollback")
    confirm_promotion: tuple[HookFunction, ...] = _hooks_field("confirm_promotion")
    promote_stable: tuple[HookFunction, ...] = _hooks_field("promote_stable")
    retire_stable: tuple[HookFunction, ...] = _hooks_field("retire_stable")
    retire_canary: tuple[HookFunction, ...] = _hooks_field("retire_canary")
    post_rollout: tuple[HookFunction, ...] = _hooks_field("post_rollout")
    interval: float = _seconds("interval", 60.0)
    gate_timeout: float | None = _seconds("gate_timeout", None, optional=True)
    call_timeout: float = _seconds("call_timeout", 60.0)
    traffic_back: tuple[float, ...] = attrs.field(default=(0.0,), converter=_traffic_back)
    traffic_back_hold: float = attrs.field(default=0.0, converter=_hold_seconds)

    def for_point(self, point: HookPoint) -> tuple[HookFunction, ...]:
        """The hooks given for `point` (an empty tuple when none)."""
        found: tuple[HookFunction, ...] = getattr(self, _field_name(point))
        return found

    @property
    def points(self) -> frozenset[HookPoint]:
        """The points that have hooks."""
        return frozenset(point for point in HookPoint if self.for_point(point))

    def __repr__(self) -> str:
        parts = []
        for point in HookPoint:
            hooks = self.for_point(point)
            if hooks:
                shown = ", ".join(_hook_name(hook) for hook in hooks)
                parts.append(f"{_field_name(point)}={shown if len(hooks) == 1 else f'[{shown}]'}")
        defaults: dict[str, object] = {
            "interval": 60.0,
            "gate_timeout": None,
            "call_timeout": 60.0,
            "traffic_back": (0.0,),
            "traffic_back_hold": 0.0,
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value!r}")
        return f"Hooks({', '.join(parts)})"


def _field_name(point: HookPoint) -> str:
    return point.value.replace("-", "_")


def _hook_name(hook: object) -> str:
    """How a hook is named in logs and reprs: never a webhook's full URL."""
    if isinstance(hook, (Webhook, Approval, FileApproval)):
        return repr(hook)
    name = getattr(hook, "__qualname__", None)
    return name if isinstance(name, str) else type(hook).__name__


# ---------------------------------------------------------------------------- approvals


class Approval:
    """A gate an operator opens from another task (or thread): `approve()` or `deny()`.

    Until one is called it says no (the rollout waits); after `approve()` it says yes,
    after `deny()` it says no with ``stop=True`` (the rollout is aborted). With
    ``once=True`` an approval opens one gate and then waits for the next `approve()`:
    one approval per weight increase, say. The gate is asked every `Hooks.interval`.

    >>> approval = Approval("release manager")
    >>> approval.approve(by="ana")
    >>> approval.decision
    HookAnswer(yes=True, reason='approved by ana', stop=False)
    """

    def __init__(self, name: str = "approval", *, once: bool = False) -> None:
        if not isinstance(name, str) or not name.isprintable() or not name.strip():
            raise ConfigError("name", name, "must be a non-empty printable string")
        if not isinstance(once, bool):
            raise ConfigError("once", once, "must be True or False")
        self.name = name
        self.once = once
        self._decision: HookAnswer | None = None

    @property
    def decision(self) -> HookAnswer | None:
        """The operator's answer so far; None while nobody has decided."""
        return self._decision

    def approve(self, by: str = "", reason: str = "") -> None:
        """Open the gate; `by` and `reason` go into the rollout's events and log."""
        text = "approved" + (f" by {by}" if by else "") + (f": {reason}" if reason else "")
        self._decision = HookAnswer(True, text)

    def deny(self, reason: str = "", by: str = "") -> None:
        """Refuse: the rollout waiting at this gate is aborted (rolled back if it moved)."""
        text = "denied" + (f" by {by}" if by else "") + (f": {reason}" if reason else "")
        self._decision = HookAnswer(False, text, stop=True)

    def reset(self) -> None:
        """Forget the decision: the gate says no again until the next one."""
        self._decision = None

    async def __call__(self, call: HookCall) -> HookAnswer:
        """The hook: the operator's decision, or a no while there is none."""
        decision = self._decision
        if decision is None:
            return HookAnswer(False, f"{self.name} has not decided")
        if self.once and decision.yes:
            self._decision = None
        return decision

    def __repr__(self) -> str:
        return (
            f"Approval({self.name!r})" if not self.once else f"Approval({self.name!r}, once=True)"
        )


# Enough for a word and a reason; a bigger file is not an approval.
_APPROVAL_FILE_LIMIT = 4096


class FileApproval:
    """A gate opened from another process: yes once the file at `path` says ``approve``.

    The file's first word decides: ``approve`` (or ``approved``) opens the gate, ``deny``
    (or ``denied``) aborts the rollout; anything else, or no file, keeps it waiting. The
    rest of the line is the reason, e.g. ``echo "approve ana: dashboards look fine" >
    /run/deploy/web.approval``. The file is read each time the gate is asked.

    Only a regular file of at most 4 KiB counts: a FIFO, a device, a directory or a
    bigger file is a no, said at once (reading never waits for a writer), and the read
    runs in a thread that a timeout or an abort abandons. The reason is shown escaped
    and cut to `canarykit._text.MAX_TEXT` characters.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigError("path", path, "must be a file path")
        self.path = os.fspath(path)

    async def __call__(self, call: HookCall) -> HookAnswer:
        """The hook: read the file and answer by its first word."""
        try:
            data = await read_regular_async(
                self.path, limit=_APPROVAL_FILE_LIMIT, what="approval file"
            )
        except FileNotFoundError:
            return HookAnswer(False, f"{_text.shown(self.path)} does not exist")
        except FileRefusedError as exc:  # not a regular file, or too big: never read
            return HookAnswer(False, _text.shown(exc))
        except OSError as exc:
            return HookAnswer(
                False, _text.shown(f"could not read {self.path}: {exc.strerror or exc}")
            )
        text = data.decode("utf-8", errors="replace")
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        word, _, rest = first_line.partition(" ")
        word = word.strip().rstrip(":").lower()
        said = f": {_text.shown(rest.strip())}" if rest.strip() else ""
        if word in ("approve", "approved"):
            return HookAnswer(True, f"approved in {self.path}{said}")
        if word in ("deny", "denied"):
            return HookAnswer(False, f"denied in {self.path}{said}", stop=True)
        return HookAnswer(False, f"{self.path} does not say approve")

    def __repr__(self) -> str:
        return f"FileApproval({self.path!r})"


# ---------------------------------------------------------------------------- webhooks


def _text_map(field: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(field, type(value).__name__, "must be a mapping of strings to strings")
    out: dict[str, str] = {}
    for key, item in value.items():
        # Values may be tokens: name the key, never quote the value.
        if not isinstance(key, str) or not key:
            raise ConfigError(field, key, "keys must be non-empty strings")
        if not isinstance(item, str) or "\n" in item or "\r" in item:
            raise ConfigError(f"{field}[{key!r}]", "(hidden)", "must be a one-line string")
        out[key] = item
    return out


# Characters of an error answer quoted in a webhook's reason.
_REASON_EXCERPT = 200


class Webhook:
    """A hook that POSTs the call as JSON to `url` and says yes on a 2xx answer (Flagger's rule).

    Yes: any 2xx status (200, 201, 202, 204, ...). No: any other status (3xx redirects are
    not followed), a timeout or a connection error. A timeout, a connection error, HTTP
    408, 425, 429 or 5xx is tried again, `attempts` tries in all, after a backoff that
    doubles from `backoff` seconds (real time); other answers are final at once. It never
    raises: a failure is a no, with the status and the start of the body as the reason.

    Bounds: `timeout` (10 s) is a deadline for each try as a whole, connecting, sending
    and reading the answer, so a server that sends a byte at a time cannot stretch it.
    A 2xx answer's body is read up to `max_response_bytes` (1 MiB; a longer one is a no
    that says so); an error answer's only far enough to quote its start.

    The body is `HookCall.to_json` (``name``, ``type``, ``phase``, ``step``, ``steps``,
    ``weight``, ``next_weight``, ``waiting_since``, ``reason``, ``time``) plus
    ``namespace`` when given and ``metadata`` (a mapping of strings), as Flagger's
    payload. `headers` are sent with each request (an ``Authorization``, say).

    URLs, headers and metadata may hold secrets: reprs and logs show only the scheme and
    host of the URL and never header or metadata values, and they are blanked out of any
    text the endpoint sends back before it is quoted. Needs httpx
    (``pip install 'canarykit[http]'``).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "webhook",
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: float = 1.0,
        metadata: Mapping[str, str] | None = None,
        namespace: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._url = check_url(url)
        self._shown = shown_url(url)
        self.name = check_name("name", name)
        self.timeout = finite("timeout", timeout)
        if not self.timeout > 0:
            raise ConfigError("timeout", timeout, "must be > 0")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigError("attempts", attempts, "must be an integer >= 1")
        self.attempts = attempts
        self.backoff = finite("backoff", backoff)
        if self.backoff < 0:
            raise ConfigError("backoff", backoff, "must be >= 0")
        self.max_response_bytes = check_max_bytes("max_response_bytes", max_response_bytes)
        self.metadata = _text_map("metadata", metadata)
        self.namespace = None if namespace is None else check_name("namespace", namespace)
        self._headers = {"Content-Type": "application/json", **_text_map("headers", headers)}
        self._httpx = import_httpx("canarykit.hooks.Webhook", _EXTRA)
        self._redact = secret_redactor(
            [*url_secrets(url), *header_secrets(self._headers), *header_secrets(self.metadata)]
        )
        self._requests = 0
        self._retries = 0

    @property
    def requests(self) -> int:
        """HTTP requests sent so far (each try counts)."""
        return self._requests

    @property
    def retries(self) -> int:
        """Tries that failed and were made again."""
        return self._retries

    def payload(self, call: HookCall) -> dict[str, Any]:
        """The JSON body posted for `call`."""
        body = call.to_json()
        if self.namespace is not None:
            body["namespace"] = self.namespace
        body["metadata"] = dict(self.metadata)
        return body

    async def __call__(self, call: HookCall) -> HookAnswer:
        """The hook: POST the call and answer yes on 2xx (after retries for transient failures)."""
        httpx = self._httpx
        body = json.dumps(self.payload(call), allow_nan=False).encode()
        reason = "not attempted"
        with redacting_httpx_logs(self._redact):
            async with httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                verify=default_tls(httpx),
                follow_redirects=False,
            ) as client:
                for attempt in range(1, self.attempts + 1):
                    if attempt > 1:
                        self._retries += 1
                        await anyio.sleep(backoff_delay(self.backoff, attempt - 1))
                    self._requests += 1
                    try:
                        answer = await exchange(
                            client,
                            "POST",
                            self._url,
                            deadline=self.timeout,
                            max_bytes=self.max_response_bytes,
                            content=body,
                            headers=self._headers,
                        )
                    except TimeoutError:
                        reason = f"timed out after {self.timeout:g} s"
                        continue
                    except ResponseTooLarge as exc:
                        return HookAnswer(False, exc.advice("max_response_bytes"))
                    except httpx.HTTPError as exc:
                        text = self._redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
                        reason = _text.shown(text, limit=_REASON_EXCERPT)
                        continue
                    if answer.ok:
                        return HookAnswer(True, f"HTTP {answer.status}")
                    excerpt = answer.text(self._redact, limit=_REASON_EXCERPT).strip()
                    reason = f"HTTP {answer.status}" + (f": {excerpt}" if excerpt else "")
                    if not worth_retrying(answer.status):
                        return HookAnswer(False, reason)
        tries = f" ({self.attempts} tries)" if self.attempts > 1 else ""
        return HookAnswer(False, f"{reason}{tries}")

    def __repr__(self) -> str:
        return f"Webhook({self.name!r}, url={self._shown!r})"


# ---------------------------------------------------------------------------- driving


def _interpret(result: object, *, task: bool, name: str) -> HookAnswer:
    if isinstance(result, HookAnswer):
        return result
    if task:
        # A task fails only by saying so: None (a plain function's return) is success.
        return HookAnswer(False, f"{name} returned False") if result is False else HookAnswer(True)
    return HookAnswer(True, f"{name} said yes") if result else HookAnswer(False, f"{name} said no")


class HookDriver:
    """Asks a rollout's hooks and turns their answers into machine events (the runner's).

    Remembers which gate wait it already announced, so that listeners get one
    `GateWaiting` per wait (and one more from a runner that resumes it).
    """

    def __init__(self, hooks: Hooks, key: str, clock: Clock) -> None:
        self.hooks = hooks
        self.key = key
        self.clock = clock
        self._announced: tuple[HookPoint, float | None] | None = None

    def check_resumable(self, state: RolloutState) -> None:
        """Refuse, before any traffic moves, a saved rollout waiting at a gate we lack."""
        gate = state.gate
        if gate is not None and not state.is_terminal and not self.hooks.for_point(gate):
            raise ConfigError(
                "hooks",
                self.hooks,
                f"the saved rollout {self.key!r} is waiting at {gate.value}; give this "
                f"Rollout a {_field_name(gate)} hook to go on",
            )

    def call_for(self, point: HookPoint, plan: Plan, state: RolloutState) -> HookCall:
        """The `HookCall` that the hooks at `point` are given now."""
        steps = plan.steps
        next_weight = None
        if point is HookPoint.CONFIRM_TRAFFIC_INCREASE and state.step < len(steps):
            step = steps[state.step]
            if isinstance(step, SetWeight):
                next_weight = step.percent
        confirmed = state.confirmed
        return HookCall(
            hook=point,
            rollout=self.key,
            phase=state.phase,
            step=state.step,
            steps=len(steps),
            weight=None if confirmed is None else confirmed.canary_percent,
            next_weight=next_weight,
            waiting_since=state.gate_since if point.is_gate else None,
            reason=state.reason,
            time=self.clock.now(),
        )

    async def ask(
        self, point: HookPoint, plan: Plan, state: RolloutState
    ) -> tuple[HookAnswered, list[RolloutEvent]]:
        """Call the hooks at `point`; the event for the machine and those for listeners."""
        answer = await self._answer(point, self.call_for(point, plan, state))
        now = self.clock.now()
        interval = self.hooks.interval
        if point is HookPoint.ROLLBACK:
            events: list[RolloutEvent] = []
            if answer.yes:
                events.append(HookRan(time=now, hook=point.value, ok=True, reason=answer.reason))
            answered = HookAnswered(now, point, answer.yes, answer.reason, now + interval)
            return answered, events
        if not point.is_gate:
            events = [HookRan(time=now, hook=point.value, ok=answer.yes, reason=answer.reason)]
            return HookAnswered(now, point, answer.yes, answer.reason), events
        since = state.gate_since
        if answer.yes:
            self._announced = None
            waited = 0.0 if since is None else max(0.0, now - since)
            opened = GateOpened(
                time=now, gate=point.value, step=state.step, waited=waited, reason=answer.reason
            )
            return HookAnswered(now, point, True, answer.reason), [opened]
        stop, reason = answer.stop, answer.reason
        timeout = self.hooks.gate_timeout
        if not stop and timeout is not None and since is not None and now - since >= timeout:
            stop = True
            reason = f"did not open within {timeout:g} s (last answer: {reason})"
            logger.warning("%s: %s %s; aborting", self.key, point.value, reason)
        events = []
        if not stop and self._announced != (point, since):
            self._announced = (point, since)
            events.append(
                GateWaiting(
                    time=now,
                    gate=point.value,
                    step=state.step,
                    since=now if since is None else since,
                    reason=reason,
                )
            )
        return HookAnswered(now, point, False, reason, now + interval, stop=stop), events

    async def _answer(self, point: HookPoint, call: HookCall) -> HookAnswer:
        hooks = self.hooks.for_point(point)
        if not hooks:
            logger.warning("%s: no %s hook was given; counting it as a no", self.key, point.value)
            return HookAnswer(False, f"no {point.value} hook was given")
        after_end = point in (
            HookPoint.RETIRE_STABLE,
            HookPoint.RETIRE_CANARY,
            HookPoint.POST_ROLLOUT,
        )
        answers: list[HookAnswer] = []
        for hook in hooks:
            answer = await self._call_one(point, hook, call)
            answers.append(answer)
            if point is HookPoint.ROLLBACK:
                if answer.yes:
                    return answer
            elif not answer.yes and not after_end:
                return answer
        failed = [a.reason for a in answers if not a.yes]
        if failed:  # after the end all are called; for the rollback point, none said yes
            return HookAnswer(False, "; ".join(r for r in failed if r))
        return HookAnswer(True, "; ".join(a.reason for a in answers if a.reason))

    async def _call_one(self, point: HookPoint, hook: HookFunction, call: HookCall) -> HookAnswer:
        name = _hook_name(hook)
        timeout = self.hooks.call_timeout
        task = not point.is_gate and point is not HookPoint.ROLLBACK
        try:
            with anyio.fail_after(timeout):
                result = hook(call)
                if inspect.isawaitable(result):
                    result = await result
            answer = _interpret(result, task=task, name=name)
        except ConfigError:
            # A hook that is set up wrong can never succeed: asking it again every interval
            # would hold canary traffic for nothing. The runner rolls back and raises it.
            raise
        except Exception as exc:
            # A hook's error is a no (a gate keeps waiting, a task failed), logged here.
            reason = f"{name}: {describe_failure(exc, timeout)}"
            logger.warning("%s: %s hook failed: %s", self.key, point.value, reason)
            return HookAnswer(False, reason)
        if not answer.yes:
            # A gate's no holds the rollout and the rollback hook's no is the healthy
            # answer; only a task's no (a failure) deserves a warning.
            level = logging.WARNING if task else logging.INFO
            logger.log(level, "%s: %s hook said no: %s", self.key, point.value, answer.reason)
        return answer
