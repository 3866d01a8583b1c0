"""The shared-memory queues: ConcurrentQueue, Queue, SimpleQueue, JoinableQueue, StdConcurrentQueue."""

import asyncio
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pyconc
from workers import (
    joinable_worker,
    queue_consume_until_shutdown,
    queue_consumer,
    queue_producer,
    queue_producer_tagged,
    queue_put_and_hold,
)

VALUES = [None, True, False, 0, -1, 2**70, 1.5, float("inf"), "", "héllo", b"", b"\x00" * 100,
          bytearray(b"ab"), (1, "a"), [1, [2, 3]], {"k": (1, 2)}, {1, 2, 3}, range(3)]


@pytest.mark.parametrize("cls", [pyconc.Queue, pyconc.StdConcurrentQueue, pyconc.ConcurrentQueue,
                                 pyconc.JoinableQueue])
def test_fifo_round_trip_of_every_kind_of_value(cls):
    q = cls()
    for v in VALUES:
        q.put(v)
    assert q.qsize() == len(VALUES)
    got = [q.get() for _ in VALUES]
    assert got == VALUES
    assert [type(x) for x in got] == [type(x) for x in VALUES]
    assert q.empty()


def test_large_items_and_the_size_limit():
    q = pyconc.Queue(capacity_bytes=4 << 20)
    big = os.urandom(1 << 20)
    q.put(big)
    assert q.get() == big
    with pytest.raises(ValueError, match="larger than this queue's capacity"):
        q.put(b"x" * (8 << 20))


def test_empty_full_and_timeouts():
    q = pyconc.Queue(maxsize=2)
    with pytest.raises(queue.Empty):
        q.get(block=False)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 2
    q.put(1)
    q.put(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 2
    assert q.get(timeout=-1) == 1, "multiprocessing reads a negative timeout as 0"
    with pytest.raises(ValueError):
        pyconc.StdConcurrentQueue().get(timeout=-1)  # queue.Queue's rule
    assert q.get() == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: pyconc.Queue(**kw),
        lambda **kw: pyconc.JoinableQueue(**kw),
        lambda **kw: pyconc.SimpleQueue(**kw),
        lambda **kw: pyconc.StdConcurrentQueue(**kw),
        lambda **kw: pyconc.ConcurrentQueue(**kw),
    ],
)
def test_unknown_keyword_arguments_are_a_type_error(make):
    # Queue(max_size=1) used to give an unbounded queue silently.
    with pytest.raises(TypeError, match="max_size"):
        make(max_size=1)
    q = make(capacity_bytes=1 << 20, lock_free=True)  # the extensions are accepted
    q.put(1)
    assert q.get() == 1


def test_mp_constructor_signatures():
    import multiprocessing.queues

    ctx = multiprocessing.get_context()
    for cls in (pyconc.Queue, pyconc.JoinableQueue):
        cls(3, ctx=ctx)  # multiprocessing.queues.Queue(maxsize, *, ctx)
        with pytest.raises(TypeError):
            cls(3, 4)
    pyconc.SimpleQueue(ctx=ctx)
    with pytest.raises(TypeError):
        pyconc.SimpleQueue(3)
    with pytest.raises(TypeError):
        multiprocessing.queues.Queue(max_size=1, ctx=ctx)
    with pytest.raises(ValueError, match="scaling"):
        pyconc.ConcurrentQueue(scaling=-1)


def test_blocked_get_wakes_when_another_thread_puts():
    q = pyconc.Queue()
    threading.Timer(0.1, q.put, args=("late",)).start()
    t0 = time.monotonic()
    assert q.get(timeout=10) == "late"
    assert time.monotonic() - t0 < 5


def test_put_many_get_many():
    q = pyconc.Queue()
    assert q.put_many(range(1000)) == 1000
    assert q.get_many(max_messages=10) == list(range(10))
    assert q.get_many() == list(range(10, 1000))
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.05)


def test_put_many_puts_nothing_when_an_item_cannot_be_encoded():
    q = pyconc.Queue()
    with pytest.raises(Exception) as info:
        q.put_many([1, 2, lambda: 3, 4])  # the lambda cannot be pickled
    assert not isinstance(info.value, queue.Full)
    assert q.empty() and q.qsize() == 0
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)


