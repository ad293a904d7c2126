"""Deciders: judge the canary one window at a time (the `canarykit.Decider` protocol).

- `ThresholdDecider` (`threshold`, `bound`): fixed inclusive bounds on one arm's metrics
  with a budget of failed checks, like Flagger's ``thresholdRange`` and ``threshold``.
- `RelativeDecider` (`relative`, `compare`): canary against stable in the same window,
  as a ratio or an absolute difference, in the direction that is bad.
- `Limits` (`limited`): Argo's failure, consecutive-failure, inconclusive and
  consecutive-success limits, and dry runs, around any decider.
- `SequentialErrors` / `SequentialLatency` (`sequential_errors`, `sequential_latency`):
  anytime-valid tests that judge each window (testing by betting on the canary's share
  of a window's errors, valid when errors come in bursts; each window's rank statistic
  for latency) and may be checked after every window; `alpha` bounds the
  false-rollback probability per rollout per metric, beyond a practical margin (5%
  for errors, 3% for latency).
- `KayentaJudge` (`kayenta`, `kayenta_metric`): Netflix's automated canary analysis:
  Mann-Whitney with a Hodges-Lehmann interval per metric, Pass/High/Low/Nodata labels,
  weighted group scores with marginal and pass thresholds, on a judging schedule;
  `mann_whitney` and `hodges_lehmann` (on samples or on histograms) beneath it.
- `AllOf` / `AnyOf` (``a & b``, ``a | b``, `all_of`, `any_of`): the worst or the best of
  several deciders' verdicts.

>>> from canarykit.deciders import bound, threshold
>>> decider = threshold(bound("error_rate", max=0.02), bound("p99", max=0.5), failure_limit=2)
>>> decider.failure_limit
2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._exports import claim_public_names as _claim_public_names
from .._exports import load_lazy as _load_lazy
from ._compose import AllOf as AllOf
from ._compose import AnyOf as AnyOf
from ._compose import Composable as Composable
from ._compose import all_of as all_of
from ._compose import any_of as any_of

__all__ = [
    "AllOf",
    "AnyOf",
    "Bound",
    "Classification",
    "Comparison",
    "Composable",
    "Direction",
    "KayentaJudge",
    "KayentaMetric",
    "KayentaScore",
    "Limits",
    "MannWhitneyResult",
    "NoDataPolicy",
    "RelativeDecider",
    "SequentialErrors",
    "SequentialLatency",
    "ShiftEstimate",
    "ThresholdDecider",
    "all_of",
    "any_of",
    "bound",
    "bucket_ratio",
    "compare",
    "format_value",
    "hodges_lehmann",
    "hodges_lehmann_histograms",
    "kayenta",
    "kayenta_metric",
    "kayenta_score",
    "limited",
    "mann_whitney",
    "mann_whitney_histograms",
    "relative",
    "sequential_errors",
    "sequential_latency",
    "threshold",
]

if TYPE_CHECKING:
    from ._kayenta import Classification as Classification
    from ._kayenta import KayentaJudge as KayentaJudge
    from ._kayenta import KayentaMetric as KayentaMetric
    from ._kayenta import KayentaScore as KayentaScore
    from ._kayenta import kayenta as kayenta
    from ._kayenta import kayenta_metric as kayenta_metric
    from ._kayenta import kayenta_score as kayenta_score
    from ._limits import Limits as Limits
    from ._limits import limited as limited
    from ._mannwhitney import MannWhitneyResult as MannWhitneyResult
    from ._mannwhitney import ShiftEstimate as ShiftEstimate
    from ._mannwhitney import bucket_ratio as bucket_ratio
    from ._mannwhitney import hodges_lehmann as hodges_lehmann
    from ._mannwhitney import hodges_lehmann_histograms as hodges_lehmann_histograms
    from ._mannwhitney import mann_whitney as mann_whitney
    from ._mannwhitney import mann_whitney_histograms as mann_whitney_histograms
    from ._relative import Comparison as Comparison
    from ._relative import Direction as Direction
    from ._relative import RelativeDecider as RelativeDecider
    from ._relative import compare as compare
    from ._relative import relative as relative
    from ._sequential import SequentialErrors as SequentialErrors
    from ._sequential import SequentialLatency as SequentialLatency
    from ._sequential import sequential_errors as sequential_errors
    from ._sequential import sequential_latency as sequential_latency
    from ._threshold import Bound as Bound
    from ._threshold import NoDataPolicy as NoDataPolicy
    from ._threshold import ThresholdDecider as ThresholdDecider
    from ._threshold import bound as bound
    from ._threshold import format_value as format_value
    from ._threshold import threshold as threshold

# Each decider's module loads on first use of one of its names (PEP 562): a program that
# judges with `threshold` does not load the Kayenta or sequential machinery.
_LAZY = {
    "Classification": "._kayenta",
    "KayentaJudge": "._kayenta",
    "KayentaMetric": "._kayenta",
    "KayentaScore": "._kayenta",
    "kayenta": "._kayenta",
    "kayenta_metric": "._kayenta",
    "kayenta_score": "._kayenta",
    "Limits": "._limits",
    "limited": "._limits",
    "MannWhitneyResult": "._mannwhitney",
    "ShiftEstimate": "._mannwhitney",
    "bucket_ratio": "._mannwhitney",
    "hodges_lehmann": "._mannwhitney",
    "hodges_lehmann_histograms": "._mannwhitney",
    "mann_whitney": "._mannwhitney",
    "mann_whitney_histograms": "._mannwhitney",
    "Comparison": "._relative",
    "Direction": "._relative",
    "RelativeDecider": "._relative",
    "compare": "._relative",
    "relative": "._relative",
    "SequentialErrors": "._sequential",
    "SequentialLatency": "._sequential",
    "sequential_errors": "._sequential",
    "sequential_latency": "._sequential",
    "Bound": "._threshold",
    "NoDataPolicy": "._threshold",
    "ThresholdDecider": "._threshold",
    "bound": "._threshold",
    "format_value": "._threshold",
    "threshold": "._threshold",
}


def __getattr__(name: str) -> Any:
    return _load_lazy(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# Public names say they live in this package, not in the private module defining them
# (the lazy ones when they are first loaded).
_claim_public_names({**globals(), "__all__": [n for n in __all__ if n not in _LAZY]})
del _claim_public_names
