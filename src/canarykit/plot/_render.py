"""A picture of one rollout, drawn with matplotlib from its outcome's timeline.

Three panels share the time axis (minutes since the rollout started): the canary's
confirmed weight, with a mark for every analysis verdict along its top edge; each arm's
error rate per analysis window; and each arm's p99 latency per window. The end is marked
in every panel: the promotion, the start of the rollback and its end, an abort, or where
a paused rollout stopped; time spent paused is shaded.

matplotlib is imported only when a picture is drawn, through its object-oriented API
(`matplotlib.figure.Figure`), never pyplot: no display, no global state, and the Agg
renderer for PNG whatever backend the process has chosen. SVG output is deterministic:
no date, and element ids from a fixed salt.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError
from .._events import RolloutOutcome, TimelineEntry
from .._machine import Phase
from .._verdict import VerdictKind

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "plot_rollout", "rollout_figure"]

_EXTRA = "pip install 'canarykit[plot]'"

FORMATS = {".svg": "svg", ".png": "png"}
"""File suffixes `plot_rollout` writes, and the image format each one means."""

_STABLE = "#1f77b4"  # blue
_CANARY = "#d62728"  # red
_WEIGHT = "#2ca02c"  # green
# How each verdict kind is marked: (marker, colour, label).
_VERDICT_STYLE = {
    VerdictKind.PASS: ("o", "#2ca02c", "pass"),
    VerdictKind.NOT_YET: ("o", "#9e9e9e", "not yet"),
    VerdictKind.INCONCLUSIVE: ("D", "#ff7f0e", "inconclusive"),
    VerdictKind.FAIL: ("X", "#d62728", "fail"),
}
# How each phase a rollout can enter is marked: (colour, line style, label).
_PHASE_STYLE = {
    Phase.SUCCEEDED: ("#2ca02c", "-", "promoted"),
    Phase.ROLLING_BACK: ("#d62728", "--", "rollback starts"),
    Phase.ROLLED_BACK: ("#d62728", "-", "rolled back"),
    Phase.ABORTED: ("#9467bd", "-", "aborted"),
}
_OUTCOME_TEXT = {
    Phase.SUCCEEDED: "promoted",
    Phase.ROLLED_BACK: "rolled back",
    Phase.ABORTED: "aborted",
    Phase.PAUSED: "paused",
}
_TITLE_LIMIT = 110


def _import_matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.figure  # makes `matplotlib.figure` an attribute for the caller
        import matplotlib.patches  # likewise
    except ImportError:
        raise ModuleNotFoundError(
            f"drawing a rollout needs matplotlib, which is not installed: {_EXTRA}"
        ) from None
    return matplotlib


def image_format(path: Any, field: str = "path") -> str:
    """The image format `path`'s suffix asks for ("svg" or "png"); ConfigError otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(field, path, "must be a file path ending in .svg or .png")
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(field, os.fspath(path), "must end in .svg or .png")
    return FORMATS[suffix]


def _outcome_of(rollout: Any) -> RolloutOutcome:
    outcome = getattr(rollout, "outcome", rollout)  # a Simulation carries its outcome
    if not isinstance(outcome, RolloutOutcome):
        raise ConfigError(
            "rollout", type(rollout).__name__, "must be a RolloutOutcome or a Simulation"
        )
    return outcome


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@attrs.frozen(kw_only=True)
class _Series:
    """The numbers a picture shows, taken from an outcome (minutes since the start)."""

    start: float
    end: float
    weight_times: tuple[float, ...]
    weights: tuple[float, ...]
    verdicts: tuple[TimelineEntry, ...]
    marks: tuple[tuple[float, Phase], ...]
    paused: tuple[tuple[float, float], ...]

    def minutes(self, time: float) -> float:
        return (time - self.start) / 60.0


