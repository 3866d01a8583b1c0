"""Benchmarks of `ConcurrentDict` (the `dict` group of `python -m pyconc bench`).

Method: one process, a tight Python loop over bound methods (`d.__getitem__` etc.) on 1,000 str keys with
100-byte bytes values (100,000 keys for the large-set row); the median of several runs. Baselines from the same
run: `multiprocessing.Manager().dict()` (a socket round trip per operation), a plain `dict` (the floor: no
sharing at all), and UltraDict when it is installed (skipped otherwise). The two-process row runs two processes
(fork) writing disjoint keys and compares their aggregate rate with one process doing the same alone.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from collections.abc import Sequence
from typing import Any

from ..dicts import ConcurrentDict
from ._measure import Row, row

VALUE = b"v" * 100


def _rates(d: Any, keys: Sequence[Any], repeat: int) -> dict[str, float]:
    """ops/s of get, set, in, del over `keys` (d must hold them with VALUE)."""
    get, setitem, delitem = d.__getitem__, d.__setitem__, d.__delitem__
    contains = d.__contains__
    out: dict[str, list[float]] = {"get": [], "set": [], "in": [], "del": []}
    n = len(keys)
    for _ in range(repeat):
        t0 = time.perf_counter()
        for k in keys:
            get(k)
        out["get"].append(n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for k in keys:
            setitem(k, VALUE)
        out["set"].append(n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for k in keys:
            contains(k)
        out["in"].append(n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for k in keys:
            delitem(k)
        out["del"].append(n / (time.perf_counter() - t0))
        for k in keys:
            setitem(k, VALUE)
    return {op: statistics.median(v) for op, v in out.items()}


def _fill(d: Any, keys: Sequence[Any]) -> None:
    for k in keys:
        d[k] = VALUE


def _set_rate(d: Any, keys: Sequence[Any], repeat: int) -> float:
    setitem = d.__setitem__
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for k in keys:
            setitem(k, VALUE)
        rates.append(len(keys) / (time.perf_counter() - t0))
    return statistics.median(rates)


def _ultradict() -> Any:
    try:
        from UltraDict import UltraDict
    except Exception:
        return None
    return UltraDict


def _writer(d: ConcurrentDict, wid: int, keys: Sequence[Any], rounds: int, barrier: Any, q: Any) -> None:
    setitem = d.__setitem__
    mine = [(wid, k) for k in keys]
    for k in mine:  # insert first: the timed part overwrites, like the 1-process set row
        setitem(k, VALUE)
    barrier.wait()
    t0 = time.perf_counter()
    for _ in range(rounds):
        for k in mine:
            setitem(k, VALUE)
    q.put((t0, time.perf_counter()))


def _parallel(nprocs: int, keys: Sequence[Any], rounds: int) -> float:
    ctx = mp.get_context("fork")
    d = ConcurrentDict()
    barrier = ctx.Barrier(nprocs)
    q = ctx.Queue()
    ps = [ctx.Process(target=_writer, args=(d, i, keys, rounds, barrier, q)) for i in range(nprocs)]
    for p in ps:
        p.start()
    spans: list[tuple[float, float]] = [q.get(timeout=120) for _ in ps]
    for p in ps:
        p.join(30)
    d.clear()
    return nprocs * rounds * len(keys) / (max(e for _, e in spans) - min(s for s, _ in spans))


def run(quick: bool = False) -> list[Row]:
    repeat = 3 if quick else 7
    keys = [f"key-{i}" for i in range(1000)]
    rows: list[Row] = []

    d = ConcurrentDict()
    _fill(d, keys)
    ours = _rates(d, keys, repeat)
    plain: dict[str, bytes] = {}
    _fill(plain, keys)
    floor = _rates(plain, keys, repeat)

    with mp.Manager() as m:
        md = m.dict()
        mkeys = keys[: 200 if quick else 1000]
        _fill(md, mkeys)
        theirs = _rates(md, mkeys, 1 if quick else 2)

    for op in ("get", "set", "in", "del"):
        rows.append(row("dict", f"{op}, 1k keys, 100 B values", ours[op], theirs[op], "ops/s", "Manager().dict()"))
        rows.append(row("dict", f"{op}, 1k keys (floor)", ours[op], floor[op], "ops/s", "dict",
                         note="plain dict: not shared"))

    UltraDict = _ultradict()
    if UltraDict is not None:
        try:
            ud = UltraDict(buffer_size=16 << 20)
            _fill(ud, keys)
            u = _rates(ud, keys, repeat)
            for op in ("get", "set"):
                rows.append(row("dict", f"{op}, 1k keys (UltraDict)", ours[op], u[op], "ops/s", "UltraDict"))
            ud.unlink()
        except Exception as e:  # pragma: no cover - optional comparison
            rows.append(row("dict", "UltraDict", None, None, "ops/s", "UltraDict", note=f"failed: {e}"))
    d.clear()

    big = [f"key-{i}" for i in range(100_000 if not quick else 30_000)]
    d2 = ConcurrentDict()
    t0 = time.perf_counter()
    _fill(d2, big)
    insert_ours = len(big) / (time.perf_counter() - t0)
    big_ours = _set_rate(d2, big, 3 if not quick else 1)
    plain2: dict[str, bytes] = {}
    _fill(plain2, big)
    big_floor = _set_rate(plain2, big, 3 if not quick else 1)
    plain3: dict[str, bytes] = {}
    t0 = time.perf_counter()
    _fill(plain3, big)
    insert_floor = len(big) / (time.perf_counter() - t0)
    rows.append(row("dict", f"insert {len(big) // 1000}k new keys", insert_ours, insert_floor, "ops/s", "dict",
                     note="plain dict: not shared; includes table growth"))
    rows.append(row("dict", f"set, {len(big) // 1000}k keys", big_ours, big_floor, "ops/s", "dict",
                     note="plain dict: not shared"))
    d2.clear()
    del d2

    rounds = 20 if quick else 100
    runs = 1 if quick else 3
    one = statistics.median(_parallel(1, keys, rounds) for _ in range(runs))
    two = statistics.median(_parallel(2, keys, rounds) for _ in range(runs))
    rows.append(row("dict", "set, 2 processes on disjoint keys", two, one, "ops/s", "1 process",
                     note="aggregate rate; fork"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
