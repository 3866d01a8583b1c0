"""Stress test of `ConcurrentDict`: several processes mixing set/get/del/add with a verifiable final state.

Each worker process
  * adds 1 to random shared counters `("c", k)` and tallies locally how often it added to each;
  * sets, reads back and deletes its own keys `("own", worker, k)`, keeping a local model of them;
  * overwrites and reads shared keys `("s", k)` whose values are self-checking (`(writer, n, payload)` with
    `payload == bytes([n % 256]) * (n % 50)`), so a torn or mixed value is detected.
At the end each worker stores its tally and model in the dict. The parent then checks that every counter equals
the sum of the tallies exactly, that every worker's own keys equal its model, and that `len` matches iteration.

`kill=True` adds victim processes doing the same on keys of their own, SIGKILLed at random moments (possibly
holding a shard lock, in the middle of a write): the survivors' state must still check out exactly, and the
dict must stay fully readable.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

from ..dicts import ConcurrentDict

COUNTERS = 16
OWN_KEYS = 64
SHARED = 8


def _payload(n: int) -> bytes:
    return bytes([n % 256]) * (n % 50)


def _worker(d: ConcurrentDict, wid: int, ops: int, seed: int, victim: bool) -> None:
    rng = random.Random(seed * 1000 + wid)
    tally: dict[int, int] = {}
    model: dict[int, Any] = {}
    prefix = "victim" if victim else "own"
    cprefix = "vc" if victim else "c"
    for n in range(ops):
        r = rng.random()
        if r < 0.3:
            k = rng.randrange(COUNTERS)
            d.add((cprefix, k), 1)
            tally[k] = tally.get(k, 0) + 1
        elif r < 0.55:
            k = rng.randrange(OWN_KEYS)
            v = (wid, n, "x" * (n % 40))
            d[(prefix, wid, k)] = v
            model[k] = v
        elif r < 0.7:
            k = rng.randrange(OWN_KEYS)
            got = d.get((prefix, wid, k))
            if got != model.get(k):
                raise AssertionError(f"worker {wid}: key {k} holds {got!r}, expected {model.get(k)!r}")
        elif r < 0.8:
            k = rng.randrange(OWN_KEYS)
            if d.pop((prefix, wid, k), None) != model.pop(k, None):
                raise AssertionError(f"worker {wid}: pop of key {k} returned the wrong value")
        elif r < 0.9:
            d[("s", rng.randrange(SHARED))] = (wid, n, _payload(n))
        else:
            got = d.get(("s", rng.randrange(SHARED)))
            if got is not None and got[2] != _payload(got[1]):
                raise AssertionError(f"worker {wid}: torn shared value {got!r}")
    if not victim:
        d[("tally", wid)] = tally
        d[("model", wid)] = model


def run_dict(
    procs: int = 8,
    ops: int = 20000,
    start_method: str = "spawn",
    kill: bool = False,
    seed: int | None = None,
    timeout: float = 120.0,
    out: Callable[[str], object] | None = print,
) -> tuple[bool, dict[str, Any]]:
    """Runs the stress test; returns `(ok, result)` where result is a dict of figures and any errors."""
    seed = random.randrange(1 << 30) if seed is None else seed
    ctx: Any = mp.get_context(start_method)  # typeshed: a BaseContext, which has no Process
    d = ConcurrentDict()
    result: dict[str, Any] = {
        "procs": procs, "ops": ops, "start_method": start_method, "kill": kill, "seed": seed, "errors": [],
    }
    t0 = time.perf_counter()
    workers = [ctx.Process(target=_worker, args=(d, i, ops, seed, False)) for i in range(procs)]
    victims = []
    if kill:
        victims = [ctx.Process(target=_worker, args=(d, procs + i, 10**9, seed, True)) for i in range(2)]
    for p in workers + victims:
        p.start()
    rng = random.Random(seed)
    killed = 0
    next_wid = procs + len(victims) - 1
    if kill:
        # Kill each victim after a random delay, then restart it, a few times.
        for _ in range(3):
            time.sleep(rng.uniform(0.05, 0.4))
            for i, v in enumerate(victims):
                if v.is_alive():
                    os.kill(v.pid, signal.SIGKILL)
                    killed += 1
                v.join(10)
                if v.exitcode not in (-signal.SIGKILL, 0):
                    result["errors"].append(f"a victim failed before it was killed (exit code {v.exitcode})")
                # A fresh worker id: the killed incarnation's keys are still in the dict, and the new one's
                # model starts empty.
                next_wid += 1
                victims[i] = ctx.Process(target=_worker, args=(d, next_wid, 10**9, seed + killed, True))
                victims[i].start()
        for v in victims:
            if v.is_alive():
                os.kill(v.pid, signal.SIGKILL)
                killed += 1
            v.join(10)
            if v.exitcode not in (-signal.SIGKILL, 0):
                result["errors"].append(f"a victim failed before it was killed (exit code {v.exitcode})")
    deadline = time.monotonic() + timeout
    for p in workers:
        p.join(max(0.1, deadline - time.monotonic()))
    hung = [p for p in workers if p.is_alive()]
    for p in hung:
        p.kill()
        p.join(5)
    if hung:
        result["errors"].append(f"{len(hung)} worker(s) hung")
    bad = [p.exitcode for p in workers if p.exitcode != 0]
    if bad and not hung:
        result["errors"].append(f"worker exit codes {bad}")
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["killed"] = killed
    if not result["errors"]:
        # Free what killed writers leaked before checking: the check then also proves nothing live was freed.
        result["reclaimed_bytes"] = d.reclaim()
        expected: dict[int, int] = {}
        for i in range(procs):
            for k, n in d[("tally", i)].items():
                expected[k] = expected.get(k, 0) + n
            model = d[("model", i)]
            own = {k: d[("own", i, k)] for k in range(OWN_KEYS) if ("own", i, k) in d}
            if own != model:
                result["errors"].append(f"worker {i}: own keys differ from its model")
        for k, n in expected.items():
            got = d.get(("c", k))
            if got != n:
                result["errors"].append(f"counter {k}: {got} != {n} (lost or extra adds)")
        items = list(d.items())  # a copy: the view's len() would just ask the dict again
        if len(items) != len(d):
            result["errors"].append(f"len() {len(d)} != {len(items)} items")
        result["adds"] = sum(expected.values())
        result["keys"] = len(items)
        result["ops_per_s"] = round(procs * ops / result["seconds"])
    d.clear()
    ok = not result["errors"]
    if out is not None:
        out(f"stress dict: {'OK' if ok else 'FAILED'} {result}")
    return ok, result