def _series(outcome: RolloutOutcome) -> _Series:
    timeline = outcome.timeline
    times = [entry.time for entry in timeline]
    start = outcome.started_at if outcome.started_at is not None else min(times, default=0.0)
    end = max([outcome.finished_at, *times])
    weight_times: list[float] = [start]
    weights: list[float] = [timeline[0].canary_percent if timeline else 0.0]
    marks: list[tuple[float, Phase]] = []
    paused: list[tuple[float, float]] = []
    paused_since: float | None = None
    for entry in timeline:
        # Every entry carries the weight the router confirmed as of that moment.
        weight_times.append(entry.time)
        weights.append(entry.canary_percent)
        if entry.kind != "phase":
            continue
        if entry.phase in _PHASE_STYLE:
            marks.append((entry.time, entry.phase))
        if entry.phase is Phase.PAUSED and paused_since is None:
            paused_since = entry.time
        elif entry.phase is not Phase.PAUSED and paused_since is not None:
            paused.append((paused_since, entry.time))
            paused_since = None
    if paused_since is not None:
        paused.append((paused_since, end))
    weight_times.append(end)
    weights.append(weights[-1])
    return _Series(
        start=start,
        end=end,
        weight_times=tuple(weight_times),
        weights=tuple(weights),
        verdicts=outcome.verdicts,
        marks=tuple(marks),
        paused=tuple(paused),
    )


def _title(outcome: RolloutOutcome, name: str | None, series: _Series) -> tuple[str, str]:
    """The heading (how and when the rollout ended) and the reason, on a line of its own."""
    what = _OUTCOME_TEXT.get(outcome.phase, outcome.phase.value.replace("_", " "))
    head = f"{name}: " if name else ""
    heading = _clip(f"{head}{what} at {_clock(outcome.finished_at - series.start)}", 90)
    reason = "" if outcome.phase is Phase.SUCCEEDED else outcome.reason
    return heading, _clip(reason, _TITLE_LIMIT)


def _value(value: float | None, scale: float) -> float:
    return math.nan if value is None or not math.isfinite(value) else value * scale


def _arm_panel(
    axes: Axes,
    series: _Series,
    stable: Sequence[float | None],
    canary: Sequence[float | None],
    scale: float,
    label: str,
) -> None:
    times = [series.minutes(entry.time) for entry in series.verdicts]
    stable_values = [_value(v, scale) for v in stable]
    canary_values = [_value(v, scale) for v in canary]
    seen = [v for v in stable_values + canary_values if not math.isnan(v)]
    if seen:
        axes.plot(times, stable_values, color=_STABLE, marker=".", linewidth=1.2)
        axes.plot(times, canary_values, color=_CANARY, marker=".", linewidth=1.2)
    axes.set_ylabel(label)
    top = max(seen, default=0.0)
    axes.set_ylim(0, top * 1.2 if top > 0 else 1.0)
    if not seen:
        axes.text(
            0.5, 0.5, "no analysis windows", transform=axes.transAxes, ha="center", color="#777"
        )


def _end_marks(series: _Series) -> list[tuple[float, Phase]]:
    """The phase marks to name: a rollback that ended when it started is named once."""
    named: list[tuple[float, Phase]] = []
    for time, phase in series.marks:
        if named and named[-1][0] == time and named[-1][1] is Phase.ROLLING_BACK:
            named[-1] = (time, phase)
        else:
            named.append((time, phase))
    return named


