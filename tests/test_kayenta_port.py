"""Kayenta's own judge tests, ported as data, run against canarykit's public API.

Each case of ``tests/data/kayenta/cases.json`` is one test of Kayenta's suites with its
inputs and Kayenta's expected result, and a status: ``agrees`` (canarykit must give
Kayenta's result), ``differs`` (a deliberate difference, stated in the case, and the
test asserts canarykit's documented result instead), ``not_portable`` or
``not_ported`` (with why; not run). The counts come from the statuses:

    python -c "import json,collections; d=json.load(open('tests/data/kayenta/cases.json'));
    print(collections.Counter(c['status'] for c in d['cases']))"
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from canarykit.deciders import (
    Classification,
    hodges_lehmann,
    kayenta_metric,
    kayenta_score,
    mann_whitney,
)

DATA = json.loads((Path(__file__).parent / "data" / "kayenta" / "cases.json").read_text())
CASES = DATA["cases"]
PORTED = [case for case in CASES if case["status"] in ("agrees", "differs")]


def values(item: Any) -> list[float | None]:
    """A list of numbers, or a ``$NAME`` of the file's shared datasets."""
    if isinstance(item, str):
        assert item.startswith("$")
        return list(DATA["datasets"][item[1:]])
    return list(item)


def expected(case: dict[str, Any]) -> dict[str, Any]:
    return case["kayenta"] if case["status"] == "agrees" else case["canarykit"]


def check_classify(case: dict[str, Any]) -> None:
    args, want = case["args"], expected(case)
    metric = kayenta_metric("metric", **args["metric"])
    found = metric.classify(values(args["canary"]), values(args["stable"]))
    assert found.label == want["label"], found.reason
    if "critical" in want:
        assert found.critical_failure is want["critical"], found.reason
    if "effect" in want:
        assert found.effect == want["effect"], found.reason
    if want.get("reason_nonempty"):
        assert found.reason


def check_effect(case: dict[str, Any]) -> None:
    args = case["args"]
    metric = kayenta_metric("metric", **args["metric"])
    found = metric.classify(values(args["canary"]), values(args["stable"]))
    want = expected(case)["effect"]
    # Kayenta's NaN (a mean of 0) is canarykit's None.
    assert found.effect == (None if want is None else pytest.approx(want))


def check_cles(case: dict[str, Any]) -> None:
    args, want = case["args"], expected(case)
    found = mann_whitney(values(args["canary"]), values(args["stable"])).cles
    assert found == pytest.approx(want["cles"], abs=want["tolerance"])


def check_clean(case: dict[str, Any]) -> None:
    args = case["args"]
    raw = [math.nan if v is None else v for v in values(args["values"])]
    kept = kayenta_metric("metric", **args["metric"]).clean(raw)
    assert kept == pytest.approx(expected(case)["kept"])


def check_score(case: dict[str, Any]) -> None:
    args, want = case["args"], expected(case)
    results = []
    for index, item in enumerate(args["metrics"]):
        name = f"m{index}"
        metric = kayenta_metric(name, groups=item["groups"], critical=item["critical"])
        # Kayenta's scorer fails on a critical metric whose label is not Pass.
        failure = item["critical"] and item["label"] != "Pass"
        label = Classification(
            metric=name, label=item["label"], reason="", critical_failure=failure
        )
        results.append((metric, label))
    score = kayenta_score(results, group_weights=args["group_weights"])
    assert score.score == pytest.approx(want["score"], abs=0.005)
    if "group_scores" in want:
        assert sorted(score.groups.values()) == pytest.approx(want["group_scores"])


def check_hodges_lehmann(case: dict[str, Any]) -> None:
    args, want = case["args"], expected(case)
    shift = hodges_lehmann(
        values(args["canary"]), values(args["stable"]), confidence=args["confidence"]
    )
    tolerance = want["tolerance"]
    assert shift.lower == pytest.approx(want["lower"], abs=tolerance)
    assert shift.upper == pytest.approx(want["upper"], abs=tolerance)
    assert shift.estimate == pytest.approx(
        want["estimate"], abs=want.get("estimate_tolerance", tolerance)
    )
    for end in ("lower_open", "upper_open"):
        if end in want:
            assert getattr(shift, end) is want[end]
    if case["status"] == "differs":
        # Within R's root-finding tolerance of Kayenta's numbers, and an open end is the
        # side where R's root lies just inside the interval.
        kayenta = case["kayenta"]
        assert shift.lower == pytest.approx(kayenta["lower"], abs=1e-4)
        assert shift.upper == pytest.approx(kayenta["upper"], abs=1e-4)
        assert shift.estimate == pytest.approx(kayenta["estimate"], abs=1e-4)
        assert shift.lower_open is (kayenta["lower"] > shift.lower)
        assert shift.upper_open is (kayenta["upper"] < shift.upper)


CHECKS = {
    "classify": check_classify,
    "effect": check_effect,
    "cles": check_cles,
    "clean": check_clean,
    "score": check_score,
    "hodges_lehmann": check_hodges_lehmann,
}


@pytest.mark.parametrize("case", PORTED, ids=[f"{c['suite']}: {c['test']}" for c in PORTED])
def test_kayenta_case(case: dict[str, Any]) -> None:
    CHECKS[case["check"]](case)


def test_every_case_is_accounted_for() -> None:
    # Each test of the suites is in the file once, with a status and its reason.
    names = Counter((case["suite"], case["test"]) for case in CASES)
    assert max(names.values()) == 1
    for case in CASES:
        status = case["status"]
        assert status in DATA["statuses"]
        if status == "differs":
            assert case["deliberate_difference"] and "canarykit" in case
        elif status in ("not_portable", "not_ported"):
            assert case["why"] and "check" not in case
        else:
            assert "canarykit" not in case and "deliberate_difference" not in case
    suites = Counter(case["suite"] for case in CASES)
    assert suites == {
        "ClassifierSuite": 37,
        "ScorerSuite": 13,
        "StatisticSuite": 18,
        "TransformSuite": 6,
        "DetectorSuite": 6,
        "MannWhitneySuite": 7,
    }


def test_a_difference_really_differs_from_kayenta() -> None:
    # A case marked "differs" must not in fact agree: its canarykit block is not
    # Kayenta's expectation.
    for case in CASES:
        if case["status"] == "differs":
            assert case["canarykit"] != case["kayenta"], case["test"]
