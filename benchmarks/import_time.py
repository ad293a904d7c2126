"""How long ``import canarykit`` takes, against ``import anyio`` measured in the same run.

Each import runs in a fresh interpreter under ``python -X importtime``; the figure is the
cumulative time of the package's own line (interpreter start-up excluded), the best of
``--runs`` tries each, interleaved so that a busy machine slows both alike. ``import_ms``
is with bytecode cached, as after ``pip install`` (a private ``PYTHONPYCACHEPREFIX``,
warmed first, so the work tree is not written); ``import_uncached_ms`` compiles every
module from source, as each run does where ``PYTHONDONTWRITEBYTECODE`` is set. The ratio to
anyio (a dependency that every run of canarykit loads anyway) is the figure that carries
from one machine to another. Also reported: whether the import loaded a TOML parser, the
policy layer or decider modules (none of which a plan and a `Rollout` need), the count of
top-level names, and the count of test files importing private modules. The last line
printed is one JSON object.

Usage: python benchmarks/import_time.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 100.0

# What the import left in sys.modules, printed by the child after the timed import.
_LOADED = (
    "import sys, {name}; "
    "print('\\n'.join(m for m in sys.modules if m.startswith(('canarykit', 'tomllib', 'tomli'))))"
)
_PRIVATE_IMPORT = re.compile(r"^\s*(from canarykit\._|import canarykit\._)", re.MULTILINE)


def _import_ms(name: str, env: dict[str, str]) -> tuple[float, list[str]]:
    """Import ``name`` in a fresh interpreter: its cumulative import time and the modules loaded."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _LOADED.format(name=name)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    # The line "import time: self | cumulative | name" for the package itself, unindented.
    pattern = re.compile(rf"^import time:\s*\d+ \|\s*(\d+) \| {re.escape(name)}$", re.MULTILINE)
    match = pattern.search(result.stderr)
    if match is None:
        raise RuntimeError(f"no import time for {name} in:\n{result.stderr[-2000:]}")
    return int(match.group(1)) / 1000, result.stdout.split()


def _private_importers() -> int:
    """Test files that import a private canarykit module (``from canarykit._x import ...``)."""
    return sum(
        1
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if _PRIVATE_IMPORT.search(path.read_text(encoding="utf-8"))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    canarykit_ms: list[float] = []
    anyio_ms: list[float] = []
    uncached_ms: list[float] = []
    loaded: list[str] = []
    uncached = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    uncached.pop("PYTHONPYCACHEPREFIX", None)
    with tempfile.TemporaryDirectory() as pycache:
        cached = {**uncached, "PYTHONPYCACHEPREFIX": pycache}
        del cached["PYTHONDONTWRITEBYTECODE"]
        for name in ("canarykit", "anyio"):  # writes the bytecode the timed runs read
            _import_ms(name, cached)
        for _ in range(args.runs):
            ms, loaded = _import_ms("canarykit", cached)
            canarykit_ms.append(ms)
            anyio_ms.append(_import_ms("anyio", cached)[0])
            uncached_ms.append(_import_ms("canarykit", uncached)[0])
    import canarykit

    best, best_anyio = min(canarykit_ms), min(anyio_ms)
    deciders = sorted(m for m in loaded if m.startswith("canarykit.deciders."))
    policy = sorted(m for m in loaded if m.startswith("canarykit.policy"))
    print(f"import canarykit: best {best:.1f} ms of {args.runs} ({sorted(canarykit_ms)})")
    print(f"import canarykit from source: best {min(uncached_ms):.1f} ms")
    print(f"import anyio:     best {best_anyio:.1f} ms of {args.runs} ({sorted(anyio_ms)})")
    print(f"decider modules loaded: {deciders or 'none'}; policy modules: {policy or 'none'}")
    print(
        json.dumps(
            {
                "import_ms": round(best, 1),
                "import_anyio_ms": round(best_anyio, 1),
                "import_ratio_to_anyio": round(best / best_anyio, 2),
                "import_uncached_ms": round(min(uncached_ms), 1),
                "import_target_ms": TARGET_MS,
                "import_within_target": best <= TARGET_MS,
                "runs": args.runs,
                "toml_parser_loaded": any(m.startswith(("tomllib", "tomli")) for m in loaded),
                "policy_modules_loaded": len(policy),
                "decider_modules_loaded": len(deciders),
                "top_level_names": len(canarykit.__all__),
                "test_files_importing_private": _private_importers(),
            }
        )
    )


if __name__ == "__main__":
    main()
