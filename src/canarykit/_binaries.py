"""Finding the binaries that adapters run (nginx, haproxy, prometheus)."""

from __future__ import annotations

import os
import shutil

from ._errors import RouterError

__all__ = ["BinaryNotFound", "find_binary", "router_binary"]

# Debian's packages put daemons in sbin, which is not on every user's PATH.
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")


class BinaryNotFound(RuntimeError):
    """A server binary is not installed; the message says how to install it."""

    def __init__(self, name: str, package: str) -> None:
        self.name = name
        self.package = package
        self.install_command = f"apt-get install -y {package}"
        super().__init__(f"{name} is not installed; install it with: {self.install_command}")


def find_binary(name: str, package: str) -> str:
    """The path of executable `name`, or raise `BinaryNotFound` naming its Debian package."""
    path = shutil.which(name) or shutil.which(
        name, path=os.pathsep.join((os.environ.get("PATH", ""), *_EXTRA_DIRS))
    )
    if path is None:
        raise BinaryNotFound(name, package)
    return path


def router_binary(configured: str | None, name: str, package: str) -> str:
    """The binary a router was given, or the one found; a missing one is a `RouterError`."""
    if configured is not None:
        return configured
    try:
        return find_binary(name, package)
    except BinaryNotFound as exc:
        raise RouterError(str(exc)) from None
