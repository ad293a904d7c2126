"""A lock per object and per event loop, for adapters that serialise their own calls.

An `anyio.Lock` made outside an event loop binds to the first loop that waits on it, and
an adapter may outlive a loop (`anyio.run` twice, or asyncio then trio in one test
session). So adapters ask for their lock at the moment they need it, from here.
"""

from __future__ import annotations

import weakref

import anyio
from anyio.lowlevel import RunVar

__all__ = ["loop_lock"]

_LOCKS: RunVar[weakref.WeakKeyDictionary[object, anyio.Lock]] = RunVar("canarykit_locks")


def loop_lock(owner: object) -> anyio.Lock:
    """`owner`'s lock in the running event loop, made on first use."""
    try:
        locks = _LOCKS.get()
    except LookupError:
        locks = weakref.WeakKeyDictionary()
        _LOCKS.set(locks)
    lock = locks.get(owner)
    if lock is None:
        lock = locks[owner] = anyio.Lock()
    return lock
