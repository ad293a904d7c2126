"""``canarykit init``: make the router's starting state from the policy, before a first rollout.

::

    canarykit init POLICY.toml [--force] [--name NAME] [--state-dir DIR]

What it does depends on the router:

- nginx (`NginxRouter.initialize`): writes the include file with all traffic on stable,
  validated with ``nginx -T`` (and reloaded when nginx runs). A file canarykit did not
  write is left alone unless ``--force``: the command says what it holds (line and
  directive counts, never its values) and, forced, keeps it aside before replacing it.
- HAProxy: reads every server's weight through the runtime API and reports them, and
  whether they send all traffic to stable. It changes nothing: HAProxy's starting
  weights are in haproxy.cfg.
- Kubernetes (Gateway API, Istio): checks that the object the router owns exists and
  reports the split it holds.

It holds the rollout's lease while it works, so it never races a ``canarykit run``, and
it refuses (unless ``--force``) while a saved rollout is still in progress: that rollout
owns the traffic until it ends.

Exit codes: 0 when the router is at stable afterwards, 6 when it is not (the message says
what it found and how to go on), 2 for bad input, 1 for any other failure.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

import anyio

from .._errors import CanaryError, ConfigError, RouterError
from .._machine import RolloutState
from .._split import TrafficSplit
from .._stores import FileStore
from .._text import shown
from ..policy import load_policy
from ._control import add_location_arguments, locate
from ._run import EXIT_NOT_AT_STABLE, _traffic_target

__all__ = ["add_init_command", "run_init"]


def add_init_command(commands: Any) -> None:
    """Add ``init`` to the command line's subcommands."""
    init = commands.add_parser(
        "init",
        help="make the router's starting state (all traffic on stable) from a policy file",
        description=(
            "Make POLICY's router ready for a first rollout. nginx: write the include "
            "file with all traffic on stable, validated with nginx -T (a file canarykit "
            "did not write is left alone unless --force). HAProxy: read and report the "
            "weights. Kubernetes: check that the route object exists. Exit code 0 when "
            "the router is at stable afterwards, 6 when it is not, 2 bad input, 1 any "
            "other failure."
        ),
    )
    add_location_arguments(init)
    init.add_argument(
        "--force",
        action="store_true",
        help="replace an include file canarykit did not write (kept aside first), and "
        "reset the router even while a saved rollout is in progress",
    )


def run_init(args: argparse.Namespace, out: TextIO) -> int:
    """Run ``canarykit init`` with parsed `args`; return the exit code."""
    policy = load_policy(args.policy)
    deployment = policy.deployment
    name, state_dir = locate(args, deployment)
    router = deployment.build_router()
    store = FileStore(state_dir)
    try:
        lease = store.lease(name, target=_traffic_target(router))
    except ConfigError as exc:
        if exc.field == "key":
            raise ConfigError("--name", exc.value, exc.problem) from None
        raise
    if not args.force:
        _refuse_during_a_rollout(store, name)
    return anyio.run(_init, router, lease, args.force, out)


def _refuse_during_a_rollout(store: FileStore, name: str) -> None:
    record = anyio.run(store.load, name)
    if not isinstance(record, dict) or not isinstance(record.get("state"), dict):
        return
    state = RolloutState.from_json(record["state"])
    if state.is_terminal or state.phase.value == "pending":
        return
    release = record.get("release")
    which = f" of release {shown(release, limit=200)}" if isinstance(release, str) else ""
    raise CanaryError(
        f"the rollout{which} saved as {name!r} is still {state.phase.value.replace('_', ' ')}: "
        "it owns the traffic until it ends; run it on (canarykit run) or abort it, or "
        "reset the router anyway with --force"
    )


async def _init(router: Any, lease: Any, force: bool, out: TextIO) -> int:
    await lease.acquire()
    try:
        return await _prepare(router, force, out)
    finally:
        with anyio.CancelScope(shield=True):
            await lease.release()


async def _prepare(router: Any, force: bool, out: TextIO) -> int:
    from ..routers import HAProxyRouter, NginxRouter, SlotRouter

    if isinstance(router, SlotRouter):
        return await _prepare_slots(router, force, out)
    if isinstance(router, NginxRouter):
        out.write(f"init: {shown(await router.initialize(force=force))}\n")
        return _report(await router.read(), out)
    if isinstance(router, HAProxyRouter):
        weights = await router.current_weights()
        for arm, servers in (("stable", router.stable), ("canary", router.canary)):
            shown_weights = ", ".join(f"{server} {weights[server]}" for server in servers)
            out.write(f"init: backend {router.backend} {arm} servers: {shown_weights}\n")
        code = _report(await router.read(), out)
        if code:
            out.write(
                "init: HAProxy's weights are its own (haproxy.cfg, the runtime API): set "
                "every canary server's weight to 0 there, or start with --adopt\n"
            )
        return code
    split = await router.read()
    target = getattr(router, "traffic_target", None)
    if target:
        out.write(f"init: {shown(target)} exists\n")
    return _report(split, out)


async def _prepare_slots(router: Any, force: bool, out: TextIO) -> int:
    """Alternate slots: say which slot is live; with none yet, make the first one live."""
    try:
        live = await router.find_live()
    except RouterError as exc:
        first = next(iter(router.routers))
        out.write(f"init: no slot is live yet ({shown(exc)}): making {first} live\n")
        code = await _prepare(router.routers[first], force, out)
        if code:
            return code
        live = await router.find_live()
    out.write(f"init: slot {live} is live; the next release goes to {router.idle}\n")
    return _report(await router.read(), out)


def _report(split: TrafficSplit | None, out: TextIO) -> int:
    if split is not None and split.is_stable_only:
        out.write("init: the router is at stable: all traffic on stable; ready for a rollout\n")
        return 0
    if split is None:
        out.write("init: the router reports no split: NOT known to be at stable\n")
    else:
        out.write(
            f"init: the router is NOT at stable: canary {split.canary_percent:g}%"
            f"{', header routes' if split.header_routes else ''}"
            f"{', mirroring' if split.mirror_percent else ''}\n"
        )
    return EXIT_NOT_AT_STABLE
