"""The policy file's keys as plain Markdown tables, from the schema in the loader's docstring.

The policy loader (``canarykit.policy._load``) writes its schema once, as commented TOML in
its docstring; ``canarykit.policy._load`` is where a key is added, and its docstring is where
the key is explained. This module reads that block and writes ``docs/policy_reference.md``
(through ``docs/generate.py``): one table of keys per TOML table, with the example
value and the explanation, so the keys read on GitHub as on the site.

How the block is read, line by line:

- ``[table]`` or ``[[table]]`` starts a table; a comment after it introduces it;
- ``key = value  # comment`` is a key (the value is its example); comment lines indented
  under it continue its explanation;
- a comment at the start of a line is a note: before a header it introduces that table;
  between keys it splits the table in two, the note between them. A note that is itself
  ``key = value  # comment`` (an alternative key, commented out in the schema) is a key;
- keys that follow a note after a blank line, with no header, belong to the top table
  of the one before (``[decider]`` after ``[[decider.members.metrics]]``);
- the same header again right after, with no note and no ``kind``, continues the table
  (the ``[[plan.steps]]`` kinds); a table whose first key is ``kind`` is one variant,
  titled by it.

Anything else is kept as a note, never dropped.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

GENERATOR = "python docs/generate.py"
_HEADER = re.compile(r"^(?P<open>\[\[?)(?P<name>[A-Za-z0-9_.-]+)\]\]?\s*(?:#\s?(?P<about>.*))?$")
_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_-]+)\s*=\s*(?P<rest>.+)$")
_CODE = re.compile(r"(`+)(.+?)\1")


@dataclass
class Row:
    """One key: its name, its example value (TOML), and what the schema says of it."""

    key: str
    example: str
    about: list[str] = field(default_factory=list)


@dataclass
class Part:
    """Rows of a table, with the note written before them (if any)."""

    note: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


@dataclass
class Section:
    """One TOML table of the schema (or one variant of it, such as a decider kind)."""

    name: str  # dotted, without brackets: "plan.steps"
    array: bool  # [[name]]
    intro: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    title: str = ""  # a note's first words, for a table continued without a header
    blank_before: bool = False

    @property
    def header(self) -> str:
        """The table's header as TOML writes it."""
        return f"[[{self.name}]]" if self.array else f"[{self.name}]"

    @property
    def rows(self) -> list[Row]:
        """Every key of the section, in order."""
        return [row for part in self.parts for row in part.rows]

    @property
    def kind(self) -> str | None:
        """The example value of ``kind`` when it is the first key (a variant), else None."""
        rows = self.rows
        return rows[0].example if rows and rows[0].key == "kind" else None


def schema_text() -> str:
    """The schema block of ``canarykit.policy._load``'s docstring, dedented."""
    from canarykit.policy import _load as _policy

    doc = _policy.__doc__ or ""
    start = doc.find("::\n", doc.find("Schema"))
    if start < 0:
        raise RuntimeError("canarykit.policy._load's docstring has no 'Schema ...::' block")
    lines = []
    for line in doc[start + 3 :].splitlines():
        if line and not line.startswith(" "):
            break  # the literal block ends at the first unindented line
        lines.append(line[4:])
    return "\n".join(lines).strip("\n") + "\n"


def schema_lead() -> str:
    """The sentence before the schema block (what durations and percents are), as Markdown."""
    from canarykit.policy import _load as _policy

    doc = _policy.__doc__ or ""
    start = doc.find("Schema")
    end = doc.find("::\n", start)
    if start < 0 or end < 0:
        return ""
    text = " ".join(doc[start:end].split())
    found = re.fullmatch(r"Schema \((.*)\)", text)
    if found:
        text = found.group(1)
        text = text[:1].upper() + text[1:] + "."
    return text.replace("``", "`")


def _value_and_comment(rest: str) -> tuple[str, str] | None:
    """Split ``value  # comment`` where the value is valid TOML; None if no split is."""
    candidates = [match.start() for match in re.finditer("#", rest)] + [len(rest)]
    for position in candidates:
        value = rest[:position].strip()
        if not value:
            continue
        try:
            tomllib.loads(f"x = {value}")
        except tomllib.TOMLDecodeError:
            continue
        comment = rest[position + 1 :].strip() if position < len(rest) else ""
        return value, comment
    return None


def _title_from(note: list[str]) -> str:
    # "Limits (Argo Rollouts' measurement limits), for any kind above: ..." -> "Limits"
    words = re.split(r"[(:;,.]", " ".join(note), maxsplit=1)[0].split()
    return " ".join(words) if 0 < len(words) <= 5 else ""


