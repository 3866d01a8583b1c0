"""``python -m pyconc bench --only pool``: pyconc.Pool / ProcessPoolExecutor against multiprocessing.Pool,
concurrent.futures.ProcessPoolExecutor, and loky, pebble and mpire when installed, in the same run.

Method: 2 workers, fork; every figure is the median of `repeat` runs, and the note gives the spread (min-max)
of pyconc's runs. Pools are started once per row and warmed up (one small map) before timing, except in the
start/stop row. Task functions that sleep (``time.sleep``) leave the CPUs to the pool's own processes; the
efficiency rows compare the measured wall time with the ideal (the sum of the tasks' own measured durations
divided by the number of workers).
"""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing as mp
import os
import signal
import statistics
import time

from ._measure import row

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

    from ._measure import Row

    #: A baseline library's pool: (map with chunksize 1, its own map or None, close).
    _Started = tuple[Callable[..., Any], Callable[..., Any] | None, Callable[[], object]]

WORKERS = 2
FORK = mp.get_context("fork")


def noop(x: Any) -> Any:
    return x


def sleep_for(seconds: float) -> float:
    t = time.perf_counter()
    time.sleep(seconds)
    return time.perf_counter() - t


def c_sleep(seconds: float) -> float:
    ctypes.CDLL(None).sleep(int(seconds))
    return seconds


def die(_: object = None) -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL")


def _median_spread(samples: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(samples), min(samples), max(samples)


def _spread_note(samples: Sequence[float], unit: str, fmt: str = "{:.3g}") -> str:
    if len(samples) < 2:
        return ""
    return f"pyconc runs {fmt.format(min(samples))}-{fmt.format(max(samples))} {unit}"


def _rate(run: Callable[[int], object], n: int, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        run(n)
        out.append(n / (time.perf_counter() - t))
    return out


def _optional_baselines() -> list[tuple[str, Callable[[], _Started]]]:
    """(name, start(n) -> (map_c1(fn, items), map_auto(fn, items) or None, close)) for installed libraries."""
    out: list[tuple[str, Callable[[], _Started]]] = []
    try:
        loky: Any = importlib.import_module("loky")  # optional, untyped: Any whether or not installed

        def loky_start() -> _Started:
            ex = loky.get_reusable_executor(max_workers=WORKERS, reuse=False)
            return (lambda fn, items: list(ex.map(fn, items, chunksize=1)), None, lambda: ex.shutdown(wait=True))

        out.append(("loky", loky_start))
    except ImportError:
        pass
    try:
        pebble: Any = importlib.import_module("pebble")  # optional, untyped: Any whether or not installed

        def pebble_start() -> _Started:
            p = pebble.ProcessPool(max_workers=WORKERS, context=FORK)
            return (lambda fn, items: list(p.map(fn, items, chunksize=1).result()), None,
                    lambda: (p.close(), p.join()))

        out.append(("pebble", pebble_start))
    except ImportError:
        pass
    try:
        mpire: Any = importlib.import_module("mpire")  # optional, untyped: Any whether or not installed

        def mpire_start() -> _Started:
            p = mpire.WorkerPool(n_jobs=WORKERS, start_method="fork")
            return (lambda fn, items: p.map(fn, items, chunk_size=1),
                    lambda fn, items: p.map(fn, items),
                    p.terminate)

        out.append(("mpire", mpire_start))
    except ImportError:
        pass
    return out


_LIFECYCLE = """
import json, multiprocessing as mp, sys, time
import pyconc
from pyconc.tools.bench_pool import noop
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    def once(make):
        t = time.perf_counter()
        p = make()
        p.apply(noop, (1,))
        p.close()
        p.join()
        return (time.perf_counter() - t) * 1e3
    once(lambda: pyconc.Pool(2, context=ctx))  # warm-up: imports, first mappings
    once(lambda: ctx.Pool(2))
    ours, theirs = [], []
    for _ in range(int(sys.argv[1])):
        ours.append(once(lambda: pyconc.Pool(2, context=ctx)))
        theirs.append(once(lambda: ctx.Pool(2)))
    print(json.dumps([ours, theirs]))
"""


def _lifecycle_in_child(n: int) -> tuple[list[float], list[float]]:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LIFECYCLE, str(n)], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"lifecycle benchmark failed: {out.stderr}")
    ours, theirs = json.loads(out.stdout.strip().splitlines()[-1])
    return ours, theirs


