"""`pyconc.Pool`: the `multiprocessing.Pool` API on the shared-memory engine."""

import collections
import multiprocessing
import os
import threading
import time
import warnings
import weakref

from . import _engine as E
from . import _wire as W

__all__ = ["ApplyResult", "AsyncResult", "IMapIterator", "IMapUnorderedIterator", "MapResult", "Pool"]

MpTimeoutError = multiprocessing.TimeoutError
SPIN_S = 50e-6
_perf = time.perf_counter
_yield = os.sched_yield


def _progress_bar(progress, total):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm (pip install tqdm)") from None
    if progress is True:
        return tqdm(total=total)
    return tqdm(total=total, **progress)


class ApplyResult:
    """The result of `apply_async` (multiprocessing's AsyncResult API), awaitable: ``await pool.apply_async(f)``."""

    def __init__(self, engine, callback=None, error_callback=None):
        self._engine = engine
        self._done = threading.Lock()
        self._done.acquire()  # released once the result is set
        self._ready = False
        self._success = None
        self._value = None
        self._callback = callback
        self._error_callback = error_callback
        self._listeners = None
        self._task = None

    def ready(self):
        return self._ready

    def successful(self):
        if not self._ready:
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout=None):
        self._wait(timeout)

    def _wait(self, timeout):
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

    def get(self, timeout=None):
        if not self._wait(timeout):
            raise MpTimeoutError
        if self._success:
            return self._value
        raise self._value

    def __await__(self):
        from .. import aio

        return aio.completion(self).__await__()

    def _add_listener(self, fn):
        with self._engine.lock:
            if not self._ready:
                if self._listeners is None:
                    self._listeners = []
                self._listeners.append(fn)
                return
        fn(self._success, self._value)

    # -- engine side (engine lock held)
    def _start_running(self, task):
        return True

    def _deliver(self, start, values, elapsed):
        v = values[0]
        if type(v) is W.Failure:
            self._set(False, v.exc)
        else:
            self._set(True, v)

    def _set(self, ok, value):
        if self._ready:
            return
        self._success, self._value = ok, value
        self._ready = True
        cb = self._callback if ok else self._error_callback
        post = self._engine.post
        listeners, self._listeners = self._listeners, None
        if cb is None and not listeners:
            self._done.release()
            self._engine.woke = True
            return

        def finish():
            try:
                if cb is not None:
                    cb(value)
            finally:
                self._done.release()
                for fn in listeners or ():
                    fn(ok, value)

        post.append(finish)


AsyncResult = ApplyResult


class MapResult(E.MapSource, ApplyResult):
    """The result of `map_async`/`starmap_async`: a list in input order, or the first exception."""

    def __init__(self, engine, fn, items, star, chunksize, timeout, callback, error_callback, progress):
        ApplyResult.__init__(self, engine, callback, error_callback)
        E.MapSource.__init__(self, engine, fn, items, star, chunksize, timeout, None, False)
        self._values = [None] * self.total
        self._remaining = self.total
        self._bar = _progress_bar(progress, self.total)
        if self.total == 0:
            self._set(True, [])

    def _deliver(self, start, values, elapsed):
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

    def _got_one(self, index, value):
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

    def _deliver_ok(self, start, values):
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

    def _close_bar(self):
        if self._bar is not None:
            self._engine.post.append(self._bar.close)

    def _input_done(self):
        pass

    def _input_error(self, exc):
        self._deliver(0, [W.Failure(exc, None)], 0)


