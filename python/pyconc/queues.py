"""Queues in shared memory: ``ConcurrentQueue``, drop-ins for ``multiprocessing.Queue``/``SimpleQueue``/
``JoinableQueue``, and ``StdConcurrentQueue`` (the ``queue.Queue`` API), for threads and processes alike.

All of them are the same native ring (``_native.QueueCore``): a bounded multi-producer multi-consumer queue of
encoded values in one segment. ``put`` is synchronous (when it returns the item is in shared memory: there is
no feeder thread and no pipe), blocking calls release the GIL and honour timeouts and Ctrl-C, and every queue
pickles as a handle.
"""

from __future__ import annotations

import queue as _queue

from . import _native
from .local import LocalWrapper

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    from typing import Any

    from typing_extensions import Self

__all__ = [
    "ConcurrentQueue",
    "Empty",
    "Full",
    "JoinableQueue",
    "Queue",
    "ShutDown",
    "SimpleQueue",
    "StdConcurrentQueue",
]

ShutDown = _native.ShutDown
Empty = _queue.Empty
Full = _queue.Full

#: Slots of a queue created with ``maxsize=0``: the most items it holds at once (puts wait beyond that).
DEFAULT_SLOTS = 65_536
#: Bytes for items whose encoding exceeds 48 bytes (a single item may use nearly all of it).
DEFAULT_HEAP_BYTES = 64 << 20


_aio: Any = None


def _bridge() -> Any:
    """pyconc.aio, imported on first use (it imports asyncio: ~40 ms at `import pyconc`)."""
    global _aio
    if _aio is None:
        from . import aio

        _aio = aio
    return _aio


class _Base(_native.QueueCore):
    """Shared plumbing: creation from a maxsize, asyncio forms. Pickling as a handle is native (`_native._rebuild`
    rebuilds the subclass, its `__dict__` and its timeout rules).

    The constructors take exactly their stdlib counterpart's arguments plus ``lock_free`` and
    ``capacity_bytes`` (keyword only); anything else is a TypeError, as in multiprocessing. ``ctx`` (which
    ``multiprocessing.queues.Queue`` takes) is accepted and ignored.
    """

    #: Whether a negative timeout is a ValueError (``queue.Queue``) rather than 0 (``multiprocessing``).
    _STD_TIMEOUTS = False

    _maxsize: int

    def __new__(
        cls,
        maxsize: int = 0,
        *,
        lock_free: bool = False,
        capacity_bytes: int = DEFAULT_HEAP_BYTES,
        ctx: object = None,
        _joinable: bool = False,
    ) -> Self:
        maxsize = int(maxsize)
        slots = maxsize if maxsize > 0 else DEFAULT_SLOTS
        strict = cls._strict_timeouts(maxsize)
        return super().__new__(cls, slots, capacity_bytes, lock_free, _joinable, strict)

    def __init__(self, maxsize: int = 0, **_: object) -> None:
        # The arguments were checked by __new__.
        self._maxsize = int(maxsize) if int(maxsize) > 0 else 0

    @classmethod
    def _strict_timeouts(cls, maxsize: int) -> int:
        # queue.Queue raises ValueError on a negative timeout in get(), and in put() when it has a maxsize.
        return (1 | (2 if maxsize > 0 else 0)) if cls._STD_TIMEOUTS else 0

    @property
    def maxsize(self) -> int:
        return self._maxsize

    # -- asyncio: tried on the loop thread, waited for through the bridge of pyconc.aio (no thread per waiter),
    #    so a cancelled waiter never loses an item.

    async def get_async(self, timeout: float | None = None) -> Any:
        """Awaitable get: never blocks the event loop. Raises queue.Empty after `timeout` seconds."""
        return await _bridge().queue_get(self, timeout)

    async def put_async(self, item: object, timeout: float | None = None) -> None:
        """Awaitable put: never blocks the event loop. Raises queue.Full after `timeout` seconds."""
        await _bridge().queue_put(self, item, timeout)


