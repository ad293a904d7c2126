"""Metrics sources: Prometheus over its HTTP API, and an in-process recorder.

- `PrometheusSource`: instant and range queries filled in per arm and per window, mapped
  into observations; needs the `prometheus` extra (`pip install 'canarykit[prometheus]'`).
- `resolution`: how finely a histogram's buckets resolve latency near a quantile, so a
  margin smaller than a bucket is not promised.
- `Recorder`: the application records each request's arm, outcome and latency; windows
  rotate and become observations.
"""

from .._histogram import resolution as resolution
from ._answers import PrometheusSample as PrometheusSample
from ._answers import PrometheusSeries as PrometheusSeries
from ._classic import histogram_from_classic as histogram_from_classic
from ._prometheus import BasicAuth as BasicAuth
from ._prometheus import BearerAuth as BearerAuth
from ._prometheus import PrometheusSource as PrometheusSource
from ._promql import PrometheusQueries as PrometheusQueries
from ._promql import http_queries as http_queries
from ._recorder import Measurement as Measurement
from ._recorder import Recorder as Recorder

__all__ = [
    "resolution",
    "BasicAuth",
    "BearerAuth",
    "Measurement",
    "PrometheusQueries",
    "PrometheusSample",
    "PrometheusSeries",
    "PrometheusSource",
    "Recorder",
    "histogram_from_classic",
    "http_queries",
]

# Public names say they live in this package, not in the private module defining them.
from .._exports import claim_public_names as _claim_public_names

_claim_public_names(globals())
del _claim_public_names
