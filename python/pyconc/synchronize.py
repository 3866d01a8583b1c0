"""Cross-process synchronisation: Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier, RWLock.

Drop-in replacements for the ``multiprocessing`` (and ``threading``) primitives that live in shared memory, block
on shared futexes and pickle as small handles, so they can be passed to processes started by fork, spawn or
forkserver, through queues and to pool workers.

Owner died: if a process dies while holding a Lock, an RLock or an RWLock's write lock, the next acquirer
(within ~20 ms) takes the lock over. Its acquire succeeds, it holds the lock, a :class:`OwnerDiedWarning` is
issued, and ``lock.owner_died`` is True until that holding is released. A process that dies while waiting at a
Barrier breaks it: every other waiter gets ``threading.BrokenBarrierError``.

asyncio: every blocking operation has an awaitable form (``acquire_async``, ``async with``, ``wait_async``, ...)
that never blocks the event loop: it tries without waiting first, then waits in a worker thread in short slices
and takes the primitive from the event-loop thread, so a cancelled waiter never leaves it acquired.
"""

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
import time
from threading import BrokenBarrierError

from . import _native
from ._native import OwnerDiedWarning

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

# Longest single wait of a worker thread on behalf of a coroutine: bounds how long a cancelled waiter's thread
# stays busy.
_SLICE = 0.25
_MAX_WAITERS = 64

_executor = None
_executor_lock = threading.Lock()


def _get_executor():
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=_MAX_WAITERS, thread_name_prefix="pyconc-sync-wait"
            )
        return _executor


def _after_fork_in_child():
    # The parent's worker threads do not exist in the child.
    global _executor, _executor_lock
    _executor = None
    _executor_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _deadline(timeout):
    if timeout is None or timeout == -1:
        return None
    return time.monotonic() + max(0.0, timeout)


def _slice(deadline):
    if deadline is None:
        return _SLICE
    return max(0.0, min(_SLICE, deadline - time.monotonic()))


def _expired(deadline):
    return deadline is not None and time.monotonic() >= deadline


async def _in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_get_executor(), fn, *args)


async def _acquire_async(try_first, try_again, wait_free, timeout):
    """Acquire from the event-loop thread: ``try_first()``, then alternately wait in a worker thread until the
    primitive looks available (``wait_free(seconds)``, which takes nothing) and ``try_again()``. Cancelling
    leaves nothing acquired."""
    if try_first():
        return True
    deadline = _deadline(timeout)
    while True:
        if _expired(deadline):
            return try_again()
        await _in_thread(wait_free, _slice(deadline))
        if try_again():
            return True


async def _acquire_async_undoable(acquire, release, timeout):
    """For primitives any thread of the process may release (RWLock): acquire in a worker thread, one slice at a
    time; if the coroutine is cancelled while a slice is running, release what that slice acquired."""
    deadline = _deadline(timeout)
    while True:
        fut = _get_executor().submit(acquire, _slice(deadline))
        try:
            got = await asyncio.wrap_future(fut)
        except asyncio.CancelledError:

            def undo(f):
                if not f.cancelled() and f.exception() is None and f.result():
                    release()

            fut.add_done_callback(undo)
            raise
        if got:
            return True
        if _expired(deadline):
            return False


def _owner_name(owner):
    if owner is None:
        return "None"
    pid, tid = owner
    if pid != os.getpid():
        return f"SomeOtherProcess(pid={pid})"
    if tid != threading.get_native_id():
        return "SomeOtherThread"
    name = multiprocessing.current_process().name
    if threading.current_thread().name != "MainThread":
        name += "|" + threading.current_thread().name
    return name


class Lock(_native.Lock):
    """A non-recursive lock shared by threads and processes (``multiprocessing.Lock`` semantics).

    ``acquire(block=True, timeout=None)`` (``blocking=`` is accepted too) returns whether it acquired;
    ``release()`` of an unlocked lock raises ValueError; any thread or process may release it.
    """

    __slots__ = ()

    def __repr__(self):
        return f"<{type(self).__name__}(owner={_owner_name(self._owner())})>"

    async def acquire_async(self, timeout=None):
        """Awaitable ``acquire``: never blocks the event loop."""
        return await _acquire_async(
            lambda: self.acquire(False), lambda: self.acquire(True, 0.0), self._wait_unlocked, timeout
        )

    async def __aenter__(self):
        await self.acquire_async()

    async def __aexit__(self, *exc):
        self.release()


