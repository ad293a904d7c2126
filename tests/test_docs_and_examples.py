"""The examples run as plain scripts, and the docs build without a single warning."""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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
DOCS = ROOT / "docs"
EXAMPLES = ["custom_router.py", "seed_flow.py", "test_my_policy.py"]


def _env(**extra: str) -> dict[str, str]:
    # Run against this source tree whether or not canarykit is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if part
    )
    env.update(extra)
    return env


def _require_sphinx() -> None:
    if importlib.util.find_spec("sphinx") is not None:
        return
    if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
        pytest.fail("sphinx is not installed, and CANARYKIT_REQUIRE_INTEGRATION=1")
    pytest.skip("sphinx is not installed")


def _load_diagram_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_state_diagram", DOCS / "make_state_diagram.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_run_by_a_test() -> None:
    # Examples that need real servers or schemas run from the tests for those; the rest here.
    tests = "".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    for example in sorted((ROOT / "examples").glob("*.py")):
        assert example.name in tests, f"no test runs examples/{example.name}"


@pytest.mark.parametrize("script", EXAMPLES)
def test_example_runs_as_a_script(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(Path("examples") / script)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script} printed nothing"


def test_seed_flow_prints_both_outcomes() -> None:
    result = subprocess.run(
        [sys.executable, "examples/seed_flow.py"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "healthy: succeeded; bad: rolled_back" in result.stdout
    assert "weight=9, app-v2 weight=1" in result.stdout  # the seed's nginx 90/10


def test_state_diagram_is_generated_from_the_transition_table(tmp_path: Path) -> None:
    dot_path, rst_path = _load_diagram_script().generate(tmp_path)
    dot = dot_path.read_text(encoding="utf-8")
    table = canarykit.transition_table()

    for phase in canarykit.Phase:
        shape = "doublecircle" if phase.is_terminal else "circle"
        assert re.search(rf"^    {phase.value} \[shape={shape},", dot, re.MULTILINE), phase
    edges = {
        (source, target): set(label.split("\\n"))
        for source, target, label in re.findall(
            r"^    (\w+) -> (\w+) \[.*?label=\"([^\"]*)\"", dot, re.MULTILINE
        )
    }
    expected: dict[tuple[str, str], set[str]] = {}
    for phase, row in table.items():
        for event, targets in row.items():
            for target in targets:
                expected.setdefault((phase.value, target.value), set()).add(event)
    assert edges == expected  # one edge per (phase, target), every event on its label

    rst = rst_path.read_text(encoding="utf-8")
    rows = sum(len(row) or 1 for row in table.values())
    assert rst.count("   * - ``") == rows


def test_api_page_documents_every_public_name() -> None:
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    documented: set[str] = set()
    module = ""
    for line in text.splitlines():
        found = re.match(r"\.\. (?:currentmodule|automodule):: (\S+)", line)
        if found:
            module = found.group(1)
            continue
        found = re.match(r"\.\. (?:auto\w+|py:data|py:class|py:function):: (\S+)", line)
        if found:
            documented.add(f"{module}.{found.group(1)}")
    public = {
        f"{mod.__name__}.{name}"
        for mod in (
            canarykit,
            canarykit.deciders,
            canarykit.exporter,
            canarykit.metrics,
            canarykit.notify,
            canarykit.plot,
            canarykit.presets,
            canarykit.routers,
            canarykit.testing,
        )
        for name in mod.__all__
    }
    assert sorted(public - documented) == [], "public names missing from docs/api.rst"
    for dotted in documented:
        module_name, _, name = dotted.rpartition(".")
        assert hasattr(sys.modules[module_name], name), f"docs/api.rst documents {dotted}"


@pytest.mark.parametrize("page", sorted(path.name for path in DOCS.glob("*.rst")))
def test_doc_page_examples_give_the_output_shown(page: str) -> None:
    results = doctest.testfile(
        str(DOCS / page),
        module_relative=False,
        globs={"canarykit": canarykit},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        report=False,
    )
    assert results.failed == 0


@pytest.mark.slow
@pytest.mark.parametrize("graphviz", [True, False], ids=["graphviz", "dot-source"])
def test_docs_build_without_warnings(tmp_path: Path, graphviz: bool) -> None:
    _require_sphinx()
    if graphviz and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (the DOT-source fallback is tested)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        cwd=ROOT,
        env=_env(CANARYKIT_DOCS_GRAPHVIZ="1" if graphviz else "0"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"

    html = tmp_path / "html"
    for page in ("index", "concepts", "custom_router", "testing_policies", "state_machine"):
        assert (html / f"{page}.html").is_file(), page
    for page in ("cli", "api"):
        assert (html / f"{page}.html").is_file(), page
    state_machine = (html / "state_machine.html").read_text(encoding="utf-8")
    if graphviz:
        assert 'class="graphviz"' in state_machine
        assert list((html / "_images").glob("graphviz-*.svg"))
    else:
        assert "digraph" in state_machine
    for phase in canarykit.Phase:
        assert phase.value in state_machine
