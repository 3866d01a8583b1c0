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
    import asyncio  # imported lazily: it costs ~40 ms at `import pyconc`
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
    import asyncio  # imported lazily: it costs ~40 ms at `import pyconc`
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
        return "SomeOtherProcess"
    if tid != threading.get_native_id():
        return "SomeOtherThread"
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

    def __new__(cls, value=1, *, _handle=None):
        if _handle is not None:
            return super().__new__(cls, _handle=_handle)
        return super().__new__(cls, value, _maxvalue=value)


def _repr(obj):
    name = type(obj).__name__
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


async def _acquire_async_of(lock, timeout=None):
    """``acquire_async`` of Lock, RLock and Semaphore."""
    if isinstance(lock, _native.Semaphore):
        wait_free, try_again = lock._wait_available, (lambda: lock.acquire(False))
    else:
        wait_free, try_again = lock._wait_unlocked, (lambda: lock.acquire(True, 0.0))
    return await _acquire_async(lambda: lock.acquire(False), try_again, wait_free, timeout)


async def _aenter(lock):
    await _acquire_async_of(lock)


async def _aexit(lock):
    lock.release()


async def _event_wait_async(event, timeout=None):
    if event.is_set():
        return True
    deadline = _deadline(timeout)
    while True:
        if await _in_thread(event.wait, _slice(deadline)):
            return True
        if _expired(deadline):
            return event.is_set()


async def _barrier_wait_async(barrier, timeout=None):
    return await _in_thread(barrier.wait, timeout)


async def _rw_lock_async(rw, write, timeout=None):
    acquire, release = (rw.lock_write, rw.unlock_write) if write else (rw.lock_read, rw.unlock_read)
    if acquire(0):
        return True
    return await _acquire_async_undoable(acquire, release, timeout)


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

    def __eq__(self, other):
        # Identity of the shared condition (its wait queue), across handles.
        if type(other) is not type(self):
            return NotImplemented
        return self._queue == other._queue

    def __hash__(self):
        return hash(self._queue)

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
        import asyncio  # imported lazily: it costs ~40 ms at `import pyconc`
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
        ok = await _rw_lock_async(rw, self._write, self._timeout)
        if not ok:
            raise TimeoutError(f"could not take the {'write' if self._write else 'read'} lock in time")
        return rw

    async def __aexit__(self, *exc):
        self.__exit__(*exc)


# The native classes delegate their reprs and asyncio forms to these.
for _helper in (
    _repr, _acquire_async_of, _aenter, _aexit, _event_wait_async, _barrier_wait_async, _RWHold, _rw_lock_async
):
    _native._register(_helper.__name__, _helper)
del _helper