def test_put_many_failing_part_way_says_how_many_went_in():
    q = pyconc.Queue(maxsize=3)
    with pytest.raises(queue.Full) as info:
        q.put_many(range(5), timeout=0.05)
    assert info.value.items_put == 3
    assert q.get_many() == [0, 1, 2]
    q.shutdown()
    with pytest.raises(pyconc.ShutDown) as info:
        q.put_many([7])
    assert info.value.items_put == 0


def test_mp_queue_close_semantics():
    q = pyconc.Queue()
    with pytest.raises(AssertionError):
        q.join_thread()
    q.put(1)
    q.close()
    q.join_thread()
    q.cancel_join_thread()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    sq = pyconc.SimpleQueue()
    sq.put(1)
    assert not sq.empty() and sq.get() == 1 and sq.empty()
    sq.close()
    with pytest.raises(OSError):
        sq.get()


def test_concurrent_queue_api_and_shutdown():
    q = pyconc.ConcurrentQueue(lock_free=True)
    for i in range(5):
        q.push(i)
    assert q.size() == 5 and len(q) == 5 and not q.empty()
    assert q.pop() == 0 and q.pop_local() == 1
    q.shutdown()
    with pytest.raises(pyconc.ShutDown):
        q.push(9)
    assert [q.pop(), q.pop(), q.pop()] == [2, 3, 4], "a graceful shutdown lets consumers drain"
    with pytest.raises(pyconc.ShutDown):
        q.pop()
    q2 = pyconc.ConcurrentQueue()
    q2.push(1)
    q2.shutdown(immediate=True)
    with pytest.raises(pyconc.ShutDown):
        q2.pop()
    if sys.version_info >= (3, 13):
        assert pyconc.ShutDown is queue.ShutDown


