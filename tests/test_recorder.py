"""The in-process recorder: requests recorded one by one become observations per window."""

# Imports internals on purpose: the bucket layout under LatencyHistogram.

from __future__ import annotations

import itertools
import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarykit import (
    Arm,
    ConfigError,
    LatencyHistogram,
    MetricsError,
    MetricsSource,
    NoDataError,
    TrafficSplit,
    Window,
)
from canarykit._histogram import _LOWER, _UPPER, MAX_INDEX, MIN_INDEX, bucket_index
from canarykit.metrics import Recorder
from canarykit.testing import VirtualClock

SPLIT = TrafficSplit(canary_percent=10)


class ManualClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def window(start: float, end: float) -> Window:
    return Window(start=start, end=end, split=SPLIT)


latencies = st.one_of(
    st.none(),
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 2.0**-17, 2.0**14, *_UPPER[1:-1]]),
)
records = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=60.0, allow_nan=False).filter(lambda t: t < 60.0),
        st.sampled_from([Arm.STABLE, Arm.CANARY]),
        st.booleans(),
        latencies,
    ),
    max_size=60,
)


def recorded(items: list[tuple[float, Arm, bool, float | None]], **options: float) -> Recorder:
    """A recorder fed `items` in time order."""
    clock = ManualClock()
    recorder = Recorder(clock=clock, retention=3600, **options)
    for t, arm, ok, latency in sorted(items, key=lambda item: item[0]):
        clock.now = t
        recorder.record(arm, ok, latency)
    return recorder


# -- what one window holds --------------------------------------------------------------


def test_counts_requests_errors_and_latency_per_arm():
    clock = ManualClock(100.0)
    recorder = Recorder(clock=clock)
    for latency in (0.010, 0.020, 0.030):
        recorder.record(Arm.STABLE, True, latency)
    recorder.record(Arm.CANARY, False, 0.200)
    recorder.record(Arm.CANARY, True, 0.050)
    clock.now = 101.0
    obs = recorder.observe(window(100, 101))
    assert (obs.start, obs.end) == (100.0, 101.0)
    assert (obs.stable.requests, obs.stable.errors) == (3, 0)
    assert (obs.canary.requests, obs.canary.errors) == (2, 1)
    assert obs.stable.latency == LatencyHistogram.from_samples([0.010, 0.020, 0.030])
    assert obs.canary.latency is not None
    assert obs.canary.latency.counts == LatencyHistogram.from_samples([0.2, 0.05]).counts
    assert obs.canary.mean_latency == pytest.approx(0.125)


@given(items=records, bounds=st.tuples(st.integers(0, 61), st.integers(0, 61)))
def test_a_window_holds_exactly_the_records_made_in_it(items, bounds):
    start, end = min(bounds), max(bounds)
    if start == end:
        end += 1
    recorder = recorded(items)
    inside = [item for item in items if start <= item[0] < end]
    if not inside:
        with pytest.raises(NoDataError):
            recorder.observe(window(start, end))
        return
    obs = recorder.observe(window(start, end))
    for arm in (Arm.STABLE, Arm.CANARY):
        mine = [item for item in inside if item[1] is arm]
        stats = obs.arm(arm)
        assert stats.requests == len(mine)
        assert stats.errors == sum(not ok for _, _, ok, _ in mine)
        timed = [latency for _, _, _, latency in mine if latency is not None]
        if not timed:
            assert stats.latency is None
            continue
        expected = LatencyHistogram.from_samples(timed)
        assert stats.latency is not None
        assert (stats.latency.offset, stats.latency.counts) == (expected.offset, expected.counts)
        assert stats.latency.sum == pytest.approx(expected.sum, rel=1e-9)


