"""The import rules of docs/architecture.md, checked on the source (statically, with ast).

Each module of ``src/canarykit`` belongs to a layer; a layer may import only the layers the
page allows. Imports under ``if TYPE_CHECKING:`` are for annotations and never run, so they
are not counted. A failure names the module, the import and the rule it breaks.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "canarykit"

ADAPTERS = ("deciders", "routers", "metrics", "notify", "exporter", "plot", "presets")
# The engines' stores are adapters that live beside the core stores they extend.
ENGINE_STORES = (
    "canarykit.stores._etcd",
    "canarykit.stores._kubernetes",
    "canarykit.stores._postgres",
)
# The pure state machine and what it may load: no event loop, no files, no sockets.
SANS_IO = {
    "canarykit._machine",
    "canarykit._errors",
    "canarykit._plan",
    "canarykit._split",
    "canarykit._verdict",
    "canarykit._text",
    "canarykit._validate",
    "canarykit._safe",
    "canarykit._observe",
    "canarykit._histogram",
    "canarykit._protocols",
    "canarykit._state_json",
}
# Only these outside packages may be imported (at run time) by the sans-IO modules.
SANS_IO_THIRD_PARTY = {"attrs", "typing_extensions"}
# The one place core knows the shipped deciders: checking, when a Rollout is built, that
# the decider can judge the metrics the source gives (imported lazily, inside a function).
CORE_TO_ADAPTER_EXCEPTIONS = {("canarykit._decider_checks", "canarykit.deciders")}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if module in ENGINE_STORES:
        return "adapter"
    if len(parts) == 1:
        return "core"
    if parts[1] in ADAPTERS:
        return "adapter"
    if parts[1] in ("policy", "_cli", "testing"):
        return parts[1].lstrip("_")
    if parts[1] == "__main__":
        return "cli"
    return "core"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _imports(path: Path) -> Iterator[str]:
    """The modules `path` imports at run time, as absolute names (submodules included)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_of(package, path.read_text(encoding="utf-8"))


def _imports_of(package: str, source: str) -> Iterator[str]:
    """What `source`, a module of `package`, imports at run time."""
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            # ``from . import machine`` imports a submodule.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                if _exists(candidate):
                    yield candidate


def _exists(module: str) -> bool:
    relative = Path(*module.split("."))
    return (SRC / relative).with_suffix(".py").is_file() or (
        SRC / relative / "__init__.py"
    ).is_file()


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
IMPORTS = {name: sorted(set(_imports(path))) for name, path in MODULES.items()}


def _own(targets: list[str]) -> list[str]:
    return [target for target in targets if target.split(".")[0] == "canarykit"]


def _broken(rule: str, allowed: set[str], *, layer: str) -> list[str]:
    found = []
    for module, targets in IMPORTS.items():
        if _layer(module) != layer:
            continue
        for target in _own(targets):
            if target == "canarykit" or not _exists(target):
                continue
            if _layer(target) not in allowed | {layer} and (module, target) not in (
                CORE_TO_ADAPTER_EXCEPTIONS
            ):
                found.append(f"{module} imports {target} ({rule})")
    return found


def test_the_layers_are_found():
    layers = {_layer(name) for name in MODULES}
    assert layers == {"core", "adapter", "policy", "cli", "testing"}
    assert _layer("canarykit._runner") == "core"
    assert _layer("canarykit.machine") == "core"
    assert _layer("canarykit.routers._nginx") == "adapter"
    assert _layer("canarykit.stores._etcd") == "adapter"
    assert _layer("canarykit.stores") == "core"


def test_core_imports_no_adapter_policy_cli_or_testing():
    assert _broken("core imports only core", set(), layer="core") == []


def test_adapters_import_only_core_and_their_own_package():
    found = []
    for module, targets in IMPORTS.items():
        if _layer(module) != "adapter":
            continue
        own = module.split(".")[1]
        for target in _own(targets):
            if target == "canarykit" or not _exists(target):
                continue
            if _layer(target) == "core":
                continue
            if _layer(target) == "adapter" and target.split(".")[1] == own:
                continue
            found.append(f"{module} imports {target} (an adapter imports only core)")
    assert found == []


def test_testing_imports_no_policy_or_cli():
    assert _broken("testing imports core and adapters", {"core", "adapter"}, layer="testing") == []


def test_policy_imports_no_cli():
    allowed = {"core", "adapter", "testing"}
    assert _broken("policy imports core, adapters, testing", allowed, layer="policy") == []


def test_nothing_but_the_command_imports_the_cli():
    found = [
        f"{module} imports {target}"
        for module, targets in IMPORTS.items()
        for target in _own(targets)
        if target.startswith("canarykit._cli") and _layer(module) != "cli"
    ]
    assert found == []


def test_only_the_command_imports_the_policy_layer():
    # The top level loads canarykit.policy on first use (importlib, not an import statement).
    found = [
        f"{module} imports {target}"
        for module, targets in IMPORTS.items()
        for target in _own(targets)
        if target.startswith("canarykit.policy") and _layer(module) not in ("cli", "policy")
    ]
    assert found == []


def test_the_machine_is_sans_io():
    closure: set[str] = set()
    todo = ["canarykit._machine"]
    while todo:
        module = todo.pop()
        if module in closure:
            continue
        closure.add(module)
        todo.extend(t for t in _own(IMPORTS.get(module, [])) if t in MODULES and t != "canarykit")
    assert closure <= SANS_IO, f"the machine loads {sorted(closure - SANS_IO)}"
    outside = {
        target.split(".")[0]
        for module in closure
        for target in IMPORTS[module]
        if target.split(".")[0] != "canarykit"
    }
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert outside - stdlib <= SANS_IO_THIRD_PARTY
    io_modules = {"socket", "subprocess", "asyncio", "threading", "selectors", "fcntl", "ssl"}
    assert outside & io_modules == set()


@pytest.mark.parametrize(
    "source",
    [
        "from canarykit.routers import NginxRouter\n",
        "def later():\n    from .routers import NginxRouter\n",
        "if True:\n    from . import routers\n",
    ],
)
def test_an_import_of_an_adapter_is_seen_wherever_it_is_written(source):
    assert "canarykit.routers" in set(_imports_of("canarykit", source))


def test_imports_under_type_checking_do_not_count():
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .routers import X\n"
    assert "canarykit.routers" not in set(_imports_of("canarykit", source))
