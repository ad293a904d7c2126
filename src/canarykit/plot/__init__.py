"""Pictures of rollouts: the canary's weight, each arm's errors and latency, the verdicts.

`plot_rollout(outcome_or_simulation, "rollout.svg")` writes an SVG or PNG (by the file's
suffix); `rollout_figure` returns the matplotlib figure instead. Needs matplotlib
(``pip install 'canarykit[plot]'``), imported only when a picture is drawn::

    from canarykit.plot import plot_rollout
    from canarykit.testing import ScriptedMetrics, regression, simulate

    sim = simulate(plan, decider=decider,
                   metrics=ScriptedMetrics(error_rate=regression(at=300, base=0.01, factor=5)))
    plot_rollout(sim, "rolled-back.svg")

`add_plot_option` adds ``--plot FILE`` to a command line (``canarykit simulate``).
"""

from ._option import add_plot_option as add_plot_option
from ._render import FORMATS as FORMATS
from ._render import plot_rollout as plot_rollout
from ._render import rollout_figure as rollout_figure

__all__ = ["FORMATS", "add_plot_option", "plot_rollout", "rollout_figure"]

# Public names say they live in this package, not in the private module defining them.
from .._exports import claim_public_names as _claim_public_names

_claim_public_names(globals())
del _claim_public_names
