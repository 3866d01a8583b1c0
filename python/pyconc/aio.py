"""asyncio and pyconc: the bridge every ``*_async`` method waits through, and :class:`ProcessSemaphore`.

The bridge costs no thread per waiting coroutine. A coroutine tries the operation on the event-loop thread; if
it would block, it is *announced* as a waiter by the primitive's own protocol (a lock's waiters bit, a
semaphore's waiter count, a queue's sleeper bit) and the futex word it would sleep on is handed to the process's
waker thread, which sleeps on every such word at once (``futex_waitv``, Linux 5.16+; more threads only past 127
distinct words, and a 1 ms poll where the kernel lacks it). A wake-up posts a token to an eventfd the loop
watches (``loop.add_reader``); the loop resolves the coroutine's future and the coroutine tries again, on the
loop thread. So the loop never blocks, a cancelled waiter never holds anything, and a wake-up costs two context
switches, not a thread hand-off.

The coroutines of one loop waiting for the same thing form a FIFO line and only its head is armed: a release
wakes one coroutine, not all of them, and they are served in arrival order (other loops, threads and processes
compete through the primitive itself). The head also re-tries every 100 ms without a wake-up, which is how a
lock whose owner died, or a queue whose producer died mid-put, is noticed.

Results settled by a thread of this process (the pool's result thread) need no futex word: :func:`completion`
completes the loop future with the loop's own thread-safe call (one write to the loop's wake-up pipe, still no
thread per waiter).

Importing this module imports asyncio; pyconc imports it on the first ``*_async`` call (and the first ``await``
of a pool result).
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue as _queue
import threading
import time

from . import _native

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Hashable
    from typing import Any

    from .pool._pool import AsyncResult
    from .queues import _Base as _QueueBase
    from .synchronize import Barrier, Event, Lock, RLock, RWLock, Semaphore

    _Key = tuple[object, str, object]

__all__ = ["ProcessSemaphore"]

# A waiting head re-checks this often even without a wake-up (dead owners, dead queue participants).
_CHECK = 0.1

#: Returned by an attempt that would block.
NO = object()


class _Waiter:
    __slots__ = ("fired", "fut", "poked")

    fut: asyncio.Future[None] | None

    def __init__(self) -> None:
        self.fut = None
        self.fired = False
        self.poked = False


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Bridge:
    """One per event loop: the inbox the waker posts to, the armed waiters by token, the lines by key."""

    __slots__ = ("armed", "inbox", "lines", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.inbox = _native.AioInbox()
        self.armed: dict[int, _Waiter] = {}
        self.lines: dict[_Key, collections.deque[_Waiter]] = {}
        loop.add_reader(self.inbox.fileno(), self._fired)

    def _fired(self) -> None:
        armed = self.armed
        for token in self.inbox.drain():
            w = armed.pop(token, None)
            if w is not None:
                w.fired = True
                if w.fut is not None:
                    _wake(w.fut)


_bridges: dict[asyncio.AbstractEventLoop, _Bridge] = {}
_bridges_pid = os.getpid()
_bridges_lock = threading.Lock()


def _bridge(loop: asyncio.AbstractEventLoop) -> _Bridge:
    global _bridges, _bridges_pid, _bridges_lock
    if _bridges_pid != os.getpid():
        # A forked child: the parent's waker thread and inboxes are not ours (nor its lock's state).
        _bridges, _bridges_pid, _bridges_lock = {}, os.getpid(), threading.Lock()
    b = _bridges.get(loop)
    if b is None or b.loop.is_closed():
        with _bridges_lock:  # loops of several threads may create theirs at once
            for dead in [k for k, v in list(_bridges.items()) if v.loop.is_closed()]:
                del _bridges[dead]
            b = _bridges[loop] = _Bridge(loop)
    return b


def deadline(timeout: float | None) -> float | None:
    """A monotonic deadline for ``timeout`` as the blocking forms read it (None or -1: none; negative: now)."""
    if timeout is None or timeout == -1:
        return None
    return time.monotonic() + max(0.0, timeout)


async def take(
    obj: Hashable, what: str, attempt: Callable[[], object], until: float | None = None, arg: Hashable = None
) -> object:
    """The one asyncio wait: returns ``attempt()``'s result as soon as it is not :data:`NO`, or :data:`NO` once
    the monotonic time ``until`` (None: never) has passed. ``attempt()`` runs on the loop thread and either
    takes what it waits for or takes nothing; ``what``/``arg`` name the word to sleep on (``_native._aio_arm``).
    When nothing of this loop waits for the same thing, the first attempt is made before any suspension."""
    loop = asyncio.get_running_loop()
    b = _bridge(loop)
    key = (obj, what, arg)
    line = b.lines.get(key)
    r: object
    if line is None:
        r = attempt()
        if r is not NO:
            return r
        if until is not None and time.monotonic() >= until:
            return NO
        line = b.lines[key] = collections.deque()
    me = _Waiter()
    line.append(me)
    token: int | None = None
    ready_streak = 0
    r = NO
    delay: float | None
    try:
        while True:
            now = time.monotonic()
            head = line[0] is me
            if head:
                if me.fired or token is None:
                    token = None
                    me.fired = False
                    r = attempt()
                    if r is not NO:
                        return r
                    if until is not None and now >= until:
                        return NO
                    token = _native._aio_arm(obj, what, b.inbox, arg)
                    if token is None:
                        # Looks available but the attempt failed (e.g. a free queue slot but no heap room):
                        # back off rather than spin.
                        ready_streak += 1
                        if ready_streak < 3:
                            continue
                        delay = min(0.01, 0.0005 * (1 << min(ready_streak, 5)))
                    else:
                        ready_streak = 0
                        b.armed[token] = me
                        delay = _CHECK
                elif until is not None and now >= until:
                    return NO
                else:
                    delay = _CHECK
            elif until is not None and now >= until:
                return NO
            else:
                delay = None
            if until is not None:
                delay = max(0.0, until - now) if delay is None else min(delay, max(0.0, until - now))
            me.fut = fut = loop.create_future()
            timer = loop.call_later(delay, _wake, fut) if delay is not None else None
            try:
                await fut
            finally:
                me.fut = None
                if timer is not None:
                    timer.cancel()
            if head and not me.fired and token is not None and line[0] is me:
                # Poked by a release on this loop, or the periodic re-check (no wake-up came: then first the
                # liveness work of a blocking waiter's slice end); one more attempt, the registration armed.
                if me.poked:
                    me.poked = False
                elif _native._aio_check(obj, what):
                    # Something was recovered: attempt and re-arm afresh.
                    b.armed.pop(token, None)
                    _native._aio_cancel(token)
                    token = None
                    continue
                r = attempt()
                if r is not NO:
                    return r
    finally:
        if token is not None:
            b.armed.pop(token, None)
            if not _native._aio_cancel(token):
                me.fired = True
        was_head = line[0] is me
        line.remove(me)
        if me.fired and r is NO:
            # Woken but leaving without taking (cancelled): the next waiter of this loop tries, and one sleeper
            # elsewhere is woken in its place.
            _native._aio_pass_on(obj, what)
        if not line:
            if b.lines.get(key) is line:
                del b.lines[key]
        elif was_head:
            nxt = line[0]
            if nxt.fut is not None:
                _wake(nxt.fut)


def completion(obj: concurrent.futures.Future[Any] | AsyncResult[Any]) -> asyncio.Future[Any]:
    """An asyncio future on the running loop that completes with pool result ``obj``: a
    ``concurrent.futures.Future``, or an ``AsyncResult`` (whose ``_add_listener(fn)`` calls ``fn(ok, value)`` once,
    from whichever thread settles it, at once if already settled)."""
    import concurrent.futures

    if isinstance(obj, concurrent.futures.Future):
        return asyncio.wrap_future(obj)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    obj._add_listener(lambda ok, value: loop.call_soon_threadsafe(settle, ok, value))
    return fut


def poke(obj: Hashable, *whats: str) -> None:
    """After a release made on this loop's thread: the heads of this loop's lines for (obj, what) try again now,
    without waiting for the waker's round trip (which still comes, and is then a spurious wake-up)."""
    try:
        b = _bridges.get(asyncio.get_running_loop())
    except RuntimeError:  # a thread with no loop
        return
    if b is None:
        return
    for what in whats:
        line = b.lines.get((obj, what, None))
        if line:
            head = line[0]
            if head.fut is not None:
                head.poked = True
                _wake(head.fut)