def run(quick: bool) -> list[Row]:
    import concurrent.futures as cf

    import pyconc

    rows: list[Row] = []
    repeat = 3 if quick else 5
    n1 = 5_000 if quick else 20_000
    nauto = 20_000 if quick else 200_000

    pool = pyconc.Pool(WORKERS, context=FORK)
    mpool = FORK.Pool(WORKERS)
    try:
        for p in (pool, mpool):
            p.map(noop, range(2000))

        # -- trivial tasks, chunksize=1
        ours = _rate(lambda n: pool.map(noop, range(n), chunksize=1), n1, repeat)
        theirs = _rate(lambda n: mpool.map(noop, range(n), chunksize=1), n1 // 2, repeat)
        others: list[tuple[str, float]] = []
        with cf.ProcessPoolExecutor(WORKERS, mp_context=FORK) as ppe:
            list(ppe.map(noop, range(200)))
            others.append(("ProcessPoolExecutor", statistics.median(
                _rate(lambda n: list(ppe.map(noop, range(n), chunksize=1)), max(500, n1 // 10), repeat))))
        autos: dict[str, float] = {}
        for name, start in _optional_baselines():
            c1, auto, close = start()
            try:
                c1(noop, range(100))
                others.append((name, statistics.median(_rate(lambda n: c1(noop, range(n)), max(500, n1 // 10),
                                                              repeat))))
                if auto is not None:
                    autos[name] = statistics.median(_rate(lambda n: auto(noop, range(n)), nauto // 4, repeat))
            finally:
                close()
        m = statistics.median(ours)
        note = _spread_note(ours, "tasks/s", "{:,.0f}")
        if others:
            note += "; also " + ", ".join(f"{k} {v:,.0f}/s ({m / v:.0f}x)" for k, v in others)
        rows.append(row("pool", "20k trivial tasks, chunksize=1" if not quick else "trivial tasks, chunksize=1",
                        m, statistics.median(theirs), "tasks/s", "mp.Pool", note=note))

        # -- default chunking
        ours = _rate(lambda n: pool.map(noop, range(n)), nauto, repeat)
        theirs = _rate(lambda n: mpool.map(noop, range(n)), nauto, repeat)
        m = statistics.median(ours)
        note = _spread_note(ours, "tasks/s", "{:,.0f}")
        if autos:
            note += "; also " + ", ".join(f"{k} auto {v:,.0f}/s ({m / v:.1f}x)" for k, v in autos.items())
        rows.append(row("pool", "trivial tasks, default chunking", m, statistics.median(theirs), "tasks/s",
                        "mp.Pool", note=note))

        # -- apply_async round trip
        def rt(p: Any, n: int) -> float:
            samples = []
            for i in range(n):
                t = time.perf_counter()
                p.apply_async(noop, (i,)).get()
                samples.append(time.perf_counter() - t)
            return statistics.median(samples) * 1e6

        nrt = 300 if quick else 2000
        ours = [rt(pool, nrt) for _ in range(repeat)]
        theirs = [rt(mpool, nrt) for _ in range(repeat)]
        rows.append(row("pool", "apply_async round trip (median)", statistics.median(ours), statistics.median(theirs),
                        "µs", "mp.Pool", higher_is_better=False, note=_spread_note(ours, "µs")))

        # -- 200 x 5 ms: efficiency
        def efficiency(p: Any, items: list[float], chunksize: int | None = None) -> float:
            t = time.perf_counter()
            durations = p.map(sleep_for, items, chunksize) if chunksize else p.map(sleep_for, items)
            wall = time.perf_counter() - t
            return float(sum(durations) / WORKERS) / wall

        items = [0.005] * (50 if quick else 200)
        ours = [efficiency(pool, items) for _ in range(repeat)]
        theirs = [efficiency(mpool, items) for _ in range(repeat)]
        rows.append(row("pool", f"{len(items)} x 5 ms tasks, efficiency", statistics.median(ours),
                        statistics.median(theirs), "of ideal", "mp.Pool", note=_spread_note(ours, "")))

        # -- skewed: 98% 0.1 ms, the last 2% 10 ms, default chunking
        n = 1000 if quick else 4000
        slow = n // 50
        skew = [0.0001] * (n - slow) + [0.01] * slow
        ours = [efficiency(pool, skew) for _ in range(repeat)]
        theirs = [efficiency(mpool, skew) for _ in range(repeat)]
        rows.append(row("pool", f"skewed {n:,} tasks (2% x 10 ms last), efficiency", statistics.median(ours),
                        statistics.median(theirs), "of ideal", "mp.Pool (default chunks)",
                        note=_spread_note(ours, "")))
    finally:
        pool.terminate()
        mpool.terminate()
        mpool.join()

    # -- start + first result + stop, fork: in a fresh interpreter (fork costs grow with the parent's memory, and
    #    this process has imported and started every baseline by now)
    ours, theirs = _lifecycle_in_child(repeat + 2)
    rows.append(row("pool", "start + first result + close/join, fork", statistics.median(ours),
                    statistics.median(theirs), "ms", "mp.Pool", higher_is_better=False,
                    note=_spread_note(ours, "ms") + "; fresh interpreter"))

    # -- a killed worker's task reported
    def crash_latency(p: pyconc.Pool) -> float:
        p.apply(noop, (1,))
        t = time.perf_counter()
        try:
            p.apply(die)
        except Exception:
            pass
        return (time.perf_counter() - t) * 1e3

    with pyconc.Pool(WORKERS, context=FORK) as p:
        ours = [crash_latency(p) for _ in range(repeat)]
    theirs = []
    for _ in range(repeat):
        with cf.ProcessPoolExecutor(WORKERS, mp_context=FORK) as ppe:
            ppe.submit(noop, 1).result()
            t = time.perf_counter()
            try:
                ppe.submit(die).result()
            except Exception:
                pass
            theirs.append((time.perf_counter() - t) * 1e3)
    rows.append(row("pool", "killed worker's task reported", statistics.median(ours), statistics.median(theirs),
                    "ms", "ProcessPoolExecutor (pool then broken)", higher_is_better=False,
                    note=_spread_note(ours, "ms") + "; mp.Pool hangs forever"))

    # -- a task stuck in a C call, timeout=1 s: reported after (ms beyond the timeout)
    limit = 0.5 if quick else 1.0
    with pyconc.Pool(WORKERS, context=FORK) as p:
        p.apply(noop, (1,))
        ours = []
        for _ in range(repeat):
            t = time.perf_counter()
            try:
                p.apply(c_sleep, (30,), timeout=limit)
            except TimeoutError:
                pass
            ours.append((time.perf_counter() - t - limit) * 1e3)
    last: float | None = None
    base = "pebble"
    try:
        import pebble

        with pebble.ProcessPool(max_workers=WORKERS, context=FORK) as pp:
            pp.schedule(noop, (1,)).result()
            t = time.perf_counter()
            try:
                pp.schedule(c_sleep, (30,), timeout=limit).result()
            except Exception:
                pass
            last = (time.perf_counter() - t - limit) * 1e3
    except ImportError:
        base = "pebble (not installed)"
    rows.append(row("pool", f"task in a C call, timeout={limit:g} s: reported after timeout +",
                    statistics.median(ours), last, "ms", base, higher_is_better=False,
                    note=_spread_note(ours, "ms")))
    return rows
