"""MkDocs hooks: what the pages show from the code must be up to date, and is committed.

``mkdocs.yml`` names this file under ``hooks:``. The generated text (help texts, the
runs of the example policy, the policy file's keys, example code, the state diagram and
the transition table) lives in the pages themselves between ``<!-- generated: ... -->``
markers, in ``docs/policy_reference.md`` and in ``docs/_generated/``, all committed and
written by one command, ``python docs/generate.py`` (see there), so the pages read the
same in the repository as on the site.

- ``mkdocs build`` only checks: each stale file is a warning naming it and the command
  that refreshes it, so ``mkdocs build --strict`` fails. A build never rewrites
  committed files behind a reviewer's back, and the site shows what the repository does.
- ``mkdocs serve`` refreshes them before each build (it also watches ``src`` and
  ``examples``), so an edited example shows at once; files are written only when their
  text changes, so the rebuild this triggers finds nothing more to do.

Everything is computed locally: the build makes no network request and needs no
Graphviz (the SVG is committed; see ``generate.py``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
if str(DOCS) not in sys.path:
    sys.path.insert(0, str(DOCS))

import generate  # noqa: E402

# Under the "mkdocs" logger, so that --strict counts these warnings.
log = logging.getLogger("mkdocs.hooks.canarykit")
_command = "build"


def on_startup(command: str, dirty: bool, **kwargs: Any) -> None:
    """MkDocs event: remember whether this is a build or ``serve``."""
    global _command
    _command = command


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """MkDocs event: before the pages are read, refresh (serve) or check (build)."""
    if _command == "serve":
        try:
            for relative in generate.generate():
                log.info("refreshed %s", relative)
        except generate.GenerateError as exc:
            log.warning("%s", exc)
        return
    for problem in generate.stale():
        log.warning("%s; refresh with: %s", problem, generate.REFRESH)
