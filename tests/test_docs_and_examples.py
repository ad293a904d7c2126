"""The examples run as plain scripts, and the docs build in strict mode.

The docs are an mkdocs site (``mkdocs.yml``, ``docs/``): these tests build it with
``mkdocs build --strict``, run the ``>>>`` examples of its pages, and check that the API
reference documents every public name and that what the pages show from the code (the
state diagram, the CLI's output, the policy schema; committed, written by
``python docs/generate.py``, see tests/test_docs_generated.py) is on the built pages.
"""

from __future__ import annotations

import doctest
import html
import importlib.util
import os
import re
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
import canarykit.testing.lab

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ["custom_router.py", "seed_flow.py", "test_my_policy.py"]
PUBLIC_MODULES = (
    canarykit,
    canarykit.deciders,
    canarykit.events,
    canarykit.exporter,
    canarykit.hooks,
    canarykit.machine,
    canarykit.metrics,
    canarykit.notify,
    canarykit.plot,
    canarykit.policy,
    canarykit.presets,
    canarykit.routers,
    canarykit.stores,
    canarykit.testing,
    canarykit.testing.lab,
)
# The pages as written.
PAGES = sorted(
    path.relative_to(DOCS).as_posix()
    for path in DOCS.rglob("*.md")
    if "_generated" not in path.relative_to(DOCS).parts
)
# The pages a reader finds in the navigation; every one must be built.
NAV_PAGES = [
    "index",
    "getting_started",
    "concepts",
    "deciders",
    "adapters",
    "kubernetes",
    "custom_router",
    "testing_policies",
    "operating",
    "hooks",
    "ecosystem",
    "state_machine",
    "cli",
    "policy_reference",
    "comparison",
    "api/index",
]


def _env(**extra: str) -> dict[str, str]:
    # Run against this source tree whether or not canarykit is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if part
    )
    env.update(extra)
    return env


