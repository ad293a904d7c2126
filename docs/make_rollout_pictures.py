"""Draw the docs' pictures of a healthy and a rolled-back canary, from a real simulation.

Both run ``examples/policy.toml``'s plan and decider (loaded with `canarykit.policy.load_policy`)
through `canarykit.testing.simulate`, against the command line's "healthy" and "errors"
scenarios, at the policy's ``[simulation]`` traffic and seed, so the pictures are the
same on every run and match ``canarykit simulate examples/policy.toml --scenario ...``:

- ``_static/rollout-healthy.svg``: promoted after the final bake;
- ``_static/rollout-rolled-back.svg``: the canary's error rate rises five-fold from 5:00
  and the rollout rolls back.

Run it with ``python docs/make_rollout_pictures.py [OUTPUT_DIR] [--png]`` (``--png`` also
writes PNG copies, to look at). Needs matplotlib (``pip install 'canarykit[plot]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

import canarykit
from canarykit.plot import plot_rollout
from canarykit.testing import SCENARIOS, simulate

HERE = Path(__file__).resolve().parent
POLICY = HERE.parent / "examples" / "policy.toml"
DEFAULT_OUTPUT = HERE / "_static"
# file stem -> the scenario it shows
PICTURES = {"rollout-healthy": "healthy", "rollout-rolled-back": "errors"}


def simulation(scenario: str) -> canarykit.testing.Simulation:
    """`examples/policy.toml` run against `scenario`, as ``canarykit simulate`` runs it."""
    policy = canarykit.policy.load_policy(POLICY)
    settings = policy.simulation
    metrics = attrs.evolve(
        SCENARIOS[scenario](seed=settings.seed), requests_per_second=settings.requests_per_second
    )
    return simulate(policy.plan, decider=policy.decider, metrics=metrics)


def generate(output: Path = DEFAULT_OUTPUT, *, png: bool = False) -> list[Path]:
    """Write the pictures into `output`; return the paths written."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, scenario in PICTURES.items():
        result = simulation(scenario)
        title = f"examples/policy.toml, {scenario} scenario"
        suffixes = (".svg", ".png") if png else (".svg",)
        for suffix in suffixes:
            written.append(plot_rollout(result, output / f"{stem}{suffix}", title=title))
    return written


def main(argv: list[str]) -> int:
    png = "--png" in argv
    args = [a for a in argv if a != "--png"]
    output = Path(args[0]) if args else DEFAULT_OUTPUT
    for path in generate(output, png=png):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
