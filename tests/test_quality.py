"""The library stays typed, linted and documented."""

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import canarykit
import canarykit.deciders
import canarykit.exporter
import canarykit.metrics
import canarykit.notify
import canarykit.plot
import canarykit.presets
import canarykit.routers
import canarykit.testing

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [
    canarykit,
    canarykit.deciders,
    canarykit.exporter,
    canarykit.metrics,
    canarykit.notify,
    canarykit.plot,
    canarykit.presets,
    canarykit.routers,
    canarykit.testing,
]


def tool(name: str) -> str:
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if found is None:
        if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"{name} is not installed (pip install '.[test]')")
        pytest.skip(f"{name} is not installed (pip install '.[test]')")
    return found


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_name_has_a_docstring(module):
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    public = not attr.startswith("_")
                    if public and inspect.isfunction(member) and not (member.__doc__ or "").strip():
                        missing.append(f"{name}.{attr}")
    assert missing == []


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_names_report_their_public_module(module):
    wrong = [
        name
        for name in module.__all__
        if (inspect.isclass(getattr(module, name)) or inspect.isfunction(getattr(module, name)))
        and getattr(module, name).__module__ != module.__name__
    ]
    assert wrong == []


def test_package_is_typed():
    assert (Path(canarykit.__file__).parent / "py.typed").exists()


# mypy in a subprocess, seconds without its cache: the slow tier.
@pytest.mark.slow
@pytest.mark.integration
def test_mypy_strict_is_clean_on_src():
    result = subprocess.run(
        [tool("mypy"), "--strict", "src"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean():
    for command in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run([tool("ruff"), *command], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
