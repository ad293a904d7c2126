"""How packages export names: where public names say they live, and loading on first use.

A name defined in a private module (``canarykit._runner``, ``canarykit.notify._deliver``)
and exported by a package reports that package as its module, as trio and httpx do, so
reprs, docs and error messages point at what users import. Names that already report a
public module (re-exported from another package, or typing aliases) are left alone.
`load_lazy` imports a package's heavier names when first used (PEP 562).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__all__ = ["claim_public_names", "load_lazy", "load_moved"]


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


def load_lazy(namespace: dict[str, Any], lazy: dict[str, str], name: str) -> Any:
    """Import a package's lazily exported ``name`` from the module ``lazy`` maps it to.

    Every name from that module is loaded with it, so the package's namespace holds a
    module's names all or none (the docstring examples of one name use its neighbours).
    They are claimed for the package (`claim_public_names`) as the eagerly
    imported ones are, and kept in the namespace so the next lookup is a plain one.
    """
    package = namespace["__name__"]
    if name not in lazy:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module = importlib.import_module(lazy[name], package)
    names = [other for other, source in lazy.items() if source == lazy[name]]
    loaded = {other: getattr(module, other) for other in names}
    claim_public_names({"__name__": package, "__all__": names, **loaded})
    namespace.update(loaded)
    return loaded[name]


def load_moved(namespace: dict[str, Any], moved: dict[str, tuple[str, str]], name: str) -> Any:
    """A name that moved out of a package: warn (DeprecationWarning) and return it.

    `moved` maps the old name to the public module it lives in now and its name there
    (``{"RequestPause": ("canarykit.machine", "PauseRequested")}``). Old names stay
    for one release after they move.
    """
    package = namespace["__name__"]
    if name not in moved:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    module_name, new = moved[name]
    warnings.warn(
        f"{package}.{name} is deprecated and will be removed in the next release; "
        f"use {module_name}.{new}",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(module_name), new)