def _line_waits(obj: Hashable, what: str) -> bool:
    """Whether coroutines of the running loop already wait for (obj, what): then a newcomer queues behind them."""
    b = _bridges.get(asyncio.get_running_loop())
    return b is not None and (obj, what, None) in b.lines


def waiting_threads() -> tuple[int, int]:
    """(waker threads, armed registrations) of this process: for the benchmark and tests."""
    return _native._aio_stats()


# ---- the awaitable forms of the primitives ---------------------------------------------------------------


def _nowait(fn: Callable[[], object], exc: type[BaseException]) -> Callable[[], object]:
    def attempt() -> object:
        try:
            return fn()
        except exc:
            return NO

    return attempt


async def acquire(lock: Lock | RLock | Semaphore, timeout: float | None = None) -> bool:
    """``acquire_async`` of Lock, RLock, Semaphore (and BoundedSemaphore)."""
    # The fast path takes a free primitive unless coroutines of this loop already wait for it (they go first).
    if isinstance(lock, _native.Semaphore):
        if not _line_waits(lock, "sem") and lock.acquire(False):
            return True
        r = await take(lock, "sem", lambda: True if lock.acquire(False) else NO, deadline(timeout))
    else:
        if not _line_waits(lock, "lock") and lock.acquire(False):
            return True
        tried = False

        def attempt() -> object:
            # The first try is a plain one (an uncontended lock stays cheap to release); later ones, after a
            # wake-up, keep the lock marked contended so that its release wakes the next sleeper.
            nonlocal tried
            if not tried:
                tried = True
                return True if lock.acquire(False) else NO
            return True if _native._aio_try_lock(lock) else NO

        r = await take(lock, "lock", attempt, deadline(timeout))
    return r is not NO


