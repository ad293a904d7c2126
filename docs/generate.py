"""Write what the docs show from the code itself, committed, so the pages read in the repository.

Run it after changing the CLI, the policy loader's schema, the examples or the state
machine (the test suite and ``mkdocs build`` say when it is needed)::

    python docs/generate.py            # refresh every generated file and block
    python docs/generate.py --check    # list what is stale; exit 1 if anything is

How it works. A page shows generated text between two markers; the first names what the
block shows, and this script rewrites what lies between them::

    <!-- generated: command canarykit simulate --help -->
    ...
    <!-- end generated -->

The names (``KEY`` in the first marker) are:

- ``command canarykit ARGS...``: the command's output, run in this process from the
  repository root with ``COLUMNS=88`` (argparse wraps help text to it);
- ``file PATH``: a file of the repository, whole, fenced by its kind (``toml``,
  ``python``);
- ``python PATH NAME``: one top-level class or function of a script, decorators
  included (Sphinx's ``literalinclude :pyobject:``);
- ``policy schema``: the schema block of the policy loader's docstring
  (``canarykit.policy._load``), the one place the policy file's keys are written down;
- ``transition table``: `canarykit.machine.transition_table()` as a Markdown table.

Whole files, rewritten from scratch:

- ``docs/policy_reference.md``: the policy file's keys as Markdown tables, from the
  same schema block;
- ``docs/_generated/states.dot``: the state diagram as Graphviz DOT, from the transition
  table (``make_state_diagram.py``), and ``docs/_generated/states.svg``, that diagram
  drawn by Graphviz's ``dot`` (``GRAPHVIZ_DOT`` names another). Graphviz's drawing
  differs between its versions, so the SVG records the SHA-256 of the DOT source it was
  drawn from and is redrawn only when that source changes: building the docs or checking
  them needs no Graphviz.

Everything is deterministic (no time, no absolute path, sorted where order is free), so
regenerating an unchanged tree changes nothing. ``docs/mkdocs_hooks.py`` checks at every
``mkdocs build`` and refreshes under ``mkdocs serve``; ``tests/test_docs_generated.py``
fails when anything is stale.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
REFRESH = "python docs/generate.py"

# Document this source tree, installed or not.
for _path in (str(DOCS), str(ROOT / "src")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import make_policy_reference as policy_reference  # noqa: E402
import make_state_diagram  # noqa: E402

# argparse's layout of help text changes between Python versions (3.13 writes
# "-s, --seed SEED" where 3.11 writes "-s SEED, --seed SEED"): the committed help texts
# are those of this version, and a check on another one leaves them out.
HELP_PYTHON = (3, 11)
HELP_COLUMNS = "88"

BLOCK = re.compile(
    r"^<!-- generated: (?P<key>[^\n]+?) -->\n(?P<body>.*?)^<!-- end generated -->$",
    re.MULTILINE | re.DOTALL,
)
POLICY_REFERENCE = "docs/policy_reference.md"
STATES_DOT = "docs/_generated/states.dot"
STATES_SVG = "docs/_generated/states.svg"
_SVG_SOURCE = re.compile(r"<!-- drawn from states\.dot, sha256 ([0-9a-f]{64}) -->")
_LANGUAGES = {".toml": "toml", ".py": "python", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}


class GenerateError(Exception):
    """A block names something this script cannot make, or making it failed."""


def _fenced(language: str, text: str) -> str:
    # A fence longer than any run of backticks in the text, so the text cannot close it.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}\n"


def is_help(key: str) -> bool:
    """Whether the block `key` shows an argparse help text (which depends on Python's version)."""
    return key.startswith("command ") and "--help" in key.split()


def _command(argv: list[str]) -> str:
    from canarykit._cli._main import main

    out = io.StringIO()
    saved = {name: os.environ.get(name) for name in ("COLUMNS", "NO_COLOR", "FORCE_COLOR")}
    os.environ["COLUMNS"] = HELP_COLUMNS
    os.environ["NO_COLOR"] = "1"  # Python 3.14's argparse colours help text otherwise
    os.environ.pop("FORCE_COLOR", None)
    cwd = Path.cwd()
    code: int | str | None
    try:
        os.chdir(ROOT)  # so the output names files as a reader would type them
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exc:  # --help exits
                code = exc.code
    finally:
        os.chdir(cwd)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if code not in (0, None):
        raise GenerateError(f"canarykit {' '.join(argv)} exited with {code}")
    return _fenced("text", f"$ canarykit {' '.join(argv)}\n{out.getvalue()}")


def _file(relative: str) -> str:
    path = ROOT / relative
    if not path.is_file():
        raise GenerateError(f"no file {relative}")
    return _fenced(_LANGUAGES.get(path.suffix, ""), path.read_text(encoding="utf-8"))


def _python_object(relative: str, name: str) -> str:
    path = ROOT / relative
    if not path.is_file():
        raise GenerateError(f"no file {relative}")
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    for node in ast.parse(source).body:
        if (
            isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == name
        ):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return _fenced("python", "\n".join(lines[first - 1 : node.end_lineno]))
    raise GenerateError(f"{relative} has no top-level class or function {name}")


def policy_schema() -> str:
    """The schema block of the policy loader's docstring, as TOML."""
    return policy_reference.schema_text()


def _block(key: str) -> str:
    """The text between the markers of the block named `key`."""
    kind, _, rest = key.partition(" ")
    words = rest.split()
    if kind == "command" and words[:1] == ["canarykit"]:
        return _command(words[1:])
    if kind == "file" and len(words) == 1:
        return _file(words[0])
    if kind == "python" and len(words) == 2:
        return _python_object(words[0], words[1])
    if key == "policy schema":
        return _fenced("toml", policy_schema())
    if key == "transition table":
        import canarykit

        return make_state_diagram.render_markdown(canarykit.machine.transition_table())
    raise GenerateError(f"unknown generated block {key!r} (see {REFRESH} --help)")


def refresh_page(text: str, *, keep: Callable[[str], bool] = lambda key: False) -> str:
    """`text` (a page) with every generated block made afresh, except those `keep` names."""

    def replace(found: re.Match[str]) -> str:
        key = found.group("key")
        body = found.group("body") if keep(key) else f"\n{_block(key)}\n"
        return f"<!-- generated: {key} -->\n{body}<!-- end generated -->"

    return BLOCK.sub(replace, text)


def pages(docs: Path) -> Iterator[Path]:
    """The Markdown pages under `docs`, sorted, generated reference included."""
    yield from sorted(path for path in docs.rglob("*.md") if "_generated" not in path.parts)


def _dot_text() -> str:
    import canarykit

    return make_state_diagram.render_dot(canarykit.machine.transition_table())


def _svg_source(svg: str) -> str | None:
    found = _SVG_SOURCE.search(svg)
    return found.group(1) if found else None


def _draw(dot_source: str) -> str:
    dot = shutil.which(os.environ.get("GRAPHVIZ_DOT", "dot"))
    if dot is None:
        raise GenerateError(
            f"{STATES_SVG} must be redrawn from {STATES_DOT}, and Graphviz's dot is not "
            "installed (install graphviz, or name the program in GRAPHVIZ_DOT)"
        )
    drawn = subprocess.run(
        [dot, "-Tsvg"], input=dot_source, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    digest = hashlib.sha256(dot_source.encode()).hexdigest()
    note = f"<!-- drawn from states.dot, sha256 {digest} -->"
    # After the XML declaration, which must come first.
    head, _, rest = drawn.partition("\n")
    if head.startswith("<?xml"):
        return f"{head}\n{note}\n{rest}"
    return f"{note}\n{drawn}"


def expected(root: Path, *, help_texts: bool = True) -> dict[str, str]:
    """What each generated file under `root` should hold (paths relative to `root`).

    Pages are read from `root/docs` and their blocks refreshed; the sources (the code, the
    examples) are always this repository's. Without `help_texts`, help blocks are left as
    they are (for a Python whose argparse lays help out differently). The SVG is not
    here: see `stale` and `generate`.
    """
    files: dict[str, str] = {}
    for page in pages(root / "docs"):
        relative = page.relative_to(root).as_posix()
        if relative == POLICY_REFERENCE:
            continue
        text = page.read_text(encoding="utf-8")
        if BLOCK.search(text):
            keep = (lambda key: False) if help_texts else is_help
            files[relative] = refresh_page(text, keep=keep)
    files[POLICY_REFERENCE] = policy_reference.render()
    files[STATES_DOT] = _dot_text()
    return files


def help_texts_comparable() -> bool:
    """Whether this Python lays out help text as the committed help texts (`HELP_PYTHON`)."""
    return sys.version_info[:2] == HELP_PYTHON


def stale(root: Path = ROOT) -> list[str]:
    """What under `root` is not what `generate` would write: one line per file, and why."""
    problems = []
    for relative, text in expected(root, help_texts=help_texts_comparable()).items():
        path = root / relative
        if not path.is_file():
            problems.append(f"{relative}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{relative}: stale")
    svg = root / STATES_SVG
    digest = hashlib.sha256(_dot_text().encode()).hexdigest()
    if not svg.is_file():
        problems.append(f"{STATES_SVG}: missing")
    elif _svg_source(svg.read_text(encoding="utf-8")) != digest:
        problems.append(f"{STATES_SVG}: stale (not drawn from the current {STATES_DOT})")
    known = {STATES_DOT, STATES_SVG}
    generated = root / "docs" / "_generated"
    if generated.is_dir():
        for path in sorted(generated.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and relative not in known:
                problems.append(f"{relative}: not generated any more (delete it)")
    return problems


def generate(root: Path = ROOT, *, help_texts: bool = True) -> list[str]:
    """Write every stale generated file under `root`; return the paths written.

    Without `help_texts`, help blocks are left as they are (see `expected`).
    """
    written = []
    for relative, text in expected(root, help_texts=help_texts).items():
        path = root / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(relative)
    dot_source = _dot_text()
    svg = root / STATES_SVG
    digest = hashlib.sha256(dot_source.encode()).hexdigest()
    if not svg.is_file() or _svg_source(svg.read_text(encoding="utf-8")) != digest:
        svg.write_text(_draw(dot_source), encoding="utf-8")
        written.append(STATES_SVG)
    return written


_BLOCKS_HELP = """\
A page shows generated text between "<!-- generated: KEY -->" and
"<!-- end generated -->" lines; KEY is one of:
  command canarykit ARGS...   what the command prints (COLUMNS=88)
  file PATH                   a file of the repository, fenced
  python PATH NAME            one top-level class or function of a script
  policy schema               the policy loader's schema, as TOML
  transition table            canarykit.machine.transition_table() as a Markdown table
"""


def main(argv: list[str] | None = None) -> int:
    """The command line: refresh, or with ``--check`` only report."""
    parser = argparse.ArgumentParser(
        prog=REFRESH,
        description="Refresh the docs' generated files and the generated blocks of the pages.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_BLOCKS_HELP,
    )
    parser.add_argument(
        "--check", action="store_true", help="only list what is stale; exit 1 if anything is"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(problem)
        if problems:
            print(f"refresh with: {REFRESH}")
        elif not help_texts_comparable():
            version = ".".join(map(str, HELP_PYTHON))
            print(f"up to date (help texts not compared: they are Python {version}'s)")
        return 1 if problems else 0
    try:
        written = generate()
    except GenerateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for relative in written:
        print(f"wrote {relative}")
    if not help_texts_comparable():
        version = ".".join(map(str, HELP_PYTHON))
        print(f"note: help texts written by Python {sys.version.split()[0]}, not {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
