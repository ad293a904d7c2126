"""Developer tasks: `nox -s tests lint typecheck docs examples`; `nox -s fast` while editing."""

import pathlib

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "examples"]
nox.options.reuse_existing_virtualenvs = True


def install(session: nox.Session) -> None:
    session.install("-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite; every async test runs on asyncio and on trio."""
    install(session)
    session.run("pytest", *session.posargs)


@nox.session
def fast(session: nox.Session) -> None:
    """The fast tier: every test not marked `integration` (no real servers or processes)."""
    install(session)
    session.run("pytest", "-m", "not integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    install(session)
    session.run("mypy", "--strict", "src")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs site (mkdocs.yml) with warnings as errors, into build/docs-site."""
    install(session)
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every script in examples/."""
    install(session)
    for script in sorted(pathlib.Path("examples").glob("*.py")):
        session.run("python", str(script))