def parse(schema: str) -> list[Section]:
    """The sections of the schema block, in order (see the module docstring)."""
    sections: list[Section] = []
    note: list[str] = []
    blank = False
    continued: list[str] | None = None  # where an indented comment line goes
    for line in schema.splitlines():
        stripped = line.strip()
        if not stripped:
            blank, continued = True, None
            continue
        if stripped.startswith("#") and line.startswith((" ", "\t")):
            text = stripped.lstrip("#").strip()
            (continued if continued is not None else note).append(text)
            continue
        header = _HEADER.match(line)
        if header:
            section = Section(
                name=header.group("name"),
                array=header.group("open") == "[[",
                intro=note,
                blank_before=blank,
            )
            if header.group("about"):
                section.intro = [*section.intro, header.group("about").strip()]
            sections.append(section)
            note, blank, continued = [], False, section.intro
            continue
        commented = stripped.startswith("#")
        text = stripped.lstrip("#").strip() if commented else line
        key = _KEY.match(text)
        split = _value_and_comment(key.group("rest")) if key else None
        if key is None or split is None or (not sections and commented):
            if commented:
                note.append(text)
                continued = note
            elif sections:
                sections[-1].parts.append(Part(note=[*note, text]))
                note, continued = [], None
            else:
                note.append(text)
            continue
        value, comment = split
        if not sections or (blank and note):
            # Keys with no header of their own, after a note: the top table's.
            top = sections[-1].name.split(".")[0] if sections else ""
            sections.append(
                Section(
                    name=top,
                    array=bool(sections) and sections[-1].array and "." not in sections[-1].name,
                    intro=note,
                    title=_title_from(note),
                    blank_before=True,
                )
            )
            note = []
        current = sections[-1]
        if note or not current.parts:
            current.parts.append(Part(note=note))
            note = []
        row = Row(key=key.group("key"), example=value, about=[comment] if comment else [])
        current.parts[-1].rows.append(row)
        blank, continued = False, row.about
    return _merged(sections)


def _merged(sections: list[Section]) -> list[Section]:
    """Join a table repeated right after itself, with no note and no kind (the step kinds)."""
    merged: list[Section] = []
    for section in sections:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and previous.header == section.header
            and not section.intro
            and not section.blank_before
            and previous.kind is None
            and section.kind is None
            # A key seen again is the next element of an array of tables.
            and not {row.key for row in previous.rows} & {row.key for row in section.rows}
        ):
            previous.parts[-1].rows.extend(section.parts[0].rows if section.parts else [])
            previous.parts.extend(section.parts[1:])
            continue
        merged.append(section)
    return merged


def _escape(text: str) -> str:
    """Markdown text that reads the same on GitHub and in MkDocs: code spans kept as they are."""
    out = []
    position = 0
    for found in _CODE.finditer(text):
        out.append(_escape_plain(text[position : found.start()]))
        out.append(found.group(0))
        position = found.end()
    out.append(_escape_plain(text[position:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    # Only what both GitHub and Python-Markdown unescape (Python-Markdown keeps "\<").
    # "{...}" too: MkDocs' attr_list would take a paragraph's last "{arm}" for attributes.
    return re.sub(r"([\\|\[\]{}*`])", r"\\\1", text)


def _code(value: str) -> str:
    # A pipe splits a table cell even in a code span on GitHub, and MkDocs shows an escaped
    # one literally: such a value is written as escaped text instead.
    if "|" in value or "`" in value:
        return _escape_plain(value)
    return f"`{value}`"


def _sentence(lines: list[str]) -> str:
    return _escape(" ".join(line for line in lines if line))


def _table(rows: list[Row]) -> list[str]:
    lines = ["| Key | Example | What it is |", "| --- | --- | --- |"]
    for row in rows:
        lines.append(f"| `{row.key}` | {_code(row.example)} | {_sentence(row.about)} |")
    return lines


def keys(sections: list[Section]) -> set[tuple[str, str]]:
    """Every (table, key) the sections list: ``("plan", "hold")``, ``("plan.steps", "pause")``."""
    return {(section.name, row.key) for section in sections for row in section.rows}


def render() -> str:
    """``docs/policy_reference.md``."""
    sections = parse(schema_text())
    lines = [
        "<!-- Generated by `python docs/generate.py` from the schema in the policy loader's",
        "     docstring (src/canarykit/policy/_load.py). Do not edit: change the docstring, then",
        "     run the command again. -->",
        "",
        "# The policy file's keys",
        "",
        "Every key a policy file may hold, table by table, with an example value; the",
        "loader refuses any other key by name. The same keys as one commented TOML file are",
        "in [the command line's page](cli.md#the-policy-file).",
    ]
    lead = schema_lead()
    if lead:
        lines += ["", _escape(lead)]
    tops: list[str] = []
    for section in sections:
        top = section.name.split(".")[0]
        if top not in tops:
            tops.append(top)
            top_header = f"[[{top}]]" if section.array and section.name == top else f"[{top}]"
            lines += ["", f"## `{top_header}`"]
            if section.name == top and section.kind is None and not section.title:
                lines += _body(section)
                continue
        heading = f"`{section.header}`"
        if section.kind is not None:
            heading += f" kind = {_code(section.kind)}"
        elif section.title:
            heading += f": {_escape(section.title)}"
        lines += ["", f"### {heading}", *_body(section)]
    return "\n".join(lines) + "\n"


def _body(section: Section) -> list[str]:
    lines: list[str] = []
    intro = list(section.intro)
    if intro and section.kind is not None:
        # 'kind = "relative": each metric ...' under a heading that already names the kind
        prefix = f"kind = {section.kind}: "
        if intro[0].startswith(prefix):
            rest = intro[0][len(prefix) :]
            intro[0] = rest[:1].upper() + rest[1:]
    if intro:
        lines += ["", _sentence(intro)]
    for part in section.parts:
        if part.note:
            lines += ["", _sentence(part.note)]
        if part.rows:
            lines += ["", *_table(part.rows)]
    return lines


def _main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    _main()