class IMapIterator(E.MapSource):
    """The iterator `imap` returns: results in input order; `next(timeout)` raises multiprocessing.TimeoutError.

    Input is read lazily: at most `buffersize` items are pulled from the iterable and not yet returned.
    """

    _ordered = True

    def __init__(self, engine, fn, iterable, star, chunksize, timeout, buffersize, progress=False,
                 timeout_error=MpTimeoutError):
        E.MapSource.__init__(self, engine, fn, iterable, star, chunksize, timeout, buffersize, True)
        self._cond = threading.Condition(threading.Lock())
        self._results = {} if self._ordered else collections.deque()
        self._next = 0
        self._yielded = 0
        self._delivered = 0
        self._kick_every = max(1, (buffersize or 1) // 4)
        self._last_kick = 0
        self._bar = _progress_bar(progress, self.total)
        self._timeout_error = timeout_error

    def __iter__(self):
        return self

    def next(self, timeout=None):
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
        return value

    __next__ = next

    # -- engine side (engine lock held)
    def _deliver(self, start, values, elapsed):
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

    def _got_one(self, index, value):
        with self._cond:
            if self._ordered:
                self._results[index] = value
            else:
                self._results.append(value)
            self._delivered += 1
            self._cond.notify()
        if self.total is not None and self._delivered >= self.total:
            self.release_fn()

    def _input_done(self):
        with self._cond:
            self._cond.notify_all()
        if self._delivered >= self.total:
            self.release_fn()

    def _input_error(self, exc):
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

    def _abandon(self):
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


class IMapUnorderedIterator(IMapIterator):
    """The iterator `imap_unordered` returns: results as they complete."""

    _ordered = False


def _default_buffersize(nworkers):
    return max(1024, 256 * nworkers)


class Pool:
    """A process pool with the `multiprocessing.Pool` API, on shared memory.

    Differences from multiprocessing (see the README): a worker that dies fails only the task it was running,
    with `WorkerCrashedError` (after `max_retries` retries), and the pool replaces it; `apply_async(timeout=)`
    and `task_timeout=` kill an overrunning task's worker; a failing initializer breaks the pool instead of
    respawning workers forever; without `chunksize`, chunks adapt to the measured task time; `imap` reads its
    input lazily (at most `buffersize` items in flight); results are awaitable.
    """

    def __init__(self, processes=None, initializer=None, initargs=(), maxtasksperchild=None, context=None, *,
                 max_retries=0, max_rss_mb=None):
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

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between processes or pickled")

    def __repr__(self):
        return f"<pyconc.Pool state={self._engine.state} processes={self._processes}>"

    def __del__(self, _warn=warnings.warn):
        engine = getattr(self, "_engine", None)
        if engine is not None and engine.state == E.RUN:
            _warn(f"unclosed running pyconc pool {self!r}", ResourceWarning, source=self)

    def _check_running(self):
        self._engine.check_running()

    # -- single calls
    def apply(self, func, args=(), kwds={}, *, timeout=None):
        """Runs func(*args, **kwds) in a worker and returns its result."""
        return self.apply_async(func, args, kwds, timeout=timeout).get()

    def apply_async(self, func, args=(), kwds={}, callback=None, error_callback=None, *, timeout=None):
        """Submits func(*args, **kwds); returns an AsyncResult. `timeout` (seconds): the task's own limit (its
        worker is killed and the result raises TaskTimeoutError)."""
        self._check_running()
        res = ApplyResult(self._engine, callback, error_callback)
        res._task = self._engine.call(res, func, tuple(args), dict(kwds) if kwds else None, timeout)
        return res

    # -- maps
    def _map_async(self, func, iterable, star, chunksize, callback, error_callback, task_timeout, progress):
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

    def map(self, func, iterable, chunksize=None, *, task_timeout=None, progress=False):
        """Like the builtin map, in parallel; returns a list. Without `chunksize`, chunks adapt."""
        return self._map_async(func, iterable, False, chunksize, None, None, task_timeout, progress).get()

    def map_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, *, task_timeout=None,
                  progress=False):
        return self._map_async(func, iterable, False, chunksize, callback, error_callback, task_timeout, progress)

    def starmap(self, func, iterable, chunksize=None, *, task_timeout=None, progress=False):
        """Like map, with each item unpacked as the arguments: func(*item)."""
        return self._map_async(func, iterable, True, chunksize, None, None, task_timeout, progress).get()

    def starmap_async(self, func, iterable, chunksize=None, callback=None, error_callback=None, *,
                      task_timeout=None, progress=False):
        return self._map_async(func, iterable, True, chunksize, callback, error_callback, task_timeout, progress)

    def _imap(self, cls, func, iterable, chunksize, task_timeout, buffersize, progress, star=False):
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

    def imap(self, func, iterable, chunksize=None, *, task_timeout=None, buffersize=None, progress=False):
        """Lazy map: an iterator of results in input order. At most `buffersize` input items (default
        max(1024, 256 x processes)) are read ahead of what the caller has taken, so an endless input works."""
        return self._imap(IMapIterator, func, iterable, chunksize, task_timeout, buffersize, progress)

    def imap_unordered(self, func, iterable, chunksize=None, *, task_timeout=None, buffersize=None,
                       progress=False):
        """Like imap, yielding results as they complete."""
        return self._imap(IMapUnorderedIterator, func, iterable, chunksize, task_timeout, buffersize, progress)

    # -- lifetime
    def close(self):
        """No more tasks: the workers exit once the submitted work is done."""
        self._engine.close()

    def terminate(self):
        """Stops the workers now (SIGKILL); unfinished results raise CancelledError."""
        self._engine.terminate()

    def join(self):
        """Waits for the workers to exit; call close() or terminate() first."""
        if self._engine.state == E.RUN:
            raise ValueError("Pool is still running")
        self._engine.join()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.terminate()

    # -- insight
    def stats(self):
        """Per-worker figures (tasks, items, busy and idle time, restarts, current task and for how long) and the
        pool's counters and queue depths."""
        return self._engine.stats()

    def print_stats(self, file=None):
        from ._stats import print_stats

        print_stats(self.stats(), file)
