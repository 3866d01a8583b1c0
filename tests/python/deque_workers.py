"""Functions run in child processes by the deque tests (importable by name under spawn and forkserver)."""

import os


def produce(d, start, n):
    for i in range(start, start + n):
        if i % 2:
            d.append(i)
        else:
            d.appendleft(i)


def consume(d, n, out):
    got = [d.popleft(block=True, timeout=30) for _ in range(n)]
    out.put(sorted(got))


def pop_blocking(d, q):
    q.put(d.pop(True, 30))


def churn(d, seed, crash_point):
    """Mixed operations on items tagged by this process; with a crash point armed, the process `_exit`s(9)
    inside an operation after a while."""
    from pyconc import _native

    x = seed * 2654435761 % 2**32 or 1
    # Without a crash point the worker runs until it is killed (a finite run could end before the kill lands).
    for round in range(200_000 if crash_point else 1 << 62):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        if round == 300 and crash_point:
            _native._deque_crash_point(crash_point)
        op = x % 10
        if op < 4:
            d.append(("item", seed, round, "x" * (x % 200)))
        elif op < 6:
            d.appendleft(("item", seed, round, "y" * (x % 50)))
        elif op < 8:
            try:
                d.popleft() if op == 6 else d.pop()
            except IndexError:
                pass
        elif op == 8:
            d.rotate(x % 7 - 3)
        elif x % 64 == 9:
            d.clear()
        elif len(d) > 3:
            try:
                del d[x % 3]
            except IndexError:
                pass
    os._exit(0)
