"""Synchronisation benchmarks: pyconc against multiprocessing, measured in the same run.

``run(quick) -> list[Row]``: one row per measurement, as ``_measure.row`` builds them (``ratio`` is how many
times better pyconc is: a throughput ratio, or a latency ratio mp/pyconc).

Method: processes are started with the fork context; both sides run the same Python loop; contended and
ping-pong figures are blocking waits (futexes for pyconc, POSIX semaphores for multiprocessing) between two
processes pinned to two different CPUs (``os.sched_setaffinity``; unpinned on a 1-CPU machine), so that the
"contended" lock really is contended and a wake-up crosses CPUs, as in the stdlib anchors. Lock pairs/s count
acquire+release pairs; the uncontended figure is the median of 5 alternating runs; ping-pong is the median round
trip of set/wait/clear between two Events; Barrier(2) is the mean time per round of two processes calling
``wait()`` in a loop. The lock loops are ``lock.acquire(); lock.release()`` in a plain ``for`` loop. Where the
two processes run (same CPU or not) changes the cross-process figures several-fold on a small VM (the README
also gives same-CPU figures): compare ratios from one run.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import synchronize as _sync
from ._measure import Row, print_table, row

_CTX = mp.get_context("fork")


def _cpus() -> tuple[int, int] | None:
    """Two distinct CPUs to pin the two processes of a cross-process measurement to (None if only one)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    """Pins the calling process to `cpu` for the duration."""
    if cpu is None:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def _lock_loop(lock: Any, n: int) -> None:
    # Written as users write it (attribute calls, not pre-bound methods).
    for _ in range(n):
        lock.acquire()
        lock.release()


def _rate(lock: Any, n: int) -> float:
    t0 = time.perf_counter()
    _lock_loop(lock, n)
    return n / (time.perf_counter() - t0)


def _uncontended(ours: Any, theirs: Any, n: int, repeat: int = 5) -> tuple[float, float]:
    """Medians of `repeat` runs, alternating the two locks so that machine noise hits both alike."""
    _lock_loop(ours, n // 10)
    _lock_loop(theirs, n // 10)
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeat):
        a.append(_rate(ours, n))
        b.append(_rate(theirs, n))
    return statistics.median(a), statistics.median(b)


def _contender(lock: Any, go: Any, n: int, done: Any, cpu: int | None) -> None:
    _pin(cpu)
    go.wait()
    _lock_loop(lock, n)
    done.put(time.perf_counter())


def _contended(lock: Any, n: int, Event: Callable[[], Any]) -> float:
    go = Event()
    done = _CTX.Queue()
    cpus: tuple[int | None, int | None] = _cpus() or (None, None)
    procs = [_CTX.Process(target=_contender, args=(lock, go, n, done, cpu)) for cpu in cpus]
    for p in procs:
        p.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    go.set()
    ends: list[float] = [done.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return 2 * n / (max(ends) - t0)


def _ponger(ping: Any, pong: Any, rounds: int, cpu: int | None = None) -> None:
    _pin(cpu)
    for _ in range(rounds):
        ping.wait()
        ping.clear()
        pong.set()


def _ping_pong(Event: Callable[[], Any], rounds: int) -> float:
    ping, pong = Event(), Event()
    cpus: tuple[int | None, int | None] = _cpus() or (None, None)
    p = _CTX.Process(target=_ponger, args=(ping, pong, rounds, cpus[1]))
    p.start()
    times: list[float] = []
    with _pinned(cpus[0]):
        for _ in range(rounds):
            t0 = time.perf_counter()
            ping.set()
            pong.wait()
            pong.clear()
            times.append(time.perf_counter() - t0)
    p.join(30)
    return statistics.median(times[rounds // 10 :]) * 1e6


def _barrier_party(b: Any, rounds: int, cpu: int | None = None) -> None:
    _pin(cpu)
    for _ in range(rounds):
        b.wait()


def _barrier_round(Barrier: Callable[[int], Any], rounds: int) -> float:
    b = Barrier(2)
    cpus: tuple[int | None, int | None] = _cpus() or (None, None)
    p = _CTX.Process(target=_barrier_party, args=(b, rounds + 20, cpus[1]))
    p.start()
    with _pinned(cpus[0]):
        for _ in range(20):
            b.wait()
        t0 = time.perf_counter()
        for _ in range(rounds):
            b.wait()
        dt = time.perf_counter() - t0
    p.join(30)
    return dt / rounds * 1e6


def run(quick: bool = False) -> list[Row]:
    """Runs the sync benchmarks; returns the rows."""
    scale = 1 if quick else 5
    rows: list[Row] = []
    ours, theirs = _uncontended(_sync.Lock(), _CTX.Lock(), 200_000 * scale)
    rows.append(row("sync", "Lock acquire+release, 1 process", ours, theirs, "pairs/s", "multiprocessing"))
    n = 100_000 * scale
    rows.append(
        row(
            "sync",
            "Lock acquire+release, 2 processes contending (total)",
            _contended(_sync.Lock(), n, _sync.Event),
            _contended(_CTX.Lock(), n, _CTX.Event),
            "pairs/s",
            "multiprocessing",
        )
    )
    rounds = 1000 * scale
    rows.append(
        row(
            "sync",
            "Event set/wait ping-pong, 2 processes (median round trip)",
            _ping_pong(_sync.Event, rounds),
            _ping_pong(_CTX.Event, rounds),
            "µs",
            "multiprocessing",
            higher_is_better=False,
        )
    )
    rows.append(
        row(
            "sync",
            "Barrier(2) round, 2 processes",
            _barrier_round(_sync.Barrier, rounds),
            _barrier_round(_CTX.Barrier, rounds),
            "µs",
            "multiprocessing",
            higher_is_better=False,
        )
    )
    return rows


if __name__ == "__main__":
    import sys

    print_table(run(quick="--quick" in sys.argv))
