"""`pyconc.Pool`: the `multiprocessing.Pool` API on the shared-memory engine."""

from __future__ import annotations

import collections
import multiprocessing
import os
import threading
import time
import warnings
import weakref
from typing import Generic, TypeVar  # the pool imports typing anyway (concurrent.futures' users do)

from . import _engine as E
from . import _wire as W

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Mapping
    from multiprocessing.context import BaseContext
    from types import TracebackType
    from typing import Any, TextIO

    from typing_extensions import Self

    #: `progress=`: False, True (a tqdm bar) or the keywords of a tqdm bar.
    _Progress = bool | dict[str, Any]
    _Listener = Callable[[bool, Any], object]

_T = TypeVar("_T")
_S = TypeVar("_S")

__all__ = ["ApplyResult", "AsyncResult", "IMapIterator", "IMapUnorderedIterator", "MapResult", "Pool"]

MpTimeoutError = multiprocessing.TimeoutError
SPIN_S = 50e-6
_perf = time.perf_counter
_yield = os.sched_yield


def _progress_bar(progress: _Progress, total: int | None) -> Any:
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm (pip install tqdm)") from None
    if progress is True:
        return tqdm(total=total)
    return tqdm(total=total, **progress)


class ApplyResult(Generic[_T]):
    """The result of `apply_async` (multiprocessing's AsyncResult API), awaitable: ``await pool.apply_async(f)``."""

    def __init__(
        self, engine: E.Engine, callback: Callable[[_T], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> None:
        self._engine = engine
        self._done = threading.Lock()
        self._done.acquire()  # released once the result is set
        self._ready = False
        self._success: bool | None = None
        self._value: Any = None
        self._callback = callback
        self._error_callback = error_callback
        self._listeners: list[_Listener] | None = None
        self._task: Any = None

    def ready(self) -> bool:
        return self._ready

    def successful(self) -> bool:
        if not self._ready:
            raise ValueError(f"{self!r} not ready")
        return bool(self._success)

    def wait(self, timeout: float | None = None) -> None:
        self._wait(timeout)

    def _wait(self, timeout: float | None) -> bool:
        if not self._ready and (timeout is None or timeout > 0):
            # Results often come back within tens of microseconds: take them from the result queue ourselves (or
            # yield the CPU and the GIL while another thread does) a little before sleeping on the lock, since
            # waking a sleeping thread costs about as much again on some machines.
            end = _perf() + SPIN_S
            poll = self._engine.poll
            while not self._ready and _perf() < end:
                if not poll():
                    _yield()
        if self._done.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._done.release()
            return True
        return False

    def get(self, timeout: float | None = None) -> _T:
        if not self._wait(timeout):
            raise MpTimeoutError
        if self._success:
            value: _T = self._value
            return value
        raise self._value

    def __await__(self) -> Generator[Any, None, _T]:
        from .. import aio

        return aio.completion(self).__await__()

    def _add_listener(self, fn: _Listener) -> None:
        with self._engine.lock:
            if not self._ready:
                if self._listeners is None:
                    self._listeners = []
                self._listeners.append(fn)
                return
        fn(bool(self._success), self._value)

    # -- engine side (engine lock held)
    def _start_running(self, task: Any) -> bool:
        return True

    def _deliver(self, start: int, values: list[Any], elapsed: int) -> None:
        v = values[0]
        if type(v) is W.Failure:
            self._set(False, v.exc)
        else:
            self._set(True, v)

    def _set(self, ok: bool, value: Any) -> None:
        if self._ready:
            return
        self._success, self._value = ok, value
        self._ready = True
        cb: Callable[[Any], object] | None = self._callback if ok else self._error_callback
        post = self._engine.post
        listeners, self._listeners = self._listeners, None
        if cb is None and not listeners:
            self._done.release()
            self._engine.woke = True
            return

        def finish() -> None:
            try:
                if cb is not None:
                    cb(value)
            finally:
                self._done.release()
                for fn in listeners or ():
                    fn(ok, value)

        post.append(finish)


AsyncResult = ApplyResult


class MapResult(E.MapSource, ApplyResult[list[_T]]):
    """The result of `map_async`/`starmap_async`: a list in input order, or the first exception."""

    def __init__(
        self, engine: E.Engine, fn: Callable[..., _T], items: Any, star: bool, chunksize: int | None,
        timeout: float | None, callback: Callable[[list[_T]], object] | None,
        error_callback: Callable[[BaseException], object] | None, progress: _Progress,
    ) -> None:
        ApplyResult.__init__(self, engine, callback, error_callback)
        E.MapSource.__init__(self, engine, fn, items, star, chunksize, timeout, None, False)
        self._values: list[Any] = [None] * self.total
        self._remaining = self.total
        self._bar = _progress_bar(progress, self.total)
        if self.total == 0:
            self._set(True, [])

    def _deliver(self, start: int, values: list[Any], elapsed: int) -> None:
        if self._ready:
            return
        self._values[start:start + len(values)] = values
        for v in values:
            if type(v) is W.Failure:
                self.release_fn()
                self._close_bar()
                self._set(False, v.exc)
                return
        self._remaining -= len(values)
        if self._bar is not None:
            bar = self._bar
            n = len(values)
            self._engine.post.append(lambda: bar.update(n))
        if self._remaining == 0:
            self.release_fn()
            self._close_bar()
            self._set(True, self._values)

    def _got_one(self, index: int, value: Any) -> None:
        if self._ready:
            return
        if type(value) is W.Failure:
            self._deliver(index, [value], 0)
            return
        self._values[index] = value
        self._remaining -= 1
        if self._bar is not None:
            bar = self._bar
            self._engine.post.append(lambda: bar.update(1))
        if self._remaining == 0:
            self.release_fn()
            self._close_bar()
            self._set(True, self._values)

    def _deliver_ok(self, start: int, values: list[Any]) -> None:
        if self._ready:
            return
        n = len(values)
        self._values[start:start + n] = values
        self._remaining -= n
        if self._bar is not None:
            bar = self._bar
            self._engine.post.append(lambda: bar.update(n))
        if self._remaining == 0:
            self.release_fn()
            self._close_bar()
            self._set(True, self._values)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._engine.post.append(self._bar.close)

    def _input_done(self) -> None:
        pass

    def _input_error(self, exc: BaseException) -> None:
        self._deliver(0, [W.Failure(exc, None)], 0)


class IMapIterator(E.MapSource, Generic[_T]):
    """The iterator `imap` returns: results in input order; `next(timeout)` raises multiprocessing.TimeoutError.

    Input is read lazily: at most `buffersize` items are pulled from the iterable and not yet returned.
    """

    _ordered = True

    def __init__(
        self, engine: E.Engine, fn: Callable[..., _T], iterable: Iterable[Any], star: bool, chunksize: int | None,
        timeout: float | None, buffersize: int | None, progress: _Progress = False,
        timeout_error: type[BaseException] = MpTimeoutError,
    ) -> None:
        E.MapSource.__init__(self, engine, fn, iterable, star, chunksize, timeout, buffersize, True)
        self._cond = threading.Condition(threading.Lock())
        self._results: Any = {} if self._ordered else collections.deque()
        self._next = 0
        self._yielded = 0
        self._delivered = 0
        self._kick_every = max(1, (buffersize or 1) // 4)
        self._last_kick = 0
        self._bar = _progress_bar(progress, self.total)
        self._timeout_error = timeout_error

    def __iter__(self) -> Self:
        return self

    def next(self, timeout: float | None = None) -> _T:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._ordered:
                    if self._next in self._results:
                        value = self._results.pop(self._next)
                        self._next += 1
                        break
                elif self._results:
                    value = self._results.popleft()
                    break
                if self.total is not None and self._yielded >= self.total:
                    if self._bar is not None:
                        self._bar.close()
                    raise StopIteration
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise self._timeout_error
                self._cond.wait(0.1 if left is None else min(left, 0.1))
            self._yielded += 1
        self.consumed = self._yielded
        if self.buffersize is not None and self._yielded - self._last_kick >= self._kick_every:
            self._last_kick = self._yielded
            self.engine.kick()
        if self._bar is not None:
            self._bar.update(1)
        if type(value) is W.Failure:
            raise value.exc
        result: _T = value
        return result

    __next__ = next

    # -- engine side (engine lock held)
    def _deliver(self, start: int, values: list[Any], elapsed: int) -> None:
        with self._cond:
            if self._ordered:
                if len(values) == 1:
                    self._results[start] = values[0]
                else:
                    for i, v in enumerate(values):
                        self._results[start + i] = v
            else:
                self._results.extend(values)
            self._delivered += len(values)
            self._cond.notify()
        if self.total is not None and self._delivered >= self.total:
            self.release_fn()

    def _got_one(self, index: int, value: Any) -> None:
        with self._cond:
            if self._ordered:
                self._results[index] = value
            else:
                self._results.append(value)
            self._delivered += 1
            self._cond.notify()
        if self.total is not None and self._delivered >= self.total:
            self.release_fn()

    def _input_done(self) -> None:
        with self._cond:
            self._cond.notify_all()
        if self._delivered >= self.total:
            self.release_fn()

    def _input_error(self, exc: BaseException) -> None:
        with self._cond:
            if self.total is None:
                self.total = self.next_index + 1
            idx = self.next_index
            if self._ordered:
                self._results[idx] = W.Failure(exc, None)
            else:
                self._results.append(W.Failure(exc, None))
            self.total = min(self.total, idx + 1)
            self._cond.notify_all()

    def _abandon(self) -> None:
        """The caller stopped iterating: cut nothing more and cancel what is queued."""
        eng = self.engine
        with eng.lock:
            self.stopped = True
            if self in eng.feeding:
                eng.feeding.remove(self)
            for tid, task in eng.tasks.items():
                if task.job is self:
                    task.cancelled = True
                    if eng.claims is not None:  # a worker that takes it skips it
                        eng.claim_cas(tid & eng.claim_mask, tid, tid | W.CLAIM_CANCELLED)
            for task in eng.ready:
                if task.job is self:
                    task.cancelled = True


class IMapUnorderedIterator(IMapIterator[_T]):
    """The iterator `imap_unordered` returns: results as they complete."""

    _ordered = False


def _default_buffersize(nworkers: int) -> int:
    return max(1024, 256 * nworkers)


class Pool:
    """A process pool with the `multiprocessing.Pool` API, on shared memory.

    Differences from multiprocessing (see the README): a worker that dies fails only the task it was running,
    with `WorkerCrashedError` (after `max_retries` retries), and the pool replaces it; `apply_async(timeout=)`
    and `task_timeout=` kill an overrunning task's worker; a failing initializer breaks the pool instead of
    respawning workers forever; without `chunksize`, chunks adapt to the measured task time; `imap` reads its
    input lazily (at most `buffersize` items in flight); results are awaitable.
    """

    def __init__(
        self, processes: int | None = None, initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (), maxtasksperchild: int | None = None, context: BaseContext | None = None, *,
        max_retries: int = 0, max_rss_mb: float | None = None,
    ) -> None:
        if processes is None:
            processes = E.default_workers()
        if processes < 1:
            raise ValueError("Number of processes must be at least 1")
        E.check_workers(processes, "processes")
        if maxtasksperchild is not None:
            if not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0:
                raise ValueError("maxtasksperchild must be a positive int or None")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be a non-negative int")
        self._ctx = context or multiprocessing.get_context()
        self._processes = processes
        self._engine = E.Engine(processes, self._ctx, initializer, initargs, maxtasksperchild, max_retries, "pool",
                                max_rss_mb)
        self._finalizer = weakref.finalize(self, self._engine.terminate)

    def __reduce__(self) -> tuple[Any, ...]:
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self) -> str:
        return f"<pyconc.Pool state={self._engine.state} processes={self._processes}>"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and engine.state == E.RUN:
            _warn(f"unclosed running pyconc pool {self!r}", ResourceWarning, source=self)

    def _check_running(self) -> None:
        self._engine.check_running()

    # -- single calls
    def apply(
        self, func: Callable[..., _T], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {}, *,
        timeout: float | None = None,
    ) -> _T:
        """Runs func(*args, **kwds) in a worker and returns its result."""
        return self.apply_async(func, args, kwds, timeout=timeout).get()

    def apply_async(
        self, func: Callable[..., _T], args: Iterable[Any] = (), kwds: Mapping[str, Any] = {},
        callback: Callable[[_T], object] | None = None, error_callback: Callable[[BaseException], object] | None = None,
        *, timeout: float | None = None,
    ) -> ApplyResult[_T]:
        """Submits func(*args, **kwds); returns an AsyncResult. `timeout` (seconds): the task's own limit (its
        worker is killed and the result raises TaskTimeoutError)."""
        self._check_running()
        res: ApplyResult[_T] = ApplyResult(self._engine, callback, error_callback)
        res._task = self._engine.call(res, func, tuple(args), dict(kwds) if kwds else None, timeout)
        return res

    # -- maps
    def _map_async(
        self, func: Callable[..., _T], iterable: Iterable[Any], star: bool, chunksize: int | None,
        callback: Callable[[list[_T]], object] | None, error_callback: Callable[[BaseException], object] | None,
        task_timeout: float | None, progress: _Progress,
    ) -> MapResult[_T]:
        self._check_running()
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize:n}")
        if not hasattr(iterable, "__len__") or not hasattr(iterable, "__getitem__"):
            iterable = list(iterable)
        res = MapResult(self._engine, func, iterable, star, chunksize, task_timeout, callback, error_callback,
                        progress)
        if res.total:
            self._engine.map(res)
        return res

    def map(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int | None = None, *,
        task_timeout: float | None = None, progress: _Progress = False,
    ) -> list[_T]:
        """Like the builtin map, in parallel; returns a list. Without `chunksize`, chunks adapt."""
        return self._map_async(func, iterable, False, chunksize, None, None, task_timeout, progress).get()

    def map_async(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None, *, task_timeout: float | None = None,
        progress: _Progress = False,
    ) -> MapResult[_T]:
        return self._map_async(func, iterable, False, chunksize, callback, error_callback, task_timeout, progress)

    def starmap(
        self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]], chunksize: int | None = None, *,
        task_timeout: float | None = None, progress: _Progress = False,
    ) -> list[_T]:
        """Like map, with each item unpacked as the arguments: func(*item)."""
        return self._map_async(func, iterable, True, chunksize, None, None, task_timeout, progress).get()

    def starmap_async(
        self, func: Callable[..., _T], iterable: Iterable[Iterable[Any]], chunksize: int | None = None,
        callback: Callable[[list[_T]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None, *, task_timeout: float | None = None,
        progress: _Progress = False,
    ) -> MapResult[_T]:
        return self._map_async(func, iterable, True, chunksize, callback, error_callback, task_timeout, progress)

    def _imap(
        self, cls: type[IMapIterator[_T]], func: Callable[..., _T], iterable: Iterable[Any], chunksize: int | None,
        task_timeout: float | None, buffersize: int | None, progress: _Progress, star: bool = False,
    ) -> IMapIterator[_T]:
        self._check_running()
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")
        if buffersize is None:
            buffersize = _default_buffersize(self._processes)
        elif buffersize < 1:
            raise ValueError("buffersize must be at least 1")
        it = cls(self._engine, func, iterable, star, chunksize, task_timeout, buffersize, progress)
        self._engine.map(it)
        return it

    def imap(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int | None = None, *,
        task_timeout: float | None = None, buffersize: int | None = None, progress: _Progress = False,
    ) -> IMapIterator[_T]:
        """Lazy map: an iterator of results in input order. At most `buffersize` input items (default
        max(1024, 256 x processes)) are read ahead of what the caller has taken, so an endless input works."""
        return self._imap(IMapIterator, func, iterable, chunksize, task_timeout, buffersize, progress)

    def imap_unordered(
        self, func: Callable[[_S], _T], iterable: Iterable[_S], chunksize: int | None = None, *,
        task_timeout: float | None = None, buffersize: int | None = None, progress: _Progress = False,
    ) -> IMapIterator[_T]:
        """Like imap, yielding results as they complete."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, task_timeout, buffersize, progress)

    # -- lifetime
    def close(self) -> None:
        """No more tasks: the workers exit once the submitted work is done."""
        self._engine.close()

    def terminate(self) -> None:
        """Stops the workers now (SIGKILL); unfinished results raise CancelledError."""
        self._engine.terminate()

    def join(self) -> None:
        """Waits for the workers to exit; call close() or terminate() first."""
        if self._engine.state == E.RUN:
            raise ValueError("Pool is still running")
        self._engine.join()

    def __enter__(self) -> Self:
        self._check_running()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        self.terminate()

    # -- insight
    def stats(self) -> dict[str, Any]:
        """Per-worker figures (tasks, items, busy and idle time, restarts, current task and for how long) and the
        pool's counters and queue depths."""
        stats: dict[str, Any] = self._engine.stats()
        return stats

    def print_stats(self, file: TextIO | None = None) -> None:
        from ._stats import print_stats

        print_stats(self.stats(), file)
