"""One rule for where public names say they live (the `__module__` fix-up of every package).

A name defined in a private module (``canarykit._runner``, ``canarykit.notify._deliver``)
and exported by a package reports that package as its module, as trio and httpx do, so
reprs, docs and error messages point at what users import. Names that already report a
public module (re-exported from another package, or typing aliases) are left alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["claim_public_names"]


def _private(module: str) -> bool:
    return module.startswith("canarykit.") and any(p.startswith("_") for p in module.split("."))


def claim_public_names(namespace: dict[str, Any]) -> None:
    """Make each name of the package's ``__all__`` from a private module report the package.

    Call it as ``claim_public_names(globals())`` at the end of a package's ``__init__``.
    """
    package = namespace["__name__"]
    for name in namespace["__all__"]:
        obj = namespace[name]
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and _private(module):
            obj.__module__ = package
