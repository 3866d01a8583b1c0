"""Stress test of `pyconc.Pool`: maps of every kind while workers are SIGKILLed at random moments.

Runs rounds of a chunksize=1 map, an adaptively chunked map, an unordered imap and a burst of `apply_async`
calls, each result checked against the input. With `kill=True` a thread SIGKILLs a random worker every few
milliseconds (between tasks, mid-task, mid-queue-operation, while it starts), and the pool has enough retries
that every item must still come back exactly once, in place. Ends by checking that no worker and no segment
outlives the pool.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import threading
import time

TYPE_CHECKING = False  # a type checker takes it as true
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _square(x: int) -> int:
    """x * x after ~20 us of work, so that kills land in tasks as well as between them."""
    end = time.perf_counter() + 20e-6
    while time.perf_counter() < end:
        pass
    return x * x


def run_pool(
    workers: int = 4, items: int = 20000, start_method: str = "fork", kill: bool = False, seed: int | None = None,
    timeout: float = 300.0, out: Callable[[str], object] = print,
) -> tuple[bool, dict[str, Any]]:
    """Runs the stress test; returns `(ok, result)`."""
    import pyconc

    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    result: dict[str, Any] = {
        "workers": workers, "items": items, "start_method": start_method, "kill": kill, "seed": seed,
        "errors": [], "kills": 0, "rounds": 0,
    }
    ctx = mp.get_context(start_method)
    pool = pyconc.Pool(workers, context=ctx, max_retries=1 << 20)
    stop = threading.Event()

    def killer() -> None:
        krng = random.Random(seed + 1)
        while not stop.wait(krng.uniform(0.002, 0.03)):
            # Only workers past their start-up: a spawned worker takes ~0.1 s to start, and killing it before it
            # ever runs would starve the pool rather than stress it.
            pids = [w["pid"] for w in pool.stats()["workers"] if w["pid"] and w["state"] != "starting"]
            if pids:
                try:
                    os.kill(krng.choice(pids), signal.SIGKILL)
                    result["kills"] += 1
                except ProcessLookupError:
                    pass

    th = threading.Thread(target=killer, daemon=True) if kill else None
    t0 = time.monotonic()
    pids = set()
    try:
        if th is not None:
            th.start()
        n = max(100, items // 4)
        while time.monotonic() - t0 < timeout / 3 and result["rounds"] < 3:
            expect = [x * x for x in range(n)]
            checks: dict[str, Callable[[], list[int]]] = {
                "map chunksize=1": lambda: pool.map(_square, range(n), chunksize=1),
                "map adaptive": lambda: pool.map(_square, range(items)),
                "imap_unordered": lambda: sorted(pool.imap_unordered(_square, iter(range(n)), buffersize=256)),
                "apply_async": lambda: [r.get(timeout) for r in [pool.apply_async(_square, (i,)) for i in range(n)]],
            }
            for name, fn in checks.items():
                got = fn()
                want = [x * x for x in range(items)] if name == "map adaptive" else expect
                if got != want:
                    result["errors"].append(f"{name}: wrong results (round {result['rounds']})")
            pids |= {w["pid"] for w in pool.stats()["workers"] if w["pid"]}
            result["rounds"] += 1
            n = rng.randrange(max(100, items // 8), max(101, items // 2))
    finally:
        stop.set()
        if th is not None:
            th.join(5)
        stats = pool.stats()
        pool.terminate()
        pool.join()
    result["seconds"] = time.monotonic() - t0
    result["crashed"] = stats["crashed"]
    result["retried"] = stats["retried"]
    leftover = [p for p in pids if _alive(p)]
    if leftover:
        result["errors"].append(f"workers still alive after terminate: {leftover}")
    ok = not result["errors"]
    out(f"pool stress: {workers} workers, {start_method}, {result['rounds']} rounds in {result['seconds']:.1f} s, "
        f"{result['kills']} kills, {result['crashed']} tasks hit, {result['retried']} retried: "
        + ("OK" if ok else "FAILED: " + "; ".join(result["errors"])))
    return ok, result


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
