"""What the docs show from the code is committed, up to date, and reads in the repository.

``python docs/generate.py`` writes the generated blocks of the pages, the policy file's
reference page and ``docs/_generated/``; these tests regenerate into a copy and compare,
so a change to the CLI, the policy schema, an example or the state machine that was not
followed by that command fails here, naming the file and the command.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import sys
from collections.abc import Collection, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import canarykit
from canarykit.policy import PolicyTable

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _docs_module(name: str) -> ModuleType:
    if str(DOCS) not in sys.path:
        sys.path.insert(0, str(DOCS))
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _docs_module("generate")
reference = _docs_module("make_policy_reference")


@pytest.fixture
def docs_copy(tmp_path: Path) -> Path:
    """A copy of docs/ under `tmp_path` (the root whose docs/ the generator reads)."""
    shutil.copytree(DOCS, tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted((root / "docs").rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_docs_are_what_the_generator_writes(docs_copy: Path) -> None:
    generate.generate(docs_copy, help_texts=generate.help_texts_comparable())
    fresh, committed = _files(docs_copy), _files(ROOT)
    differing = sorted(name for name in fresh if committed.get(name) != fresh[name])
    assert differing == [], (
        f"stale generated docs: {', '.join(differing)}; refresh with: {generate.REFRESH}"
    )
    assert generate.stale() == [], f"refresh with: {generate.REFRESH}"


def test_a_stale_block_is_found_named_and_refreshed(docs_copy: Path) -> None:
    page = docs_copy / "docs" / "cli.md"
    text = page.read_text(encoding="utf-8")
    edited = text.replace('shape = "linear"', 'shape = "exponential"', 1)
    assert edited != text
    page.write_text(edited, encoding="utf-8")

    assert generate.stale(docs_copy) == ["docs/cli.md: stale"]
    written = generate.generate(docs_copy, help_texts=generate.help_texts_comparable())
    assert written == ["docs/cli.md"]
    assert page.read_text(encoding="utf-8") == (DOCS / "cli.md").read_text(encoding="utf-8")
    assert generate.stale(docs_copy) == []


def test_text_outside_the_blocks_is_left_alone(docs_copy: Path) -> None:
    page = docs_copy / "docs" / "getting_started.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nA line of the page's own.\n")
    assert generate.stale(docs_copy) == []


def test_a_drawing_of_another_state_machine_is_stale(docs_copy: Path) -> None:
    svg = docs_copy / "docs" / "_generated" / "states.svg"
    svg.write_text(re.sub(r"sha256 [0-9a-f]{64}", "sha256 " + "0" * 64, svg.read_text()))
    assert generate.stale(docs_copy) == [
        "docs/_generated/states.svg: stale (not drawn from the current docs/_generated/states.dot)"
    ]


def test_a_file_left_in_generated_that_nothing_writes_is_reported(docs_copy: Path) -> None:
    (docs_copy / "docs" / "_generated" / "cli_help.txt").write_text("old\n")
    assert generate.stale(docs_copy) == [
        "docs/_generated/cli_help.txt: not generated any more (delete it)"
    ]


def test_check_command_exits_1_and_says_how_to_refresh(
    docs_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(generate, "stale", lambda: ["docs/cli.md: stale"])
    assert generate.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "docs/cli.md: stale" in out
    assert "refresh with: python docs/generate.py" in out


def test_generated_text_is_deterministic_and_names_no_absolute_path() -> None:
    first = generate.expected(ROOT)
    assert generate.expected(ROOT) == first
    for relative, text in first.items():
        assert str(ROOT) not in text, f"{relative} names the checkout's path"
        assert not re.search(r"\b20\d\d-\d\d-\d\d[T ]\d\d:\d\d", text), relative


def test_help_texts_are_wrapped_at_a_fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the reader's terminal does not change the docs
    block = generate.refresh_page(
        "<!-- generated: command canarykit run --help -->\n<!-- end generated -->"
    )
    lines = block.splitlines()
    assert "usage: canarykit run" in block
    assert max(len(line) for line in lines) <= int(generate.HELP_COLUMNS)
    assert any(len(line) > 70 for line in lines)  # wrapped at 88, not at 80 or less


def test_an_unknown_block_is_refused_by_name() -> None:
    with pytest.raises(generate.GenerateError, match="'example please'"):
        generate.refresh_page("<!-- generated: example please -->\n<!-- end generated -->")


def test_pages_read_in_the_repository_have_no_include_directives() -> None:
    # pymdownx.snippets' "--8<--" shows as a bare directive on GitHub: a page shows generated
    # text between "<!-- generated: KEY -->" markers instead (docs/generate.py).
    for page in generate.pages(DOCS):
        text = page.read_text(encoding="utf-8")
        assert "--8<--" not in text, f"{page.relative_to(ROOT)} includes a file"


def test_every_generated_block_is_closed() -> None:
    for page in generate.pages(DOCS):
        text = page.read_text(encoding="utf-8")
        opened = len(re.findall(r"^<!-- generated: ", text, re.MULTILINE))
        assert opened == len(generate.BLOCK.findall(text)), page.relative_to(ROOT)


def test_the_state_diagram_picture_is_committed_and_shown_by_a_relative_link() -> None:
    svg = (DOCS / "_generated" / "states.svg").read_text(encoding="utf-8")
    for phase in canarykit.Phase:
        assert f"<title>{phase.value}</title>" in svg, phase
    assert "](_generated/states.svg)" in (DOCS / "state_machine.md").read_text()


# ---------------------------------------------------------------------------------------
# The policy file's keys


def test_policy_reference_is_plain_markdown_in_the_navigation() -> None:
    page = (DOCS / "policy_reference.md").read_text(encoding="utf-8")
    assert "--8<--" not in page and "\n::: " not in page
    assert '| `hold` | `"2m"` |' in page
    assert "policy_reference.md" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_policy_reference_has_a_row_for_every_key_of_the_schema() -> None:
    page = (DOCS / "policy_reference.md").read_text(encoding="utf-8")
    schema_keys = re.findall(r"^([A-Za-z0-9_-]+) = ", reference.schema_text(), re.MULTILINE)
    assert len(schema_keys) > 100
    for key in schema_keys:
        assert f"| `{key}` |" in page, key


def test_policy_reference_reads_keys_tables_and_notes() -> None:
    sections = reference.parse(
        "\n".join(
            [
                "[plan]",
                'shape = "steps"         # required: linear | steps',
                "",
                "# one of",
                "[[plan.steps]]",
                "set_weight = 10         # percent",
                "[[plan.steps]]",
                'pause = "5m"            # hold',
                "                        # (watched)",
                "[[plan.steps]]",
                'pause = "1m"',
                "",
                "# Limits, for any kind:",
                "failure_limit = 3       # in all",
                '# token_file = "/run/t"  # or from a file',
                "# prose that is no key",
                'channel = "#deploys"    # slack',
            ]
        )
    )
    assert [(s.header, s.title, [r.key for r in s.rows]) for s in sections] == [
        ("[plan]", "", ["shape"]),
        ("[[plan.steps]]", "", ["set_weight", "pause"]),
        ("[[plan.steps]]", "", ["pause"]),  # a key again: the array's next table
        ("[plan]", "Limits", ["failure_limit", "token_file", "channel"]),
    ]
    assert sections[1].intro == ["one of"]
    assert sections[1].rows[1].about == ["hold", "(watched)"]
    assert sections[3].parts[1].note == ["prose that is no key"]
    assert sections[3].rows[2].example == '"#deploys"'  # a "#" inside a string is no comment


def _accepted_keys(monkeypatch: pytest.MonkeyPatch, policies: list[str | Path]) -> Iterator[str]:
    accepted: dict[str, set[str]] = {}
    check_keys = PolicyTable.check_keys

    def recording(self: PolicyTable, allowed: Collection[str], **kwargs: Any) -> None:
        # An element of an array of tables is its array; a member of an "all" or "any"
        # decider is a decider table ("each a decider table with its own kind").
        path = re.sub(r"\[\d+\]", "", self.path).replace("decider.members", "decider")
        accepted.setdefault(path, set()).update(allowed)
        check_keys(self, allowed, **kwargs)

    monkeypatch.setattr(PolicyTable, "check_keys", recording)
    for policy in policies:
        canarykit.policy.load_policy(policy)
    for path, keys in sorted(accepted.items()):
        if path:  # the top level's keys are the tables
            yield from (f"{path}.{key}" for key in sorted(keys))


_PLAN = """
[plan]
shape = "weights"
weights = [10, 50]
hold = "1m"
analysis_interval = "30s"
"""
# One policy per decider kind the examples do not use.
_DECIDERS = [
    '[decider]\nkind = "relative"\n[[decider.metrics]]\nmetric = "error_rate"\nmax_ratio = 1.5\n',
    '[decider]\nkind = "kayenta"\n[[decider.metrics]]\nmetric = "error_rate"\n',
    '[decider]\nkind = "all"\n[[decider.members]]\nkind = "sequential"\n'
    '[[decider.members]]\nkind = "sequential"\n',
]
# And one per router kind and query form the examples do not use.
_DEPLOYMENTS = [
    '[decider]\nkind = "sequential"\n[router]\nkind = "haproxy"\nruntime_api = "/run/h.sock"\n'
    'backend = "app"\nstable = ["v1"]\ncanary = ["v2"]\n',
    '[decider]\nkind = "sequential"\n[router]\nkind = "gateway-api"\nroute = "shop"\n'
    'namespace = "prod"\nstable_service = "v1"\ncanary_service = "v2"\n'
    '[router.kubernetes]\ncontext = "prod"\n',
    '[decider]\nkind = "sequential"\n[router]\nkind = "istio"\nvirtual_service = "app"\n'
    'namespace = "prod"\nhost = "app"\nstable_subset = "v1"\ncanary_subset = "v2"\n',
    '[decider]\nkind = "sequential"\n[metrics]\nkind = "prometheus"\nurl = "http://p:9090"\n'
    'stable = "v1"\ncanary = "v2"\n[metrics.queries]\nrequests = "r"\nerrors = "e"\n',
]


def test_every_key_the_loader_accepts_is_on_the_reference_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The loader's own key lists (PolicyTable.check_keys), recorded while it reads the
    # examples and one policy per decider, router and query kind: a key added to the
    # loader but not to the schema in its docstring fails here.
    policies: list[str | Path] = sorted((ROOT / "examples").glob("*.toml"))
    policies += [_PLAN + tables for tables in (*_DECIDERS, *_DEPLOYMENTS)]
    sections = reference.parse(reference.schema_text())
    rows = reference.keys(sections)
    # A key the schema explains in a note ("or url = ...", "and/or min"), as a sub-table,
    # or once for all the tables of a kind (the webhook keys of [hooks.confirm_promotion]
    # for every hook) is listed too, on its top table's part of the page.
    prose: dict[str, str] = {}
    for section in sections:
        top = section.name.split(".")[0]
        words = [*section.intro, *(line for part in section.parts for line in part.note)]
        words += [text for row in section.rows for text in (row.key, *row.about)]
        prose[top] = prose.get(top, "") + " " + " ".join(words)
    names = {section.name for section in sections}
    missing = []
    for dotted in _accepted_keys(monkeypatch, policies):
        table, _, key = dotted.rpartition(".")
        if (table, key) in rows or dotted in names:
            continue
        if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", prose.get(table.split(".")[0], "")):
            continue
        missing.append(dotted)
    assert missing == [], (
        f"keys the loader accepts that the schema never names: {', '.join(missing)}; add them "
        f"to the schema in canarykit.policy._load's docstring, then run {generate.REFRESH}"
    )


def test_mkdocs_build_warns_naming_a_stale_file_and_the_command(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = _docs_module("mkdocs_hooks")
    monkeypatch.setattr(hooks.generate, "stale", lambda: ["docs/cli.md: stale"])
    hooks.on_startup(command="build", dirty=False)
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        hooks.on_pre_build(config=None)
    assert [record.getMessage() for record in caplog.records] == [
        "docs/cli.md: stale; refresh with: python docs/generate.py"
    ]
    assert caplog.records[0].name.startswith("mkdocs.")  # counted by --strict


def test_mkdocs_serve_refreshes_what_is_stale(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = _docs_module("mkdocs_hooks")
    monkeypatch.setattr(hooks.generate, "generate", lambda: ["docs/cli.md"])
    monkeypatch.setattr(hooks.generate, "stale", lambda: pytest.fail("serve only refreshes"))
    hooks.on_startup(command="serve", dirty=False)
    with caplog.at_level(logging.INFO, logger="mkdocs"):
        hooks.on_pre_build(config=None)
    assert [record.getMessage() for record in caplog.records] == ["refreshed docs/cli.md"]
