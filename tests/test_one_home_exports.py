"""Every package's public names report the package, through one helper with one rule."""

# Imports internals on purpose: the export helpers.

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import canarykit
from canarykit._exports import claim_public_names

PACKAGES = [
    "canarykit",
    "canarykit.deciders",
    "canarykit.metrics",
    "canarykit.notify",
    "canarykit.routers",
    "canarykit.testing",
    "canarykit.exporter",
    "canarykit.plot",
]


def _made_in(module: str) -> type:
    return type("Thing", (), {"__module__": module})


def test_a_name_from_a_private_module_reports_the_package():
    thing, nested = _made_in("canarykit._runner"), _made_in("canarykit.notify._deliver")
    namespace = {"__name__": "canarykit.notify", "__all__": ["Thing", "Nested"]}
    namespace |= {"Thing": thing, "Nested": nested}
    claim_public_names(namespace)
    assert (thing.__module__, nested.__module__) == ("canarykit.notify", "canarykit.notify")


def test_names_already_public_elsewhere_and_constants_are_left_alone():
    public, foreign = _made_in("canarykit.presets"), _made_in("collections.abc")
    namespace = {"__name__": "canarykit.testing", "__all__": ["A", "B", "C"]}
    namespace |= {"A": public, "B": foreign, "C": (1, 2)}
    claim_public_names(namespace)
    assert (public.__module__, foreign.__module__) == ("canarykit.presets", "collections.abc")


@pytest.mark.parametrize("package", PACKAGES)
def test_no_public_name_reports_a_private_module(package):
    try:
        module = importlib.import_module(package)
    except ImportError as exc:  # an optional extra not installed here
        pytest.skip(str(exc))
    private = {
        name: getattr(module, name).__module__
        for name in module.__all__
        if "._" in str(getattr(getattr(module, name), "__module__", ""))
    }
    assert private == {}


def test_no_package_keeps_its_own_copy_of_the_fix_up():
    root = Path(canarykit.__file__).parent
    copies = [p for p in root.rglob("__init__.py") if "for _name in __all__" in p.read_text()]
    assert copies == []
