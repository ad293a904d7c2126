"""A split is described by one function, for the timeline and the notices alike."""

# Imports internals on purpose: the one description of a split.

from __future__ import annotations

from canarykit import HeaderRoute, TrafficSplit
from canarykit._events import describe_split
from canarykit.notify import _describe


def test_a_split_is_described_with_its_header_routes_and_mirror():
    split = TrafficSplit(
        canary_percent=25,
        header_routes=(HeaderRoute(header="x-canary", value="1"),),
        mirror_percent=5,
    )
    assert describe_split(split) == "canary 25%, x-canary exact '1' -> canary, mirror 5%"


def test_a_plain_split_is_its_canary_share():
    assert describe_split(TrafficSplit(canary_percent=12.5)) == "canary 12.5%"


def test_notices_use_the_core_description_not_a_copy():
    assert _describe.describe_split is describe_split
