"""Cross-process synchronisation: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, RWLock.

Drop-in replacements for the ``multiprocessing`` (and ``threading``) primitives that live in shared memory, block
on shared futexes and pickle as small handles, so they can be passed to processes started by fork, spawn or
forkserver, through queues and to pool workers.

Owner died: if a process dies while holding a Lock, an RLock or an RWLock's write lock, the next acquirer
(within ~20 ms) takes the lock over. Its acquire succeeds, it holds the lock, a :class:`OwnerDiedWarning` is
issued, and ``lock.owner_died`` is True until that holding is released. A process that dies while waiting at a
Barrier breaks it: every other waiter gets ``threading.BrokenBarrierError``.

asyncio: every blocking operation has an awaitable form (``acquire_async``, ``async with``, ``wait_async``, ...)
that never blocks the event loop and costs no thread per waiter: it tries without waiting first, then waits
through the bridge of :mod:`pyconc.aio` (one waker thread per process sleeps on every awaited futex word) and
takes the primitive from the event-loop thread, so a cancelled waiter never leaves it acquired.
"""

from __future__ import annotations

import os
import threading
import time
from threading import BrokenBarrierError

from . import _native
from ._native import OwnerDiedWarning

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any, TypeVar

    from typing_extensions import Self

    _T = TypeVar("_T")
    #: What `_release_save` returns: the RLock's saved state, or None for a Lock.
    _Saved = Any

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "Condition",
    "Event",
    "Lock",
    "OwnerDiedWarning",
    "RLock",
    "RWLock",
    "Semaphore",
]


def _owner_name(owner: tuple[int, int] | None) -> str:
    if owner is None:
        return "None"
    pid, tid = owner
    if pid != os.getpid():
        return "SomeOtherProcess"
    if tid != threading.get_native_id():
        return "SomeOtherThread"
    import multiprocessing  # only for a repr: not at import (it costs ~10 ms)

    name = multiprocessing.current_process().name
    if threading.current_thread().name != "MainThread":
        name += "|" + threading.current_thread().name
    return name


# The primitives are the native classes themselves (a Python subclass would cost an extra ~7 ns per method
# call in attribute lookup); their asyncio forms and reprs call the helpers below.
Lock = _native.Lock
RLock = _native.RLock
Semaphore = _native.Semaphore
Event = _native.Event
Barrier = _native.Barrier
RWLock = _native.RWLock


class BoundedSemaphore(Semaphore):
    """A semaphore whose ``release()`` raises ValueError if it would exceed the initial value."""

    __slots__ = ()

    def __new__(cls, value: int = 1, *, _handle: _native._Handle | None = None) -> Self:
        if _handle is not None:
            return super().__new__(cls, _handle=_handle)
        return super().__new__(cls, value, _maxvalue=value)


def _repr(obj: object) -> str:
    name = type(obj).__name__
    if getattr(obj, "closed", False):
        return f"<{name}(closed)>"
    if isinstance(obj, _native.Lock):
        return f"<{name}(owner={_owner_name(obj._owner())})>"
    if isinstance(obj, _native.RLock):
        owner = obj._owner()
        if owner is None:
            return f"<{name}(None, 0)>"
        count = obj._count() if obj._is_owned() else "nonzero"
        return f"<{name}({_owner_name(owner)}, {count})>"
    if isinstance(obj, _native.Semaphore):
        if obj._maxvalue is not None:
            return f"<{name}(value={obj.get_value()}, maxvalue={obj._maxvalue})>"
        return f"<{name}(value={obj.get_value()})>"
    if isinstance(obj, _native.Event):
        # multiprocessing.synchronize.Event's form.
        return f"<{type(obj).__qualname__} at {id(obj):#x} {'set' if obj.is_set() else 'unset'}>"
    if isinstance(obj, _native.Barrier):
        # threading.Barrier's form (which multiprocessing's Barrier inherits).
        cls = type(obj)
        if obj.broken:
            return f"<{cls.__module__}.{cls.__qualname__} at {id(obj):#x}: broken>"
        return f"<{cls.__module__}.{cls.__qualname__} at {id(obj):#x}: waiters={obj.n_waiting}/{obj.parties}>"
    if isinstance(obj, _native.RWLock):
        return f"<{name}(readers={obj.readers()}, write_locked_here={obj.write_locked})>"
    return object.__repr__(obj)