async def event_wait(event: Event, timeout: float | None = None) -> bool:
    if event.is_set():
        return True
    r = await take(event, "event", lambda: True if event.is_set() else NO, deadline(timeout))
    return r is not NO


def release(lock: Lock | RLock | Semaphore) -> None:
    """``__aexit__`` of Lock, RLock, Semaphore: releases, then lets this loop's next waiter try at once."""
    lock.release()
    poke(lock, "sem" if isinstance(lock, _native.Semaphore) else "lock")


def rw_release(rw: RWLock, write: bool) -> None:
    """Leaving ``async with rw.read()/write()``: unlocks, then lets this loop's waiters try at once."""
    if write:
        rw.unlock_write()
        poke(rw, "read", "wlock")
    else:
        rw.unlock_read()
        poke(rw, "drain")


async def rw_lock(rw: RWLock, write: bool, timeout: float | None = None) -> bool:
    until = deadline(timeout)
    if not write:
        r = await take(rw, "read", lambda: True if rw.lock_read(0) else NO, until)
        return r is not NO
    if rw.lock_write(0):
        return True
    # Take the writer mutex (which bars new readers), then wait, holding it, for the readers to leave.
    r = await take(rw, "wlock", lambda: True if _native._aio_try_lock(rw) else NO, until)
    if r is NO:
        return False
    try:
        r = await take(rw, "drain", lambda: True if _native._aio_rw_drained(rw) else NO, until)
    except BaseException:
        _native._aio_rw_abandon(rw)
        raise
    if r is NO:
        _native._aio_rw_abandon(rw)
        return False
    return True


async def queue_get(q: _QueueBase, timeout: float | None = None) -> object:
    attempt = _nowait(lambda: q.get(False), _queue.Empty)
    r = attempt()
    if r is NO:
        r = await take(q, "get", attempt, None if timeout is None else time.monotonic() + max(0.0, timeout))
        if r is NO:
            raise _queue.Empty
    poke(q, "put")
    return r


async def queue_put(q: _QueueBase, item: object, timeout: float | None = None) -> None:
    def attempt() -> object:
        try:
            q.put(item, False)
            return True
        except _queue.Full:
            return NO

    if attempt() is NO:
        if await take(q, "put", attempt, None if timeout is None else time.monotonic() + max(0.0, timeout)) is NO:
            raise _queue.Full
    poke(q, "get")


async def cond_wait(queue: _native.CondQueue, slot: int, timeout: float | None = None) -> bool:
    """Waits in a Condition slot until notified (True) or the timeout; the slot stays registered."""
    r = await take(
        queue, "cond", lambda: True if _native._aio_cond_notified(queue, slot) else NO, deadline(timeout), slot
    )
    return r is not NO


