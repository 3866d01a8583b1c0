"""Functions run in child processes by the sync tests (importable by name under spawn and forkserver)."""

import time


def locked_increments(lock, counter, n):
    """Non-atomic read-modify-write of `counter` under `lock`: loses updates unless the lock excludes."""
    for _ in range(n):
        with lock:
            v = counter.get()
            counter.set(v + 1)


def rlock_increments(rlock, counter, n):
    for _ in range(n):
        with rlock:
            with rlock:
                counter.set(counter.get() + 1)


def event_pong(ping, pong, rounds):
    for _ in range(rounds):
        if not ping.wait(10):
            raise SystemExit(3)
        ping.clear()
        pong.set()


def barrier_rounds(barrier, results, rounds):
    for r in range(rounds):
        i = barrier.wait(10)
        results.put((r, i))


def barrier_expect_broken(barrier, started, timeout):
    import threading

    started.set()
    try:
        barrier.wait(timeout)
    except threading.BrokenBarrierError:
        return
    raise SystemExit(4)


def condition_waiter(cond, woken, ready_sem):
    with cond:
        ready_sem.release()
        if cond.wait(10):
            woken.incr()


def semaphore_worker(sem, inside, max_inside, n):
    for _ in range(n):
        with sem:
            now = inside.incr()
            while True:
                m = max_inside.get()
                if now <= m or max_inside.compare_exchange(m, now):
                    break
            time.sleep(0.0005)
            inside.decr()


def rw_writer(rw, data, n):
    for _ in range(n):
        with rw.write():
            data.set(data.get() + 1)
            data.set(data.get() + 1)


def rw_reader(rw, data, bad, n):
    for _ in range(n):
        with rw.read():
            if data.get() % 2:
                bad.incr()


def hold_and_report(inq, outq):
    """Acquire a lock received through a queue, report, release."""
    obj = inq.get(timeout=10)
    with obj:
        outq.put("held")


def pool_task(args):
    lock, counter = args
    with lock:
        counter.set(counter.get() + 1)
    return True


def hold_read_lock(rw, held, release):
    rw.lock_read()
    held.set()
    release.wait(30)
    rw.unlock_read()


def interval_lock_increment(il, counter):
    il.lock()
    counter.incr()
    il.unlock()
def rw_try_read(rw, result, timeout):
    """Try a read lock for `timeout` seconds; result = 1 if it got one, 2 if not."""
    if rw.lock_read(timeout):
        rw.unlock_read()
        result.set(1)
    else:
        result.set(2)
def slow_action_started(started):
    """An action that tells `started`, then runs long (the barrier round stays in its action phase)."""

    def action():
        started.set()
        time.sleep(1.5)

    return action


def barrier_with_slow_action(handle, started, done):
    import pyconc

    b = pyconc.Barrier(1, action=slow_action_started(started), _handle=handle)
    done.put(b.wait())