@given(
    items=records,
    cuts=st.lists(st.floats(min_value=0.0, max_value=70.0, allow_nan=False), min_size=3),
    resolution=st.sampled_from([1.0, 0.25, 5.0]),
)
def test_consecutive_windows_split_the_records_between_them_without_loss(items, cuts, resolution):
    """Whatever the boundaries (fractional ones included), no record is counted twice or lost."""
    points = sorted(set(cuts))
    if len(points) < 2:
        return
    recorder = recorded(items, resolution=resolution)
    total = {Arm.STABLE: 0, Arm.CANARY: 0}
    for start, end in itertools.pairwise(points):
        try:
            obs = recorder.observe(window(start, end))
        except NoDataError:
            continue
        total[Arm.STABLE] += obs.stable.requests
        total[Arm.CANARY] += obs.canary.requests
    # The windows together cover [first, last) rounded down to the resolution.
    low = math.floor(points[0] / resolution)
    high = math.floor(points[-1] / resolution)
    for arm in total:
        expected = sum(
            1 for t, a, _, _ in items if a is arm and low <= math.floor(t / resolution) < high
        )
        assert total[arm] == expected


@given(
    latency=st.one_of(
        st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
        st.sampled_from(
            [
                *_UPPER,
                *_LOWER,
                *(math.nextafter(u, 0.0) for u in _UPPER),
                *(math.nextafter(u, math.inf) for u in _UPPER),
            ]
        ),
    )
)
def test_the_bucket_of_a_recorded_latency_is_bucket_index(latency):
    recorder = Recorder(clock=lambda: 0.0)
    recorder.record(Arm.CANARY, True, latency)
    histogram = recorder.observe(window(0, 1)).canary.latency
    assert histogram is not None
    assert (histogram.offset, histogram.counts) == (bucket_index(latency), (1,))


def test_integer_latencies_count_like_floats():
    recorder = Recorder(clock=lambda: 0.0)
    recorder.record(Arm.STABLE, True, 0)
    recorder.record(Arm.STABLE, True, 2)
    latency = recorder.observe(window(0, 1)).stable.latency
    assert latency == LatencyHistogram.from_samples([0.0, 2.0])


def test_one_arm_alone_gives_the_other_zero_requests():
    recorder = Recorder(clock=lambda: 5.0)
    recorder.record(Arm.STABLE, True, 0.01)
    obs = recorder.observe(window(0, 10))
    assert obs.canary.requests == 0
    assert obs.canary.latency is None
    assert obs.value(Arm.CANARY, "error_rate") is None


def test_requests_without_a_latency_still_count():
    recorder = Recorder(clock=lambda: 0.0)
    recorder.record(Arm.CANARY, False)
    recorder.record(Arm.CANARY, True, None)
    recorder.record(Arm.CANARY, True, 0.5)
    canary = recorder.observe(window(0, 1)).canary
    assert (canary.requests, canary.errors) == (3, 1)
    assert canary.latency is not None
    assert canary.latency.count == 1


def test_no_request_in_the_window_is_no_data():
    clock = ManualClock(10.0)
    recorder = Recorder(clock=clock)
    with pytest.raises(NoDataError):
        recorder.observe(window(0, 10))
    recorder.record(Arm.CANARY, True, 0.1)
    clock.now = 30.0
    with pytest.raises(NoDataError):
        recorder.observe(window(0, 10))
    with pytest.raises(NoDataError):
        recorder.observe(window(11, 30))
    assert recorder.observe(window(10, 11)).canary.requests == 1


def test_a_window_may_be_collected_again():
    recorder = recorded([(1.0, Arm.STABLE, True, 0.1), (2.0, Arm.CANARY, False, 0.2)])
    assert recorder.observe(window(0, 5)) == recorder.observe(window(0, 5))


def test_a_window_collected_before_it_ends_has_the_records_so_far():
    clock = ManualClock(3.5)
    recorder = Recorder(clock=clock)
    recorder.record(Arm.CANARY, True, 0.1)
    assert recorder.observe(window(0, 10)).canary.requests == 1
    clock.now = 7.0
    recorder.record(Arm.CANARY, True, 0.1)
    assert recorder.observe(window(0, 10)).canary.requests == 2


