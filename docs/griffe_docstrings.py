"""A Griffe extension that reads canarykit's docstrings the way Sphinx used to.

canarykit's docstrings are written in light reStructuredText: ```Name``` refers to an API
object (Sphinx's ``default_role = "py:obj"``), ````literal```` is code, a paragraph
ending in ``::`` introduces an indented literal block, and ``>>>`` lines are doctests.
Markdown reads the first two as code spans, but an indented block after a list turns
into list text and ``>>>`` into three nested quotes. Rather than rewriting every
docstring, this extension rewrites each docstring's text once Griffe has loaded the
package, before mkdocstrings parses and renders it:

- a literal block becomes a fenced block (Python when it parses as Python), and the
  ``::`` that opened it becomes ``:`` (or goes, when it stood alone);
- a run of doctest lines, up to the next blank line, becomes a fenced ``pycon`` block;
- ```Name``` (also ```Name.attr``` and ```name()```) becomes an *optional* cross-reference
  to the object it resolves to from the docstring's scope, as Sphinx's default role did.
  An optional reference that finds no rendered target is shown as code without a
  warning, so ```seconds``` (a parameter) or ```nginx -T``` stay code, and strict mode
  still fails on the pages' own (non-optional) broken references.

Text inside existing fenced blocks and inside double backticks is left alone.

It also gives attrs classes their constructor. attrs writes ``__init__`` when the class
is created, so reading the source (as Griffe does) finds none, and the reference would
show ``Plan()``. For each attrs class the extension adds the ``__init__`` that Python
itself reports (`inspect.signature` of the imported class, as Sphinx's autodoc showed
it), with annotations resolved in the class's module so that they link.
"""

from __future__ import annotations

import ast
import html
import importlib
import inspect
import re
from typing import Any

import griffe

_FENCE = re.compile(r"^\s*(```|~~~)")
_DOCTEST = re.compile(r"^\s*>>>")
# A single-backtick span: not part of a ``double`` one.
_ROLE = re.compile(r"(?<![`\w])`([^`\n]+)`(?![`\w])")
_DOUBLE = re.compile(r"``[^`\n]+?``")
_NAME = re.compile(r"(~?)([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)(\(\))?")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_python(code: str) -> bool:
    try:
        compile(code, "<docstring>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError:
        return False
    return True


def _dedent(lines: list[str]) -> list[str]:
    margin = min((_indent(line) for line in lines if line.strip()), default=0)
    return [line[margin:] for line in lines]


def _blocks(text: str) -> list[str]:
    """Fence the literal blocks and the doctests of `text`."""
    lines = text.splitlines()
    out: list[str] = []
    fence: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if fence is not None:  # inside a fence written as Markdown already
            out.append(line)
            if line.strip().startswith(fence):
                fence = None
            i += 1
            continue
        found = _FENCE.match(line)
        if found:
            fence = found.group(1)
            out.append(line)
            i += 1
            continue
        if _DOCTEST.match(line):
            pad = " " * _indent(line)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += [f"{pad}```pycon", *(pad + part for part in _dedent(block)), f"{pad}```", ""]
            continue
        if line.rstrip().endswith("::"):
            head = line.rstrip()[:-2]
            if head.strip():
                out.append(head.rstrip() if head.endswith(" ") else head + ":")
            base = _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            block = []
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                block.append(lines[j])
                j += 1
            while block and not block[-1].strip():
                block.pop()
            if block:
                pad = " " * base
                code = _dedent(block)
                language = "python" if _is_python("\n".join(code)) else "text"
                fenced = [f"{pad}```{language}", *(pad + part for part in code), f"{pad}```"]
                out += ["", *fenced, ""]
                i = j
                continue
            i += 1
            continue
        out.append(line)
        i += 1
    return out


def _reference(obj: griffe.Object, text: str) -> str | None:
    """The identifier that ```text``` refers to from `obj`'s scope, or None."""
    found = _NAME.fullmatch(text.strip())
    if not found:
        return None
    first, _, rest = found.group(2).partition(".")
    try:
        path = obj.resolve(first)  # the object's scope, then its parents'
    except griffe.NameResolutionError:
        pass
    else:
        return f"{path}.{rest}" if rest else path
    # A dotted name given in full (`canarykit.testing.simulate`).
    if rest:
        try:
            obj.modules_collection.get_member(found.group(2))
        except (KeyError, ValueError):
            return None
        return found.group(2)
    return None


def _link(obj: griffe.Object, match: re.Match[str]) -> str:
    text = match.group(1)
    identifier = _reference(obj, text)
    if identifier is None:
        return match.group(0)
    shown = text.strip()
    if shown.startswith("~"):  # Sphinx's ~ shows the last part only
        shown = shown[1:].rsplit(".", 1)[-1]
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(shown)}</code></autoref>"
    )


def _references(obj: griffe.Object, line: str) -> str:
    # Leave ``literals`` alone: link only in the stretches between them.
    parts = []
    last = 0
    for literal in _DOUBLE.finditer(line):
        parts.append(_ROLE.sub(lambda m: _link(obj, m), line[last : literal.start()]))
        parts.append(literal.group(0))
        last = literal.end()
    parts.append(_ROLE.sub(lambda m: _link(obj, m), line[last:]))
    return "".join(parts)


def convert(obj: griffe.Object, text: str) -> str:
    """`text`, a docstring of `obj`, as Markdown."""
    out = []
    fence: str | None = None
    for line in _blocks(text):
        found = _FENCE.match(line)
        if fence is not None:
            out.append(line)
            if line.strip().startswith(fence):
                fence = None
        elif found:
            fence = found.group(1)
            out.append(line)
        else:
            out.append(_references(obj, line))
    return "\n".join(out)


_KINDS: dict[Any, Any] = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _annotation(cls: griffe.Class, name: str, annotation: Any) -> str | griffe.Expr | None:
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    if text == "Any" and name in cls.members and not cls.members[name].is_alias:
        # A converter that accepts anything: the attribute's own annotation says more.
        declared = getattr(cls.members[name], "annotation", None)
        if declared is not None:
            return declared  # type: ignore[no-any-return]
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return text
    return griffe.safe_get_annotation(node, parent=cls, log_level=None) or text


def _attrs_init(cls: griffe.Class) -> None:
    """Give an attrs class the ``__init__`` that attrs generated for it."""
    if "__init__" in cls.members:
        return
    try:
        runtime = getattr(importlib.import_module(cls.module.path), cls.name)
    except (ImportError, AttributeError):
        return
    if not hasattr(runtime, "__attrs_attrs__") or "__init__" not in vars(runtime):
        return
    signature = inspect.signature(runtime.__init__)
    parameters = [
        griffe.Parameter(
            parameter.name,
            annotation=_annotation(cls, parameter.name, parameter.annotation),
            kind=_KINDS[parameter.kind],
            default=None if parameter.default is parameter.empty else repr(parameter.default),
        )
        for parameter in signature.parameters.values()
    ]
    init = griffe.Function("__init__", parameters=griffe.Parameters(*parameters), returns="None")
    cls.set_member("__init__", init)


class RestDocstrings(griffe.Extension):
    """Rewrite every docstring of the loaded package as Markdown (see the module's text)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[str] = set()
        todo: list[griffe.Object] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.path in seen:
                continue
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj, obj.docstring.value)
            if isinstance(obj, griffe.Class):
                _attrs_init(obj)
            # Aliases are skipped: each points at an object visited in its own module.
            todo += [m for m in obj.members.values() if isinstance(m, griffe.Object)]
