"""The asyncio bridge (pyconc.aio) and ProcessSemaphore: no thread per waiter, FIFO, cancellation, timeouts,
processes, fork."""

import asyncio
import os
import pickle
import subprocess
import sys
import threading
import time

import pytest

import aio_workers as w
import pyconc
from pyconc import aio


def os_threads():
    return len(os.listdir("/proc/self/task"))


def run(coro, timeout=60):
    async def guarded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


def test_many_waiters_use_a_bounded_number_of_threads():
    async def main():
        queues = [pyconc.Queue() for _ in range(20)]
        locks = [pyconc.Lock() for _ in range(20)]
        for lock in locks:
            lock.acquire()
        before = os_threads()

        async def hold(lock):
            async with lock:
                pass

        getters = [asyncio.ensure_future(queues[i % 20].get_async()) for i in range(1000)]
        lockers = [asyncio.ensure_future(hold(locks[i % 20])) for i in range(1000)]
        await asyncio.sleep(0.2)
        threads, armed = aio.waiting_threads()
        assert os_threads() - before <= 1, "at most the waker thread is added"
        assert threads >= 1 and armed == 40, (threads, armed)
        for i in range(1000):
            queues[i % 20].put(i)
        for lock in locks:
            lock.release()
        assert sorted(await asyncio.gather(*getters)) == list(range(1000))
        await asyncio.gather(*lockers)
        assert not any(lock.locked() for lock in locks)
        assert aio.waiting_threads()[1] == 0

    run(main())


def test_waiters_of_one_loop_are_served_in_order():
    async def main():
        lock = pyconc.Lock()
        lock.acquire()
        order = []

        async def take(i):
            async with lock:
                order.append(i)
                await asyncio.sleep(0.001)

        tasks = []
        for i in range(8):
            tasks.append(asyncio.ensure_future(take(i)))
            await asyncio.sleep(0.005)
        lock.release()
        await asyncio.gather(*tasks)
        assert order == list(range(8))

    run(main())


@pytest.mark.parametrize("kind", ["lock", "rlock", "semaphore", "queue", "event", "rwlock_write", "rwlock_read"])
def test_timeouts(kind):
    async def main():
        if kind in ("lock", "rlock"):
            lock = pyconc.Lock() if kind == "lock" else pyconc.RLock()
            threading.Thread(target=lock.acquire).start()
            time.sleep(0.05)
            call = lambda t: lock.acquire_async(timeout=t)
        elif kind == "semaphore":
            sem = pyconc.Semaphore(0)
            call = lambda t: sem.acquire_async(timeout=t)
        elif kind == "event":
            ev = pyconc.Event()
            call = lambda t: ev.wait_async(t)
        elif kind.startswith("rwlock"):
            rw = pyconc.RWLock()
            if kind == "rwlock_write":
                rw.lock_read()
                call = lambda t: rw.lock_write_async(t)
            else:
                threading.Thread(target=rw.lock_write).start()
                time.sleep(0.05)
                call = lambda t: rw.lock_read_async(t)
        else:
            q = pyconc.Queue()

            async def call(t):
                try:
                    await q.get_async(timeout=t)
                except pyconc.queues.Empty:
                    return False
                return True

        for t in (0, -5, 0.1):
            t0 = time.monotonic()
            assert await call(t) is False
            elapsed = time.monotonic() - t0
            assert elapsed < 2.0
            if t == 0.1:
                assert elapsed >= 0.09
        return True

    assert run(main())


@pytest.mark.parametrize("kind", ["lock", "queue", "semaphore"])
def test_long_timeouts_wait_without_spinning(kind):
    """A timeout longer than the periodic re-check still ends on time, and the wait costs (almost) no CPU."""

    async def main():
        if kind == "lock":
            lock = pyconc.Lock()
            lock.acquire()
            call = lock.acquire_async(timeout=0.35)
        elif kind == "semaphore":
            call = pyconc.Semaphore(0).acquire_async(timeout=0.35)
        else:

            async def get():
                try:
                    return await pyconc.Queue().get_async(timeout=0.35)
                except pyconc.queues.Empty:
                    return False

            call = get()
        t0, c0 = time.monotonic(), time.process_time()
        assert await call is False
        elapsed, cpu = time.monotonic() - t0, time.process_time() - c0
        assert 0.33 <= elapsed < 3.0, elapsed
        assert cpu < 0.15, f"{cpu:.3f} s of CPU for a {elapsed:.3f} s wait"

    run(main())


