"""`import canarykit` loads only what a plan and a Rollout need; the rest loads on first use.

Each check runs in a fresh interpreter and reads `sys.modules`; nothing here is timed
(benchmarks/import_time.py measures the time).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import canarykit
import canarykit.deciders

POLICY_MODULES = {
    "canarykit.policy._load",
    "canarykit.policy._deciders",
    "canarykit.policy._deployment",
    "canarykit.policy._table",
}


def _loaded_after(code: str) -> set[str]:
    """The canarykit and TOML modules in `sys.modules` after running ``code`` in a fresh python."""
    probe = (
        f"{code}\nimport json, sys\n"
        "print(json.dumps([m for m in sys.modules if m.startswith(('canarykit', 'toml'))]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def _deciders(modules: set[str]) -> set[str]:
    return {m for m in modules if m.startswith("canarykit.deciders.")}


def test_import_canarykit_loads_no_toml_parser_policy_layer_or_decider():
    loaded = _loaded_after("import canarykit")
    assert "canarykit._runner" in loaded  # the probe sees what the import loaded
    assert {"tomllib", "tomli"} & loaded == set()
    assert POLICY_MODULES & loaded == set()
    assert _deciders(loaded) == set()


def test_building_a_plan_and_a_rollout_loads_no_toml_parser_or_policy_loader():
    loaded = _loaded_after(
        "import canarykit\n"
        "from canarykit.deciders import bound, threshold\n"
        "from canarykit.testing import FakeRouter, ScriptedMetrics\n"
        "plan = canarykit.linear(10, 20, hold=60, analysis_interval=30)\n"
        "decider = threshold(bound('error_rate', max=0.1))\n"
        "canarykit.Rollout(plan, router=FakeRouter(), metrics=ScriptedMetrics(), decider=decider)"
    )
    assert "canarykit._runner" in loaded
    assert {"tomllib", "tomli"} & loaded == set()
    assert {"canarykit.policy._load", "canarykit.policy._deployment"} & loaded == set()


def test_a_threshold_decider_loads_only_its_own_modules():
    loaded = _loaded_after("from canarykit.deciders import bound, threshold")
    assert _deciders(loaded) == {"canarykit.deciders._threshold", "canarykit.deciders._compose"}
    assert POLICY_MODULES & loaded == set()


def test_lazy_names_load_on_first_use_and_report_the_package():
    loaded = _loaded_after(
        "import canarykit\n"
        "import canarykit.deciders\n"
        "assert canarykit.deciders.sequential_errors.__module__ == 'canarykit.deciders'\n"
        "assert canarykit.policy.load_policy.__module__ == 'canarykit.policy'"
    )
    assert "canarykit.policy._load" in loaded
    assert "canarykit.deciders._sequential" in loaded


def test_a_name_that_moved_still_works_for_a_release_with_a_warning():
    with pytest.warns(
        DeprecationWarning, match=r"canarykit\.RequestPause .* canarykit\.machine\.PauseRequested"
    ):
        old = canarykit.RequestPause
    assert old is canarykit.machine.PauseRequested
    with pytest.warns(DeprecationWarning, match=r"use canarykit\.policy\.load_policy"):
        from canarykit import load_policy
    assert load_policy is canarykit.policy.load_policy


def test_the_top_level_keeps_at_most_sixty_names():
    assert len(canarykit.__all__) <= 60


@pytest.mark.parametrize("package", [canarykit, canarykit.deciders])
def test_every_exported_name_is_listed_by_dir_and_importable(package):
    assert set(package.__all__) <= set(dir(package))
    assert all(getattr(package, name) is not None for name in package.__all__)


@pytest.mark.parametrize("package", [canarykit, canarykit.deciders])
def test_an_unknown_name_is_still_an_attribute_error(package):
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018
