"""Ready-made plans equal to AWS CodeDeploy's deployment configurations.

>>> canary_10_percent_5_minutes().steps
(SetWeight(percent=10.0), Pause(seconds=300.0), SetWeight(percent=100.0))
>>> codedeploy("Linear10PercentEvery1Minute") == linear_10_percent_every_1_minute()
True
"""

from __future__ import annotations

import re
from typing import Any

from ._errors import ConfigError
from ._plan import Plan, SetWeight, _check_plan_options, from_weights, linear

__all__ = [
    "all_at_once",
    "canary_10_percent_5_minutes",
    "codedeploy",
    "linear_10_percent_every_1_minute",
]

# ASCII digits only (\d would take any script's), and few enough of them that int()
# stays cheap and the minutes stay a sane duration.
_CANARY = re.compile(r"Canary([0-9]{1,3})Percent([0-9]{1,6})Minutes?")
_LINEAR = re.compile(r"Linear([0-9]{1,3})PercentEvery([0-9]{1,6})Minutes?")


def _canary(percent: int, minutes: int, **plan_options: Any) -> Plan:
    return from_weights([percent, 100], hold=minutes * 60, **plan_options)


def _linear(percent: int, minutes: int, **plan_options: Any) -> Plan:
    # CodeDeploy shifts `percent` more every `minutes` until all traffic has moved;
    # `linear` makes the last shift smaller when needed, so the plan ends exactly at 100.
    return linear(percent, percent, hold=minutes * 60, **plan_options)


def codedeploy(name: str, **plan_options: Any) -> Plan:
    """The plan for a CodeDeploy configuration name such as ``Canary10Percent15Minutes``.

    Understands ``Canary<P>Percent<M>Minutes``, ``Linear<P>PercentEvery<M>Minute(s)`` and
    ``AllAtOnce`` (with or without the ``CodeDeployDefault.`` prefix). Extra keyword
    arguments go to `Plan` (for example ``analysis_interval=60``).
    """
    if not isinstance(name, str):
        raise ConfigError("name", name, "must be a CodeDeploy configuration name")
    short = name.removeprefix("CodeDeployDefault.")
    if short == "AllAtOnce":
        _check_plan_options(plan_options)
        return Plan(steps=[SetWeight(100)], **plan_options)
    for pattern, build in ((_CANARY, _canary), (_LINEAR, _linear)):
        found = pattern.fullmatch(short)
        if found:
            percent, minutes = int(found.group(1)), int(found.group(2))
            if not 0 < percent < 100 or minutes < 1:
                raise ConfigError("name", name, "needs a percent in (0, 100) and minutes >= 1")
            return build(percent, minutes, **plan_options)
    raise ConfigError(
        "name",
        name,
        "is not a CodeDeploy configuration (Canary<P>Percent<M>Minutes, "
        "Linear<P>PercentEvery<M>Minutes or AllAtOnce)",
    )


def canary_10_percent_5_minutes(**plan_options: Any) -> Plan:
    """CodeDeploy's ``Canary10Percent5Minutes``: 10% for five minutes, then 100%."""
    return codedeploy("Canary10Percent5Minutes", **plan_options)


def linear_10_percent_every_1_minute(**plan_options: Any) -> Plan:
    """CodeDeploy's ``Linear10PercentEvery1Minute``: 10% more every minute up to 100%."""
    return codedeploy("Linear10PercentEvery1Minute", **plan_options)


def all_at_once(**plan_options: Any) -> Plan:
    """CodeDeploy's ``AllAtOnce``: straight to 100% (still watched when analysis is on)."""
    return codedeploy("AllAtOnce", **plan_options)
