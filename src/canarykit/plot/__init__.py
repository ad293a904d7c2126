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

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("canarykit.plot."):
        _obj.__module__ = "canarykit.plot"
del _name, _obj