def _require(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("CANARYKIT_REQUIRE_INTEGRATION") == "1":
        pytest.fail(f"{what}, and CANARYKIT_REQUIRE_INTEGRATION=1")
    pytest.skip(what)


def _require_mkdocs() -> None:
    # mkdocs, the material theme, and mkdocstrings with its Python handler (the test extra).
    modules = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    _require(not missing, f"not installed: {', '.join(missing)} (pip install '.[test]')")


def _load_docs_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text(page: Path) -> str:
    """A built page's text, tags stripped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def test_every_example_is_run_by_a_test() -> None:
    # Examples that need real servers or schemas run from the tests for those; the rest here.
    tests = "".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    for example in sorted((ROOT / "examples").glob("*.py")):
        assert example.name in tests, f"no test runs examples/{example.name}"


# A Python subprocess per example: the slow tier.
@pytest.mark.integration
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
    dot_path, table_path = _load_docs_script("make_state_diagram").generate(tmp_path)
    dot = dot_path.read_text(encoding="utf-8")
    table = canarykit.machine.transition_table()

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

    rows = re.findall(r"^\| `(\w+)` \| (.*?) \| (.*) \|$", table_path.read_text(), re.MULTILINE)
    assert len(rows) == sum(len(row) or 1 for row in table.values())
    for phase_name, event_cell, targets_cell in rows:
        row = table[canarykit.machine.Stage(phase_name)]
        if not row:
            assert event_cell == "(none)"
            continue
        event = re.search(r"`(\w+)`", event_cell)
        assert event is not None and event.group(1) in row, (phase_name, event_cell)
        shown = set(re.findall(r"`(\w+)`", targets_cell))
        assert shown == {target.value for target in row[event.group(1)]}, (phase_name, event)


def test_api_pages_document_every_public_name() -> None:
    documented: set[str] = set()
    for page in sorted((DOCS / "api").glob("*.md")):
        documented |= set(re.findall(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M))
    public = {f"{mod.__name__}.{name}" for mod in PUBLIC_MODULES for name in mod.__all__}
    modules = {mod.__name__ for mod in PUBLIC_MODULES}
    assert sorted(public - documented - modules) == [], "public names missing from docs/api/"
    for dotted in documented - modules:
        module_name, _, name = dotted.rpartition(".")
        assert module_name in modules, f"docs/api/ documents {dotted} from a private module"
        assert name in sys.modules[module_name].__all__, f"docs/api/ documents {dotted}"


def _fenced_examples(text: str) -> tuple[list[tuple[int, str]], list[int]]:
    """The ``pycon`` blocks of a page (line, text), and lines with ``>>>`` outside them."""
    blocks: list[tuple[int, str]] = []
    stray: list[int] = []
    fence: str | None = None
    language = ""
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            opened = re.match(r"(`{3,}|~{3,})\s*([\w-]*)", stripped)
            if opened:
                fence, language, current, start = opened.group(1), opened.group(2), [], number
            elif stripped.startswith(">>>"):
                stray.append(number)
        elif stripped == fence:
            if language == "pycon":
                blocks.append((start, "\n".join(current)))
            fence = None
        else:
            current.append(line)
            if language != "pycon" and stripped.startswith(">>>"):
                stray.append(number)
    return blocks, stray


@pytest.mark.parametrize("page", PAGES)
def test_doc_page_examples_give_the_output_shown(page: str) -> None:
    path = DOCS / page
    blocks, stray = _fenced_examples(path.read_text(encoding="utf-8"))
    assert stray == [], f"{page}: '>>>' examples outside a pycon block are not run: {stray}"
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    globs = {"canarykit": canarykit}  # one namespace for the page, as doctest.testfile
    for line, block in blocks:
        test = parser.get_doctest(block, globs, f"{page}:{line}", str(path), line)
        runner.run(test, out=report.append, clear_globs=False)
        globs = test.globs  # a DocTest runs on a copy: carry its names to the next block
    assert runner.failures == 0, "".join(report)


# mkdocs in a subprocess: the slow tier.
@pytest.mark.slow
@pytest.mark.integration
def test_docs_build_in_strict_mode(tmp_path: Path) -> None:
    _require_mkdocs()
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        # No Graphviz needed: the diagram is committed drawn (docs/generate.py).
        env=_env(GRAPHVIZ_DOT=str(tmp_path / "no-dot"), NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build failed:\n{result.stdout}\n{result.stderr}"
    for page in NAV_PAGES:
        assert (site / f"{page}.html").is_file(), page

    # The state diagram, drawn from the transition table, and the table itself.
    state_machine = (site / "state_machine.html").read_text(encoding="utf-8")
    assert 'src="_generated/states.svg"' in state_machine
    svg = (site / "_generated" / "states.svg").read_text(encoding="utf-8")
    for phase in canarykit.Phase:
        assert f"<title>{phase.value}</title>" in svg, phase
        assert phase.value in _text(site / "state_machine.html"), phase
    assert not (site / "_generated" / "states.dot").exists()  # the source is not published

    # The pictures of a healthy and a rolled-back rollout.
    ecosystem = (site / "ecosystem.html").read_text(encoding="utf-8")
    for picture in ("rollout-healthy.svg", "rollout-rolled-back.svg"):
        assert f'src="_static/{picture}"' in ecosystem
        assert (site / "_static" / picture).read_bytes() == (
            DOCS / "_static" / picture
        ).read_bytes()

    # What the pages show from the code: the CLI's help and runs, the schema, the examples.
    cli = _text(site / "cli.html")
    generate = _load_docs_script("generate")
    for block in re.findall(r"^```text\n(.*?)^```$", (DOCS / "cli.md").read_text(), re.M | re.S):
        for line in block.splitlines():
            assert line.strip() in cli, line
    assert "usage: canarykit simulate" in cli
    assert "usage: canarykit run" in cli
    for line in generate.policy_schema().splitlines():
        assert line.strip() in cli, line
    reference = _text(site / "policy_reference.html")
    for needle in ("analysis_interval", "linear | exponential", "{arm}", "[decider.groups]"):
        assert needle in reference, needle
    assert "\\" not in reference  # no Markdown escape shown
    assert "class NginxUpstreamRouter" in _text(site / "custom_router.html")
    assert "def main() -> None:" in _text(site / "custom_router.html")
    assert "def test_" in _text(site / "testing_policies.html")
    assert "--8<--" not in "".join(_text(page) for page in site.rglob("*.html"))

    # The API reference renders every public name (mkdocstrings, one anchor each).
    api = "".join(page.read_text(encoding="utf-8") for page in (site / "api").glob("*.html"))
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            assert f'id="{module.__name__}.{name}"' in api, f"{module.__name__}.{name}"

    # Nothing is fetched from elsewhere when a page is read: no web fonts, no CDN.
    external = re.compile(
        r"<(?:link|script|img|iframe|source)\b[^>]*?(?:href|src)=\"(?:https?:)?//"
    )
    for page in site.rglob("*.html"):
        found = external.search(page.read_text(encoding="utf-8"))
        assert found is None, f"{page.relative_to(site)} loads {found.group(0) if found else ''}"
