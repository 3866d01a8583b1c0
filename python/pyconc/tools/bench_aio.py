"""asyncio benchmarks: the bridge every ``*_async`` method waits through (``pyconc.aio``).

``run(quick) -> list[Row]`` (rows for ``bench.py``).

Method:

* *fed consumers*: 500 coroutines of one loop await ``get_async`` on one queue while a forked process puts 500
  items, one per 0.5 ms (``time.sleep`` paced against a schedule, so the producer's own time is ~0.25 s plus its
  oversleeps; it measures that time itself). The row compares the consumers' wall time, from the producer's
  first put to the last coroutine's return, with the producer's own time: 1.0x means the consumers kept up.
  The CPU time the consuming process spends meanwhile (``time.process_time``, all its threads) is the cost.
* *loop lag*: a ticker coroutine sleeps 1 ms at a time during the fed-consumers run; the rows are its worst and
  99th-percentile lateness, against the same ticker on an idle loop in the same run (the loop's timer
  granularity, about 1 ms, and the machine's noise are in both); and the worst CPU time the loop thread itself
  spent between two ticks (``time.thread_time``), which is the loop's own stall without the time other
  processes held the CPU.
* *many waiters*: 10,000 coroutines await 50 queues (``get_async``) and 50 held locks (``async with``) at once;
  rows: the OS threads of the process while they wait (``/proc/self/task``: the main thread, the waker, and
  whatever earlier rows left, e.g. the loop's default executor), and the time to serve them all once the queues
  are filled and the locks released.
* *hand-offs*: 50 coroutines of one loop take a pyconc ``Lock`` in turn (``async with``, awaiting once inside),
  against ``asyncio.Lock``; a release made on the loop thread lets the next waiter of that loop try at once.
* *uncontended*: ``async with`` on a pyconc ``ProcessSemaphore`` against ``asyncio.Semaphore`` in one loop.

Runs with any pyconc build that has ``get_async`` (so a build from before the bridge can be measured with the
same file: ``python path/to/bench_aio.py``).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import pyconc

from ._measure import Row, row

_CTX = mp.get_context("fork")


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _producer(q: pyconc.Queue, start: Any, n: int, gap: float, own_ns: pyconc.AtomicInt64) -> None:
    start.wait()
    t0 = time.perf_counter()
    for i in range(n):
        q.put(i)
        # Paced against the schedule, not the previous put: oversleeping once does not slow the rest.
        delay = t0 + (i + 1) * gap - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    own_ns.set(int((time.perf_counter() - t0) * 1e9))


class _Ticker:
    """Worst lateness of 1 ms sleeps on the running loop."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_cpu = 0.0
        self.lags: list[float] = []
        self._task: asyncio.Future[None] | None = None

    async def _run(self) -> None:
        while True:
            t, c = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.001)
            lag = time.perf_counter() - t - 0.001
            self.lags.append(lag)
            self.worst = max(self.worst, lag)
            # CPU time the loop thread itself spent between two ticks: its own stalls, without the time other
            # processes took the CPU away.
            self.worst_cpu = max(self.worst_cpu, time.thread_time() - c)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task = self._task
        assert task is not None, "stop() before start()"
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def _fed_consumers(n: int, gap: float) -> tuple[float, float, float, float, float, float]:
    q = pyconc.Queue()
    start = _CTX.Event()
    own_ns = pyconc.AtomicInt64()
    p = _CTX.Process(target=_producer, args=(q, start, n, gap, own_ns))
    p.start()
    tasks = [asyncio.ensure_future(q.get_async(timeout=60)) for _ in range(n)]
    await asyncio.sleep(0.2)  # every consumer is waiting
    # Started now: starting 500 coroutines at once takes the loop a few ms whatever they wait on.
    ticker = _Ticker()
    ticker.start()
    await asyncio.sleep(0.05)
    start.set()
    t0, c0 = time.perf_counter(), time.process_time()
    got = await asyncio.gather(*tasks)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await ticker.stop()
    await asyncio.get_running_loop().run_in_executor(None, p.join, 60)
    if sorted(got) != list(range(n)) or p.exitcode != 0:
        raise RuntimeError("fed consumers: wrong items or producer failed")
    return elapsed, own_ns.get() / 1e9, ticker.worst, _p99(ticker.lags), cpu, ticker.worst_cpu


def _p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else 0.0


async def _idle_lag(seconds: float) -> tuple[float, float, float]:
    ticker = _Ticker()
    ticker.start()
    await asyncio.sleep(seconds)
    await ticker.stop()
    return ticker.worst, _p99(ticker.lags), ticker.worst_cpu