class RLock(_native.RLock):
    """A recursive lock owned by one thread of one process at a time (``multiprocessing.RLock`` semantics).

    ``release()`` by a thread that does not hold it raises RuntimeError. Under asyncio the owner is the event-loop
    thread, so every task of that loop counts as the owner: prefer :class:`Lock` there.
    """

    __slots__ = ()

    def __repr__(self):
        owner = self._owner()
        if owner is None:
            return f"<{type(self).__name__}(None, 0)>"
        name = _owner_name(owner)
        count = self._count() if self._is_owned() else "nonzero"
        return f"<{type(self).__name__}({name}, {count})>"

    async def acquire_async(self, timeout=None):
        """Awaitable ``acquire``: never blocks the event loop."""
        return await _acquire_async(
            lambda: self.acquire(False), lambda: self.acquire(True, 0.0), self._wait_unlocked, timeout
        )

    async def __aenter__(self):
        await self.acquire_async()

    async def __aexit__(self, *exc):
        self.release()


class Semaphore(_native.Semaphore):
    """A counting semaphore shared by threads and processes: ``Semaphore(value=1)``, ``acquire``, ``release``,
    ``get_value()``."""

    __slots__ = ()

    def __repr__(self):
        return f"<{type(self).__name__}(value={self.get_value()})>"

    async def acquire_async(self, timeout=None):
        """Awaitable ``acquire``: never blocks the event loop."""
        return await _acquire_async(
            lambda: self.acquire(False), lambda: self.acquire(False), self._wait_available, timeout
        )

    async def __aenter__(self):
        await self.acquire_async()

    async def __aexit__(self, *exc):
        self.release()


class BoundedSemaphore(Semaphore):
    """A semaphore whose ``release()`` raises ValueError if it would exceed the initial value."""

    __slots__ = ()

    def __new__(cls, value=1, *, _handle=None):
        if _handle is not None:
            return super().__new__(cls, _handle=_handle)
        return super().__new__(cls, value, _maxvalue=value)

    def __repr__(self):
        return f"<{type(self).__name__}(value={self.get_value()}, maxvalue={self._maxvalue})>"


class Event(_native.Event):
    """A flag shared by threads and processes: ``set``, ``clear``, ``is_set``, ``wait(timeout) -> bool``."""

    __slots__ = ()

    def __repr__(self):
        return f"<{type(self).__name__}({'set' if self.is_set() else 'unset'})>"

    async def wait_async(self, timeout=None):
        """Awaitable ``wait``: never blocks the event loop."""
        if self.is_set():
            return True
        deadline = _deadline(timeout)
        while True:
            if await _in_thread(self.wait, _slice(deadline)):
                return True
            if _expired(deadline):
                return self.is_set()


class Condition:
    """A condition variable shared by threads and processes (``multiprocessing.Condition`` semantics).

    ``Condition(lock=None)`` uses a new :class:`RLock` unless given a pyconc Lock or RLock. ``notify(n)`` wakes
    the ``n`` longest-waiting waiters; a waiter that starts waiting after a notify is never woken by it.
    """

    __slots__ = ("_lock", "_queue")

    def __init__(self, lock=None, *, _queue=None):
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, (_native.Lock, _native.RLock)):
            raise TypeError(f"Condition needs a pyconc Lock or RLock, not {type(lock).__name__}")
        self._lock = lock
        self._queue = _queue if _queue is not None else _native.CondQueue()

    def __getstate__(self):
        return (self._lock, self._queue)

    def __setstate__(self, state):
        self._lock, self._queue = state

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *args):
        return self._lock.__exit__(*args)

    async def __aenter__(self):
        await self._lock.acquire_async()

    async def __aexit__(self, *exc):
        self._lock.release()

    def acquire(self, *args, **kwargs):
        return self._lock.acquire(*args, **kwargs)

    def release(self):
        return self._lock.release()

    async def acquire_async(self, timeout=None):
        return await self._lock.acquire_async(timeout)

    def __repr__(self):
        return f"<{type(self).__name__}({self._lock!r}, {self._queue.waiting})>"

    def _is_owned(self):
        return self._lock._is_owned()

    def _release_save(self):
        if isinstance(self._lock, _native.RLock):
            return self._lock._release_save()
        self._lock.release()
        return None

    def _acquire_restore(self, saved):
        if saved is None:
            self._lock.acquire()
        else:
            self._lock._acquire_restore(saved)

    async def _acquire_restore_async(self, saved):
        lock = self._lock
        if saved is None:
            await lock.acquire_async()
        else:
            await _acquire_async(
                lambda: lock._try_acquire_restore(saved),
                lambda: lock._try_acquire_restore(saved),
                lock._wait_unlocked,
                None,
            )

    def wait(self, timeout=None):
        """Releases the lock, waits for a notify or the timeout, re-acquires; returns False on timeout."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        slot = self._queue.prepare()
        saved = self._release_save()
        try:
            return self._queue.wait(slot, timeout)
        finally:
            self._acquire_restore(saved)

    def wait_for(self, predicate, timeout=None):
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

    def notify(self, n=1):
        """Wakes up to ``n`` waiters. The caller must hold the lock."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._queue.notify(n)

    def notify_all(self):
        """Wakes every waiter. The caller must hold the lock."""
        if not self._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._queue.notify(1 << 30)

    notifyAll = notify_all

    async def wait_async(self, timeout=None):
        """Awaitable ``wait``: never blocks the event loop."""
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        queue = self._queue
        slot = queue.prepare()
        saved = self._release_save()
        deadline = _deadline(timeout)
        cancelled = None
        try:
            while True:
                if await _in_thread(queue._wait_slice, slot, _slice(deadline)):
                    break
                if _expired(deadline):
                    break
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

    async def wait_for_async(self, predicate, timeout=None):
        """Awaitable ``wait_for``."""
        deadline = _deadline(timeout)
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            await self.wait_async(remaining)
            result = predicate()
        return result


