"""``python -m pyconc stress queue``: many processes hammer one queue; every item is accounted for.

Producers put ``(producer, index, payload)`` items whose payload is derived from ``(producer, index)``, so a
consumer can verify every byte. After each put returns, the producer bumps its shared "returned" counter;
consumers count every item they receive in a shared array with an atomic ``fetch_add``. At the end:

- an item whose put returned and that nobody received is **lost**;
- an item received twice is **duplicated**;
- an item whose bytes do not match is **corrupt**.

``--kill`` SIGKILLs random producers and consumers during the run and starts replacements. A producer killed
inside ``put`` leaves one item whose fate is open (it was either published or dropped: both are correct); a
consumer killed between ``get`` returning and its ``fetch_add`` took one item to its grave, which is not a
queue failure, so up to one unreceived item per consumer kill is reported as "in the hands of killed
consumers", not as lost.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import sys
import time
import zlib
from typing import Any, TextIO

import pyconc


def _payload(p: int, i: int, size: int) -> bytes:
    if size == 0:
        return b""
    seed = ((p * 1_000_003) ^ i) & 0xFFFFFFFF
    block = seed.to_bytes(4, "little") * 4
    return (block * (size // 16 + 1))[:size]


def _produce(q: pyconc.Queue, p: int, start: int, stop: int, size: int, progress: Any) -> None:
    """Puts items start..stop of producer p; progress[p] = index of the next item to put (all before returned)."""
    for i in range(start, stop):
        data = _payload(p, i, size)
        q.put((p, i, zlib.crc32(data), data))
        progress[p] = i + 1


def _consume(q: pyconc.Queue, per_producer: int, received: Any, corrupt: Any, done: Any) -> None:
    while True:
        try:
            p, i, crc, data = q.get(timeout=0.2)
        except pyconc.queues.Empty:
            if done.value:
                return
            continue
        if zlib.crc32(data) != crc:
            corrupt.fetch_add(0, 1)
        received.fetch_add(p * per_producer + i, 1)


def run_queue(
    producers: int,
    consumers: int,
    messages: int,
    start_method: str = "fork",
    size: int = 64,
    kill: bool = False,
    seed: int | None = None,
    maxsize: int = 1024,
    timeout: float = 600,
    out: TextIO = sys.stdout,
) -> tuple[bool, dict[str, int | float]]:
    ctx: Any = mp.get_context(start_method)  # typeshed: a BaseContext, which has no Process
    rng = random.Random(seed)
    per = messages // producers
    total = per * producers
    q = pyconc.Queue(maxsize=maxsize)
    progress = pyconc.RawArray("q", producers)          # next index each producer will put
    received = pyconc.RawArray("B", total)              # times each item was received
    corrupt = pyconc.RawArray("q", 1)
    done = pyconc.RawValue("b", 0)
    ambiguous: set[tuple[int, int]] = set()             # (p, i) whose put was interrupted by a kill
    kills = {"producer": 0, "consumer": 0}

    def start_producer(p: int, start: int) -> Any:
        proc = ctx.Process(target=_produce, args=(q, p, start, per, size, progress), daemon=True)
        proc.start()
        return proc

    def start_consumer() -> Any:
        proc = ctx.Process(target=_consume, args=(q, per, received, corrupt, done), daemon=True)
        proc.start()
        return proc

    prods = {p: start_producer(p, 0) for p in range(producers)}
    cons = [start_consumer() for _ in range(consumers)]
    t0 = time.monotonic()
    deadline = t0 + timeout
    next_kill = t0 + rng.uniform(0.05, 0.3)
    while any(pr.is_alive() for pr in prods.values()):
        if time.monotonic() > deadline:
            raise TimeoutError("stress run timed out: a producer hangs")
        if kill and time.monotonic() >= next_kill:
            next_kill = time.monotonic() + rng.uniform(0.05, 0.3)
            if rng.random() < 0.5:
                live = [p for p, pr in prods.items() if pr.is_alive()]
                if live:
                    p = rng.choice(live)
                    os.kill(prods[p].pid, signal.SIGKILL)
                    prods[p].join(30)
                    nxt = progress[p]
                    if nxt < per:
                        # Item `nxt` was being put (or not yet started): its fate is open. Resume after it.
                        ambiguous.add((p, nxt))
                        prods[p] = start_producer(p, nxt + 1)
                    kills["producer"] += 1
            else:
                victim = rng.randrange(len(cons))
                os.kill(cons[victim].pid, signal.SIGKILL)
                cons[victim].join(30)
                cons[victim] = start_consumer()
                kills["consumer"] += 1
        time.sleep(0.01)
    for pr in prods.values():
        pr.join(30)
    # Let consumers drain, then stop them.
    drain_deadline = time.monotonic() + 120
    while not q.empty() and time.monotonic() < drain_deadline:
        time.sleep(0.02)
    done.value = 1
    for c in cons:
        c.join(60)
    hung = [c for c in cons if c.is_alive()]
    for c in hung:
        c.kill()
    elapsed = time.monotonic() - t0

    counts = bytes(received)
    lost = duplicated = 0
    for p in range(producers):
        for i in range(per):
            n = counts[p * per + i]
            if n > 1:
                duplicated += n - 1
            elif n == 0 and (p, i) not in ambiguous:
                lost += 1
    in_dead_hands = min(lost, kills["consumer"])
    lost -= in_dead_hands
    stats = q.stats()
    result: dict[str, int | float] = {
        "items": total, "received": sum(1 for c in counts if c), "lost": lost, "duplicated": duplicated,
        "corrupt": corrupt[0], "ambiguous_puts": len(ambiguous), "in_dead_consumers": in_dead_hands,
        "producer_kills": kills["producer"], "consumer_kills": kills["consumer"], "hung_consumers": len(hung),
        "dropped": stats["dropped"], "redelivered": stats["redelivered"], "ring_slots": stats["ring_slots"],
        "seconds": round(elapsed, 2),
        "items_per_s": round(total / elapsed),
    }
    ok = lost == 0 and duplicated == 0 and corrupt[0] == 0 and not hung
    out.write(f"stress queue ({start_method}, {producers}P/{consumers}C, {total} items of {size} B"
              f"{', kill' if kill else ''}): {'OK' if ok else 'FAILED'}\n")
    for k, v in result.items():
        out.write(f"  {k}: {v}\n")
    return ok, result


def main(args: argparse.Namespace) -> int:
    if args.structure != "queue":
        print(f"unknown structure {args.structure!r}", file=sys.stderr)
        return 2
    ok, _ = run_queue(args.producers, args.consumers, args.messages, args.start_method, args.size, args.kill,
                      args.seed, maxsize=args.maxsize, timeout=args.timeout)
    return 0 if ok else 1
