"""The engine under `Pool` and `ProcessPoolExecutor`: workers, queues, dispatch, fault tolerance.

Shape:

* Two shared-memory queues (pyconc's lock-free ring): tasks (parent -> any idle worker: workers pull, nothing
  is assigned to a worker in advance) and results (workers -> parent). A worker's put is synchronous and crash
  safe (a producer killed mid-put leaves no half message; a consumer killed mid-get has the item redelivered).
* A table in shared memory (`_table`) where each worker records the task message and the item it runs.
* A *monitor* thread, blocked in epoll on the workers' sentinels and a wake-up pipe: it starts every worker
  (so the kernel's parent-death signal is tied to a thread that lives as long as the pool), notices a death at
  once, snapshots the dead worker's row, tells the result thread through the result queue (behind every result
  the worker managed to send), and starts a replacement. It also enforces per-task timeouts (it sleeps until
  the nearest deadline, read from the table) by killing the worker.
* A *result* thread, blocked on the result queue: it hands results to their jobs, retries or fails the task a
  dead worker was running, and refills the task queue (so chunk sizes are chosen with fresh measurements).
* A *feeder* thread, started only for `imap`-style jobs over iterators, pulls input outside the engine lock.

Bounds: at most `depth` task messages are in the task queue or running; a lazy map keeps at most `buffersize`
input items pulled and not yet handed to the caller.
"""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import selectors
import signal
import threading
import time
import types
import weakref
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool

from .. import _native
from . import _table as T
from . import _wire as W
from . import _worker
from ._errors import TaskTimeoutError, WorkerCrashedError, with_remote_traceback

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, NoReturn, TypeVar

    _M = TypeVar("_M", bound="MapSource")

RUN, CLOSE, TERMINATE, BROKEN = "RUN", "CLOSE", "TERMINATE", "BROKEN"

# Kill reasons recorded before the monitor or a cancel() kills a worker.
K_TIMEOUT, K_CANCEL, K_STOP = 1, 2, 3

# Queue sizing: default queues (they start small, 64 KiB of slots, and grow on demand). Payloads beyond
# MESSAGE_LIMIT travel as BigPayload segments (the largest item of the 2 MiB heap the pool's queues had before).
MESSAGE_LIMIT = (7 << 18) - 16
# Adaptive chunking: aim for chunks of this many ns of work.
TARGET_CHUNK_NS = 2_000_000
MAX_CHUNK = 100_000
# Consecutive deaths of a slot's workers before they run anything, after which the pool breaks.
BAD_STARTS = 10

# Test hook: see _worker._Config.fault.
FAULT: tuple[str, str] | None = None

_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_sleep = os.sched_yield
_SCALARS = frozenset({int, float, bool, type(None)})
_monotonic_ns = time.monotonic_ns


def _report_internal_error() -> None:
    import traceback

    traceback.print_exc()


def _raise(exc: BaseException) -> NoReturn:
    """Stands in, in a worker, for an item that could not be sent: its outcome is the pickling error."""
    raise exc


def _run_callbacks(callbacks: Iterable[Callable[[], object]]) -> None:
    for cb in callbacks:
        try:
            cb()
        except Exception:  # a user callback raised: what multiprocessing does, print and go on
            import traceback

            traceback.print_exc()


def _describe(fn: object, args: Iterable[Any] | None = None) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    if args is None:
        return f"{name}(...)"
    text = ", ".join(repr(a) for a in args)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{name}({text})"


def _simple_args(args: Iterable[Any]) -> bool:
    for a in args:
        t = type(a)
        if t not in W.SIMPLE or ((t is str or t is bytes) and len(a) > 4096):
            return False
    return True


class Task:
    """One task message: a single call, or a chunk of a map's items (`items`, starting at input index `start`)."""

    __slots__ = (
        "attempts",
        "batch",
        "cancelled",
        "desc",
        "fn_id",
        "fnref",
        "items",
        "job",
        "keep",
        "left",
        "mode",
        "payload",
        "pos",
        "start",
        "tid",
        "timeout",
    )

    def __init__(
        self, job: Any, start: int, items: list[Any] | None, fn_id: int, fnref: bytes | None, mode: int,
        payload: Any, timeout: float | None, attempts: int = 0, desc: tuple[Any, Any] | None = None,
    ) -> None:
        self.tid = 0
        self.job = job
        self.start = start
        self.items: Any = items  # None for a single call
        self.fn_id = fn_id
        self.fnref = fnref
        self.mode = mode
        self.payload = payload
        self.timeout = timeout
        self.attempts = attempts
        self.pos = 0
        self.cancelled = False
        self.desc: Any = desc
        # A batch: each of `items` is its own single-item message (chunksize=1), tids tid .. tid + len - 1,
        # sharing this record; `left` counts the messages not settled yet.
        self.batch = False
        self.left = 1
        self.keep: Any = None  # BigPayloads its messages refer to: alive while the task may be (re)sent

    def index_of(self, tid: int, item: int) -> int:
        """Input index of the item message `tid` (item `item` inside a chunk) stands for."""
        if self.batch:
            return self.start + (tid - self.tid)
        if self.items is not None:
            return self.start + min(max(item, 0), len(self.items) - 1)
        return self.start

    @property
    def count(self) -> int:
        return 1 if self.items is None or self.batch else len(self.items)