def test_huge_latencies_land_in_the_top_bucket_and_an_overflowing_sum_is_dropped():
    recorder = Recorder(clock=lambda: 0.0)
    recorder.record(Arm.STABLE, True, 1e308)
    recorder.record(Arm.STABLE, True, 1e308)
    latency = recorder.observe(window(0, 1)).stable.latency
    assert latency is not None
    assert (latency.offset, latency.counts, latency.sum) == (MAX_INDEX, (2,), None)


def test_zero_latency_lands_in_the_bottom_bucket():
    recorder = Recorder(clock=lambda: 0.0)
    recorder.record(Arm.STABLE, True, 0.0)
    latency = recorder.observe(window(0, 1)).stable.latency
    assert latency is not None
    assert (latency.offset, latency.counts, latency.sum) == (MIN_INDEX, (1,), 0.0)


# -- time: slots, retention, clocks -----------------------------------------------------


def test_windows_reaching_past_retention_are_an_error_not_an_empty_answer():
    clock = ManualClock(0.0)
    recorder = Recorder(clock=clock, retention=10)
    recorder.record(Arm.STABLE, True, 0.1)
    clock.now = 5.0
    assert recorder.observe(window(0, 5)).stable.requests == 1  # nothing dropped yet
    clock.now = 30.0
    recorder.record(Arm.CANARY, True, 0.1)
    with pytest.raises(MetricsError) as err:
        recorder.observe(window(0, 5))
    assert not isinstance(err.value, NoDataError)
    assert "retention" in str(err.value)
    assert recorder.observe(window(25, 31)).canary.requests == 1


def test_retention_bounds_the_slots_kept():
    clock = ManualClock(0.0)
    recorder = Recorder(clock=clock, retention=20)
    for second in range(200):
        clock.now = second + 0.5
        recorder.record(Arm.STABLE, True, 0.01)
    assert len(recorder._sealed) <= 21
    obs = recorder.observe(window(180, 200))
    assert obs.stable.requests == 20


def test_a_clock_stepping_back_records_into_the_latest_slot():
    clock = ManualClock(100.0)
    recorder = Recorder(clock=clock)
    recorder.record(Arm.STABLE, True, 0.1)
    clock.now = 50.0
    recorder.record(Arm.STABLE, True, 0.1)
    assert recorder.observe(window(100, 101)).stable.requests == 2


def test_sub_second_slots():
    clock = ManualClock(0.0)
    recorder = Recorder(clock=clock, resolution=0.25)
    for t in (0.0, 0.1, 0.3, 0.6, 0.9):
        clock.now = t
        recorder.record(Arm.CANARY, True, 0.1)
    assert recorder.observe(window(0, 0.5)).canary.requests == 3
    assert recorder.observe(window(0.5, 1.0)).canary.requests == 2


def test_a_clock_object_tells_the_time():
    clock = VirtualClock(start=500.0)
    recorder = Recorder(clock=clock)
    recorder.record(Arm.CANARY, True, 0.1)
    clock.advance(10)
    recorder.record(Arm.CANARY, True, 0.1)
    assert recorder.observe(window(500, 501)).canary.requests == 1
    assert recorder.observe(window(510, 511)).canary.requests == 1


def test_the_default_clock_is_wall_time():
    import time

    recorder = Recorder()
    recorder.record(Arm.STABLE, True, 0.1)
    now = time.time()
    assert recorder.observe(window(now - 5, now + 5)).stable.requests == 1


@pytest.mark.anyio
async def test_collect_is_the_metrics_source_protocol():
    recorder = Recorder(clock=lambda: 1.0)
    assert isinstance(recorder, MetricsSource)
    recorder.record(Arm.CANARY, True, 0.1)
    obs = await recorder.collect(window(0, 2))
    assert obs == recorder.observe(window(0, 2))


