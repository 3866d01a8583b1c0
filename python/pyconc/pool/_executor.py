"""`pyconc.ProcessPoolExecutor`: a `concurrent.futures.Executor` on the shared-memory engine."""

from __future__ import annotations

import multiprocessing
import time
import weakref
from concurrent.futures import _base
from typing import Generic, TypeVar  # the pool imports typing anyway (concurrent.futures' users do)

from . import _engine as E
from . import _wire as W
from ._pool import IMapIterator

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator
    from multiprocessing.context import BaseContext
    from typing import Any, TextIO

    from typing_extensions import ParamSpec

    _P = ParamSpec("_P")

__all__ = ["Future", "ProcessPoolExecutor"]

_T = TypeVar("_T")

_PENDING, _RUNNING, _CANCELLED, _NOTIFIED, _FINISHED = (
    _base.PENDING, _base.RUNNING, _base.CANCELLED, _base.CANCELLED_AND_NOTIFIED, _base.FINISHED)


class Future(_base.Future[_T], Generic[_T]):
    """A `concurrent.futures.Future` whose `cancel()` also works while the task runs (its worker is killed and
    replaced), and which can be awaited directly."""

    # concurrent.futures.Future's internals, which cancel() extends.
    _state: str
    _condition: Any
    _waiters: list[Any]
    _invoke_callbacks: Callable[[], None]

    def __init__(self, engine: E.Engine) -> None:
        super().__init__()
        self._engine = engine
        self._task: Any = None

    def cancel(self) -> bool:
        with self._condition:
            if self._state == _FINISHED:
                return False
            if self._state in (_CANCELLED, _NOTIFIED):
                return True
            running = self._state == _RUNNING
            if running:
                self._state = _NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
            else:
                self._state = _CANCELLED
            self._condition.notify_all()
        if running and self._task is not None:
            self._engine.cancel(self._task)
        self._invoke_callbacks()
        return True

    def __await__(self) -> Generator[Any, None, _T]:
        from .. import aio

        return aio.completion(self).__await__()

    # -- engine side (engine lock held)
    def _start_running(self, task: Any) -> bool:
        if self._state == _RUNNING:
            return True  # a retry
        return self.set_running_or_notify_cancel()

    def _deliver(self, start: int, values: list[Any], elapsed: int) -> None:
        v = values[0]
        self._engine.post.append(lambda: self._settle(v))
        self._engine.woke = True

    def _settle(self, v: Any) -> None:
        with self._condition:
            if self._state in (_CANCELLED, _NOTIFIED, _FINISHED):
                return
            if self._state == _PENDING:
                self._state = _RUNNING
        if type(v) is W.Failure:
            self.set_exception(v.exc)
        else:
            self.set_result(v)


class _MapIterator(IMapIterator[_T]):
    pass


class ProcessPoolExecutor(_base.Executor):
    """A process pool with the `concurrent.futures` API (`submit`, `map`, `shutdown`), on shared memory.

    Differences from the stdlib (see the README): `Future.cancel()` works on a running task; a worker that dies
    fails only its task, with `WorkerCrashedError` (a `BrokenProcessPool`), after `max_retries` retries, and the
    pool stays usable; `map` reads its input lazily, adapts chunks when `chunksize` is not given and takes a
    `task_timeout`; `submit_with_timeout` limits one task's run time.
    """

    def __init__(
        self, max_workers: int | None = None, mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (), *,
        max_tasks_per_child: int | None = None, max_retries: int = 0, max_rss_mb: float | None = None,
    ) -> None:
        if max_workers is None:
            max_workers = E.default_workers()
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        E.check_workers(max_workers, "max_workers")
        if mp_context is None:
            mp_context = multiprocessing.get_context("spawn" if max_tasks_per_child is not None else None)
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if mp_context.get_start_method(allow_none=False) == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' multiprocessing start method;"
                                 " supply a different mp_context.")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be a non-negative int")
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._max_tasks_per_child = max_tasks_per_child
        self._initializer = initializer
        self._initargs = initargs
        self._engine = E.Engine(max_workers, mp_context, initializer, initargs, max_tasks_per_child, max_retries,
                                "executor", max_rss_mb)
        self._finalizer = weakref.finalize(self, self._engine.close)

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        return self._submit(None, fn, args, kwargs)

    def submit_with_timeout(
        self, timeout: float | None, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]:
        """Like submit, with a limit on the task's run time: past `timeout` seconds its worker is killed and
        replaced, and the future raises `TaskTimeoutError` (a `TimeoutError`)."""
        return self._submit(timeout, fn, args, kwargs)

    def _submit(
        self, timeout: float | None, fn: Callable[..., _T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[_T]:
        engine = self._engine
        engine.check_running()
        f: Future[_T] = Future(engine)
        f._task = engine.call(f, fn, args, kwargs or None, timeout)
        return f

    submit.__doc__ = _base.Executor.submit.__doc__

    def map(  # a superset of Executor.map's keywords; chunksize=None adapts
        self, fn: Callable[..., _T], *iterables: Iterable[Any], timeout: float | None = None,
        chunksize: int | None = None, task_timeout: float | None = None, buffersize: int | None = None,
        progress: bool | dict[str, Any] = False,
    ) -> Iterator[_T]:
        """Returns an iterator equivalent to map(fn, *iterables), computed in the workers.

        Input is read lazily (at most `buffersize` items ahead of the caller; default max(1024, 256 x workers)).
        `timeout`: seconds from this call after which the iterator raises TimeoutError. Without `chunksize`,
        chunks adapt to the measured task time; `chunksize=1` sends items one by one. `task_timeout`: the limit
        for each item (its worker is killed; that item raises TaskTimeoutError).
        """
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        self._engine.check_running()
        if buffersize is None:
            buffersize = max(1024, 256 * self._max_workers)
        elif buffersize < 1:
            raise ValueError("buffersize must be at least 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        it: _MapIterator[_T] = _MapIterator(
            self._engine, fn, zip(*iterables), True, chunksize, task_timeout, buffersize, progress,
            timeout_error=TimeoutError,
        )
        self._engine.map(it)
        return _results(it, deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        engine = self._engine
        if cancel_futures:
            with engine.lock:
                pending = [t.job for t in engine.ready if isinstance(t.job, Future)]
                for src in engine.sources:
                    src.stopped = True
            for f in pending:
                f.cancel()
        engine.close()
        if wait:
            engine.wait_idle()
            engine.join()

    shutdown.__doc__ = _base.Executor.shutdown.__doc__

    def stats(self) -> dict[str, Any]:
        """Per-worker figures and the pool's counters (see Pool.stats)."""
        stats: dict[str, Any] = self._engine.stats()
        return stats

    def print_stats(self, file: TextIO | None = None) -> None:
        from ._stats import print_stats

        print_stats(self.stats(), file)


def _results(it: IMapIterator[_T], deadline: float | None) -> Iterator[_T]:
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                yield it.next(left if left is None else max(0.0, left))
            except StopIteration:
                return
    finally:
        it._abandon()
