"""The concurrency module's `synchronization` names, across threads and processes: `RWLock`, `RWReadContext`,
`RWWriteContext` and `IntervalLock`.

- `RWLock` is `pyconc.RWLock` (writer priority, robust to dead readers and writers), with the inspection methods
  `readers()`, `writers_waiting()` and `writer_locked()`; they read shared counters, so they answer for every
  process, and are snapshots that may be stale by the time they return.
- `RWReadContext(lock)` / `RWWriteContext(lock)`: context managers holding a read / the write lock of an
  `RWLock` for the `with` block.
- `IntervalLock(interval=0.005)`: a lock whose holder calls `poll()` at convenient points of a long job; once it
  has held the lock for `interval` seconds, `poll()` lets waiting threads and processes take it (and then takes
  it back). `cede()` does so at once. `lock()`, `unlock()`, `with lock:`. The lock belongs to one thread:
  `unlock()`, `poll()` and `cede()` from a thread that does not hold it raise `RuntimeError`, and so does a
  second `lock()` by the holder (it would deadlock). Waiting releases the GIL and lets Ctrl-C raise
  `KeyboardInterrupt` with nothing held. Pickles as a handle (its lock and its shared waiter count).
"""

from __future__ import annotations

import os
import threading
import time

from ._native import AtomicInt64
from .synchronize import Lock, RWLock

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    from typing import Any

    from typing_extensions import Self

__all__ = ["IntervalLock", "RWLock", "RWReadContext", "RWWriteContext"]


class RWReadContext:
    """``with RWReadContext(rwlock):`` holds a read lock of `rwlock` for the block."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> Self:
        self._lock.lock_read()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.unlock_read()


class RWWriteContext:
    """``with RWWriteContext(rwlock):`` holds the write lock of `rwlock` for the block."""

    __slots__ = ("_lock",)

    def __init__(self, lock: RWLock) -> None:
        self._lock = lock

    def __enter__(self) -> Self:
        self._lock.lock_write()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.unlock_write()


# How long `cede()` waits for a waiter to take the lock before taking it back itself.
_HANDOFF = 0.05


class IntervalLock:
    """A lock that a long-running holder yields to waiters once per `interval` seconds, at the points where it
    calls `poll()`. Cross-process: waiters in other processes count too."""

    __slots__ = ("__weakref__", "_interval", "_lock", "_since", "_waiters")

    def __init__(self, interval: float = 0.005, *, _parts: tuple[Lock, AtomicInt64] | None = None) -> None:
        interval = float(interval)
        if not interval >= 0:
            raise ValueError("interval must be a non-negative number of seconds")
        if _parts is None:
            _parts = (Lock(), AtomicInt64(0))
        self._lock, self._waiters = _parts
        self._interval = interval
        self._since = 0.0

    def _mine(self) -> bool:
        return self._lock._owner() == (os.getpid(), threading.get_native_id())

    def _check_held(self, what: str) -> None:
        if not self._mine():
            raise RuntimeError(f"IntervalLock.{what}(): the lock is not held by this thread")

    def lock(self) -> None:
        """Takes the lock, waiting as long as needed. RuntimeError if this thread already holds it."""
        if self._mine():
            raise RuntimeError("IntervalLock.lock(): this thread already holds the lock")
        if not self._lock.acquire(False):
            self._waiters.incr()
            try:
                self._lock.acquire()
            finally:
                self._waiters.decr()
        self._since = time.monotonic()

    def unlock(self) -> None:
        """Releases the lock. RuntimeError if this thread does not hold it."""
        self._check_held("unlock")
        self._lock.release()

    def poll(self) -> None:
        """If this thread has held the lock for `interval` seconds or more, lets waiters have it (see `cede`).
        RuntimeError if this thread does not hold it."""
        self._check_held("poll")
        if time.monotonic() - self._since >= self._interval:
            self.cede()

    def cede(self) -> None:
        """Lets waiting threads or processes take the lock now, then takes it back (waiting for them). Without
        waiters it keeps the lock. RuntimeError if this thread does not hold it."""
        self._check_held("cede")
        if self._waiters.get() <= 0:
            self._since = time.monotonic()
            return
        self._lock.release()
        # Give a waiter the chance to take it: a plain release-then-acquire would usually win the race itself.
        deadline = time.monotonic() + _HANDOFF
        while self._lock._owner() is None and self._waiters.get() > 0 and time.monotonic() < deadline:
            time.sleep(0.0001)
        self.lock()

    def locked(self) -> bool:
        """Whether some thread of some process holds the lock."""
        return self._lock._owner() is not None

    def __enter__(self) -> Self:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_interval_lock, ((self._lock, self._waiters), self._interval))

    def __eq__(self, other: object) -> bool:
        # Identity of the shared lock, across handles.
        if type(other) is not type(self):
            return NotImplemented
        return self._lock == other._lock

    def __hash__(self) -> int:
        return hash(self._lock)

    def __repr__(self) -> str:
        return f"<IntervalLock(interval={self._interval}, locked={self.locked()})>"


def _rebuild_interval_lock(parts: tuple[Lock, AtomicInt64], interval: float) -> IntervalLock:
    return IntervalLock(interval, _parts=parts)