class ConcurrentQueue(_Base):
    """The concurrency-module queue, across threads and processes.

    ``ConcurrentQueue(scaling=None, lock_free=False, maxsize=0)``: ``push(value)``, ``pop(timeout=None)``
    (blocks until an item arrives; ``queue.Empty`` after ``timeout``), ``pop_local`` (as ``pop``, returning the
    item in a ``LocalWrapper``), ``size()``, ``empty()``, ``shutdown(immediate=False)``.
    ``lock_free=True`` spins longer before sleeping: lower latency for more CPU. ``scaling`` is accepted for
    compatibility and ignored (the ring has no per-thread shards).
    """

    def __new__(
        cls, scaling: int | None = None, lock_free: bool = False, maxsize: int = 0, *,
        capacity_bytes: int = DEFAULT_HEAP_BYTES,
    ) -> Self:
        if scaling is not None and int(scaling) < 1:
            raise ValueError(f"scaling must be a positive int or None, got {scaling!r}")
        return super().__new__(cls, maxsize, lock_free=lock_free, capacity_bytes=capacity_bytes)

    def __init__(self, scaling: int | None = None, lock_free: bool = False, maxsize: int = 0, **_: object) -> None:
        super().__init__(maxsize)

    def push(self, value: object) -> None:
        """Appends `value`; raises ShutDown after shutdown()."""
        self.put(value)

    def pop(self, timeout: float | None = None) -> Any:
        """Removes and returns the oldest item, waiting up to `timeout` seconds (forever if None)."""
        return self.get(True, timeout)

    def pop_local(self, timeout: float | None = None) -> LocalWrapper:
        """As `pop`, returning the item in a `LocalWrapper` (the concurrency API's shape)."""
        return LocalWrapper(self.get(True, timeout))

    def size(self) -> int:
        """Approximate number of items."""
        return self.qsize()

    def __len__(self) -> int:
        return self.qsize()

    def __bool__(self) -> bool:
        return True


class StdConcurrentQueue(_Base):
    """The ``queue.Queue`` API (put/get with block and timeout, *_nowait, qsize, empty, full, task_done, join,
    shutdown) over a shared-memory queue, for threads and processes. Like ``queue.Queue``, a negative timeout
    is a ValueError (in ``put`` only when the queue has a ``maxsize``)."""

    _STD_TIMEOUTS = True

    def __new__(cls, maxsize: int = 0, *, lock_free: bool = False, capacity_bytes: int = DEFAULT_HEAP_BYTES) -> Self:
        return super().__new__(cls, maxsize, lock_free=lock_free, capacity_bytes=capacity_bytes, _joinable=True)

    def put_nowait(self, item: object) -> None:
        return self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def full(self) -> bool:
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    @property
    def unfinished_tasks(self) -> int:
        return super().unfinished_tasks

    def join(self) -> None:  # type: ignore[override]  # queue.Queue's join() takes no timeout
        super().join(None)


class Queue(_Base):
    """Drop-in for ``multiprocessing.Queue(maxsize=0)``.

    Differences: ``put`` writes the item to shared memory before it returns (no feeder thread, so joining a
    producer before the queue is drained never deadlocks, and ``close``/``join_thread``/``cancel_join_thread``
    have nothing to wait for); with ``maxsize=0`` the queue holds up to 65,536 items and ``capacity_bytes`` of
    large items, and ``put`` waits for room beyond that instead of growing without bound.
    """

    def put_nowait(self, obj: object) -> None:
        return self.put(obj, False)

    def get_nowait(self) -> Any:
        return self.get(False)

    def full(self) -> bool:
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    def join_thread(self) -> None:
        """Nothing to join: put() is synchronous. Like multiprocessing, only valid after close()."""
        assert self.closed, f"Queue {self!r} not closed"

    def cancel_join_thread(self) -> None:
        """Nothing to cancel: put() is synchronous."""


class JoinableQueue(Queue):
    """Drop-in for ``multiprocessing.JoinableQueue``: ``task_done()`` and ``join()`` across processes."""

    def __new__(
        cls, maxsize: int = 0, *, lock_free: bool = False, capacity_bytes: int = DEFAULT_HEAP_BYTES,
        ctx: object = None,
    ) -> Self:
        return super().__new__(cls, maxsize, lock_free=lock_free, capacity_bytes=capacity_bytes, _joinable=True)

    def task_done(self) -> None:
        """Marks one item as processed; ValueError if called more often than items were put."""
        super().task_done()

    def join(self) -> None:  # type: ignore[override]  # multiprocessing's join() takes no timeout
        """Waits until every item put has been marked done."""
        super().join(None)


class SimpleQueue(_Base):
    """Drop-in for ``multiprocessing.SimpleQueue``: ``put``, ``get``, ``empty``, ``close``."""

    def __new__(
        cls, *, lock_free: bool = False, capacity_bytes: int = DEFAULT_HEAP_BYTES, ctx: object = None
    ) -> Self:
        return super().__new__(cls, 0, lock_free=lock_free, capacity_bytes=capacity_bytes)

    def __init__(self, **_: object) -> None:
        super().__init__(0)

    def close(self) -> None:
        """Closes this object's use of the queue: further put/get on it raise OSError (as in multiprocessing), and
        its hold on the shared memory goes (see ``QueueCore.close``)."""
        self._close(True)
