"""Benchmarks of `ConcurrentDeque` (the `deque` group of `python -m pyconc bench`).

Method: one process, a tight Python loop over bound methods: `append(x)` then `popleft()` (a FIFO) and
`appendleft(x)` then `popleft()` (a stack), with a small int and with a 100-byte bytes value, on a deque holding
100 items; `d[50]` indexing. Baselines from the same run: `multiprocessing.Manager().list()` used as a deque
(`append` / `pop(0)` / `insert(0, x)`: a socket round trip per operation) and a plain `collections.deque` (the
floor: no sharing at all). The two-process row: a forked producer appends N items as fast as it can while the
parent takes them with `popleft(block=True)`; the baseline polls a `Manager().list()` with `pop(0)`.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from typing import Any

from ..deques import ConcurrentDeque
from ._measure import Row, row

VALUE = b"v" * 100


def _pairs(push: Callable[[Any], object], pop: Callable[[], object], value: Any, n: int, repeat: int) -> float:
    """(push, pop) pairs per second, median of `repeat` runs of `n` pairs."""
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            push(value)
            pop()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def _index_rate(d: Any, n: int, repeat: int) -> float:
    get = d.__getitem__
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            get(50)
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def _shapes(d: Any, manager_list: bool) -> dict[str, tuple[Callable[[Any], object], Callable[[], object]]]:
    """name -> (push, pop) for a deque-like `d` (or a Manager list used as one)."""
    if manager_list:
        return {
            "append + popleft": (d.append, lambda: d.pop(0)),
            "appendleft + popleft": (lambda x: d.insert(0, x), lambda: d.pop(0)),
        }
    return {"append + popleft": (d.append, d.popleft), "appendleft + popleft": (d.appendleft, d.popleft)}


def _produce(d: Any, n: int, value: Any, start: Any) -> None:
    start.wait()
    for _ in range(n):
        d.append(value)


def _two_procs_ours(n: int, value: Any) -> float:
    ctx = mp.get_context("fork")
    d = ConcurrentDeque()
    start = ctx.Event()
    p = ctx.Process(target=_produce, args=(d, n, value, start))
    p.start()
    popleft = d.popleft
    t0 = time.perf_counter()
    start.set()
    for _ in range(n):
        popleft(True, 60)
    dt = time.perf_counter() - t0
    p.join(30)
    return n / dt


def _two_procs_manager(m: Any, n: int, value: Any) -> float:
    ctx = mp.get_context("fork")
    lst = m.list()
    start = ctx.Event()
    p = ctx.Process(target=_produce, args=(lst, n, value, start))
    p.start()
    t0 = time.perf_counter()
    start.set()
    got = 0
    while got < n:
        try:
            lst.pop(0)
            got += 1
        except IndexError:
            time.sleep(0)
    dt = time.perf_counter() - t0
    p.join(30)
    return n / dt


def run(quick: bool = False) -> list[Row]:
    repeat = 3 if quick else 7
    n = 20_000 if quick else 100_000
    rows: list[Row] = []
    ours_d = ConcurrentDeque(range(100))
    floor_d = collections.deque(range(100))
    with mp.Manager() as m:
        ml = m.list(range(100))
        mn = 500 if quick else 2000
        for label, value in (("int", 7), ("100 B", VALUE)):
            for shape, (push, pop) in _shapes(ours_d, False).items():
                ours = _pairs(push, pop, value, n, repeat)
                fpush, fpop = _shapes(floor_d, False)[shape]
                floor = _pairs(fpush, fpop, value, n, repeat)
                mpush, mpop = _shapes(ml, True)[shape]
                theirs = _pairs(mpush, mpop, value, mn, 1 if quick else 2)
                rows.append(row("deque", f"{shape}, {label}", ours, theirs, "pairs/s", "Manager().list()"))
                rows.append(row("deque", f"{shape}, {label} (floor)", ours, floor, "pairs/s", "collections.deque",
                                 note="not shared"))
        ours = _index_rate(ours_d, n, repeat)
        theirs = _index_rate(ml, mn, 1 if quick else 2)
        floor = _index_rate(floor_d, n, repeat)
        rows.append(row("deque", "d[50], 100 items", ours, theirs, "ops/s", "Manager().list()"))
        rows.append(row("deque", "d[50], 100 items (floor)", ours, floor, "ops/s", "collections.deque",
                         note="not shared"))
        tn = 50_000 if quick else 200_000
        runs = 1 if quick else 3
        ours = statistics.median(_two_procs_ours(tn, 7) for _ in range(runs))
        theirs = statistics.median(_two_procs_manager(m, tn // 20, 7) for _ in range(runs))
        rows.append(row("deque", "1 producer -> 1 consumer (popleft(block=True)), int", ours, theirs, "msg/s",
                         "Manager().list() polled", note="fork; 2 processes"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