def test_records_from_many_threads_all_count():
    recorder = Recorder(clock=lambda: 0.0)
    start = threading.Barrier(4)

    def worker(arm: Arm) -> None:
        start.wait()
        for i in range(20_000):
            recorder.record(arm, i % 10 != 0, 0.001 * (i % 50))

    arms = [Arm.STABLE, Arm.STABLE, Arm.CANARY, Arm.CANARY]
    threads = [threading.Thread(target=worker, args=(arm,)) for arm in arms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    obs = recorder.observe(window(0, 1))
    for stats in (obs.stable, obs.canary):
        assert (stats.requests, stats.errors) == (40_000, 4_000)
        assert stats.latency is not None
        assert stats.latency.count == 40_000


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [-0.001, math.nan, math.inf, -math.inf, "0.1", True])
def test_a_bad_latency_is_refused_and_nothing_is_recorded(latency):
    recorder = Recorder(clock=lambda: 0.0)
    with pytest.raises(ConfigError) as err:
        recorder.record(Arm.CANARY, True, latency)
    assert err.value.field == "latency"
    with pytest.raises(NoDataError):
        recorder.observe(window(0, 1))


@pytest.mark.parametrize(("arm", "ok", "field"), [("blue", True, "arm"), (Arm.CANARY, 1, "ok")])
def test_a_bad_arm_or_outcome_is_refused(arm, ok, field):
    recorder = Recorder(clock=lambda: 0.0)
    with pytest.raises(ConfigError) as err:
        recorder.record(arm, ok, 0.1)
    assert err.value.field == field
    with pytest.raises(NoDataError):
        recorder.observe(window(0, 1))


def test_arms_may_be_named_by_their_values():
    recorder = Recorder(clock=lambda: 0.0)
    recorder.record("canary", True, 0.1)  # type: ignore[arg-type]
    recorder.record("stable", False, 0.1)  # type: ignore[arg-type]
    obs = recorder.observe(window(0, 1))
    assert (obs.canary.requests, obs.stable.errors) == (1, 1)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"resolution": 0}, "resolution"),
        ({"resolution": -1}, "resolution"),
        ({"resolution": math.nan}, "resolution"),
        ({"retention": 0.5}, "retention"),
        ({"retention": math.inf}, "retention"),
        ({"clock": 12}, "clock"),
    ],
)
def test_bad_settings_are_refused(options, field):
    with pytest.raises(ConfigError) as err:
        Recorder(**options)
    assert err.value.field == field


def test_observe_wants_a_window():
    with pytest.raises(ConfigError):
        Recorder().observe((0, 10))  # type: ignore[arg-type]


# -- measure(): the timer ---------------------------------------------------------------


class Cancelled(BaseException):
    pass


def test_measure_records_a_success_with_its_latency():
    recorder = Recorder(clock=lambda: 0.0)
    with recorder.measure(Arm.CANARY) as request:
        assert request.ok
    canary = recorder.observe(window(0, 1)).canary
    assert (canary.requests, canary.errors) == (1, 0)
    assert canary.latency is not None
    assert canary.latency.count == 1


def test_measure_counts_an_exception_or_fail_as_an_error():
    recorder = Recorder(clock=lambda: 0.0)
    with pytest.raises(KeyError), recorder.measure(Arm.CANARY):
        raise KeyError("boom")
    with recorder.measure(Arm.CANARY) as request:
        request.fail()
    canary = recorder.observe(window(0, 1)).canary
    assert (canary.requests, canary.errors) == (2, 2)


def test_measure_records_nothing_when_cancelled():
    recorder = Recorder(clock=lambda: 0.0)
    with pytest.raises(Cancelled), recorder.measure(Arm.STABLE):
        raise Cancelled
    with pytest.raises(NoDataError):
        recorder.observe(window(0, 1))


def test_measure_refuses_an_unknown_arm_at_once():
    with pytest.raises(ConfigError):
        Recorder().measure("green")  # type: ignore[arg-type]
