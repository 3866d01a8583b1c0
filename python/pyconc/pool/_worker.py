"""The worker process: take a task message, run it, put the result, repeat.

A worker records in its table row which task message (`CUR`) and which item of it (`ITEM`, and `T0` when the
task has a timeout) it runs, then claims the message in the claim table (`_wire.CLAIM_*`), before running it; the
parent reads the row and the claim when the worker dies or overruns a timeout, so exactly the right item is
blamed, and a message taken but never claimed is taken back and sent again. Results are put before `CUR` is
cleared, so a task whose result was sent is never blamed for a later death.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import signal
import sys
import time

from .. import _native
from . import _table as T
from . import _wire as W

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable, Iterable
    from typing import Any

    from .. import _native

_monotonic_ns = time.monotonic_ns
_OUTBOX = W.Outbox()


class _Config:
    """Everything a worker needs, pickled once per worker start (handles for the shared structures)."""

    def __init__(
        self, slot: int, tasks: _native.QueueCore, results: _native.QueueCore, table: T.Table, claims: W.SharedWords,
        init_blob: bytes | None, maxtasks: int | None, max_rss_kb: int | None, flavor: str, parent_pid: int,
        catch_base: bool,
    ) -> None:
        self.slot = slot
        self.tasks = tasks
        self.results = results
        self.table = table
        self.claims = claims
        self.init_blob = init_blob
        self.maxtasks = maxtasks
        self.max_rss_kb = max_rss_kb
        self.flavor = flavor
        self.parent_pid = parent_pid
        self.catch_base = catch_base
        # Test hook (`_engine.FAULT`): (point, path) makes the worker that first removes `path` exit at `point`
        # ("take": just after taking a message; "record": after recording it; "claim": after claiming it).
        self.fault: tuple[str, str] | None = None


_LIBC: list[ctypes.CDLL] = []


def libc() -> ctypes.CDLL:
    """The C library (loaded once; a forked worker inherits the parent's)."""
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when the thread that started it (the pool's monitor) ends."""
    try:
        libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux
        pass


def _wrap_encoding_error(flavor: str) -> W._Wrap:
    if flavor == "pool":
        from multiprocessing.pool import MaybeEncodingError  # type: ignore[attr-defined]  # not in typeshed

        return MaybeEncodingError  # type: ignore[no-any-return]
    return lambda err, value: err


def _rss_kb() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return 0


def main(cfg: _Config) -> None:
    """Entry point of a worker process (the `target` of its multiprocessing.Process)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _die_with_parent()
    slot = cfg.slot
    words = cfg.table.words
    base = cfg.table.base(slot)
    words[base + T.PID] = os.getpid()
    words[base + T.OWNER] = _native._owner_word()
    words[base + T.SINCE] = _monotonic_ns()
    words[base + T.STATE] = T.STARTING
    results = cfg.results
    try:
        parent_fd = os.pidfd_open(cfg.parent_pid)
    except (AttributeError, OSError):  # pragma: no cover - old kernels
        parent_fd = None
    if os.getppid() != cfg.parent_pid and cfg.parent_pid and parent_fd is None:
        return

    if cfg.init_blob is not None:
        try:
            initializer, initargs = W.loads(cfg.init_blob)
            initializer(*initargs)
        except BaseException as e:
            # What concurrent.futures does: log in the worker, let the parent notice and break the pool.
            logging.getLogger("concurrent.futures").critical("Exception in initializer:", exc_info=True)
            words[base + T.STATE] = T.INIT_FAILED
            try:
                results.put((W.C_INIT_FAILED, slot, W.format_tb(e), 0, 0))
            except Exception:
                pass
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
    # If a task ends the process (SystemExit from sys.exit in a Pool task), CUR stays set: the parent blames it.
    _loop(cfg, words, base, parent_fd)
    words[base + T.CUR] = 0
    # Keep every big payload we sent until the parent took it, so its segment outlives the hand-over.
    deadline = time.monotonic() + 5
    while _OUTBOX.pending and time.monotonic() < deadline:
        _OUTBOX.collect()
        time.sleep(0.001)


def _loop(cfg: _Config, words: memoryview, base: int, parent_fd: int | None) -> None:
    slot = cfg.slot
    get = cfg.tasks.get
    put = cfg.results.put
    claim = cfg.claims.buf._compare_exchange
    cmask = len(cfg.claims.words) - 1
    fault = cfg.fault
    TAKEN, CANCELLED = W.CLAIM_TAKEN, W.CLAIM_CANCELLED
    wrap = _wrap_encoding_error(cfg.flavor)
    catch = BaseException if cfg.catch_base else Exception
    maxtasks = cfg.maxtasks
    max_rss_kb = cfg.max_rss_kb
    limit = max(1024, min(cfg.results.max_message, cfg.tasks.max_message) - 256)
    outbox = _OUTBOX
    cache: dict[int, Callable[..., Any]] = {}
    out: Any  # a result payload: a simple value, or pickled bytes
    simple = W.SIMPLE
    loads = W.loads
    now = _monotonic_ns
    cur_at, item_at, t0_at, state_at = base + T.CUR, base + T.ITEM, base + T.T0, base + T.STATE
    # Counters are kept here and written to the table at most every FLUSH_NS and before waiting.
    tasks_done = items_done = busy = idle = 0
    done = 0
    words[state_at] = T.IDLE_STATE
    last_flush = now()
    R_VALUE, R_ERROR, R_CHUNK, R_PICKLED, R_SKIPPED, R_NEEDFN, R_BIG, R_CHUNK_FAILED = (
        W.R_VALUE, W.R_ERROR, W.R_CHUNK, W.R_PICKLED, W.R_SKIPPED, W.R_NEEDFN, W.R_BIG, W.R_CHUNK_FAILED)
    M_PICKLED, M_BIG, M_INLINE, M_FNBIG, M_CHUNK, M_STAR, M_KW = (
        W.M_PICKLED, W.M_BIG, W.M_INLINE, W.M_FNBIG, W.M_CHUNK, W.M_STAR, W.M_KW)
    from queue import Empty

    def flush() -> None:
        words[base + T.TASKS] += tasks_done
        words[base + T.ITEMS] += items_done
        words[base + T.BUSY] += busy
        words[base + T.IDLE] += idle

    idle0 = now()
    while True:
        try:
            msg = get(False)
        except Empty:
            if tasks_done:
                flush()
                tasks_done = items_done = busy = idle = 0
            try:
                msg = get(True, 1.0)
            except Empty:
                t: Any = now()
                idle += t - idle0
                idle0 = t
                if parent_fd is not None and select.select([parent_fd], [], [], 0)[0]:
                    return  # the pool's process is gone
                outbox.collect()
                continue
            except Exception:  # ShutDown: the pool is stopping
                return
        except Exception:
            return
        t0 = now()
        tid, fn_id, mode, payload, fnref = msg
        if fault is not None:
            _fault(fault, "take")
        words[cur_at] = tid
        words[t0_at] = t0
        idle += t0 - idle0
        # CUR first, then the claim: a death in between leaves the claim open, and the parent takes it back.
        if fault is not None:
            _fault(fault, "record")
        claimed = claim(tid & cmask, tid, tid | TAKEN)
        if fault is not None:
            _fault(fault, "claim")
        if claimed != tid:
            # Cancelled (the parent waits for the skip), or taken back by the parent after a worker died (nobody
            # waits for it: it went again under another id).
            words[cur_at] = 0
            if claimed == tid | CANCELLED:
                put((tid, R_SKIPPED, None, 0, slot))
            idle0 = now()
            continue
        n = 1
        try:
            if mode & M_PICKLED:
                if mode & M_BIG:
                    payload = loads(payload).take()
                payload = loads(payload)
            if mode & M_INLINE:
                fn, args, kwargs = payload
                mode = M_KW
                payload = (args, kwargs)
            else:
                fn = cache.get(fn_id)
                if fn is None:
                    if fnref is None:
                        put((tid, R_NEEDFN, None, 0, slot))
                        words[cur_at] = 0
                        idle0 = now()
                        continue
                    fn = loads(loads(fnref).read() if mode & M_FNBIG else fnref)
                    if len(cache) >= 64:
                        del cache[next(iter(cache))]
                    cache[fn_id] = fn
        except BaseException as e:
            calls = 0
            status, out = R_ERROR, W.encode_error(e, W.format_tb(e), wrap)
        else:
            if mode & M_CHUNK:
                n = len(payload)
                c0 = now()
                values, failed = _run_chunk(fn, payload, mode, words, item_at, t0_at, catch)
                calls = now() - c0
                words[item_at] = 0
                out, failed = W.encode_chunk(values, wrap, failed)
                status = R_CHUNK_FAILED if failed else R_CHUNK
            else:
                c0 = now() if mode & M_PICKLED else t0
                try:
                    if mode & M_STAR:
                        value = fn(*payload)
                    elif mode & M_KW:
                        value = fn(*payload[0], **payload[1])
                    else:
                        value = fn(payload)
                except catch as e:
                    calls = now() - c0
                    status, out = R_ERROR, W.encode_error(e, W.format_tb(e), wrap)
                else:
                    calls = now() - c0
                    t = type(value)
                    if t in simple and ((t is not str and t is not bytes) or len(value) < 4096):
                        status, out = R_VALUE, value
                    else:
                        try:
                            status, out = R_PICKLED, W.dumps(value)
                        except Exception as e:
                            status, out = R_ERROR, W.encode_error(wrap(e, value), W.format_tb(e), wrap)
                    value = None
        if status != R_VALUE and len(out) > limit:
            out = outbox.wrap(out)
            status |= R_BIG
        idle0 = now()
        elapsed = idle0 - t0
        put((tid, status, out, calls, slot))
        words[cur_at] = 0
        out = payload = None
        busy += elapsed
        tasks_done += 1
        items_done += n
        if idle0 - last_flush > 10_000_000:
            last_flush = idle0
            flush()
            tasks_done = items_done = busy = idle = 0
        done += 1
        if maxtasks is not None and done >= maxtasks:
            break
        if max_rss_kb:
            rss = _rss_kb()
            words[base + T.RSS] = rss
            if rss > max_rss_kb:
                break
    flush()
    # Retire (maxtasksperchild or the RSS limit): the parent starts a replacement.
    words[state_at] = T.RETIRED


def _fault(fault: tuple[str, str], point: str) -> None:
    if fault[0] == point:
        try:
            os.unlink(fault[1])
        except OSError:
            return
        os._exit(7)


def _run_chunk(
    fn: Callable[..., Any], items: Iterable[Any], mode: int, words: memoryview, item_at: int, t0_at: int,
    catch: type[BaseException],
) -> tuple[list[Any], bool]:
    """Runs a chunk; returns (values, failed). Without a timeout and unless the parent asked for care, the calls
    go through `map` in C (ITEM says FAST: a crash there makes the parent re-run the chunk with care, which
    records each item, so the right one is blamed)."""
    if not mode & (W.M_TIMED | W.M_CAREFUL):
        words[item_at] = T.FAST
        out: list[Any] = []
        failed = False
        it = iter(items)
        mapper = itertools.starmap if mode & W.M_STAR else map
        while True:
            try:
                out.extend(mapper(fn, it))
                break
            except catch as e:
                # list.extend keeps what it appended: the failed item is the next index.
                out.append(W.Failure(e, W.format_tb(e)))
                failed = True
        return out, failed
    out = []
    append = out.append
    fmt = W.format_tb
    Failure = W.Failure
    timed = mode & W.M_TIMED
    now = _monotonic_ns
    star = mode & W.M_STAR
    failed = False
    for k, item in enumerate(items):
        words[item_at] = k
        if timed:
            words[t0_at] = now()
        try:
            append(fn(*item) if star else fn(item))
        except catch as e:
            append(Failure(e, fmt(e)))
            failed = True
    return out, failed