async def _many_waiters(nq: int, nl: int, per: int) -> tuple[int, float]:
    queues = [pyconc.Queue() for _ in range(nq)]
    locks = [pyconc.Lock() for _ in range(nl)]
    for lock in locks:
        lock.acquire()

    async def hold(lock: pyconc.Lock) -> None:
        async with lock:
            pass

    tasks: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(q.get_async(timeout=120)) for q in queues for _ in range(per)
    ]
    tasks += [asyncio.ensure_future(hold(lock)) for lock in locks for _ in range(per)]
    await asyncio.sleep(0.5)
    threads = _os_threads()
    t0 = time.perf_counter()
    for q in queues:
        for i in range(per):
            q.put(i)
    for lock in locks:
        lock.release()
    await asyncio.gather(*tasks)
    return threads, time.perf_counter() - t0


async def _uncontended(n: int) -> tuple[float | None, float]:
    sem = pyconc.ProcessSemaphore(1) if hasattr(pyconc, "ProcessSemaphore") else None
    theirs = asyncio.Semaphore(1)

    async def loop(s: Any) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            async with s:
                pass
        return n / (time.perf_counter() - t0)

    ours = statistics.median([await loop(sem) for _ in range(3)]) if sem is not None else None
    base = statistics.median([await loop(theirs) for _ in range(3)])
    return ours, base


async def _handoffs(workers: int, rounds: int) -> tuple[float, float]:
    """Lock hand-offs between the coroutines of one loop that await inside the critical section."""

    async def rate(lock: Any) -> float:
        async def one() -> None:
            for _ in range(rounds):
                async with lock:
                    await asyncio.sleep(0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(workers)))
        return workers * rounds / (time.perf_counter() - t0)

    return await rate(pyconc.Lock()), await rate(asyncio.Lock())


def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    n, gap = 500, 0.0005
    reps = 1 if quick else 3
    results = [asyncio.run(_fed_consumers(n, gap)) for _ in range(reps)]
    elapsed = statistics.median(r[0] for r in results)
    own = statistics.median(r[1] for r in results)
    worst = max(r[2] for r in results)
    p99 = statistics.median(r[3] for r in results)
    cpu = statistics.median(r[4] for r in results)
    cpu_stall = max(r[5] for r in results)
    idle_worst, idle_p99, idle_cpu = asyncio.run(_idle_lag(1.0 if quick else 3.0))
    rows.append(row("asyncio", f"{n} get_async consumers fed by a process, 1 item/0.5 ms: wall time", elapsed,
                     own, "s", "the producer's own time", higher_is_better=False,
                     note="target: within 1.3x of the producer"))
    rows.append(row("asyncio", "  CPU time of the consuming process meanwhile", cpu, own, "s",
                     "the producer's own time", higher_is_better=False))
    rows.append(row("asyncio", "  event-loop lag meanwhile, worst", worst * 1e3, idle_worst * 1e3, "ms",
                     "idle loop", higher_is_better=False, note="target: < 2 ms; the idle loop shows the noise"))
    rows.append(row("asyncio", "  event-loop lag meanwhile, p99", p99 * 1e3, idle_p99 * 1e3, "ms", "idle loop",
                     higher_is_better=False))
    rows.append(row("asyncio", "  loop thread's own CPU time between two ticks, worst", cpu_stall * 1e3,
                     idle_cpu * 1e3, "ms", "idle loop", higher_is_better=False,
                     note="the loop's own stalls, without preemption by other processes"))
    per = 50 if quick else 100
    threads, serve = asyncio.run(_many_waiters(50, 50, per))
    total = 100 * per
    rows.append(row("asyncio", f"{total:,} coroutines awaiting 50 queues + 50 locks: OS threads of the process",
                     threads, None, "threads", "-", note="bounded: one waker thread per 127 words"))
    rows.append(row("asyncio", f"{total:,} coroutines: time to serve them all", serve * 1e3, None, "ms", "-"))
    ours, base = asyncio.run(_handoffs(50, 10 if quick else 40))
    rows.append(row("asyncio", "Lock hand-offs among 50 coroutines of one loop (await inside)", ours, base,
                     "hand-offs/s", "asyncio.Lock"))
    sem_ours, sem_base = asyncio.run(_uncontended(20_000 if quick else 100_000))
    rows.append(row("asyncio", "ProcessSemaphore async with, uncontended", sem_ours, sem_base, "ops/s",
                     "asyncio.Semaphore"))
    return rows


if __name__ == "__main__":
    for r in run(quick=False):
        print(r)
