"""``python -m pyconc bench``: pyconc against the standard library, measured in the same run.

Every row compares a pyconc operation with what a Python programmer would otherwise use, on the same machine,
in the same run, with the same start method (fork, unless a row says otherwise). Figures are medians of several
repetitions; the ratio column is the only number that means much across machines.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import pyconc

from ._measure import Row, fmt, median_rate, median_time, print_table, row

FORK = mp.get_context("fork")


# ---- counters ---------------------------------------------------------------------------------------------------

def _incr_atomic(counter: pyconc.AtomicInt64, n: int) -> None:
    incr = counter.incr
    for _ in range(n):
        incr()


def _incr_mp_value(value: Any, n: int) -> None:
    lock = value.get_lock()
    for _ in range(n):
        with lock:
            value.value += 1


def _two_procs(target: Callable[[Any, int], None], obj: Any, n: int) -> float:
    """Runs target(obj, n) in two forked processes at once; returns the total rate (ops/s)."""
    start = FORK.Barrier(3)

    def run() -> None:
        start.wait()
        target(obj, n)

    procs = [FORK.Process(target=run) for _ in range(2)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    for p in procs:
        p.join(300)
    elapsed = time.perf_counter() - t0
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError("benchmark worker failed")
    return 2 * n / elapsed


def bench_counters(quick: bool) -> list[Row]:
    rows: list[Row] = []
    n_fast = 300_000 if quick else 2_000_000
    n_slow = 100_000 if quick else 500_000
    repeat = 3 if quick else 5

    # The floor: one C method call from Python.
    probe = (12345).bit_length

    def c_calls(n: int) -> None:
        for _ in range(n):
            probe()

    floor = median_rate(c_calls, n_fast, repeat)

    a = pyconc.AtomicInt64()
    ours = median_rate(lambda n: _incr_atomic(a, n), n_fast, repeat)
    v = mp.Value("q", 0)
    theirs = median_rate(lambda n: _incr_mp_value(v, n), n_slow, repeat)
    rows.append(row("counters", "incr, 1 process", ours, theirs, "incr/s", "mp.Value + get_lock()"))
    rows.append(row("counters", "incr vs a plain C method call", ours, floor, "calls/s", "C method call (floor)",
                     note="ratio >= 0.5 means within 2x of the floor"))

    a.set(0)
    v.value = 0
    ours2 = statistics.median(_two_procs(_incr_atomic, a, n_fast // 2) for _ in range(repeat))
    theirs2 = statistics.median(_two_procs(_incr_mp_value, v, n_slow // 2) for _ in range(repeat))
    exact = a.get() == repeat * n_fast and v.value == repeat * n_slow
    rows.append(row("counters", "incr, 2 processes (total)", ours2, theirs2, "incr/s", "mp.Value + get_lock()",
                     note="final counts exact" if exact else "COUNT MISMATCH"))
    if not exact:
        raise AssertionError(f"lost updates: {a.get()} vs {repeat * n_fast}, {v.value} vs {repeat * n_slow}")
    return rows


# ---- arrays -----------------------------------------------------------------------------------------------------

def _attach_pyconc(handle: bytes, q: Any) -> None:
    import numpy as np

    t0 = time.perf_counter()
    arr = pickle.loads(handle)
    view = np.frombuffer(arr, dtype="d")
    q.put((time.perf_counter() - t0, float(view[:1000].sum())))


def _attach_shm(name: str, n: int, q: Any) -> None:
    from multiprocessing import shared_memory

    import numpy as np

    t0 = time.perf_counter()
    shm = shared_memory.SharedMemory(name=name)
    view = np.ndarray((n,), dtype="d", buffer=shm.buf)
    elapsed = time.perf_counter() - t0
    total = float(view[:1000].sum())
    del view
    shm.close()
    q.put((elapsed, total))


def _child_attach_time(target: Callable[..., None], args: tuple[Any, ...]) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    elapsed: float = q.get(timeout=120)[0]
    p.join(120)
    return elapsed


def bench_arrays(quick: bool) -> list[Row]:
    try:
        import numpy as np
    except ImportError:
        print("  (numpy not installed: array rows skipped)")
        return []
    from multiprocessing import shared_memory

    rows: list[Row] = []
    n = 10_000_000
    repeat = 3 if quick else 5

    def make_raw() -> None:
        arr = pyconc.RawArray("d", n, reserve=False)
        del arr

    def make_synced() -> None:
        arr = pyconc.Array("d", n)  # with its lock, like mp.Array's default; pages reserved in /dev/shm
        del arr

    def make_synced_unreserved() -> None:
        arr = pyconc.Array("d", n, reserve=False)
        del arr

    def make_mp() -> None:
        arr = mp.Array("d", n)
        del arr

    def make_shm() -> None:
        shm = shared_memory.SharedMemory(create=True, size=8 * n)
        shm.close()
        shm.unlink()

    t_raw = median_time(make_raw, 20 * repeat)
    t_synced = median_time(make_synced, repeat)
    t_unreserved = median_time(make_synced_unreserved, 20 * repeat)
    t_mp = median_time(make_mp, 2 if quick else 3)
    t_shm = median_time(make_shm, 20 * repeat)
    rows.append(row("arrays", "create Array('d', 10M)", t_synced * 1e3, t_mp * 1e3, "ms", "mp.Array",
                     higher_is_better=False, note="both with their lock, both commit the 80 MB"))
    rows.append(row("arrays", "create Array('d', 10M, reserve=False)", t_unreserved * 1e3, t_shm * 1e3, "ms",
                     "SharedMemory", higher_is_better=False, note="neither commits memory; then freed unused"))
    rows.append(row("arrays", "create RawArray('d', 10M, reserve=False)", t_raw * 1e3, t_shm * 1e3, "ms",
                     "SharedMemory", higher_is_better=False, note="then freed unused"))

    def ready_ours() -> None:
        arr = pyconc.RawArray("d", n, reserve=False)
        view = np.frombuffer(arr, dtype="d")
        view[0] = 1.0
        del view, arr

    def ready_shm() -> None:
        shm = shared_memory.SharedMemory(create=True, size=8 * n)
        view = np.ndarray((n,), dtype="d", buffer=shm.buf)
        view[0] = 1.0
        del view
        shm.close()
        shm.unlink()

    rows.append(row("arrays", "create + numpy view + first write", median_time(ready_ours, repeat) * 1e3,
                     median_time(ready_shm, repeat) * 1e3, "ms", "SharedMemory", higher_is_better=False))

    arr = pyconc.Array("d", n, lock=False) if hasattr(pyconc, "Array") else pyconc.RawArray("d", n)
    ours_view = np.frombuffer(arr, dtype="d")
    ours_view[:] = 1.0
    shm = shared_memory.SharedMemory(create=True, size=8 * n)
    try:
        shm_view = np.ndarray((n,), dtype="d", buffer=shm.buf)
        shm_view[:] = 1.0
        t_attach_ours = statistics.median(
            _child_attach_time(_attach_pyconc, (pickle.dumps(arr),)) for _ in range(repeat))
        t_attach_shm = statistics.median(
            _child_attach_time(_attach_shm, (shm.name, n)) for _ in range(repeat))
        rows.append(row("arrays", "attach in a spawned child", t_attach_ours * 1e3, t_attach_shm * 1e3, "ms",
                         "SharedMemory", higher_is_better=False))

        def gbps(view: Any) -> float:
            return 8 * n / median_time(view.sum, repeat) / 1e9

        rows.append(row("arrays", "numpy sum over shared memory", gbps(ours_view), gbps(shm_view), "GB/s",
                         "SharedMemory"))
        del shm_view
    finally:
        shm.close()
        shm.unlink()
    del ours_view, arr
    return rows


# ---- queues -----------------------------------------------------------------------------------------------------

def _payload(kind: str) -> int | bytes:
    payloads: dict[str, int | bytes] = {
        "int": 12345, "100 B": b"x" * 100, "10 KB": b"x" * 10_000, "1 MB": b"x" * 1_000_000,
    }
    return payloads[kind]


def _produce(
    make_put: Callable[[], Callable[[Any], object]], n: int, payload: Any, start: Any, producers_done: Any
) -> None:
    put = make_put()
    start.wait()
    for _ in range(n):
        put(payload)
    producers_done.release()


class _Impl:
    """One queue implementation under test: how to create it, put, get, get many."""

    def __init__(
        self,
        name: str,
        create: Callable[[], Any],
        put: Callable[[Any], Callable[[Any], object]],
        get: Callable[[Any], Callable[[], Any]],
        get_many: Callable[[Any], Callable[[], list[Any]]] | None = None,
        close: Callable[[Any], object] | None = None,
    ) -> None:
        self.name, self.create, self.put, self.get, self.get_many, self.close = name, create, put, get, get_many, close


def _impls() -> list[_Impl]:
    impls = [
        _Impl("pyconc.Queue", lambda: pyconc.Queue(), lambda q: q.put, lambda q: q.get,
              lambda q: (lambda: q.get_many(max_messages=256))),
        _Impl("mp.Queue", lambda: FORK.Queue(), lambda q: q.put, lambda q: q.get),
        _Impl("mp.SimpleQueue", lambda: FORK.SimpleQueue(), lambda q: q.put, lambda q: q.get),
    ]
    try:
        import faster_fifo

        impls.append(_Impl(
            "faster-fifo", lambda: faster_fifo.Queue(max_size_bytes=64 << 20), lambda q: q.put,
            lambda q: q.get, lambda q: (lambda: q.get_many(max_messages_to_get=1000))))
    except ImportError:
        pass
    return impls


def _throughput(impl: _Impl, payload: Any, n: int, producers: int = 1, many: bool = False) -> float:
    """Messages per second from `producers` forked producers to this process, wall time from the start signal
    to the last message."""
    q = impl.create()
    start = FORK.Event()
    done = FORK.Semaphore(0)
    per = n // producers
    procs = [FORK.Process(target=_produce, args=(lambda: impl.put(q), per, payload, start, done))
             for _ in range(producers)]
    for p in procs:
        p.start()
    if many:
        if impl.get_many is None:
            raise ValueError(f"{impl.name} has no get_many")
        get = impl.get_many(q)
    else:
        get = impl.get(q)
    time.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    got = 0
    total = per * producers
    if many:
        while got < total:
            got += len(get())
    else:
        for _ in range(total):
            get()
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(120)
    return total / elapsed


def _pipe_throughput(payload: Any, n: int) -> float:
    r, w = FORK.Pipe(duplex=False)
    start = FORK.Event()
    done = FORK.Semaphore(0)
    p = FORK.Process(target=_produce, args=(lambda: w.send, n, payload, start, done))
    p.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    for _ in range(n):
        r.recv()
    elapsed = time.perf_counter() - t0
    p.join(120)
    return n / elapsed


def _echo(make_queues: Callable[[], tuple[Any, Any]], n: int) -> None:
    a, b = make_queues()
    for _ in range(n):
        b.put(a.get())


def _pingpong(impl: _Impl, n: int) -> tuple[float, float]:
    """Round trips: this process puts into `a`, the child echoes into `b`."""
    a, b = impl.create(), impl.create()
    p = FORK.Process(target=lambda: _echo(lambda: (a, b), n))
    p.start()
    put, get = impl.put(a), impl.get(b)
    for _ in range(200):  # warm-up
        put(1)
        get()
    samples: list[float] = []
    for _ in range(n - 200):
        t0 = time.perf_counter()
        put(1)
        get()
        samples.append(time.perf_counter() - t0)
    p.join(120)
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def bench_queues(quick: bool) -> list[Row]:
    rows: list[Row] = []
    scale = 0.25 if quick else 1.0
    sizes = {"int": 400_000, "100 B": 300_000, "10 KB": 100_000, "1 MB": 1_500}
    impls = _impls()
    ours = impls[0]
    for kind, n in sizes.items():
        n = max(200, int(n * scale))
        payload = _payload(kind)
        mine = _throughput(ours, payload, n)
        others = [(impl.name, _throughput(impl, payload, max(200, n // 4))) for impl in impls[1:]]
        others.append(("mp.Pipe", _pipe_throughput(payload, max(200, n // 4))))
        best_name, best = max(others, key=lambda x: x[1])
        rows.append(row("queues", f"1P->1C {kind}", mine, best, "msg/s", best_name,
                         note="vs the best of " + ", ".join(f"{k} {fmt(v, 'msg/s')}" for k, v in others)))
        if kind in ("int", "10 KB"):
            mine2 = _throughput(ours, payload, n, producers=2)
            theirs2 = _throughput(impls[1], payload, max(200, n // 4), producers=2)
            rows.append(row("queues", f"2P->1C {kind}", mine2, theirs2, "msg/s", "mp.Queue"))
        if kind == "int":
            many = _throughput(ours, payload, n, many=True)
            rows.append(row("queues", "1P->1C int, get_many", many, best, "msg/s", best_name))
    n = 2_000 if quick else 20_000
    p50, p99 = _pingpong(ours, n)
    base = [(impl.name, _pingpong(impl, max(400, n // 4))) for impl in impls[1:2]]
    for name, (b50, b99) in base:
        rows.append(row("queues", "ping-pong round trip p50", p50, b50, "µs", name, higher_is_better=False))
        rows.append(row("queues", "ping-pong round trip p99", p99, b99, "µs", name, higher_is_better=False))
    return rows


def bench_sync(quick: bool) -> list[Row]:
    from . import bench_sync as bs

    return bs.run(quick)


def bench_dict(quick: bool) -> list[Row]:
    from . import bench_dict as bd

    return bd.run(quick)


def bench_deque(quick: bool) -> list[Row]:
    from . import bench_deque as bq

    return bq.run(quick)


def bench_asyncio(quick: bool) -> list[Row]:
    from . import bench_aio as ba

    return ba.run(quick)


def bench_pool(quick: bool) -> list[Row]:
    from . import bench_pool as bp

    rows: list[Row] = bp.run(quick)
    return rows


GROUPS: dict[str, Callable[[bool], list[Row]]] = {
    "counters": bench_counters,
    "arrays": bench_arrays,
    "sync": bench_sync,
    "queues": bench_queues,
    "dict": bench_dict,
    "deque": bench_deque,
    "asyncio": bench_asyncio,
    "pool": bench_pool,
}


def main(args: argparse.Namespace) -> int:
    only = [g for g in args.only.split(",") if g] or list(GROUPS)
    unknown = [g for g in only if g not in GROUPS]
    if unknown:
        print(f"unknown group(s) {unknown}; choose from {list(GROUPS)}", file=sys.stderr)
        return 2
    print(f"pyconc {pyconc.__version__} bench: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{'quick' if args.quick else 'full'} run; ratios > 1 mean pyconc is better")
    rows: list[Row] = []
    for g in only:
        print(f"running {g} ...", flush=True)
        rows.extend(GROUPS[g](args.quick))
    print_table(rows)
    return 0