_aio: Any = None


def _bridge() -> Any:
    """pyconc.aio, imported on first use (it imports asyncio: ~40 ms at `import pyconc`)."""
    global _aio
    if _aio is None:
        from . import aio

        _aio = aio
    return _aio


async def _acquire_async_of(lock: Lock | RLock | Semaphore, timeout: float | None = None) -> bool:
    """``acquire_async`` of Lock, RLock and Semaphore."""
    got: bool = await _bridge().acquire(lock, timeout)
    return got


async def _aenter(lock: Lock | RLock | Semaphore) -> None:
    await _bridge().acquire(lock)


async def _aexit(lock: Lock | RLock | Semaphore) -> None:
    _bridge().release(lock)


async def _event_wait_async(event: Event, timeout: float | None = None) -> bool:
    got: bool = await _bridge().event_wait(event, timeout)
    return got


async def _barrier_wait_async(barrier: Barrier, timeout: float | None = None) -> int:
    index: int = await _bridge().barrier_wait(barrier, timeout)
    return index


async def _rw_lock_async(rw: RWLock, write: bool, timeout: float | None = None) -> bool:
    got: bool = await _bridge().rw_lock(rw, write, timeout)
    return got


class Condition:
    """A condition variable shared by threads and processes (``multiprocessing.Condition`` semantics).

    ``Condition(lock=None)`` uses a new :class:`RLock` unless given a pyconc Lock or RLock. ``notify(n)`` wakes
    the ``n`` longest-waiting waiters; a waiter that starts waiting after a notify is never woken by it.
    ``wait``/``notify`` without the lock raise AssertionError, with multiprocessing's messages (also under
    ``python -O``).
    """

    __slots__ = ("_lock", "_owns_lock", "_queue")

    _lock: Lock | RLock
    _owns_lock: bool
    _queue: _native.CondQueue

    def __init__(self, lock: Lock | RLock | None = None, *, _queue: _native.CondQueue | None = None) -> None:
        self._owns_lock = lock is None
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, (_native.Lock, _native.RLock)):
            raise TypeError(f"Condition needs a pyconc Lock or RLock, not {type(lock).__name__}")
        self._lock = lock
        self._queue = _queue if _queue is not None else _native.CondQueue()

    def __getstate__(self) -> tuple[Lock | RLock, _native.CondQueue, bool]:
        return (self._lock, self._queue, self._owns_lock)

    def __eq__(self, other: object) -> bool:
        # Identity of the shared condition (its wait queue), across handles.
        if type(other) is not type(self):
            return NotImplemented
        return self._queue == other._queue

    def __hash__(self) -> int:
        return hash(self._queue)

    def __setstate__(self, state: tuple[Lock | RLock, _native.CondQueue, bool]) -> None:
        self._lock, self._queue, self._owns_lock = state

    # The lifetime API: the condition's own shared state is its wait queue, plus its lock if it made it
    # (``Condition()``); a lock passed in belongs to the caller and is left alone.

    def close(self) -> None:
        """Makes this object unusable here and lets go of its shared memory (idempotent)."""
        self._queue.close()
        if self._owns_lock:
            self._lock.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this object."""
        return self._queue.closed

    def unlink(self) -> None:
        """Removes the condition's name now: holders keep working, new attaches fail with FileNotFoundError."""
        self._queue.unlink()
        if self._owns_lock:
            self._lock.unlink()

    @property
    def segment_name(self) -> str:
        """The name of the segment of the condition's wait queue."""
        return self._queue.segment_name

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> None:
        await self._lock.acquire_async()

    async def __aexit__(self, *exc: object) -> None:
        _bridge().release(self._lock)

    def acquire(self, block: bool = True, timeout: float | None = None, *, blocking: bool | None = None) -> bool:
        return self._lock.acquire(block, timeout, blocking=blocking)

    def release(self) -> None:
        self._lock.release()

    async def acquire_async(self, timeout: float | None = None) -> bool:
        return await self._lock.acquire_async(timeout)

    def __repr__(self) -> str:
        if self._queue.closed:
            return f"<{type(self).__name__}(closed)>"
        return f"<{type(self).__name__}({self._lock!r}, {self._queue.waiting})>"

    def _is_owned(self) -> bool:
        return self._lock._is_owned()

    def _release_save(self) -> _Saved:
        if isinstance(self._lock, _native.RLock):
            return self._lock._release_save()
        self._lock.release()
        return None

    def _acquire_restore(self, saved: _Saved) -> None:
        if saved is None:
            self._lock.acquire()
        else:
            self._lock._acquire_restore(saved)  # type: ignore[union-attr]  # a saved state is an RLock's

    async def _acquire_restore_async(self, saved: _Saved) -> None:
        aio = _bridge()
        lock = self._lock
        if saved is None:
            await aio.acquire(lock)
        elif not lock._try_acquire_restore(saved):  # type: ignore[union-attr]  # a saved state is an RLock's
            await aio.take(lock, "lock", lambda: True if lock._try_acquire_restore(saved) else aio.NO)  # type: ignore[union-attr]

    def wait(self, timeout: float | None = None) -> bool:
        """Releases the lock, waits for a notify or the timeout, re-acquires; returns False on timeout."""
        if not self._is_owned():
            raise AssertionError("must acquire() condition before using wait()")
        slot = self._queue.prepare()
        saved = self._release_save()
        try:
            return self._queue.wait(slot, timeout)
        finally:
            self._acquire_restore(saved)

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Waits until ``predicate()`` is true (checked with the lock held); returns its last value."""
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = time.monotonic() + waittime
                else:
                    waittime = endtime - time.monotonic()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` waiters. The caller must hold the lock."""
        if not self._is_owned():
            raise AssertionError("lock is not owned")
        self._queue.notify(n)

    def notify_all(self) -> None:
        """Wakes every waiter. The caller must hold the lock."""
        if not self._is_owned():
            raise AssertionError("lock is not owned")
        self._queue.notify(1 << 30)

    notifyAll = notify_all

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Awaitable ``wait``: never blocks the event loop."""
        import asyncio  # imported lazily: it costs ~40 ms at `import pyconc`

        aio = _bridge()
        if not self._is_owned():
            raise AssertionError("must acquire() condition before using wait()")
        queue = self._queue
        slot = queue.prepare()
        saved = self._release_save()
        cancelled: BaseException | None = None
        try:
            await aio.cond_wait(queue, slot, timeout)
            return queue.cancel(slot)
        except BaseException:
            queue.cancel(slot)
            raise
        finally:
            while True:
                try:
                    await self._acquire_restore_async(saved)
                    break
                except asyncio.CancelledError as e:
                    cancelled = e
            if cancelled is not None:
                raise cancelled

    async def wait_for_async(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Awaitable ``wait_for``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            await self.wait_async(remaining)
            result = predicate()
        return result


class _RWHold:
    __slots__ = ("_rw", "_timeout", "_write")

    def __init__(self, rw: RWLock, write: bool, timeout: float | None) -> None:
        self._rw, self._write, self._timeout = rw, write, timeout

    def __enter__(self) -> RWLock:
        rw = self._rw
        ok = rw.lock_write(self._timeout) if self._write else rw.lock_read(self._timeout)
        if not ok:
            raise TimeoutError(f"could not take the {'write' if self._write else 'read'} lock in time")
        return rw

    def __exit__(self, *exc: object) -> None:
        if self._write:
            self._rw.unlock_write()
        else:
            self._rw.unlock_read()

    async def __aenter__(self) -> RWLock:
        rw = self._rw
        ok = await _rw_lock_async(rw, self._write, self._timeout)
        if not ok:
            raise TimeoutError(f"could not take the {'write' if self._write else 'read'} lock in time")
        return rw

    async def __aexit__(self, *exc: object) -> None:
        _bridge().rw_release(self._rw, self._write)


# The native classes delegate their reprs and asyncio forms to these.
for _helper in (
    _repr, _acquire_async_of, _aenter, _aexit, _event_wait_async, _barrier_wait_async, _RWHold, _rw_lock_async
):
    _native._register(_helper.__name__, _helper)
del _helper