async def barrier_wait(barrier: Barrier, timeout: float | None = None) -> int:
    """``Barrier.wait_async``: arrives on the loop thread, then waits for the round's release; a cancelled waiter
    leaves the round (as ``asyncio.Barrier``'s does), a timed-out one breaks it (as ``threading.Barrier``'s)."""
    if timeout is None:
        timeout = barrier.timeout
    until = deadline(timeout)
    arrival = _native._aio_barrier_arrive(barrier)
    if arrival is None:
        got = await take(barrier, "barrier", lambda: _native._aio_barrier_arrive(barrier) or NO)
        assert isinstance(got, _native.AioArrival)  # no deadline: take returns only what attempt() took
        arrival = got
    if arrival.last:
        action = barrier.action
        try:
            if action is not None:
                action()
        except BaseException:
            try:
                _native._aio_barrier_finish(barrier, arrival, False)
            except threading.BrokenBarrierError:
                pass
            raise
        _native._aio_barrier_finish(barrier, arrival, True)
        return arrival.index
    try:
        r = await take(
            barrier, "barrier", lambda: True if _native._aio_barrier_poll(barrier, arrival) else NO, until, arrival
        )
    except threading.BrokenBarrierError:
        raise
    except BaseException:
        _native._aio_barrier_abandon(barrier, arrival)
        raise
    if r is NO:
        _native._aio_barrier_timeout(barrier, arrival)
    return arrival.index


# ---- ProcessSemaphore ------------------------------------------------------------------------------------


class ProcessSemaphore:
    """An asyncio semaphore whose budget is shared by every event loop in every thread and process holding it.

    ``ProcessSemaphore(value)`` allows ``value`` (>= 1) holders at once across all of them: ``await
    sem.acquire()`` or ``async with sem``, and ``release()``, a plain call that any thread may make (also one
    running no event loop); it wakes a waiter wherever it waits. Releasing more than was acquired raises
    ValueError: the budget never grows. The waiters of one loop are served first come, first served; a waiter
    cancelled at any point, also just after a slot became free for it, takes nothing, and the successful path
    of ``acquire()`` never suspends, so no cancellation can fall between taking a slot and returning. Pickles
    as a handle (pass it to processes started by fork, spawn or forkserver).
    """

    __slots__ = ("_sem",)

    def __init__(self, value: int = 1, *, _sem: _native.Semaphore | None = None) -> None:
        if _sem is None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ProcessSemaphore value must be an int, not {type(value).__name__}")
            if value < 1:
                raise ValueError("ProcessSemaphore value must be >= 1")
            _sem = _native.Semaphore(value, _maxvalue=value)
        self._sem = _sem

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild_process_semaphore, (self._sem,)

    # The lifetime API: the budget is a native Semaphore's.

    def close(self) -> None:
        """Makes this object unusable here and lets go of its shared memory (idempotent)."""
        self._sem.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this object."""
        return self._sem.closed

    def unlink(self) -> None:
        """Removes the semaphore's name now: holders keep working, new attaches fail with FileNotFoundError."""
        self._sem.unlink()

    @property
    def segment_name(self) -> str:
        """The name of the shared-memory segment the semaphore lives in."""
        return self._sem.segment_name

    def __repr__(self) -> str:
        if self._sem.closed:
            return f"<{type(self).__name__} [closed]>"
        return f"<{type(self).__name__} [value={self._sem.get_value()}, budget={self._sem._maxvalue}]>"

    @property
    def value(self) -> int:
        """Slots free now (across all holders)."""
        return self._sem.get_value()

    def locked(self) -> bool:
        """Whether an ``acquire()`` would wait now."""
        return self._sem.get_value() == 0

    async def acquire(self) -> bool:
        """Takes a slot, waiting (without blocking the loop) until one is free. Returns True."""
        sem = self._sem
        if not _line_waits(sem, "sem") and sem.acquire(False):
            return True
        # `take` also tries before it could suspend (unless this loop has waiters already, who go first).
        await take(sem, "sem", lambda: True if sem.acquire(False) else NO)
        return True

    def release(self) -> None:
        """Gives a slot back (from any thread or process); ValueError if none is held."""
        try:
            self._sem.release()
        except ValueError:
            raise ValueError("ProcessSemaphore released too many times") from None
        poke(self._sem, "sem")

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _rebuild_process_semaphore(sem: _native.Semaphore) -> ProcessSemaphore:
    return ProcessSemaphore(_sem=sem)