def test_huge_and_forever_timeouts():
    async def main():
        lock = pyconc.Lock()
        lock.acquire()
        threading.Timer(0.05, lock.release).start()
        assert await lock.acquire_async(timeout=1e300)
        threading.Timer(0.05, lock.release).start()
        assert await lock.acquire_async(timeout=-1)  # threading's "forever"
        lock.release()

    run(main())


def test_dead_owner_is_taken_over_by_a_coroutine(ctx):
    lock, ready = pyconc.Lock(), ctx.Event()
    p = ctx.Process(target=w.hold_forever, args=(lock, ready))
    p.start()
    try:
        assert ready.wait(30)

        async def main():
            task = asyncio.ensure_future(lock.acquire_async(timeout=30))
            await asyncio.sleep(0.05)
            p.kill()
            with pytest.warns(pyconc.OwnerDiedWarning):
                assert await task
            assert lock.owner_died
            lock.release()

        run(main())
    finally:
        p.kill()
        p.join(10)


def test_ctrl_c_ends_an_awaited_wait():
    code = (
        "import asyncio, pyconc\n"
        "l = pyconc.Lock(); l.acquire(); print('ready', flush=True)\n"
        "asyncio.run(l.acquire_async())\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        assert p.poll() is None
        t0 = time.monotonic()
        p.send_signal(__import__("signal").SIGINT)
        _, err = p.communicate(timeout=10)
        assert time.monotonic() - t0 < 2.0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err, err


def test_rwlock_writer_waiting_bars_new_readers_and_cancel_frees_it():
    async def main():
        rw = pyconc.RWLock()
        rw.lock_read()
        writer = asyncio.ensure_future(rw.lock_write_async())
        await asyncio.sleep(0.05)
        assert not writer.done()
        # The waiting writer holds the writer mutex: a new reader (another thread) must wait.
        assert not await asyncio.get_running_loop().run_in_executor(None, rw.lock_read, 0.05)
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        assert await asyncio.get_running_loop().run_in_executor(None, rw.lock_read, 1)
        rw.unlock_read()
        rw.unlock_read()
        assert await rw.lock_write_async(1)
        rw.unlock_write()

    run(main())


@pytest.mark.parametrize("kind", ["lock", "semaphore", "queue"])
def test_cancelled_after_the_wakeup_takes_nothing_and_passes_it_on(kind):
    """The thing a waiter was woken for goes to the next waiter when the woken one is cancelled."""

    async def main():
        if kind == "lock":
            prim = pyconc.Lock()
            prim.acquire()
            first, second = prim.acquire_async(), prim.acquire_async(5)
            free = prim.release
        elif kind == "semaphore":
            prim = pyconc.Semaphore(0)
            first, second = prim.acquire_async(), prim.acquire_async(5)
            free = prim.release
        else:
            prim = pyconc.Queue()
            first, second = prim.get_async(), prim.get_async(5)

            def free():
                prim.put("x")

        t1 = asyncio.ensure_future(first)
        await asyncio.sleep(0.02)
        t2 = asyncio.ensure_future(second)
        await asyncio.sleep(0.02)
        free()
        # Let the wake-up reach the loop (the inbox becomes readable), then cancel the woken head before it runs.
        time.sleep(0.05)
        t1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t1
        assert await t2 in (True, "x")
        if kind == "lock":
            assert prim.locked()
            prim.release()
        elif kind == "semaphore":
            assert prim.get_value() == 0
        else:
            assert prim.qsize() == 0

    run(main())


def test_cancelled_waiters_leave_nothing_acquired():
    async def main():
        lock, sem, q = pyconc.Lock(), pyconc.Semaphore(0), pyconc.Queue()
        lock.acquire()
        for coro in (lock.acquire_async(), sem.acquire_async(), q.get_async()):
            task = asyncio.ensure_future(coro)
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        lock.release()
        sem.release()
        q.put(1)
        await asyncio.sleep(0.05)
        assert not lock.locked() and sem.get_value() == 1 and q.get(timeout=1) == 1
        assert aio.waiting_threads()[1] == 0

    run(main())


def test_loops_in_several_threads_share_a_lock():
    lock, counter = pyconc.Lock(), pyconc.AtomicInt64()

    def loop_thread():
        async def one():
            for _ in range(50):
                async with lock:
                    v = counter.get()
                    await asyncio.sleep(0)
                    counter.set(v + 1)

        async def main():
            await asyncio.gather(*(one() for _ in range(4)))

        asyncio.run(main())

    threads = [threading.Thread(target=loop_thread) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert counter.get() == 3 * 4 * 50


def test_barrier_async():
    async def main():
        b = pyconc.Barrier(3)
        t = threading.Thread(target=b.wait)
        t.start()
        got = await asyncio.gather(b.wait_async(5), b.wait_async(5))
        t.join(5)
        assert sorted(got) in ([0, 1], [0, 2], [1, 2])
        # A cancelled waiter leaves the round; the round still completes with the others.
        task = asyncio.ensure_future(b.wait_async())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.n_waiting == 0
        # A timed-out waiter breaks the barrier.
        with pytest.raises(threading.BrokenBarrierError):
            await b.wait_async(0.05)
        assert b.broken

    run(main())


def test_condition_wait_async_many():
    async def main():
        cond = pyconc.Condition(pyconc.Lock())
        woken = []

        async def waiter(i):
            async with cond:
                assert await cond.wait_async(10)
                woken.append(i)

        tasks = [asyncio.ensure_future(waiter(i)) for i in range(20)]
        await asyncio.sleep(0.1)

        def notify():
            with cond:
                cond.notify_all()

        threading.Thread(target=notify).start()
        await asyncio.gather(*tasks)
        assert sorted(woken) == list(range(20))

    run(main())


def test_consumers_fed_by_another_process(ctx):
    async def main():
        q = pyconc.Queue()
        p = ctx.Process(target=w.feed, args=(q, 200, 0.001))
        p.start()
        got = await asyncio.gather(*(q.get_async(timeout=30) for _ in range(200)))
        await asyncio.get_running_loop().run_in_executor(None, p.join, 30)
        assert p.exitcode == 0
        assert sorted(got) == list(range(200))

    run(main())


def test_lock_released_by_another_process(ctx):
    async def main():
        lock = pyconc.Lock()
        lock.acquire()
        p = ctx.Process(target=w.release_later, args=(lock, 0.1))
        p.start()
        assert await lock.acquire_async(timeout=30)
        lock.release()
        await asyncio.get_running_loop().run_in_executor(None, p.join, 30)
        assert p.exitcode == 0

    run(main())


def test_child_process_runs_its_own_waker(ctx):
    """In a forked child the parent's waker thread does not exist; the bridge starts one there."""

    async def warm(q):
        task = asyncio.ensure_future(q.get_async())
        await asyncio.sleep(0.02)
        q.put(-1)
        assert await task == -1

    q, out = pyconc.Queue(), pyconc.Queue()
    run(warm(q))  # the parent's waker thread exists now
    p = ctx.Process(target=w.consume_async, args=(q, 50, out))
    p.start()
    time.sleep(0.1)
    for i in range(50):
        q.put(i)
    assert out.get(timeout=30) == sum(range(50))
    p.join(30)
    assert p.exitcode == 0


def test_without_futex_waitv_the_waker_polls():
    code = (
        "import asyncio, threading, pyconc\n"
        "async def main():\n"
        "    q, lock = pyconc.Queue(), pyconc.Lock(); lock.acquire()\n"
        "    threading.Timer(0.05, q.put, (7,)).start(); threading.Timer(0.05, lock.release).start()\n"
        "    assert await q.get_async(timeout=10) == 7\n"
        "    assert await lock.acquire_async(timeout=10)\n"
        "    print('ok')\n"
        "asyncio.run(main())\n"
    )
    env = dict(os.environ, PYCONC_NO_FUTEX_WAITV="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr


def test_loop_keeps_ticking_while_many_wait():
    async def main():
        q = pyconc.Queue()
        gaps = []

        async def ticker():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.002)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        tasks = [asyncio.ensure_future(q.get_async()) for _ in range(300)]
        await asyncio.sleep(0.1)
        for i in range(300):
            q.put(i)
        await asyncio.gather(*tasks)
        tick.cancel()
        # Loose (a loaded 2-core machine): the bench measures the real figure.
        assert len(gaps) > 10 and sorted(gaps)[len(gaps) // 2] < 0.05

    run(main())


# ---- ProcessSemaphore -----------------------------------------------------------------------------------------


def test_process_semaphore_basics():
    with pytest.raises(ValueError):
        aio.ProcessSemaphore(0)
    with pytest.raises(ValueError):
        pyconc.ProcessSemaphore(-1)
    with pytest.raises(TypeError):
        pyconc.ProcessSemaphore(1.5)
    sem = pyconc.ProcessSemaphore(2)
    with pytest.raises(ValueError):
        sem.release()  # the budget never grows

    async def main():
        async with sem:
            assert sem.value == 1
            await sem.acquire()
            assert sem.locked()
            sem.release()
        assert sem.value == 2

    run(main())
    assert "value=2" in repr(sem)


def test_process_semaphore_success_path_never_suspends():
    sem = pyconc.ProcessSemaphore(1)

    async def main():
        coro = sem.acquire()
        with pytest.raises(StopIteration):
            coro.send(None)  # finished without yielding to the loop
        sem.release()

    run(main())


def test_process_semaphore_fifo_and_cancellation():
    async def main():
        sem = pyconc.ProcessSemaphore(1)
        await sem.acquire()
        order = []

        async def waiter(i):
            await sem.acquire()
            order.append(i)
            sem.release()

        tasks = []
        for i in range(6):
            tasks.append(asyncio.ensure_future(waiter(i)))
            await asyncio.sleep(0.005)
        # Cancel one that waits, and release so that the head is woken, then cancel the head before it runs.
        tasks[3].cancel()
        sem.release()
        time.sleep(0.05)
        tasks[0].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError) and isinstance(results[3], asyncio.CancelledError)
        assert order == [1, 2, 4, 5]
        assert sem.value == 1
        with pytest.raises(ValueError):
            sem.release()

    run(main())


def test_process_semaphore_released_from_a_thread_without_a_loop():
    async def main():
        sem = pyconc.ProcessSemaphore(1)
        await sem.acquire()
        waiter = asyncio.ensure_future(sem.acquire())
        await asyncio.sleep(0.02)
        assert not waiter.done()
        threading.Timer(0.02, sem.release).start()
        await asyncio.wait_for(waiter, 10)
        sem.release()
        assert sem.value == 1

    run(main())


def test_process_semaphore_pickles_as_a_handle():
    sem = pyconc.ProcessSemaphore(3)
    other = pickle.loads(pickle.dumps(sem))

    async def main():
        await other.acquire()
        assert sem.value == 2
        sem.release()

    run(main())


def test_process_semaphore_budget_across_loops_in_threads():
    sem, inside, peak = pyconc.ProcessSemaphore(2), pyconc.AtomicInt64(), pyconc.AtomicInt64()
    threads = [threading.Thread(target=w.hold_semaphore, args=(sem, inside, peak, 10)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert peak.get() <= 2 and inside.get() == 0 and sem.value == 2


def test_process_semaphore_budget_across_processes(ctx):
    sem, inside, peak = pyconc.ProcessSemaphore(2), pyconc.AtomicInt64(), pyconc.AtomicInt64()
    procs = [ctx.Process(target=w.hold_semaphore, args=(sem, inside, peak, 10)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert peak.get() <= 2 and inside.get() == 0 and sem.value == 2
