"""The ``canarykit`` command line: try a deploy policy, then run it for real.

::

    canarykit simulate POLICY.toml [--scenario healthy|errors|latency] [--seed N] [--json]
                                   [--plot FILE.svg|FILE.png]
    canarykit evaluate POLICY.toml [--runs N] [--seed S] [--regression errors:2x@600] [--json]
    canarykit run POLICY.toml [--name NAME] [--state-dir DIR] [--leave-traffic] [--json]
                              [--no-status]
    canarykit run POLICY.toml [--release ID] [--adopt] ...
    canarykit init POLICY.toml [--force] [--name NAME] [--state-dir DIR]
    canarykit promote|pause|resume|abort|status POLICY.toml [--name NAME] [--state-dir DIR]
    canarykit render gateway-api|istio --name N --namespace NS --stable SVC --canary SVC
                     --weight W [--header NAME=REGEX] [--mirror PCT]
    canarykit --version

``simulate`` loads the policy (`load_policy`), builds the scenario's scripted metrics
(`canarykit.testing.SCENARIOS`, at the policy's ``[simulation] requests_per_second``),
runs the rollout in virtual time (`canarykit.testing.simulate`) and prints the timeline,
one line per entry, then the outcome. ``--json`` prints the same as one JSON object;
``--plot FILE`` also draws the rollout (weight, error rates, p99, verdicts) to an SVG or
PNG file (needs the ``plot`` extra, matplotlib).

``evaluate`` runs the policy many times by Monte-Carlo (`canarykit.testing.evaluate`)
against traffic at the policy's ``[simulation] requests_per_second`` (1% errors and
log-normal latency of median 50 ms by default, as ``simulate``), healthy (A/A) or with a
regression injected into the canary (``--regression errors:2x@600``, ``latency:+25%@10m``
or ``none``), and prints the false-rollback rate, the detection rate, the time to detect,
the bad requests served and the time to promotion. A progress line goes to stderr when
it is a terminal (or with ``--progress``).

Both follow the policy's ``[simulation]`` table: ``header_share`` sets the canary's
traffic during header-route stages, and ``[simulation.gauges]`` adds the gauges (CPU,
memory) both arms report. When a scripted gauge changes the canary (a leak, a factor),
``evaluate`` reports its healthy-traffic rollbacks as "rollbacks", naming the gauges,
not as false ones: the canary does differ.

``run`` runs the policy's plan for real through its ``[router]`` and ``[metrics]``
tables, showing each event as a line and, on a terminal, a live status line; see
`canarykit._cli._run` for its exit codes and its handling of SIGINT and SIGTERM.
``promote``, ``pause``, ``resume`` and ``abort`` send a command to the ``run`` driving
the policy's rollout and print its answer; ``status`` shows the saved state
(`canarykit._cli._control`).

``init`` makes the router's starting state (all traffic on stable) before a first
rollout, or reports it (`canarykit._cli._init`).

``render`` prints, as YAML, the Gateway API HTTPRoute or Istio VirtualService that
`canarykit.routers.GatewayAPIRouter` or `IstioRouter` would apply for the split, for
review or for ``kubectl apply`` (needs the ``kubernetes`` extra).

Exit codes of ``simulate`` and ``evaluate``: 0 when the simulation ran, whatever its
outcome (a rollback is a result, not an error); 2 for bad input (a bad policy file or
bad arguments), with the message on stderr and no traceback; 1 when the simulation
itself failed; 130 when interrupted (Ctrl-C), with one line on stderr and no traceback.
Both run in virtual time against a fake router, so an interrupted run moves no real
traffic. ``run`` moves real traffic, and rolls it back when interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs

from .. import __version__
from .._durations import format_duration
from .._errors import CanaryError, ConfigError
from .._events import RolloutOutcome, TimelineEntry
from .._plan import Plan
from .._text import MAX_TEXT, shown
from ..deciders import format_value
from ..plot import add_plot_option, plot_rollout
from ..policy import Policy, load_policy
from ._control import COMMANDS, add_control_commands, run_control
from ._init import add_init_command, run_init
from ._render import add_render_command, run_render
from ._run import add_run_command, run_run

__all__ = ["main"]

PROG = "canarykit"

# A rollout that waits for a person (wait_for_promotion, or a pause without pause_limit)
# would wait for ever; the simulation stops at this virtual time and reports where it was.
DEFAULT_UNTIL = 24 * 3600.0
# Rollouts per `evaluate` unless --runs says otherwise.
DEFAULT_RUNS = 500

_OUTCOME_WORDS = {
    "succeeded": "promoted",
    "rolled_back": "rolled back",
    "aborted": "aborted",
    "paused": "paused",
}


def _scenario_names() -> list[str]:
    from ..testing import SCENARIOS

    return sorted(SCENARIOS)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Canary deployments as a library: try a deploy policy, then run it.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    simulate = commands.add_parser(
        "simulate",
        help="run a policy file against scripted traffic in virtual time",
        description=(
            "Run POLICY (a TOML policy file) against a scripted scenario in virtual time "
            "and print the timeline and the outcome. Exit code 0 whatever the outcome."
        ),
    )
    simulate.add_argument("policy", metavar="POLICY.toml", help="the policy file")
    simulate.add_argument(
        "--scenario",
        default="healthy",
        choices=_scenario_names(),
        help="healthy (the default): both versions alike; errors: the canary's error rate "
        "x5 from 5:00; latency: the canary's median latency x1.5 from 5:00",
    )
    simulate.add_argument(
        "--seed", type=int, default=None, help="noise seed (default: [simulation] seed)"
    )
    simulate.add_argument(
        "--requests-per-second",
        type=float,
        default=None,
        metavar="RPS",
        help="total traffic over both versions (default: [simulation] requests_per_second)",
    )
    simulate.add_argument(
        "--until",
        type=float,
        default=DEFAULT_UNTIL,
        metavar="SECONDS",
        help="stop a rollout still running at this virtual time (default: 24 hours)",
    )
    simulate.add_argument(
        "--json", action="store_true", help="print the outcome and timeline as one JSON object"
    )
    add_plot_option(simulate)
    _add_evaluate(commands)
    add_run_command(commands)
    add_init_command(commands)
    add_control_commands(commands)
    add_render_command(commands)
    return parser


def _add_evaluate(commands: Any) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="estimate false rollbacks and time to detect by Monte-Carlo",
        description=(
            "Run POLICY (a TOML policy file) many times in virtual time against seeded "
            "traffic, healthy or with a regression injected into the canary, and print the "
            "false-rollback rate, the detection rate and time, the bad requests served "
            "before the rollback and the time to promotion. Exit code 0 whatever they are."
        ),
    )
    evaluate.add_argument("policy", metavar="POLICY.toml", help="the policy file")
    evaluate.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, metavar="N", help="rollouts (default: 500)"
    )
    evaluate.add_argument(
        "--seed", type=int, default=None, help="noise seed (default: [simulation] seed)"
    )
    evaluate.add_argument(
        "--regression",
        default="none",
        metavar="SPEC",
        help="KIND:FACTOR@AT injected into the canary, e.g. errors:2x@600 (error rate x2 "
        "from 10:00), latency:1.25x@10m or latency:+25%%@0; none (the default): A/A runs",
    )
    evaluate.add_argument(
        "--requests-per-second",
        type=float,
        default=None,
        metavar="RPS",
        help="total traffic over both versions (default: [simulation] requests_per_second)",
    )
    evaluate.add_argument(
        "--error-rate",
        type=float,
        default=0.01,
        metavar="RATE",
        help="probability that a request fails, both versions (default: 0.01)",
    )
    evaluate.add_argument(
        "--latency-median",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="median latency in seconds (default: 0.05)",
    )
    evaluate.add_argument(
        "--latency-sigma",
        type=float,
        default=0.25,
        metavar="SIGMA",
        help="log-scale spread of the log-normal latency (default: 0.25)",
    )
    evaluate.add_argument(
        "--horizon",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop a rollout still running at this virtual time (default: one hour after "
        "the plan could have ended)",
    )
    evaluate.add_argument(
        "--progress",
        action="store_true",
        help="print progress to stderr even when it is not a terminal",
    )
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: ``sys.argv[1:]``); return the exit code.

    ``main(["simulate", "policy.toml", "--scenario", "errors"])`` prints the timeline and
    returns 0 whatever the outcome; a bad policy prints ``canarykit: error: ...`` to
    stderr and returns 2.
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        _check_reason(args)
        if args.command == "render":
            return run_render(args, sys.stdout)
        if args.command == "evaluate":
            return _evaluate(args, sys.stdout, sys.stderr)
        if args.command == "run":
            return run_run(args, sys.stdout, sys.stderr)
        if args.command == "init":
            return run_init(args, sys.stdout)
        if args.command in COMMANDS or args.command == "status":
            return run_control(args, sys.stdout, sys.stderr)
        return _simulate(args, sys.stdout)
    except ConfigError as exc:
        print(f"{PROG}: error: {shown(exc)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra the policy needs
        print(f"{PROG}: error: {shown(exc)}", file=sys.stderr)
        return 2
    except CanaryError as exc:
        what = {
            "evaluate": "evaluation",
            "simulate": "simulation",
            "run": "rollout",
            "init": "set-up",
        }.get(args.command, "command")
        print(f"{PROG}: error: the {what} failed: {shown(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. --plot into a directory that does not exist
        print(f"{PROG}: error: {shown(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _check_reason(args: argparse.Namespace) -> None:
    """Refuse a ``--reason`` longer than the rollout keeps (`canarykit._text.MAX_TEXT`).

    The runner would keep its first characters only; a person who wrote that much is
    told so now instead.
    """
    reason = getattr(args, "reason", None)
    if isinstance(reason, str) and len(reason) > MAX_TEXT:
        problem = f"is {len(reason)} characters long; a reason is at most {MAX_TEXT}"
        raise ConfigError("--reason", reason[:40] + "...", problem)


def _simulate(args: argparse.Namespace, out: TextIO) -> int:
    from ..testing import SCENARIOS, simulate

    policy = load_policy(args.policy)
    seed = policy.simulation.seed if args.seed is None else args.seed
    rate = policy.simulation.requests_per_second
    if args.requests_per_second is not None:
        rate = args.requests_per_second
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError("--requests-per-second", rate, "must be a finite number > 0")
    if not (math.isfinite(args.until) and args.until > 0):
        raise ConfigError("--until", args.until, "must be a finite number of seconds > 0")
    # The scenarios are defined at the default traffic; the policy may ask for another.
    metrics = attrs.evolve(
        SCENARIOS[args.scenario](seed=seed),
        requests_per_second=rate,
        header_share=policy.simulation.header_share,
        gauges=policy.simulation.gauges,
    )
    result = simulate(policy.plan, decider=policy.decider, metrics=metrics, until=args.until)
    outcome = result.outcome
    settings = {
        "policy": str(args.policy),
        "scenario": args.scenario,
        "seed": seed,
        "requests_per_second": rate,
    }
    if args.json:
        data: dict[str, Any] = {"simulation": settings, **outcome.to_json()}
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        _print_report(policy, settings, outcome, out)
    if args.plot is not None:
        title = f"{Path(args.policy).name}, {args.scenario} scenario"
        plot_rollout(result, args.plot, title=title)
    return 0


# ---------------------------------------------------------------------------------------
# The text report


def _clock(seconds: float) -> str:
    """Virtual time as m:ss (minutes keep counting past an hour): 0:30, 15:00, 75:00."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _percent(value: float) -> str:
    return f"{value:g}%"