class Barrier(_native.Barrier):
    """``Barrier(parties, action=None, timeout=None)`` for threads and processes (``threading.Barrier``
    semantics): ``wait()`` returns an index unique per round (0 to parties-1), ``action`` runs once per round in
    the last arriver, timeouts and ``abort()`` raise ``threading.BrokenBarrierError`` in every waiter. A waiter
    whose process dies breaks the barrier."""

    __slots__ = ()

    def __repr__(self):
        if self.broken:
            return f"<{type(self).__name__}: broken, parties={self.parties}>"
        return f"<{type(self).__name__}: waiters={self.n_waiting}/{self.parties}>"

    async def wait_async(self, timeout=None):
        """Awaitable ``wait`` (runs in a worker thread; a cancelled coroutine's arrival still counts)."""
        return await _in_thread(self.wait, timeout)


class _RWHold:
    __slots__ = ("_rw", "_write", "_timeout")

    def __init__(self, rw, write, timeout):
        self._rw, self._write, self._timeout = rw, write, timeout

    def __enter__(self):
        rw = self._rw
        ok = rw.lock_write(self._timeout) if self._write else rw.lock_read(self._timeout)
        if not ok:
            raise TimeoutError(f"could not take the {'write' if self._write else 'read'} lock in time")
        return rw

    def __exit__(self, *exc):
        if self._write:
            self._rw.unlock_write()
        else:
            self._rw.unlock_read()

    async def __aenter__(self):
        rw = self._rw
        ok = await (rw.lock_write_async(self._timeout) if self._write else rw.lock_read_async(self._timeout))
        if not ok:
            raise TimeoutError(f"could not take the {'write' if self._write else 'read'} lock in time")
        return rw

    async def __aexit__(self, *exc):
        self.__exit__(*exc)


class RWLock(_native.RWLock):
    """A reader-writer lock with writer priority, across threads and processes.

    ``lock_read``/``unlock_read``, ``lock_write``/``unlock_write`` (``timeout=`` returns False when it passes),
    and the context managers ``with rw.read():`` / ``with rw.write():`` (also ``async with``). Read locks are
    counted per process and the write lock belongs to the process that took it, so any of its threads may
    release them.
    """

    __slots__ = ()

    def read(self, timeout=None):
        """Context manager holding a read lock."""
        return _RWHold(self, False, timeout)

    def write(self, timeout=None):
        """Context manager holding the write lock."""
        return _RWHold(self, True, timeout)

    def __repr__(self):
        return f"<{type(self).__name__}(readers={self.readers}, write_locked_here={self.write_locked})>"

    async def lock_read_async(self, timeout=None):
        """Awaitable ``lock_read``."""
        if self.lock_read(0):
            return True
        return await _acquire_async_undoable(self.lock_read, self.unlock_read, timeout)

    async def lock_write_async(self, timeout=None):
        """Awaitable ``lock_write``."""
        if self.lock_write(0):
            return True
        return await _acquire_async_undoable(self.lock_write, self.unlock_write, timeout)
