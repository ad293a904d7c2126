"""MkDocs hooks: regenerate what the pages include from the code itself, before each build.

``mkdocs.yml`` names this file under ``hooks:``. Before MkDocs collects the pages, it
writes into ``docs/_generated/`` (ignored by git), which the pages include with
``pymdownx.snippets``:

- the state diagram and the transition table, from ``canarykit.transition_table()``
  (``make_state_diagram.py``): the diagram drawn as SVG by Graphviz's ``dot`` when it is
  installed, and shown as DOT source otherwise (``CANARYKIT_DOCS_GRAPHVIZ=0`` forces
  that; ``GRAPHVIZ_DOT`` names another ``dot``);
- the policy file schema, from the docstring of the policy loader, the one source of
  truth;
- the help of ``canarykit simulate`` and ``canarykit run``, and the output of two
  simulations of ``examples/policy.toml``;
- ``examples/*.py``, whole and each top-level class and function on its own, as fenced
  blocks, so a page can show one of them (Sphinx's ``literalinclude :pyobject:``) and
  stays right when the example changes.

Everything is computed locally: the build makes no network request.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"

# Document this source tree, installed or not, as docs/conf.py did.
for _path in (str(DOCS), str(ROOT / "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import make_state_diagram  # noqa: E402


def _write(path: Path, text: str) -> None:
    # Rewrite only on change, so `mkdocs serve` (which watches docs/) does not loop.
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _dot() -> str | None:
    """The Graphviz ``dot`` program to draw with, or None for the DOT-source fallback."""
    if os.environ.get("CANARYKIT_DOCS_GRAPHVIZ", "").strip() == "0":
        return None
    return shutil.which(os.environ.get("GRAPHVIZ_DOT", "dot"))


def state_diagram(output: Path = GENERATED) -> Path:
    """Write the diagram (SVG, or DOT source) and the page text that shows it."""
    dot_path, _ = make_state_diagram.generate(output)
    svg_path = output / "states.svg"
    dot = _dot()
    if dot is not None:
        drawn = subprocess.run(
            [dot, "-Tsvg", str(dot_path)], capture_output=True, text=True, check=True, timeout=60
        )
        _write(svg_path, drawn.stdout)
        text = (
            "![The rollout state diagram, generated from canarykit.transition_table()]"
            "(_generated/states.svg)\n"
        )
    else:
        svg_path.unlink(missing_ok=True)  # a drawing left from an earlier build is stale
        text = (
            "(These pages were built without Graphviz's `dot` program, so here is the\n"
            "diagram's DOT source; any Graphviz viewer draws it.)\n\n"
            "```dot\n"
            '--8<-- "docs/_generated/states.dot"\n'
            "```\n"
        )
    page_path = output / "state_diagram.md"
    _write(page_path, text)
    return page_path


def policy_schema(output: Path = GENERATED) -> Path:
    """The schema block of the policy loader's docstring."""
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
    path = output / "policy_schema.toml"
    _write(path, "\n".join(lines).strip("\n") + "\n")
    return path


def cli_output(name: str, *argv: str, output: Path = GENERATED) -> Path:
    """Run ``canarykit ARGV`` in this process and write the command and what it printed."""
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
    path = output / f"{name}.txt"
    _write(path, f"$ {command}\n{out.getvalue()}")
    return path


def example_code(output: Path = GENERATED) -> list[Path]:
    """``examples/*.py`` as fenced Markdown blocks that the pages include.

    ``examples/FILE.md`` is the whole script, and ``examples/FILE.NAME.md`` each of its
    top-level classes and functions (decorators included). The fence is part of the
    generated file, so the include line in a page stands outside any ``python`` block,
    where ``ruff format`` (which formats Markdown's Python blocks) leaves it alone.
    """
    written = []
    for script in sorted((ROOT / "examples").glob("*.py")):
        source = script.read_text(encoding="utf-8")
        lines = source.splitlines()
        pieces = {script.stem: source}
        for node in ast.parse(source).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                pieces[f"{script.stem}.{node.name}"] = "\n".join(lines[first - 1 : node.end_lineno])
        for name, code in pieces.items():
            path = output / "examples" / f"{name}.md"
            _write(path, f"```python\n{code.rstrip()}\n```\n")
            written.append(path)
    return written


def generate(output: Path = GENERATED) -> None:
    """Regenerate everything under ``_generated/``."""
    output.mkdir(parents=True, exist_ok=True)
    state_diagram(output)
    policy_schema(output)
    cli_output("cli_help", "simulate", "--help", output=output)
    cli_output("cli_run_help", "run", "--help", output=output)
    cli_output("simulate_healthy", "simulate", "examples/policy.toml", output=output)
    cli_output(
        "simulate_errors", "simulate", "examples/policy.toml", "--scenario", "errors", output=output
    )
    example_code(output)


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """MkDocs event: before the pages are collected, so the SVG is collected with them."""
    generate()