def test_shutdown_wakes_consumers_in_other_processes(ctx):
    q = pyconc.ConcurrentQueue()
    out = ctx.Queue()
    procs = [ctx.Process(target=queue_consume_until_shutdown, args=(q, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for i in range(10):
        q.push(i)
    time.sleep(0.3)
    q.shutdown()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(r[0] == "shutdown" for r in results)
    assert sum(r[1] for r in results) == 10


def test_pickles_as_a_handle():
    q = pyconc.JoinableQueue(maxsize=7)
    data = pickle.dumps(q)
    assert len(data) < 300
    q2 = pickle.loads(data)
    assert type(q2) is pyconc.JoinableQueue and q2.maxsize == 7
    q2.put("x")
    assert q.get() == "x"
    q.task_done()


def test_a_queue_grows_while_producers_in_other_processes_fill_it(ctx):
    # Issue 10: a queue starts with 1,024 slots and grows (4,096, 16,384) as producers in other processes fill
    # it with nobody consuming; maxsize stays exact across the rings, and each producer's items come out in order.
    q = pyconc.Queue(maxsize=12_000)
    assert q.stats()["ring_slots"] == 1024
    n = 6000
    procs = [ctx.Process(target=queue_producer_tagged, args=(q, tag, n)) for tag in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert q.qsize() == 2 * n and q.full()
    assert q.stats()["ring_slots"] == 12_000
    with pytest.raises(queue.Full):
        q.put_nowait("one too many")
    got = [q.get_nowait() for _ in range(2 * n)]
    for tag in range(2):
        assert [i for t, i in got if t == tag] == list(range(n)), "FIFO per producer across the rings"
    assert q.empty()
    q.put("again")
    assert q.get_nowait() == "again"


@pytest.mark.parametrize("size", [0, 2000])
def test_mpmc_across_processes_exactly_once(ctx, size):
    q = pyconc.Queue(maxsize=64)
    out = ctx.Queue()
    n, producers, consumers = 3000, 2, 2
    total = producers * n
    procs = [ctx.Process(target=queue_producer, args=(q, k * n, n, size)) for k in range(producers)]
    procs += [ctx.Process(target=queue_consumer, args=(q, total // consumers, out)) for _ in range(consumers)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(consumers)]
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    assert sum(c for c, _ in results) == total
    assert sum(s for _, s in results) == total * (total - 1) // 2, "every item exactly once"
    assert q.empty()


def test_more_live_processes_than_the_old_participant_limit(ctx):
    # Issue 10: a queue took at most 128 live processes (the 129th, even its creator, got MemoryError) and
    # qsize()/empty() said 0/True while the table was full. 140 processes hold their entries at once here.
    if ctx.get_start_method() == "spawn":
        pytest.skip("140 spawned interpreters take too long on a 2-core machine; fork/forkserver cover it")
    n = 140
    q, release = pyconc.Queue(), pyconc.Event()
    procs = []
    for batch in range(0, n, 20):
        procs += [ctx.Process(target=queue_put_and_hold, args=(q, i, release)) for i in range(batch, batch + 20)]
        for p in procs[batch:]:
            p.start()
    try:
        deadline = time.monotonic() + 60
        while q.qsize() < n and time.monotonic() < deadline:
            time.sleep(0.02)
        assert q.qsize() == n and not q.empty(), "every process registered and put while all are alive"
        q.put("creator")  # the creator still gets an entry, with 141 live participants
        assert q.stats()["recovered"] == 0
        got = [q.get(timeout=10) for _ in range(n + 1)]
        assert sorted(x for x in got if x != "creator") == list(range(n)) and "creator" in got
    finally:
        release.set()
        for p in procs:
            p.join(60)
    assert [p.exitcode for p in procs] == [0] * n


def test_joining_a_producer_before_draining_does_not_deadlock(ctx):
    # multiprocessing.Queue deadlocks here (CPython #73983): its feeder thread cannot exit until the pipe is
    # drained. pyconc's put is synchronous, so the producer exits at once.
    q = pyconc.Queue()
    p = ctx.Process(target=queue_producer, args=(q, 0, 2000, 1000))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert sum(q.get()[0] for _ in range(2000)) == 2000 * 1999 // 2


def test_joinable_queue_across_processes(ctx):
    q = pyconc.JoinableQueue()
    results = pyconc.Queue()
    workers = [ctx.Process(target=joinable_worker, args=(q, results)) for _ in range(2)]
    for w in workers:
        w.start()
    for i in range(100):
        q.put(i)
    q.join()
    assert sorted(results.get() for _ in range(100)) == [i * 2 for i in range(100)]
    for _ in workers:
        q.put(None)
    q.join()
    for w in workers:
        w.join(60)
    assert q.unfinished_tasks == 0
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


def test_std_concurrent_queue_task_done_and_join_with_threads():
    q = pyconc.StdConcurrentQueue(maxsize=10)
    seen = []

    def worker():
        for _ in range(50):
            seen.append(q.get(timeout=30))
            q.task_done()

    t = threading.Thread(target=worker)
    t.start()
    for i in range(50):
        q.put(i, timeout=30)
    q.join()
    t.join(30)
    assert seen == list(range(50))


def test_asyncio_get_and_put_do_not_block_the_loop(ctx):
    async def main():
        q = pyconc.Queue(maxsize=1)
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        t = asyncio.ensure_future(ticker())
        p = ctx.Process(target=queue_producer, args=(q, 0, 50))
        p.start()
        got = [await q.get_async(timeout=60) for _ in range(50)]
        with pytest.raises(queue.Empty):
            await q.get_async(timeout=0.05)
        await q.put_async("a")
        put_later = asyncio.ensure_future(q.put_async("b", timeout=30))
        await asyncio.sleep(0.1)
        assert not put_later.done(), "the queue (maxsize=1) is full"
        assert q.get() == "a"
        await put_later
        assert q.get() == "b"
        t.cancel()
        await asyncio.get_running_loop().run_in_executor(None, p.join, 60)
        return got, ticks

    got, ticks = asyncio.run(main())
    assert got == list(range(50))
    assert ticks > 5, "the event loop kept running while waiting"


def test_cancelled_get_async_loses_nothing():
    async def main():
        q = pyconc.Queue()
        task = asyncio.ensure_future(q.get_async())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        q.put("kept")
        return q.get(timeout=5)

    assert asyncio.run(main()) == "kept"


def test_ctrl_c_interrupts_a_blocked_get():
    code = textwrap.dedent("""
        import sys, pyconc
        q = pyconc.Queue()
        print("ready", flush=True)
        try:
            q.get()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(0)
        sys.exit(3)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
        assert p.stdout.readline().strip() == "interrupted"
        assert time.monotonic() - t0 < 2
    finally:
        p.kill()


def test_pop_local_returns_a_local_wrapper():
    from pyconc.local import LocalWrapper

    q = pyconc.ConcurrentQueue()
    q.push([1, 2])
    w = q.pop_local()
    assert isinstance(w, LocalWrapper) and w.wrapped == [1, 2] and len(w) == 2
    with pytest.raises(pyconc.Empty):
        q.pop_local(timeout=0.01)
