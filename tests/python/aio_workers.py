"""Functions run in child processes by test_aio.py (importable by name under spawn and forkserver)."""

import asyncio
import time


def feed(q, n, gap):
    for i in range(n):
        q.put(i)
        time.sleep(gap)


def release_later(lock, delay):
    time.sleep(delay)
    lock.release()


def consume_async(q, n, out):
    """Runs an event loop whose coroutines take `n` items; reports their sum on `out`."""

    async def main():
        got = await asyncio.gather(*(q.get_async(timeout=30) for _ in range(n)))
        out.put(sum(got))

    asyncio.run(main())


def hold_semaphore(sem, inside, peak, rounds):
    """Coroutines of one loop take `sem` `rounds` times each, counting holders in `inside` (peak in `peak`)."""

    async def one():
        for _ in range(rounds):
            async with sem:
                n = inside.incr()
                while True:
                    p = peak.get()
                    if n <= p or peak.compare_exchange(p, n):
                        break
                await asyncio.sleep(0.001)
                inside.decr()

    async def main():
        await asyncio.gather(*(one() for _ in range(4)))

    asyncio.run(main())


def hold_forever(lock, ready):
    lock.acquire()
    ready.set()
    time.sleep(600)