class MapSource:
    """The input side of a map: cuts chunks (adaptive or fixed), keeps the in-flight bound, measures items.

    Subclasses (the result side) implement `_deliver(start, values)`, `_input_error(exc)` and `_input_done()`.
    """

    _deliver: Callable[[int, list[Any], int], None]
    _input_error: Callable[[BaseException], None]
    _input_done: Callable[[], None]

    def __init__(
        self, engine: Engine, fn: Callable[..., Any], iterable: Any, star: bool, chunksize: int | None,
        timeout: float | None, buffersize: int | None, lazy: bool,
    ) -> None:
        self.engine = engine
        self.fn = fn
        self.star = star
        self.chunksize = chunksize
        self.timeout = timeout
        self.fn_id = 0
        self.fnref = b""
        self.fn_owner: W.BigPayload | None = None  # the BigPayload holding a large pickled function
        self.fnflag = 0
        self.inflight_chunks = 0
        self.per_item_ns: float | None = None  # measured ns per item (see measured())
        self.ns_sum = 0.0
        self.n_sum = 0.0
        self.probe = 1
        self.next_index = 0  # input index of the next item to cut
        self.buffer: Any = None
        self.seq: Any = None
        self.total: Any = None  # number of input items, once known
        self.exhausted = False
        self.input_exc: BaseException | None = None
        self.consumed = 0  # items handed to the caller (lazy maps: frees buffer room)
        self.buffersize: int | None = buffersize
        self.lazy = lazy
        self.stopped = False  # failed or abandoned: cut nothing more
        if hasattr(iterable, "__len__") and hasattr(iterable, "__getitem__"):
            self.seq = iterable
            self.total = len(iterable)
            self.exhausted = True
        else:
            self.iterator = iter(iterable)
            self.buffer = collections.deque()
        if chunksize is None:
            self.max_inflight = 2 * engine.nworkers
        else:
            self.max_inflight = engine.depth

    # -- called by the feeder thread (no engine lock): pull input while the bound allows
    def pull(self, limit: int) -> tuple[list[Any], BaseException | None, bool]:
        """Pulls up to `limit` items from the iterator into the buffer (outside the engine lock)."""
        got = []
        try:
            for item in itertools.islice(self.iterator, limit):
                got.append(item)
        except BaseException as e:
            return got, e, True
        return got, None, len(got) < limit

    def room(self) -> int:
        """How many more input items may be pulled now (the buffersize bound)."""
        if self.buffersize is None:
            return 1 << 30
        return self.buffersize - (self.next_index + (len(self.buffer) if self.buffer is not None else 0)
                                  - self.consumed)

    def available(self) -> int:
        if self.seq is not None:
            return self.total - self.next_index  # type: ignore[no-any-return]  # total is known with a sequence
        return len(self.buffer)

    def size_next(self) -> int:
        """The number of items for the next chunk."""
        if self.chunksize is not None:
            return self.chunksize
        w = self.engine.nworkers
        if self.per_item_ns is None:
            n = self.probe
            self.probe = min(self.probe * 2, 64)
        else:
            n = int(TARGET_CHUNK_NS / max(self.per_item_ns, 1.0)) or 1
        if self.total is not None:
            # Guided self-scheduling near the end: never more than a share of what is left, so the tail balances;
            # but not below chunks of ~1/8 of the target time, whose imbalance no longer matters.
            left = self.total - self.next_index
            floor = 1 if self.per_item_ns is None else int(TARGET_CHUNK_NS / 8 / max(self.per_item_ns, 1.0))
            n = min(n, max(1, -(-left // (2 * w)), floor))
        return max(1, min(n, MAX_CHUNK))

    def size_hint(self) -> int:
        """About how many items the next chunk takes (no side effect; for the feeder)."""
        if self.chunksize is not None:
            return self.chunksize
        if self.per_item_ns is None:
            return self.probe
        return max(1, min(MAX_CHUNK, int(TARGET_CHUNK_NS / max(self.per_item_ns, 1.0))))

    def cut(self) -> Task | None:
        """The next Task, or None (nothing available now, or the in-flight bound is reached). Engine lock held."""
        if self.inflight_chunks >= self.max_inflight or self.stopped:
            return None
        if self.per_item_ns is None and self.chunksize is None and self.inflight_chunks >= 2 * self.engine.nworkers:
            return None  # start small: a few growing probe chunks per worker until something was measured
        avail = self.available()
        if avail <= 0:
            return None
        if self.lazy and self.buffersize is not None:
            avail = min(avail, max(0, self.buffersize - (self.next_index - self.consumed)))
            if avail <= 0:
                return None
        if self.chunksize == 1:
            n = min(avail, 256, max(1, self.engine.depth - len(self.engine.tasks)))
            try:
                start, items = self._take(n)
            except Exception as e:
                return self._seq_failed(e)
            self.inflight_chunks += 1
            self.engine.counters["submitted"] += n
            return self.engine._batch_task(self, start, items)
        while avail > 0:
            n = min(self.size_next(), avail)
            try:
                start, items = self._take(n)
            except Exception as e:
                return self._seq_failed(e)
            avail -= n
            self.engine.counters["submitted"] += n
            task = self.engine._chunk_task(self, start, items)
            if task is not None:
                self.inflight_chunks += 1
                return task
        return None

    def _start_running(self, task: Task) -> bool:
        return True

    def _take(self, n: int) -> tuple[int, list[Any]]:
        """The next `n` input items and the index of the first, from the input sequence (slicing it may raise: the
        caller ends the input with that error) or the read-ahead buffer; advances the cursor."""
        start = self.next_index
        if self.seq is not None:
            items = self.seq[start:start + n]
            if not isinstance(items, list):
                items = list(items)
        else:
            buf = self.buffer
            items = [buf.popleft() for _ in range(n)]
        self.next_index += n
        return start, items

    def _seq_failed(self, exc: BaseException) -> Task | None:
        """Reading the input sequence raised: that error ends the input at this position."""
        self.input_exc = exc
        self.total = self.next_index
        self.seq = None
        self.buffer = collections.deque()
        self.exhausted = True
        return None

    def _deliver_ok(self, start: int, values: list[Any]) -> None:
        """A chunk without failures (the common case: no per-item check needed)."""
        self._deliver(start, values, 0)

    def _got_one(self, index: int, value: Any) -> None:
        """One item's outcome (the chunksize=1 path)."""
        self._deliver(index, [value], 0)

    def finish_input(self) -> None:
        """All input was cut: an exception the iterator raised becomes the outcome of the next position."""
        if self.input_exc is not None:
            idx = self.next_index
            self.next_index += 1
            self.total = self.next_index
            exc, self.input_exc = self.input_exc, None
            self._deliver(idx, [W.Failure(exc, None)], 0)
        if self.total is None:
            self.total = self.next_index
        self._input_done()

    def release_fn(self) -> None:
        """The map is over: drop its function's reference (engine lock held)."""
        self.stopped = True
        if self.fn_owner is not None or not self.engine._by_reference(self.fn):
            self.engine.fn_refs.pop(self.fn_id, None)
            self.engine.fn_sent.pop(self.fn_id, None)
        self.fn_owner = None

    def finished_cutting(self) -> bool:
        return self.stopped or (self.exhausted and self.available() == 0)

    def measured(self, count: int, elapsed_ns: int) -> None:
        """Folds in a chunk's measured run time (the calls only): a count-weighted mean that forgets slowly, so
        big chunks weigh more than the first probes and a change in task time shows within a few chunks."""
        if count and elapsed_ns:
            self.ns_sum = self.ns_sum * 0.5 + elapsed_ns
            self.n_sum = self.n_sum * 0.5 + count
            self.per_item_ns = self.ns_sum / self.n_sum


# Each worker is a participant of both queues, and so is the pool's process; a queue takes 1,024 live ones
# (and other processes may use the same queues' handles: keep a margin).
MAX_WORKERS = 1000


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def check_workers(n: int, name: str) -> None:
    if n > MAX_WORKERS:
        raise ValueError(f"{name} must be at most {MAX_WORKERS} (each worker is a participant of the pool's "
                         f"queues, which take 1,024 processes)")


class Engine:
    def __init__(
        self, nworkers: int, ctx: Any, initializer: Callable[..., object] | None, initargs: Iterable[Any],
        maxtasks: int | None, max_retries: int, flavor: str, max_rss_mb: float | None = None,
    ) -> None:
        self.nworkers = nworkers
        self.ctx = ctx
        self.flavor = flavor  # "pool" or "executor": error conventions
        self.max_retries = max_retries
        self.maxtasks = maxtasks
        self.state = RUN
        self.broken_reason: str | None = None
        self.broken_tb: str | None = None
        self.depth = max(4 * nworkers, 256)
        self.fn_eager = 4 * nworkers  # messages per function that carry its pickle
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.tq: Any = _native.QueueCore()
        self.rq: Any = _native.QueueCore()
        self.limit = max(1024, min(MESSAGE_LIMIT, self.tq.max_message, self.rq.max_message) - 256)
        self.table: Any = T.Table.create(nworkers, self.pid, _monotonic_ns())
        self.words: Any = self.table.words
        # The claim table (see _wire.CLAIM_*): a power of two above twice the messages that can be in flight
        # (depth, plus a batch of up to 256), so a free slot is always near; claim_tid says which tid holds each.
        nclaims = 1 << (2 * (self.depth + 256) - 1).bit_length()
        self.claims_buf: Any = W.SharedWords(nclaims)
        self.claims: Any = self.claims_buf.words
        self.claim_cas: Any = self.claims_buf.buf._compare_exchange
        self.claim_mask = nclaims - 1
        self.claim_tid = [0] * nclaims
        self.outbox = W.Outbox()
        self.init_blob = None if initializer is None else W.dumps((initializer, tuple(initargs)))
        self.max_rss_kb = int(max_rss_mb * 1024) if max_rss_mb else 0

        self.tasks: dict[int, Task] = {}  # tid -> Task: in the task queue or running
        self.ready: collections.deque[Task] = collections.deque()  # Tasks waiting for room in the task queue
        self.sources: list[MapSource] = []  # MapSources with input left to cut
        self.feeding: list[MapSource] = []  # MapSources whose iterator the feeder pulls
        self.next_tid = 1
        self.put_count = 0
        self.post: list[Callable[[], object]] = []  # callbacks to run once the engine lock is released
        self.timeouts: collections.Counter[float] = collections.Counter()  # timeout -> timed tasks in flight
        self.fn_ids: dict[Any, tuple[int, bytes, int]] = {}  # plain function -> (id, reference, flag)
        self.fn_sent: collections.Counter[int] = collections.Counter()  # fn id -> messages that carried its reference
        # fn id -> (reference, flag) for the ids whose reference travels on request
        self.fn_refs: dict[int, tuple[bytes, int]] = {}
        self.next_fn_id = 1
        self.counters: collections.Counter[str] = collections.Counter()
        self.kill_reasons: dict[int, tuple[int, int, int]] = {}  # slot -> (kind, tid, item)
        self.requests: collections.deque[tuple[str, Any]] = collections.deque()
        self.procs: list[Any] = [None] * nworkers
        self.restarts = [0] * nworkers
        self.bad_starts = [0] * nworkers  # consecutive deaths before doing anything, per slot
        self.retry_start: dict[int, float] = {}  # slot -> when to try starting its worker again
        self.idle_cond = threading.Condition(self.lock)
        self.feed_cond = threading.Condition(self.lock)
        self.drained = False
        self.woke = False  # a result settled in this batch may have a thread waiting for it
        self.restart_pending = False
        self.monitor_done = False
        self.results_done = threading.Event()
        self.consume_lock = threading.Lock()  # held while taking and handling results (see _results_main)
        self.deferred: list[Callable[[], object]] = []  # callbacks a polling caller left for the result thread
        self.stop_results = False  # a polling caller took the monitor's last message

        _worker.libc()  # loaded here once, so forked workers inherit it
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        started = threading.Event()
        self.start_error: BaseException | None = None
        self.monitor = threading.Thread(target=self._monitor_main, args=(started,), daemon=True,
                                        name="pyconc-pool-monitor")
        self.results = threading.Thread(target=self._results_main, daemon=True, name="pyconc-pool-results")
        self.feeder: threading.Thread | None = None
        self.monitor.start()
        self.results.start()
        started.wait()
        if self.start_error is not None:
            err = self.start_error  # type: ignore[unreachable]  # set by the monitor thread
            self.terminate()
            raise err
        _live_engines.add(self)

    # ------------------------------------------------------------------------------------------------------
    # submission

    def check_running(self) -> None:
        if self.state == BROKEN:
            raise with_remote_traceback(BrokenProcessPool(self.broken_reason), self.broken_tb)
        if self.state != RUN:
            if self.flavor == "pool":
                raise ValueError("Pool not running")
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _register_fn(self, fn: Callable[..., Any], cache: bool) -> tuple[int, bytes, int, W.BigPayload | None]:
        """(id, reference, mode flag, owner) for `fn`: the reference is its pickle, or for a large one a pickled
        BigPayload (`owner`, to keep while tasks may need it). Plain functions keep theirs for the pool's life."""
        if cache:
            got = self.fn_ids.get(fn)
            if got is not None:
                return (*got, None)
        blob = W.dumps(fn)
        owner, flag = None, 0
        if len(blob) > 2048:
            owner = W.BigPayload(blob)
            blob, flag = pickle.dumps(owner, 5), W.M_FNBIG
        with self.lock:
            fid = self.next_fn_id
            self.next_fn_id += 1
        if cache and owner is None:
            if len(self.fn_ids) > 4096:
                self.fn_ids.clear()
            self.fn_ids[fn] = (fid, blob, flag)
        self.fn_refs[fid] = (blob, flag)
        return fid, blob, flag, owner

    @staticmethod
    def _by_reference(fn: object) -> bool:
        """Whether `fn` is a plain module-level function (its pickle is its name, so it can be cached)."""
        if type(fn) not in (types.FunctionType, types.BuiltinFunctionType):
            return False
        if getattr(fn, "__closure__", None):
            return False
        q = getattr(fn, "__qualname__", "")
        return "<" not in q

    def call(
        self, job: Any, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None,
        timeout: float | None = None,
    ) -> Task | None:
        """Submits one call; `job._deliver(0, [value_or_Failure])` gets its outcome. Returns the Task or None."""
        self.check_running()
        payload: Any
        try:
            if self._by_reference(fn):
                fid, fnref, flag, _ = self._register_fn(fn, True)
                if kwargs:
                    mode, payload = W.M_KW | W.M_PICKLED, W.dumps((args, kwargs))
                elif len(args) == 1 and type(args[0]) in W.SIMPLE and _simple_args(args):
                    mode, payload = 0, args[0]
                elif _simple_args(args):
                    mode, payload = W.M_STAR, tuple(args)
                else:
                    mode, payload = W.M_STAR | W.M_PICKLED, W.dumps(tuple(args))
                mode |= flag
            else:
                fid, fnref, mode, payload = 0, b"", W.M_INLINE | W.M_PICKLED, W.dumps((fn, tuple(args), kwargs or {}))
            keep: Any = None
            if mode & W.M_PICKLED and len(payload) > self.limit:
                mode |= W.M_BIG
                keep = W.BigPayload(payload)
                payload = pickle.dumps(keep, 5)
        except BaseException as e:
            # Like the stdlib: an argument that does not pickle fails this task, not the submit call.
            job._deliver(0, [W.Failure(e, None)], 0)
            self._run_post_now()
            return None
        if timeout is not None:
            mode |= W.M_TIMED
        task = Task(job, 0, None, fid, fnref, mode, payload, timeout, desc=None)
        task.desc = (fn, args)
        task.keep = keep
        with self.lock:
            self.check_running()
            self.ready.append(task)
            self.counters["submitted"] += 1
            self._fill()
            post = self._take_post()
        for cb in post:
            cb()
        return task

    def map(self, source: _M) -> _M:
        """Starts a MapSource."""
        self.check_running()
        cache = self._by_reference(source.fn)
        source.fn_id, source.fnref, source.fnflag, source.fn_owner = self._register_fn(source.fn, cache)
        with self.lock:
            self.check_running()
            self.sources.append(source)
            if source.buffer is not None:
                self.feeding.append(source)
                if self.feeder is None:
                    self.feeder = threading.Thread(target=self._feeder_main, daemon=True, name="pyconc-pool-feeder")
                    self.feeder.start()
                self.feed_cond.notify_all()
            self._fill()
            post = self._take_post()
        for cb in post:
            cb()
        return source

    def _chunk_task(self, src: MapSource, start: int, items: list[Any], extra: int = 0) -> Task | None:
        """Builds the task message for a chunk of a map (engine lock held)."""
        mode = (W.M_STAR if src.star else 0) | src.fnflag | extra
        if src.timeout is not None:
            mode |= W.M_TIMED
        payload: Any
        try:
            if src.chunksize == 1 and len(items) == 1:
                item = items[0]
                if src.star:
                    item = tuple(item)
                    if _simple_args(item):
                        payload = item
                    else:
                        mode, payload = mode | W.M_PICKLED, W.dumps(item)
                elif type(item) in W.SIMPLE and _simple_args((item,)):
                    payload = item
                else:
                    mode, payload = mode | W.M_PICKLED, W.dumps(item)
            else:
                mode |= W.M_CHUNK | W.M_PICKLED
                payload = W.dumps(items)
            keep: Any = None
            if mode & W.M_PICKLED and len(payload) > self.limit:
                mode |= W.M_BIG
                keep = W.BigPayload(payload)
                payload = pickle.dumps(keep, 5)
        except BaseException as e:
            src._deliver(start, [W.Failure(e, None)] * len(items), 0)
            return None
        single = src.chunksize == 1 and len(items) == 1
        task = Task(src, start, None if single else items, src.fn_id, src.fnref, mode, payload, src.timeout)
        task.keep = keep
        return task

    def _item_message(self, item: Any, star: bool, mode: int, task: Task) -> tuple[int, Any]:
        """(mode, payload) of one map item sent on its own (a large one is kept alive by `task`)."""
        if star:
            item = tuple(item)
            if _simple_args(item):
                return mode, item
        elif type(item) in W.SIMPLE and _simple_args((item,)):
            return mode, item
        payload = W.dumps(item)
        if len(payload) > self.limit:
            big = W.BigPayload(payload)
            if task.keep is None:
                task.keep = []
            task.keep.append(big)
            return mode | W.M_PICKLED | W.M_BIG, pickle.dumps(big, 5)
        return mode | W.M_PICKLED, payload

    def _batch_task(self, src: MapSource, start: int, items: list[Any]) -> Task:
        """A batch of single-item messages (chunksize=1) sharing one record (engine lock held)."""
        mode = (W.M_STAR if src.star else 0) | src.fnflag
        if src.timeout is not None:
            mode |= W.M_TIMED
        task = Task(src, start, items, src.fn_id, src.fnref, mode, None, src.timeout)
        task.batch = True
        task.left = len(items)
        return task

    # ------------------------------------------------------------------------------------------------------
    # dispatch (engine lock held)

    def _fnref(self, fn_id: int) -> bytes | None:
        """The function reference for the next message of `fn_id`: only the first few carry it (a worker that
        meets an id it does not know asks for it, see R_NEEDFN)."""
        if not fn_id:
            return None
        n = self.fn_sent[fn_id]
        if n >= self.fn_eager:
            return None
        self.fn_sent[fn_id] = n + 1
        return self.fn_refs[fn_id][0]

    def _free_tid(self) -> int:
        """The next tid whose claim slot no in-flight message holds (engine lock held)."""
        tid, mask, owners = self.next_tid, self.claim_mask, self.claim_tid
        for _ in range(mask + 1):  # at most half the slots are held (the in-flight bound): a free one is near
            if not owners[tid & mask]:
                self.next_tid = tid
                return tid
            tid += 1
        raise RuntimeError("pool: every claim slot is held (more messages in flight than the bound)")

    def _put(self, task: Task) -> bool:
        tid = self._free_tid()
        if task.batch:
            return self._put_batch(task, tid)
        fnref = self._fnref(task.fn_id) if task.fnref is not None else None
        s = tid & self.claim_mask
        self.claims[s] = tid  # open: the claim a worker takes before running the message
        try:
            self.tq.put((tid, task.fn_id, task.mode, task.payload, fnref), False)
        except Exception:  # queue full (its heap): try again after the next result
            if fnref is not None:
                self.fn_sent[task.fn_id] -= 1
            return False
        self.claim_tid[s] = tid
        self.next_tid = tid + 1
        task.tid = tid
        self.put_count += 1
        task.pos = self.put_count
        self.tasks[tid] = task
        if task.timeout is not None:
            self._timed(task.timeout, 1)
        return True

    def _put_batch(self, task: Task, tid0: int) -> bool:
        job = task.job
        star = job.star
        put = self.tq.put
        fn_id, mode0 = task.fn_id, task.mode
        items = task.items
        n = 0
        scalars = _SCALARS
        eager = self.fn_sent[fn_id] < self.fn_eager
        claims, owners, mask = self.claims, self.claim_tid, self.claim_mask
        for item in items:
            s = (tid0 + n) & mask
            if owners[s]:
                break  # a long-running message holds this claim slot: the rest goes as its own batch
            if not star and type(item) in scalars:
                mode, payload = mode0, item
            else:
                try:
                    mode, payload = self._item_message(item, star, mode0, task)
                except BaseException as e:  # an item that does not pickle fails alone
                    try:
                        payload = pickle.dumps((_raise, (e,), {}), 5)
                    except Exception:
                        payload = pickle.dumps((_raise, (TypeError(str(e)),), {}), 5)
                    mode = W.M_PICKLED | W.M_INLINE
            fnref = self._fnref(fn_id) if eager else None
            claims[s] = tid0 + n
            try:
                put((tid0 + n, fn_id, mode, payload, fnref), False)
            except Exception:
                if fnref is not None:
                    self.fn_sent[fn_id] -= 1
                break
            owners[s] = tid0 + n
            n += 1
            if eager:
                eager = self.fn_sent[fn_id] < self.fn_eager
        if n == 0:
            return False
        if n < len(items):
            # The rest waits as its own batch at the front of the line.
            rest = Task(job, task.start + n, items[n:], fn_id, task.fnref, mode0, None, task.timeout)
            rest.batch = True
            rest.left = len(items) - n
            job.inflight_chunks += 1
            self.ready.appendleft(rest)
            task.items = items[:n]
            task.left = n
        task.tid = tid0
        self.next_tid = tid0 + n
        task.pos = self.put_count + 1
        self.put_count += n
        self.tasks.update(dict.fromkeys(range(tid0, tid0 + n), task))
        if task.timeout is not None:
            self._timed(task.timeout, n)
        return True

    def _timed(self, timeout: float, n: int) -> None:
        first = not self.timeouts
        self.timeouts[timeout] += n
        if first:
            self._wake_monitor()

    def _fill(self) -> None:
        tasks = self.tasks
        depth = self.depth
        ready = self.ready
        task: Any  # a Task (cut() answers None when nothing is left)
        while ready and len(tasks) < depth:
            task = ready[0]
            if task.cancelled or not task.job._start_running(task):
                ready.popleft()
                continue
            ready.popleft()
            if not self._put(task):
                ready.appendleft(task)
                return
        if self.sources and len(tasks) < depth:
            for src in list(self.sources):
                while len(tasks) < depth:
                    task = src.cut()
                    if task is None:
                        break
                    if not self._put(task):
                        ready.appendleft(task)
                        return
                if src.finished_cutting():
                    self.sources.remove(src)
                    src.finish_input()
        if self.state == CLOSE and not self.drained and not tasks and not ready and not self.sources:
            self.drained = True
            self.tq.shutdown()
            self.idle_cond.notify_all()
        elif not tasks and not ready:
            self.idle_cond.notify_all()

    def _take_post(self) -> list[Callable[[], object]]:
        post = self.post
        if post:
            self.post = []
        return post

    def _run_post_now(self) -> None:
        with self.lock:
            post = self._take_post()
        for cb in post:
            cb()

    def kick(self) -> None:
        """Refill after the caller consumed lazy-map results (freed buffer room)."""
        with self.lock:
            self._fill()
            if self.feeding:
                self.feed_cond.notify_all()
            post = self._take_post()
        for cb in post:
            cb()

    # ------------------------------------------------------------------------------------------------------
    # cancellation

    def cancel(self, task: Task) -> bool:
        """Cancels a submitted task: drops it if not yet sent, marks it so a worker skips it, or kills the worker
        running it. Returns whether it can no longer deliver a result."""
        kill = None
        with self.lock:
            if task.cancelled:
                return True
            task.cancelled = True
            if task.tid and task.tid in self.tasks and self.words is not None and self.claims is not None:
                tid = task.tid
                if self.claim_cas(tid & self.claim_mask, tid, tid | W.CLAIM_CANCELLED) == tid | W.CLAIM_TAKEN:
                    # Running (a worker records CUR before it claims): kill it. Otherwise the worker that takes
                    # the message finds it cancelled and skips it.
                    for slot in range(self.nworkers):
                        if self.words[T.base(slot) + T.CUR] == tid:
                            kill = slot
                            self.counters["cancelled_running"] += 1
                            break
            if kill is not None:
                self._kill(kill, (K_CANCEL, task.tid, -1))
        return True

    def _kill(self, slot: int, reason: tuple[int, int, int]) -> None:
        """SIGKILLs the worker in `slot` for `reason` (engine lock held or monitor thread)."""
        if slot in self.kill_reasons:
            return
        p = self.procs[slot]
        if p is None or p.pid is None:
            return
        self.kill_reasons[slot] = reason
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # ------------------------------------------------------------------------------------------------------
    # the result thread

    def _results_main(self) -> None:
        """The result thread: waits until the result queue has something, then takes and handles it under
        `consume_lock`, which a thread waiting for a result may take instead (`poll`), so the results of one
        process are always handled in the order they were sent (a death notice after the dead worker's results)."""
        wait = self.rq._wait_readable
        get_many = self.rq.get_many
        consume = self.consume_lock
        from queue import Empty

        while True:
            try:
                wait(None)
            except Exception:  # the queue was shut down under us (terminate)
                break
            with consume:
                try:
                    msgs = get_many(1024, False)
                except Empty:
                    msgs = ()  # a waiting caller took them first
                except Exception:  # shut down
                    break
                stop, post, woke = self._handle(msgs)
                deferred, self.deferred = self.deferred, []
            if woke:
                # A thread waits for a result just settled: hand it the GIL now rather than when this thread
                # next blocks (CPython would make it wait for the switch interval otherwise).
                _sleep()
            if self.restart_pending:
                self.restart_pending = False
                self._wake_monitor()
            _run_callbacks(deferred)
            _run_callbacks(post)
            if stop or self.stop_results:
                break
        with self.lock:
            self._fail_everything(CancelledError("the pool was terminated before this task finished"))
            post = self._take_post()
        for cb in post:
            try:
                cb()
            except Exception:
                pass
        self.results_done.set()

    def poll(self) -> bool:
        """Handles what the result queue holds now, unless another thread is at it; called by a thread waiting for
        a result, which so skips the hand-off through the result thread. Callbacks are left to the result thread
        (as in multiprocessing, they never run in the caller's thread). Returns whether it took anything."""
        if not self.consume_lock.acquire(False):
            return False
        try:
            try:
                msgs = self.rq.get_many(1024, False)
            except Exception:  # empty (or shut down: the result thread sees it too)
                return False
            stop, post, _woke = self._handle(msgs)
            if stop:
                self.stop_results = True
            if post or stop:
                self.deferred.extend(post)
        finally:
            self.consume_lock.release()
        if post or stop:
            try:
                self.rq.put((W.C_WAKE, 0, None, 0, 0))  # the result thread runs them (or stops)
            except Exception:
                pass
        if self.restart_pending:
            self.restart_pending = False
            self._wake_monitor()
        return True

    def _handle(self, msgs: Iterable[tuple[Any, ...]]) -> tuple[bool, list[Callable[[], object]], bool]:
        """Handles a batch of result messages (consume_lock held): returns (stop, callbacks to run, woke)."""
        owners, mask = self.claim_tid, self.claim_mask
        stop = False
        with self.lock:
            tasks_pop = self.tasks.pop
            done = 0
            for m in msgs:
                tid = m[0]
                if tid < 0:
                    stop = self._on_control(m) or stop
                    continue
                task = tasks_pop(tid, None)
                if task is None:
                    continue  # a late or skipped result of a task already settled
                if owners[tid & mask] == tid:
                    owners[tid & mask] = 0
                if task.batch and m[1] == W.R_VALUE and task.timeout is None and not task.cancelled:
                    # The chunksize=1 fast path: one plain value for one item.
                    task.left -= 1
                    job = task.job
                    if not task.left:
                        job.inflight_chunks -= 1
                    job._got_one(task.start + tid - task.tid, m[2])
                    done += 1
                else:
                    self.tasks[tid] = task
                    try:
                        self._on_result(m)
                    except Exception:  # a bug or a hostile result: report it, keep the pool alive
                        _report_internal_error()
            self.counters["completed"] += done
            try:
                if self.state != TERMINATE:
                    self._fill()
                if self.outbox.pending:
                    self.outbox.collect()
            except Exception:
                _report_internal_error()
            self._publish_counters()
            post = self._take_post()
            woke, self.woke = self.woke, False
        return stop, post, woke

    def _publish_counters(self) -> None:
        """Copies the pool's counters into the table header (for `python -m pyconc ls` elsewhere)."""
        w, c = self.words, self.counters
        if w is None:
            return
        w[T.H_SUBMITTED] = c["submitted"]
        w[T.H_COMPLETED] = c["completed"]
        w[T.H_FAILED] = c["failed"]
        w[T.H_CRASHED] = c["crashed"]
        w[T.H_RETRIED] = c["retried"]
        w[T.H_TIMEDOUT] = c["timed_out"]

    def _decode(self, status: int, payload: Any) -> Any:
        """The list of outcomes a result message carries (exceptions become Failures with remote tracebacks)."""
        try:
            if status & W.R_BIG:
                status &= ~W.R_BIG
                payload = W.loads(payload).take()
            if status == W.R_VALUE:
                return [payload]
            if status == W.R_PICKLED:
                return [W.loads(payload)]
            if status == W.R_ERROR:
                exc, tb = W.loads(payload)
                return [W.Failure(with_remote_traceback(exc, tb), tb)]
            values = W.loads(payload)
            if status == W.R_CHUNK_FAILED:
                for v in values:
                    if type(v) is W.Failure:
                        with_remote_traceback(v.exc, v.tb)
            return values
        except Exception as e:  # a result that cannot be unpickled here fails its task
            return e

    def _pop(self, tid: int) -> Task | None:
        """Takes message `tid` out of the in-flight table: its Task (None if already settled)."""
        task = self.tasks.pop(tid, None)
        if task is None:
            return None
        s = tid & self.claim_mask
        if self.claim_tid[s] == tid:
            self.claim_tid[s] = 0
        if task.timeout is not None:
            n = self.timeouts[task.timeout] - 1
            if n:
                self.timeouts[task.timeout] = n
            else:
                del self.timeouts[task.timeout]
        task.left -= 1
        if task.left == 0 and isinstance(task.job, MapSource):
            task.job.inflight_chunks -= 1
        return task

    def _on_result(self, m: tuple[Any, ...]) -> None:
        tid, status, payload, elapsed, _slot = m
        task = self._pop(tid)
        if task is None:
            return  # a late or skipped result of a task already settled
        if task.cancelled or status == W.R_SKIPPED:
            return
        if status == W.R_NEEDFN:
            # The worker had never seen this function: send the message again with its reference.
            self._resend_with_fn(task, tid)
            return
        job = task.job
        if task.batch:
            if status == W.R_VALUE:
                v = payload
            else:
                v = self._decode(status, payload)
                v = W.Failure(v, None) if isinstance(v, BaseException) else v[0]
            self.counters["completed"] += 1
            job._got_one(task.start + (tid - task.tid), v)
            return
        values = self._decode(status, payload)
        if isinstance(values, BaseException):
            values = [W.Failure(values, None)] * task.count
        elif len(values) != task.count:
            values = [W.Failure(RuntimeError("a worker returned the wrong number of results"), None)] * task.count
        self.counters["completed"] += task.count
        if isinstance(job, MapSource):
            job.measured(task.count, elapsed)
            if status == W.R_CHUNK:
                job._deliver_ok(task.start, values)
                return
        job._deliver(task.start, values, elapsed)

    def _resend_with_fn(self, task: Task, tid: int) -> None:
        _blob, _flag = self.fn_refs.get(task.fn_id, (None, 0))
        if task.batch:
            k = tid - task.tid
            single = Task(task.job, task.start + k, [task.items[k]], task.fn_id, task.fnref, task.mode, None,
                          task.timeout, task.attempts)
            single.batch = True
            task = single
            task.job.inflight_chunks += 1
        elif isinstance(task.job, MapSource):
            task.job.inflight_chunks += 1
        task.left = len(task.items) if task.batch else 1
        # One message that carries the reference whatever the eager count says.
        self.fn_sent[task.fn_id] = 0
        self.ready.appendleft(task)

    def _on_control(self, m: tuple[Any, ...]) -> bool:
        kind = m[0]
        if kind == W.C_DIED:
            self._on_death(m[1], m[2])
            if m[2][4] != T.INIT_FAILED:
                self.requests.append(("start", m[1]))
                self.restart_pending = True
        elif kind == W.C_INIT_FAILED:
            self._break(m[2])
        elif kind == W.C_BROKEN:
            self._break(None, m[2])
        elif kind == W.C_WAKE and m[1] == 1:
            return True  # the monitor is done: every worker is gone
        return False

    def _requeue(self, task: Task, items: list[Any], start: int, attempts: int) -> None:
        """Queues `items` of a crashed chunk again (front of the line) as a new chunk task."""
        if not items:
            return
        job = task.job
        new = self._chunk_task(job, start, items)
        if new is None:
            return
        job.inflight_chunks += 1
        new.attempts = attempts
        self.ready.appendleft(new)

    def _retry_item(self, task: Task, tid: int, item: int) -> None:
        """A fresh single-item task for the item message `tid` stood for (attempts + 1), at the front."""
        job = task.job
        k = task.index_of(tid, item) - task.start
        if task.batch:
            new: Any = Task(
                job, task.start + k, [task.items[k]], task.fn_id, task.fnref, task.mode, None, task.timeout,
                task.attempts + 1)
            new.batch = True
            job.inflight_chunks += 1
        elif task.items is not None:
            new = self._chunk_task(job, task.start + k, [task.items[k]])
            if new is None:
                return
            new.attempts = task.attempts + 1
            job.inflight_chunks += 1
        else:
            task.attempts += 1
            task.left = 1
            if isinstance(job, MapSource):
                job.inflight_chunks += 1
            new = task
        self.ready.appendleft(new)

    def _requeue_rest(self, task: Task, item: int) -> None:
        """The other items of a chunk whose item `item` failed go again (they were not reported)."""
        if task.items is None or task.batch:
            return
        items = task.items
        k = min(max(item, 0), len(items) - 1)
        self._requeue(task, items[k + 1:], task.start + k + 1, 0)
        self._requeue(task, items[:k], task.start, 0)

    def _resend_all(self, task: Task, tid: int) -> None:
        """Message `tid` of `task` goes again whole, with no attempt counted."""
        if task.items is not None and not task.batch:
            self._requeue(task, task.items, task.start, task.attempts)
            return
        task.attempts -= 1
        self._retry_item(task, tid, 0)

    def _fail_item(self, task: Task, tid: int, item: int, exc: BaseException) -> None:
        self.counters["failed"] += 1
        task.job._deliver(task.index_of(tid, item), [W.Failure(exc, None)], 0)

    def _on_death(self, slot: int, info: tuple[Any, ...]) -> None:
        try:
            self._settle_death(info)
        finally:
            self._take_back_unclaimed()

    def _take_back_unclaimed(self) -> None:
        """After a worker died: messages taken from the task queue but never claimed go again.

        The task queue is FIFO and only this process puts into it, so the messages taken so far are those with
        ``pos <= put_count - qsize``. One of them whose claim is still open was taken by the dead worker, which
        died before claiming it, or is about to be claimed by a live one: swapping the claim for LOST settles
        which (a worker that then finds it LOST skips it), so it runs exactly once either way, without waiting.
        (A message redelivered by the queue after a consumer died mid-get may be counted as taken; it is then
        sent again and its first copy skipped.)
        """
        if self.tq is None or self.claims is None:
            return
        head = self.put_count - self.tq.qsize()
        cas, mask = self.claim_cas, self.claim_mask
        lost, cancelled = W.CLAIM_LOST, W.CLAIM_CANCELLED
        back = []
        for tid, t in self.tasks.items():
            if t.pos + (tid - t.tid if t.batch else 0) <= head:
                prev = cas(tid & mask, tid, tid | lost)
                if prev == tid or prev == tid | cancelled:
                    back.append(tid)
        for tid in back:
            task = self._pop(tid)
            if task is not None and not task.cancelled:
                self.counters["taken_back"] += 1
                self._resend_all(task, tid)

    def _settle_death(self, info: tuple[Any, ...]) -> None:
        pid, exitcode, cur, item, _state, reason = info
        self.counters["deaths"] += 1
        rkind = reason[0] if reason else None
        if rkind == K_STOP:
            return
        if (cur and cur in self.tasks and self.claims is not None
                and self.claim_cas(cur & self.claim_mask, cur, cur | W.CLAIM_LOST) == cur):
            # It recorded the message but died before claiming it: it never ran; it goes again, no blame.
            task = self._pop(cur)
            if task is not None and not task.cancelled:
                self.counters["taken_back"] += 1
                self._resend_all(task, cur)
            cur = 0
        if rkind in (K_TIMEOUT, K_CANCEL):
            rtid, ritem = reason[1], reason[2]
            rtask = self._pop(rtid)
            if rtask is not None and not (rkind == K_CANCEL or rtask.cancelled):
                self.counters["timed_out"] += 1
                self._requeue_rest(rtask, ritem)
                self._fail_item(rtask, rtid, ritem, TaskTimeoutError(self._task_desc(rtask, rtid, ritem),
                                                                     rtask.timeout))
            if cur and cur != rtid:
                # The worker had moved on to another message when the kill landed: that one goes again, no blame.
                task = self._pop(cur)
                if task is not None and not task.cancelled:
                    self._resend_all(task, cur)
            return
        task = self._pop(cur) if cur else None
        if task is None:
            return
        if task.cancelled:
            return
        if item == T.FAST and task.items is not None and not task.batch:
            # It died in a chunk run without per-item records: run it again recording each item.
            self.counters["rerun_careful"] += 1
            new = self._chunk_task(task.job, task.start, task.items, W.M_CAREFUL)
            if new is not None:
                new.attempts = task.attempts
                task.job.inflight_chunks += 1
                self.ready.appendleft(new)
            return
        self.counters["crashed"] += 1
        self._requeue_rest(task, item)
        if task.attempts < self.max_retries:
            self.counters["retried"] += 1
            self._retry_item(task, cur, item)
            return
        exc = WorkerCrashedError(self._task_desc(task, cur, item), exitcode, pid, task.attempts + 1)
        self._fail_item(task, cur, item, exc)

    def _task_desc(self, task: Task, tid: int, k: int) -> str:
        job = task.job
        if isinstance(job, MapSource):
            return f"{_describe(job.fn)} on item {task.index_of(tid, k)}"
        if task.desc is not None:
            return _describe(*task.desc)
        return "a task"

    def _break(self, tb: str | None, why: str | None = None) -> None:
        """A worker's initializer failed (or workers cannot be kept alive): the pool is broken, as
        concurrent.futures breaks its pool, and nothing respawns."""
        if self.state == BROKEN:
            return
        self.state = BROKEN
        self.broken_tb = tb
        why = why or "its initializer raised"
        self.broken_reason = f"A child process terminated abruptly, the process pool is not usable anymore ({why})"
        exc = BrokenProcessPool("A process in the process pool was terminated abruptly while the future was "
                                f"running or pending ({why}).")
        with_remote_traceback(exc, tb)
        self._fail_everything(exc)
        self.requests.append(("stop", True))
        self._wake_monitor()
        try:
            self.tq.shutdown(True)
        except Exception:
            pass

    def _fail_everything(self, exc: BaseException) -> None:
        """Fails every task not settled yet (engine lock held)."""
        for tid, task in list(self.tasks.items()):
            if not task.cancelled:
                if task.batch:
                    task.job._deliver(task.index_of(tid, 0), [W.Failure(exc, None)], 0)
                elif task.items is None:
                    task.cancelled = True
                    task.job._deliver(task.start, [W.Failure(exc, None)], 0)
                else:
                    task.cancelled = True
                    task.job._deliver(task.start, [W.Failure(exc, None)] * len(task.items), 0)
        for task in list(self.ready):
            if not task.cancelled:
                task.cancelled = True
                if task.items is None:
                    task.job._deliver(task.start, [W.Failure(exc, None)], 0)
                else:
                    task.job._deliver(task.start, [W.Failure(exc, None)] * len(task.items), 0)
        self.tasks.clear()
        self.claim_tid = [0] * len(self.claim_tid)
        self.ready.clear()
        self.timeouts.clear()
        for src in self.sources:
            src._input_error(exc)
        self.sources.clear()
        self.feeding.clear()
        self.idle_cond.notify_all()
        self.feed_cond.notify_all()

    # ------------------------------------------------------------------------------------------------------
    # the feeder thread (lazy maps over iterators)

    def _feeder_main(self) -> None:
        while True:
            with self.lock:
                while True:
                    if self.state in (TERMINATE, BROKEN) and not self.feeding:
                        self.feeder = None
                        return
                    work = [s for s in self.feeding if s.room() > 0]
                    if work:
                        break
                    if not self.feeding and self.state != RUN:
                        self.feeder = None
                        return
                    self.feed_cond.wait(1.0)
            for src in work:
                want = min(src.room(), max(64, src.size_hint()))
                got, exc, ended = src.pull(want)
                with self.lock:
                    if src not in self.feeding:
                        continue
                    src.buffer.extend(got)
                    if exc is not None:
                        src.input_exc = exc
                    if ended:
                        src.exhausted = True
                        src.total = src.next_index + len(src.buffer)
                        self.feeding.remove(src)
                    self._fill()
                    post = self._take_post()
                for cb in post:
                    cb()

    # ------------------------------------------------------------------------------------------------------
    # the monitor thread: worker processes, deaths, timeouts

    def _wake_monitor(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _config(self, slot: int) -> _worker._Config:
        cfg = _worker._Config(slot, self.tq, self.rq, self.table, self.claims_buf, self.init_blob,
                              self.maxtasks, self.max_rss_kb, self.flavor, self.pid, self.flavor == "executor")
        cfg.fault = FAULT
        return cfg

    def _start(self, slot: int, sel: selectors.BaseSelector) -> None:
        base = T.base(slot)
        for f in (T.PID, T.CUR, T.ITEM, T.T0, T.STATE, T.OWNER):
            self.words[base + f] = 0
        self.words[base + T.STATE] = T.STARTING
        p = self.ctx.Process(target=_worker.main, args=(self._config(slot),), name=f"pyconc-pool-worker-{slot}")
        p.start()
        self.procs[slot] = p
        self.words[base + T.PID] = p.pid
        sel.register(p.sentinel, selectors.EVENT_READ, slot)

    def _restart(self, slot: int, sel: selectors.BaseSelector) -> None:
        """Starts a replacement in `slot`; if that fails, tries again in a second, and if no worker is left at
        all, breaks the pool (tasks would otherwise wait forever)."""
        self.restarts[slot] += 1
        self.words[T.base(slot) + T.RESTARTS] = self.restarts[slot]
        self.retry_start.pop(slot, None)
        try:
            self._start(slot, sel)
        except Exception as e:
            self.procs[slot] = None
            if any(self.procs):
                self.retry_start[slot] = time.monotonic() + 1.0
            else:
                self.rq.put((W.C_BROKEN, slot, f"could not start a worker process: {e!r}", 0, 0))

    def _note_death(self, slot: int, info: tuple[Any, ...]) -> bool:
        """Counts deaths that happen before a worker ever works (while starting, or a clean exit with nothing
        run): a slot whose workers keep doing that breaks the pool instead of respawning forever."""
        _pid, exitcode, cur, _item, state, reason = info
        if reason is not None:
            return False
        if state == T.STARTING or (exitcode == 0 and not cur and state != T.RETIRED):
            self.bad_starts[slot] += 1
        else:
            self.bad_starts[slot] = 0
        if self.bad_starts[slot] >= BAD_STARTS:
            from ._errors import describe_exit

            self.rq.put((W.C_BROKEN, slot, f"{BAD_STARTS} workers in a row died before running anything (the "
                                           f"last: {describe_exit(exitcode)})", 0, 0))
            return True
        return False

    def _monitor_main(self, started: threading.Event) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            for slot in range(self.nworkers):
                self._start(slot, sel)
        except BaseException as e:
            self.start_error = e
        started.set()
        stopping = False
        words = self.words
        while True:
            if stopping and not any(self.procs):
                break
            try:
                timeout = self._next_deadline()
                events = sel.select(timeout)
                for key, _ in events:
                    if key.data is None:
                        try:
                            while os.read(self._wake_r, 512):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                        continue
                    slot = key.data
                    p = self.procs[slot]
                    sel.unregister(key.fileobj)
                    p.join(5)
                    exitcode = p.exitcode
                    base = T.base(slot)
                    info = (p.pid, exitcode, words[base + T.CUR], words[base + T.ITEM], words[base + T.STATE],
                            self.kill_reasons.pop(slot, None))
                    self.procs[slot] = None
                    try:
                        p.close()
                    except Exception:
                        pass
                    state = info[4]
                    stop_now = stopping or self.state in (TERMINATE, BROKEN) or self.drained
                    if state == T.INIT_FAILED:
                        self.rq.put((W.C_DIED, slot, info, 0, 0))
                        continue  # the result thread breaks the pool on the worker's own message
                    if not (state == T.RETIRED and exitcode == 0) and not (stop_now and exitcode == 0):
                        # A death: the result thread settles its task first, then asks for the replacement (a fork
                        # holds the GIL for milliseconds; the report should not wait for it).
                        self.rq.put((W.C_DIED, slot, info, 0, 0))
                        if not stop_now:
                            self._note_death(slot, info)
                        continue
                    if not stop_now:
                        self._restart(slot, sel)
                while self.requests:
                    req = self.requests.popleft()
                    if req[0] == "start":
                        if not stopping and self.state not in (TERMINATE, BROKEN) and not self.drained \
                                and self.procs[req[1]] is None and self.bad_starts[req[1]] < BAD_STARTS:
                            self._restart(req[1], sel)
                    elif req[0] == "stop":
                        stopping = True
                        if req[1]:  # kill
                            for slot, p in enumerate(self.procs):
                                if p is not None:
                                    self.kill_reasons.setdefault(slot, (K_STOP, 0, 0))
                                    try:
                                        os.kill(p.pid, signal.SIGKILL)
                                    except (ProcessLookupError, TypeError):
                                        pass
                if self.drained:
                    stopping = True
                if self.timeouts:
                    self._check_timeouts()
                if self.retry_start and not stopping and self.state not in (TERMINATE, BROKEN):
                    now = time.monotonic()
                    for slot, at in list(self.retry_start.items()):
                        if at <= now and self.procs[slot] is None:
                            self._restart(slot, sel)
            except Exception:  # keep watching the workers whatever went wrong
                _report_internal_error()
                time.sleep(0.01)
        sel.close()
        self.monitor_done = True
        try:
            self.rq.put((W.C_WAKE, 1, None, 0, 0))
        except Exception:
            pass

    def _next_deadline(self) -> float | None:
        """How long the monitor may sleep: until the nearest task deadline or worker start retry (None: no
        deadline)."""
        if self.retry_start:
            return max(0.001, min(self.retry_start.values()) - time.monotonic())
        timeouts = self.timeouts
        if not timeouts:
            return None
        try:
            wait = min(timeouts)  # a timed task that starts now expires no sooner than this
        except ValueError:
            return None
        now = _monotonic_ns()
        words = self.words
        for slot in range(self.nworkers):
            base = T.base(slot)
            tid = words[base + T.CUR]
            if tid:
                task = self.tasks.get(tid)
                if task is not None and task.timeout is not None:
                    left = (words[base + T.T0] - now) / 1e9 + task.timeout
                    wait = min(wait, left)
        return max(wait, 0.001)

    def _check_timeouts(self) -> None:
        now = _monotonic_ns()
        words = self.words
        for slot in range(self.nworkers):
            base = T.base(slot)
            tid = words[base + T.CUR]
            if not tid:
                continue
            task = self.tasks.get(tid)
            if task is None or task.timeout is None:
                continue
            item, t0 = words[base + T.ITEM], words[base + T.T0]
            if now - t0 < task.timeout * 1e9:
                continue
            if words[base + T.CUR] != tid or words[base + T.ITEM] != item:
                continue  # it moved on meanwhile
            with self.lock:
                self._kill(slot, (K_TIMEOUT, tid, item))

    # ------------------------------------------------------------------------------------------------------
    # stopping

    def close(self) -> None:
        with self.lock:
            if self.state == RUN:
                self.state = CLOSE
            # Lazy maps nobody consumes would never finish: from now on their input is read to the end, as the
            # stdlib reads it (eagerly), so close()+join() and shutdown(wait=True) return once the work is done.
            for src in self.sources:
                src.buffersize = None
            self.feed_cond.notify_all()
            self._fill()
            post = self._take_post()
        self._wake_monitor()
        for cb in post:
            cb()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until no task is pending (Executor.shutdown(wait=True) and join())."""
        with self.lock:
            return self.idle_cond.wait_for(lambda: not self.tasks and not self.ready and not self.sources, timeout)

    def join(self, timeout: float | None = None) -> None:
        """Waits for the workers to exit (after close() once the work is done, or after terminate())."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if threading.current_thread() in (self.monitor, self.results):
            return
        self.monitor.join(None if deadline is None else max(0, deadline - time.monotonic()))
        self.results_done.wait(None if deadline is None else max(0, deadline - time.monotonic()))
        self.results.join(None if deadline is None else max(0, deadline - time.monotonic()))
        if not self.monitor.is_alive() and not self.results.is_alive():
            self._release()

    def terminate(self) -> None:
        """Kills every worker now; pending tasks fail with CancelledError."""
        with self.lock:
            if self.state != BROKEN:
                self.state = TERMINATE
            self.requests.append(("stop", True))
            self.feed_cond.notify_all()
        self._wake_monitor()
        self.join(10)

    def _release(self) -> None:
        """Drops this process's handles on the shared structures (their segments go with their last user)."""
        _live_engines.discard(self)
        if self.claims is not None:
            self.claims = None
            self.claim_cas = None  # a bound method of the buffer: it would keep the segment mapped
            self.claims_buf.close()
        for name in ("tq", "rq", "claims_buf"):
            setattr(self, name, None)
        if self.words is not None:
            self.words = None
            try:
                self.table.close()
            except Exception:
                pass
            self.table = None
        self.outbox.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # ------------------------------------------------------------------------------------------------------
    # insight

    def stats(self) -> dict[str, Any]:
        now = _monotonic_ns()
        words = self.words
        workers = []
        if words is not None:
            for slot in range(self.nworkers):
                b = T.base(slot)
                row = list(words[b:b + T.WORDS])
                cur = row[T.CUR]
                task = self.tasks.get(cur) if cur else None
                workers.append({
                    "slot": slot,
                    "pid": row[T.PID] or None,
                    "state": T.STATE_NAMES.get(row[T.STATE], "?"),
                    "tasks": row[T.TASKS],
                    "items": row[T.ITEMS],
                    "busy_s": row[T.BUSY] / 1e9,
                    "idle_s": row[T.IDLE] / 1e9,
                    "restarts": row[T.RESTARTS],
                    "task": (self._task_desc(task, cur, row[T.ITEM]) if task is not None else None),
                    "running_s": ((now - row[T.T0]) / 1e9 if cur and row[T.T0] else None),
                    "rss_mb": row[T.RSS] / 1024 if row[T.RSS] else None,
                })
        c = self.counters
        return {
            "workers": workers,
            "queued": self.tq.qsize() if self.tq is not None else 0,
            "in_flight": len(self.tasks),
            "waiting": len(self.ready),
            "results_queued": self.rq.qsize() if self.rq is not None else 0,
            "submitted": c["submitted"],
            "completed": c["completed"],
            "failed": c["failed"],
            "crashed": c["crashed"],
            "retried": c["retried"],
            "timed_out": c["timed_out"],
            "deaths": c["deaths"],
            "state": self.state,
        }


def _at_exit() -> None:
    for engine in list(_live_engines):
        try:
            if engine.flavor == "executor" and engine.state in (RUN, CLOSE):
                engine.close()
                engine.wait_idle()
                engine.join()
            else:
                engine.terminate()
        except Exception:
            pass


import atexit  # noqa: E402

atexit.register(_at_exit)