def _pair(metric: str, stable: float | None, canary: float | None) -> str:
    if stable is None and canary is None:
        return ""
    shown = ["-" if v is None else format_value(metric, v) for v in (stable, canary)]
    return " / ".join(shown)


def _event(entry: TimelineEntry) -> str:
    reason = shown(entry.reason)  # one line, whatever the text holds
    if entry.kind == "verdict" and entry.verdict is not None:
        return f"{entry.verdict.value}: {reason}"
    return f"{entry.kind}: {reason}" if reason else entry.kind


def _describe_plan(plan: Plan) -> tuple[str, str]:
    """The plan's weights ("10% -> 30% -> ...") and its analysis cadence, for the reports."""
    weights = " -> ".join(_percent(w) for w in plan.weights) or "no weight steps"
    analysis = (
        "no background analysis"
        if plan.analysis_interval is None
        else f"analysis every {format_duration(plan.analysis_interval)}"
    )
    return weights, analysis


def _print_report(
    policy: Policy, settings: dict[str, Any], outcome: RolloutOutcome, out: TextIO
) -> None:
    plan = policy.plan
    weights, analysis = _describe_plan(plan)
    nominal = plan.nominal_seconds
    length = f"{format_duration(nominal)} if nothing pauses it; " if nominal else ""
    out.write(
        f"policy    {shown(settings['policy'])}\n"
        f"plan      canary {weights}; {length}{analysis}\n"
        f"decider   {policy.decider}\n"
        f"scenario  {settings['scenario']} (seed {settings['seed']}, "
        f"{settings['requests_per_second']:g} requests/s)\n\n"
    )
    rows = [("time", "phase", "canary", "errors stable / canary", "p99 stable / canary", "event")]
    for entry in outcome.timeline:
        rows.append(
            (
                _clock(entry.time),
                entry.phase.value,
                _percent(entry.canary_percent),
                _pair("error_rate", entry.stable_error_rate, entry.canary_error_rate),
                _pair("p99", entry.stable_p99, entry.canary_p99),
                _event(entry),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    for row in rows:
        cells = [
            row[0].rjust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4].ljust(widths[4]),
            row[5],
        ]
        out.write("  ".join(cells).rstrip() + "\n")

    word = _OUTCOME_WORDS.get(outcome.phase.value, outcome.phase.value.replace("_", " "))
    started = outcome.started_at if outcome.started_at is not None else 0.0
    took = format_duration(max(0.0, outcome.finished_at - started))
    split = "unknown" if outcome.split is None else _percent(outcome.split.canary_percent)
    why = "" if outcome.reason in ("", word) else f": {shown(outcome.reason)}"
    out.write(
        f"\noutcome   {word} at {_clock(outcome.finished_at)}{why}\n"
        f"          {took} of virtual time; canary left at {split}\n"
    )


# ---------------------------------------------------------------------------------------
# evaluate

# Scenario fields by the option that sets them, so an error names what the user typed.
_SCENARIO_OPTIONS = {
    "requests_per_second": "--requests-per-second",
    "error_rate": "--error-rate",
    "latency_median": "--latency-median",
    "latency_sigma": "--latency-sigma",
    "regression.factor": "--regression",
}


class _Progress:
    """Progress on stderr: one line rewritten in place on a terminal, else a line now and then."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every = 0.25 if self.tty else 5.0
        self.started = self.shown = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.shown < self.every:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        text = f"{PROG}: evaluated {done}/{total} runs ({done * 100 // total}%), {rate:.0f} runs/s"
        if self.tty:
            self.out.write(f"\r{text}" + ("\n" if done == total else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


def _evaluate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..testing._evaluate import Scenario, evaluate, parse_regression

    policy = load_policy(args.policy)
    seed = policy.simulation.seed if args.seed is None else args.seed
    if args.runs < 1:
        raise ConfigError("--runs", args.runs, "must be an integer >= 1")
    rate = policy.simulation.requests_per_second
    if args.requests_per_second is not None:
        rate = args.requests_per_second
    regression = parse_regression(args.regression, field="--regression")
    horizon = args.horizon
    if horizon is not None and not (math.isfinite(horizon) and horizon > 0):
        raise ConfigError("--horizon", horizon, "must be a finite number of seconds > 0")
    try:
        scenario = Scenario(
            requests_per_second=rate,
            error_rate=args.error_rate,
            latency_median=args.latency_median,
            latency_sigma=args.latency_sigma,
            regression=regression,
        )
    except ConfigError as exc:
        option = _SCENARIO_OPTIONS.get(exc.field, exc.field)
        raise ConfigError(option, exc.value, exc.problem) from None
    show = args.progress or err.isatty()
    result = evaluate(
        policy.plan,
        policy.decider,
        scenario,
        runs=args.runs,
        seed=seed,
        horizon=horizon,
        progress=_Progress(err) if show else None,
        header_share=policy.simulation.header_share,
        gauges=policy.simulation.gauges,
    )
    if args.json:
        data = {"policy": str(args.policy), "decider": str(policy.decider), **result.to_json()}
        # With these, "false_rollbacks" counts rollbacks the scripted gauges may justify.
        data["gauges_changing_canary"] = _gauges_changing_the_canary(policy)
        json.dump(data, out, indent=2)
        out.write("\n")
    else:
        _print_evaluation(policy, str(args.policy), result, out)
    return 0


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return format_duration(round(seconds))


def _share(count: int, total: int) -> str:
    from ..testing._evaluate import wilson_interval

    low, high = wilson_interval(count, total)
    return (
        f"{count * 100 / total:.2f}% ({count} of {total}; "
        f"95% interval {low * 100:.2f}% to {high * 100:.2f}%)"
    )


def _gauges_changing_the_canary(policy: Policy) -> list[str]:
    """The policy's simulated gauges on which the canary differs from stable (a leak, a factor)."""
    return [
        name
        for name, gauge in policy.simulation.gauges.items()
        if gauge.canary_factor != 1.0 or gauge.canary_per_hour != 0.0
    ]


def _print_evaluation(policy: Policy, name: str, result: Any, out: TextIO) -> None:
    plan = policy.plan
    weights, analysis = _describe_plan(plan)
    scenario = result.scenario
    runs = result.runs
    lines = [
        f"policy           {shown(name)}",
        f"plan             canary {weights}; {analysis}",
        f"decider          {policy.decider}",
        f"scenario         {scenario.describe()}",
        f"runs             {runs} (seed {result.seed}); each stops by "
        f"{_span(result.horizon)} of virtual time",
        "",
        f"outcomes         promoted {result.promoted}, rolled back {result.rolled_back}, "
        f"aborted {result.aborted}, unfinished {result.unfinished}",
    ]
    regression = scenario.regression
    changed = _gauges_changing_the_canary(policy)
    if changed:
        # The canary really differs on these gauges, so a rollback may be right: calling
        # it false would blame the decider for catching what the policy scripted.
        healthy = "rollbacks" if regression is None else "early rollbacks"
        lines.append(f"{healthy:<17}{_share(result.false_rollbacks, runs)}")
        lines.append(
            f"{'':<17}not called false: [simulation.gauges] scripts a change in the "
            f"canary's {', '.join(changed)}"
        )
    else:
        healthy = "false rollbacks" if regression is None else "early rollbacks"
        lines.append(f"{healthy:<17}{_share(result.false_rollbacks, runs)}")
    if regression is not None:
        lines.append(f"detected         {_share(result.detected, runs)}")
        lines.append(
            f"time to detect   median {_span(result.median_detect_seconds)}, "
            f"p90 {_span(result.p90_detect_seconds)} (from the regression's start)"
        )
        bad = result.median_bad_requests
        if regression.kind == "errors":
            what = "excess canary errors before the rollback (or the end)"
        else:
            what = "canary requests served slower before the rollback (or the end)"
        lines.append(f"bad requests     median {bad:,.1f} {what}")
    lines.append(f"time to promote  median {_span(result.median_promotion_seconds)}")
    lines.append(f"took             {result.seconds:.2f} s for {result.windows:,} windows")
    out.write("\n".join(lines) + "\n")
