"""Sphinx configuration for canarykit's documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html``. Before Sphinx reads a page,
this file regenerates what the pages include from the code itself, into ``_generated/``:

- the state diagram and transition table, from ``canarykit.transition_table()``
  (``make_state_diagram.py``), shown as a Graphviz drawing when the ``dot`` program is
  installed and as DOT source otherwise (set ``CANARYKIT_DOCS_GRAPHVIZ=0`` to force that);
- the policy file schema, from the docstring of the policy loader;
- ``canarykit simulate``'s help and the output of a run on ``examples/policy.toml``.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

# Document the source tree, installed or not.
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(DOCS))

import make_state_diagram  # noqa: E402

import canarykit  # noqa: E402

project = "canarykit"
author = "canarykit developers"
copyright = "canarykit developers"
release = canarykit.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    "sphinx.ext.viewcode",
]

# `Name` in docstrings links to the object when it exists and is code otherwise.
default_role = "py:obj"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

html_theme = "alabaster"
html_theme_options = {
    "description": "Canary deployments as a library",
    "fixed_sidebar": True,
}
html_title = f"canarykit {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True}

graphviz_output_format = "svg"

# ---------------------------------------------------------------------------- generated


def _write(path: Path, text: str) -> None:
    # Rewrite only on change, so Sphinx does not rebuild pages that include the file.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _use_graphviz() -> bool:
    if os.environ.get("CANARYKIT_DOCS_GRAPHVIZ", "").strip() == "0":
        return False
    return shutil.which(os.environ.get("GRAPHVIZ_DOT", "dot")) is not None


def _state_diagram() -> None:
    make_state_diagram.generate(GENERATED)
    if _use_graphviz():
        text = (
            ".. graphviz:: /_generated/states.dot\n"
            "   :alt: the rollout state diagram, generated from canarykit.transition_table()\n"
        )
    else:
        text = (
            "(These pages were built without Graphviz's ``dot`` program, so here is the\n"
            "diagram's DOT source; any Graphviz viewer draws it.)\n\n"
            ".. literalinclude:: /_generated/states.dot\n"
            "   :language: dot\n"
        )
    _write(GENERATED / "state_diagram.rst", text)


def _policy_schema() -> None:
    """The schema block of the policy loader's docstring, the one source of truth."""
    from canarykit import _policy

    doc = _policy.__doc__ or ""
    start = doc.find("::\n", doc.find("Schema"))
    if start < 0:
        raise RuntimeError("canarykit._policy's docstring has no 'Schema ...::' block")
    lines = []
    for line in doc[start + 3 :].splitlines():
        if line and not line.startswith(" "):
            break  # the literal block ends at the first unindented line
        lines.append(line[4:])
    _write(GENERATED / "policy_schema.toml", "\n".join(lines).strip("\n") + "\n")


def _cli_output(name: str, *argv: str) -> None:
    from canarykit._cli import main

    out = io.StringIO()
    saved_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # argparse wraps help text to the terminal's width
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)  # so the report names the policy as a reader would type it
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
    finally:
        os.chdir(cwd)
        if saved_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved_columns
    if code != 0:
        raise RuntimeError(f"canarykit {' '.join(argv)} exited with {code}")
    command = " ".join(("canarykit", *argv))
    _write(GENERATED / f"{name}.txt", f"$ {command}\n{out.getvalue()}")


def generate() -> None:
    """Regenerate everything under ``_generated/``."""
    GENERATED.mkdir(exist_ok=True)
    _state_diagram()
    _policy_schema()
    _cli_output("cli_help", "simulate", "--help")
    _cli_output("simulate_healthy", "simulate", "examples/policy.toml")
    _cli_output("simulate_errors", "simulate", "examples/policy.toml", "--scenario", "errors")


generate()
