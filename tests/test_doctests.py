"""The examples in docstrings run and say what they show."""

import doctest
import importlib
import pkgutil

import pytest

import canarykit

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(canarykit.__path__, prefix="canarykit.")
)


@pytest.mark.parametrize("name", ["canarykit", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