def rollout_figure(rollout: Any, *, title: str | None = None) -> Figure:
    """A matplotlib `Figure` of a rollout (a `RolloutOutcome` or a `Simulation`).

    `plot_rollout` writes it to a file; this is for notebooks and for adding panels.
    `title` names the rollout in the heading, before how it ended.
    """
    outcome = _outcome_of(rollout)
    if title is not None and not isinstance(title, str):
        raise ConfigError("title", title, "must be a string")
    matplotlib = _import_matplotlib()
    from matplotlib.lines import Line2D

    series = _series(outcome)
    figure: Figure = matplotlib.figure.Figure(figsize=(10, 7.5))
    # Fixed margins rather than a layout engine: its iterations leave float noise that
    # would make the same rollout's SVG differ from run to run.
    weight_axes, error_axes, latency_axes = figure.subplots(
        3,
        1,
        sharex=True,
        gridspec_kw={
            "height_ratios": [1.2, 1, 1],
            "left": 0.08,
            "right": 0.98,
            "top": 0.865,
            "bottom": 0.075,
            "hspace": 0.12,
        },
    )
    minutes = [series.minutes(t) for t in series.weight_times]
    weight_axes.step(minutes, series.weights, where="post", color=_WEIGHT, linewidth=2)
    weight_axes.fill_between(minutes, series.weights, step="post", color=_WEIGHT, alpha=0.12)
    weight_axes.set_ylabel("canary weight (%)")
    weight_axes.set_ylim(0, 118)
    weight_axes.set_yticks([0, 25, 50, 75, 100])
    # The verdicts, one mark per analysis window, along the top edge of the weight panel.
    handles: list[Any] = [Line2D([], [], color=_WEIGHT, linewidth=2, label="canary weight")]
    for kind, (marker, color, label) in _VERDICT_STYLE.items():
        times = [series.minutes(e.time) for e in series.verdicts if e.verdict is kind]
        if times:
            weight_axes.scatter(times, [109] * len(times), marker=marker, color=color, s=28)
            handles.append(
                Line2D([], [], marker=marker, color=color, linestyle="", label=f"verdict: {label}")
            )
    verdicts = series.verdicts
    _arm_panel(
        error_axes,
        series,
        [e.stable_error_rate for e in verdicts],
        [e.canary_error_rate for e in verdicts],
        100.0,
        "error rate (%)",
    )
    _arm_panel(
        latency_axes,
        series,
        [e.stable_p99 for e in verdicts],
        [e.canary_p99 for e in verdicts],
        1000.0,
        "p99 latency (ms)",
    )
    handles.append(Line2D([], [], color=_STABLE, marker=".", label="stable"))
    handles.append(Line2D([], [], color=_CANARY, marker=".", label="canary"))
    for axes in (weight_axes, error_axes, latency_axes):
        for begin, end in series.paused:
            axes.axvspan(series.minutes(begin), series.minutes(end), color="#ff7f0e", alpha=0.1)
        for time, phase in series.marks:
            color, style, _ = _PHASE_STYLE[phase]
            axes.axvline(series.minutes(time), color=color, linestyle=style, linewidth=1.5)
        axes.grid(True, color="#e5e5e5", linewidth=0.8)
        axes.set_axisbelow(True)
    span = max(series.minutes(series.end), 1.0)
    # Name each end mark beside its line, on the side with room, inside the weight panel.
    for index, (time, phase) in enumerate(_end_marks(series)):
        color, _, label = _PHASE_STYLE[phase]
        x = series.minutes(time)
        right_half = x > span / 2
        weight_axes.annotate(
            label,
            (x, 0.62 - 0.1 * (index % 3)),
            xycoords=("data", "axes fraction"),
            xytext=(-4 if right_half else 4, 0),
            textcoords="offset points",
            ha="right" if right_half else "left",
            color=color,
            fontsize="small",
            fontweight="bold",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    if series.paused:
        handles.append(matplotlib.patches.Patch(color="#ff7f0e", alpha=0.25, label="paused"))
    latency_axes.set_xlim(0, span * 1.03)
    latency_axes.set_xlabel("minutes since the rollout started")
    heading, reason = _title(outcome, title, series)
    figure.text(0.5, 0.975, heading, ha="center", va="top", fontsize="large")
    if reason:
        figure.text(0.5, 0.94, reason, ha="center", va="top", fontsize="small", color="#444")
    figure.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.92),
        ncols=len(handles),
        frameon=False,
        fontsize="small",
        handlelength=1.5,
        columnspacing=1.2,
    )
    return figure


def plot_rollout(rollout: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write a picture of a rollout to `path`: SVG or PNG, by the file's suffix.

    `rollout` is a `RolloutOutcome` or a `Simulation`. The picture shows the canary's
    weight over time with a mark per verdict, each arm's error rate and p99 latency per
    analysis window, and the promotion, rollback, abort or pause. Needs matplotlib
    (``pip install 'canarykit[plot]'``). Returns the path written.

    >>> from canarykit import linear
    >>> from canarykit.testing import simulate
    >>> plot_rollout(simulate(linear(50, 50, hold=60)), "rollout.jpg")
    Traceback (most recent call last):
    ...
    canarykit.ConfigError: path: must end in .svg or .png, got 'rollout.jpg'
    """
    image = image_format(path)
    outcome = _outcome_of(rollout)
    matplotlib = _import_matplotlib()
    figure = rollout_figure(outcome, title=title)
    # Fixed ids and no date, so the same rollout always gives the same SVG file.
    metadata: dict[str, Any] = {"Date": None} if image == "svg" else {"Software": None}
    with matplotlib.rc_context({"svg.hashsalt": "canarykit", "svg.fonttype": "path"}):
        figure.savefig(os.fspath(path), format=image, dpi=100, metadata=metadata)
    return Path(path)
