"""State stores kept in memory (a JSON-file store for crash recovery comes with resume)."""

from __future__ import annotations

import copy
import json
from typing import Any

__all__ = ["MemoryStore"]


class MemoryStore:
    """A `StateStore` in a dict, for tests and single-process use.

    Saves a deep copy after checking that the data is JSON-serialisable, so a test catches
    a decider state that a file store could not write.
    """

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}
        self.saves = 0

    async def save(self, key: str, data: dict[str, Any]) -> None:
        """Store a copy of `data` under `key`."""
        json.dumps(data, allow_nan=False)
        self.saved[key] = copy.deepcopy(data)
        self.saves += 1

    async def load(self, key: str) -> dict[str, Any] | None:
        """A copy of what was saved under `key`, or None."""
        data = self.saved.get(key)
        return None if data is None else copy.deepcopy(data)

    def __repr__(self) -> str:
        return f"<MemoryStore {len(self.saved)} key(s)>"
