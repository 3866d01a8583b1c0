"""pyconc.synchronize: drop-in semantics (as CPython's own tests check them), processes, pickling, Ctrl-C."""

import asyncio
import multiprocessing
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

import pyconc
import sync_workers as w
from conftest import run_procs
from pyconc import _native


def elapsed(fn, *args, **kwargs):
    t0 = time.monotonic()
    r = fn(*args, **kwargs)
    return r, time.monotonic() - t0


# ---- Lock ---------------------------------------------------------------------------------------------------


def test_lock_semantics():
    lock = pyconc.Lock()
    assert repr(lock) == "<Lock(owner=None)>"
    assert lock.acquire() is True
    assert lock.locked()
    assert repr(lock) == "<Lock(owner=MainProcess)>"
    assert lock.acquire(False) is False
    assert lock.acquire(block=False) is False
    assert lock.acquire(blocking=False) is False
    r, t = elapsed(lock.acquire, timeout=0.1)
    assert r is False and 0.09 <= t < 1.0
    r, t = elapsed(lock.acquire, True, 0.05)
    assert r is False and t < 1.0
    lock.release()
    assert not lock.locked()
    with pytest.raises(ValueError, match="released too many times"):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_lock_released_by_another_thread_like_multiprocessing():
    lock = pyconc.Lock()
    lock.acquire()
    t = threading.Thread(target=lock.release)
    t.start()
    t.join()
    assert not lock.locked()


def test_lock_excludes_threads():
    lock = pyconc.Lock()
    counter = pyconc.AtomicInt64()
    ts = [threading.Thread(target=w.locked_increments, args=(lock, counter, 3000)) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert counter.get() == 12000


def test_lock_repr_other_thread():
    lock = pyconc.Lock()
    t = threading.Thread(target=lock.acquire)
    t.start()
    t.join()
    assert repr(lock) == "<Lock(owner=SomeOtherThread)>"
    lock.release()


def test_blocked_acquire_wakes_on_release():
    lock = pyconc.Lock()
    lock.acquire()
    threading.Timer(0.05, lock.release).start()
    r, t = elapsed(lock.acquire, timeout=5)
    assert r is True and t < 1
    lock.release()


# ---- RLock --------------------------------------------------------------------------------------------------


def test_rlock_semantics():
    lock = pyconc.RLock()
    assert repr(lock) == "<RLock(None, 0)>"
    assert lock.acquire()
    assert lock.acquire()
    assert lock.acquire(False)
    assert repr(lock) == "<RLock(MainProcess, 3)>"
    for _ in range(3):
        lock.release()
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        lock.release()
    with lock:
        with lock:
            assert lock._count() == 2
    # Another thread neither releases nor acquires it.
    lock.acquire()
    out = {}

    def other():
        try:
            lock.release()
        except RuntimeError as e:
            out["err"] = str(e)
        out["acq"] = lock.acquire(timeout=0.05)
        out["repr"] = repr(lock)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert out == {"err": "cannot release un-acquired lock", "acq": False, "repr": "<RLock(SomeOtherThread, nonzero)>"}
    lock.release()


# ---- Semaphores -----------------------------------------------------------------------------------------------


def test_semaphore_semantics():
    sem = pyconc.Semaphore(2)
    assert repr(sem) == "<Semaphore(value=2)>"
    assert sem.get_value() == 2
    assert sem.acquire() and sem.acquire()
    assert sem.get_value() == 0
    assert sem.acquire(False) is False
    r, t = elapsed(sem.acquire, timeout=0.1)
    assert r is False and 0.09 <= t < 1.0
    sem.release()
    sem.release()
    sem.release()  # unbounded
    assert sem.get_value() == 3
    assert pyconc.Semaphore().get_value() == 1
    assert pyconc.Semaphore(0).acquire(timeout=0) is False
    with pytest.raises(ValueError):
        pyconc.Semaphore(-1)
    with sem:
        assert sem.get_value() == 2


def test_bounded_semaphore():
    sem = pyconc.BoundedSemaphore(2)
    assert repr(sem) == "<BoundedSemaphore(value=2, maxvalue=2)>"
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()
    sem.acquire()
    sem.release()
    assert sem.get_value() == 2
    s2 = pickle.loads(pickle.dumps(sem))
    assert type(s2) is pyconc.BoundedSemaphore
    with pytest.raises(ValueError):
        s2.release()


def test_semaphore_wakes_waiting_thread():
    sem = pyconc.Semaphore(0)
    threading.Timer(0.05, sem.release).start()
    r, t = elapsed(sem.acquire, timeout=5)
    assert r and t < 1


# ---- Event --------------------------------------------------------------------------------------------------


def test_event_semantics():
    e = pyconc.Event()
    assert not e.is_set()
    r, t = elapsed(e.wait, 0.1)
    assert r is False and 0.09 <= t < 1.0
    assert e.wait(0) is False
    e.set()
    assert e.is_set() and e.wait() is True and e.wait(0) is True
    e.clear()
    assert not e.is_set()
    threading.Timer(0.05, e.set).start()
    r, t = elapsed(e.wait, 5)
    assert r is True and t < 1


# ---- Condition ----------------------------------------------------------------------------------------------


def test_condition_requires_the_lock():
    # multiprocessing.Condition asserts, with these messages.
    c = pyconc.Condition()
    with pytest.raises(AssertionError, match="lock is not owned"):
        c.notify()
    with pytest.raises(AssertionError, match="lock is not owned"):
        c.notify_all()
    with pytest.raises(AssertionError, match=r"must acquire\(\) condition before using wait\(\)"):
        c.wait(0.01)
    m = multiprocessing.Condition()
    for call in (m.notify, m.notify_all, lambda: m.wait(0.01)):
        with pytest.raises(AssertionError):
            call()
    with pytest.raises(TypeError):
        pyconc.Condition(threading.Lock())
    with c:
        r, t = elapsed(c.wait, 0.1)
        assert r is False and 0.09 <= t < 1.0
        assert c._lock._is_owned()


@pytest.mark.parametrize("lock_type", [None, pyconc.Lock, pyconc.RLock])
def test_condition_notify_counts(lock_type):
    """As CPython's test_notify/test_notify_all: notify() wakes exactly one, notify(n) n, notify_all the rest."""
    cond = pyconc.Condition(lock_type() if lock_type else None)
    woken = pyconc.AtomicInt64()
    ready = pyconc.Semaphore(0)
    ts = [threading.Thread(target=w.condition_waiter, args=(cond, woken, ready)) for _ in range(6)]
    for t in ts:
        t.start()
    for _ in ts:
        assert ready.acquire(timeout=5)
    # Each waiter released `ready` with the lock held, so once we hold it, all are (about to be) waiting.
    with cond:
        cond.notify()
    time.sleep(0.1)
    assert woken.get() == 1
    with cond:
        cond.notify(2)
    time.sleep(0.1)
    assert woken.get() == 3
    with cond:
        cond.notify_all()
    for t in ts:
        t.join(5)
    assert woken.get() == 6


def test_condition_takes_1024_waiters_and_notify_n_wakes_the_n_longest_waiting():
    """Issue 10: a Condition took at most 126 waiters. Its table holds one slot per waiting thread (threads of one
    process each take their own), so 1,024 threads of this process stand in for 1,024 waiting processes; the
    1,025th waiter gets a clear error, and notify(10) wakes exactly the ten that arrived first."""
    n = 1024
    cond = pyconc.Condition()
    arrived, woken, results = [], [], []
    local = threading.Lock()

    def waiter(k):
        with cond:
            arrived.append(k)  # under the condition's lock: the order in which the slots were claimed
            r = cond.wait(60)
        with local:
            woken.append(k)
            results.append(r)

    old = threading.stack_size(256 << 10)
    try:
        ts = [threading.Thread(target=waiter, args=(k,), daemon=True) for k in range(n)]
        for t in ts:
            t.start()
    finally:
        threading.stack_size(old)
    deadline = time.monotonic() + 60
    while cond._queue.waiting < n and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert cond._queue.waiting == n
        with cond, pytest.raises(RuntimeError, match="too many waiters on one Condition \\(at most 1024\\)"):
            cond.wait(1)
        with cond:
            cond.notify(10)
            assert cond._queue.waiting == n - 10, "exactly ten notified"
        while len(woken) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        with local:
            assert sorted(woken) == sorted(arrived[:10]), "the ten longest waiting"
        assert cond._queue.waiting == n - 10
    finally:
        with cond:
            cond.notify_all()
        for t in ts:
            t.join(30)
    assert len(results) == n and all(results)
    assert cond._queue.waiting == 0


def test_condition_wait_for():
    cond = pyconc.Condition()
    state = pyconc.AtomicInt64()

    def bump():
        for _ in range(3):
            time.sleep(0.02)
            with cond:
                state.incr()
                cond.notify_all()

    threading.Thread(target=bump).start()
    with cond:
        assert cond.wait_for(lambda: state.get() >= 3, timeout=5)
        r, t = elapsed(cond.wait_for, lambda: False, 0.1)
        assert r is False and 0.09 <= t < 1.0


def test_condition_rlock_restores_depth():
    cond = pyconc.Condition(pyconc.RLock())
    with cond:
        with cond:
            assert cond.wait(0.01) is False
            assert cond._lock._count() == 2
    assert not cond._lock.locked()


# ---- Barrier ------------------------------------------------------------------------------------------------


def test_barrier_threads_indices_and_action():
    rounds = pyconc.AtomicInt64()
    b = pyconc.Barrier(3, action=rounds.incr)
    assert (b.parties, b.n_waiting, b.broken) == (3, 0, False)
    results = []
    lock = threading.Lock()

    def run():
        for r in range(20):
            i = b.wait(10)
            with lock:
                results.append((r, i))

    ts = [threading.Thread(target=run) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert rounds.get() == 20
    for r in range(20):
        assert sorted(i for rr, i in results if rr == r) == [0, 1, 2]


def test_barrier_timeout_and_abort_break_every_waiter():
    b = pyconc.Barrier(3)
    errors = []

    def wait():
        try:
            b.wait()
        except threading.BrokenBarrierError:
            errors.append("broken")

    t = threading.Thread(target=wait)
    t.start()
    while b.n_waiting < 1:
        time.sleep(0.001)
    t0 = time.monotonic()
    with pytest.raises(threading.BrokenBarrierError):
        b.wait(0.1)
    assert 0.09 <= time.monotonic() - t0 < 1.5
    t.join(5)
    assert errors == ["broken"] and b.broken
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()
    b.reset()
    assert not b.broken and b.n_waiting == 0
    t = threading.Thread(target=wait)
    t.start()
    while b.n_waiting < 1:
        time.sleep(0.001)
    b.abort()
    t.join(5)
    assert errors == ["broken", "broken"]
    b.reset()
    # reset() with a waiter inside: it gets BrokenBarrierError, the barrier is usable afterwards.
    t = threading.Thread(target=wait)
    t.start()
    while b.n_waiting < 1:
        time.sleep(0.001)
    b.reset()
    t.join(5)
    assert errors == ["broken"] * 3 and not b.broken


def test_barrier_timeout_holds_while_another_process_runs_the_action():
    # Issue 11, hang 2: wait(timeout=0.2) waited out another round's long action before raising.
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    b = pyconc.Barrier(1)
    started, done = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=w.barrier_with_slow_action, args=(b._handle, started, done))
    p.start()
    try:
        assert started.wait(20)
        t0 = time.monotonic()
        with pytest.raises(threading.BrokenBarrierError):
            b.wait(timeout=0.2)
        assert 0.15 <= time.monotonic() - t0 < 1.4, "the timeout holds while the (1.5 s) action runs"
        assert b.broken
        assert done.get(timeout=20) == 0, "the running round still trips"
    finally:
        p.join(20)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0
    assert b.broken
    b.reset()
    assert b.wait(timeout=5) == 0


def test_barrier_default_timeout_and_failing_action():
    b = pyconc.Barrier(2, timeout=0.05)
    with pytest.raises(threading.BrokenBarrierError):
        b.wait()

    def boom():
        raise ZeroDivisionError

    b = pyconc.Barrier(1, action=boom)
    with pytest.raises(ZeroDivisionError):
        b.wait()
    assert b.broken
    b1 = pyconc.Barrier(2, timeout=1.5)
    b2 = pickle.loads(pickle.dumps(b1))
    assert (b2.parties, b2.timeout, b2.action) == (2, 1.5, None)
    with pytest.raises(ValueError):
        pyconc.Barrier(0)


# CPython's Lib/test/lock_tests.py BarrierTests, ported (threads; the process versions are above).
N_PARTIES = 5


def run_parties(f):
    ts = [threading.Thread(target=f) for _ in range(N_PARTIES)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert not any(t.is_alive() for t in ts), "a party hung"


def test_cpython_barrier_reset():
    barrier = pyconc.Barrier(N_PARTIES)
    results1, results2, results3 = [], [], []

    def f():
        i = barrier.wait()
        if i == N_PARTIES // 2:
            while barrier.n_waiting < N_PARTIES - 1:
                time.sleep(0.001)
            barrier.reset()
        else:
            try:
                barrier.wait()
                results1.append(True)
            except threading.BrokenBarrierError:
                results2.append(True)
        barrier.wait()
        results3.append(True)

    run_parties(f)
    assert (len(results1), len(results2), len(results3)) == (0, N_PARTIES - 1, N_PARTIES)


def test_cpython_barrier_abort_and_reset():
    barrier, barrier2 = pyconc.Barrier(N_PARTIES), pyconc.Barrier(N_PARTIES)
    results1, results2, results3 = [], [], []

    def f():
        try:
            i = barrier.wait()
            if i == N_PARTIES // 2:
                raise RuntimeError
            barrier.wait()
            results1.append(True)
        except threading.BrokenBarrierError:
            results2.append(True)
        except RuntimeError:
            barrier.abort()
        if barrier2.wait() == N_PARTIES // 2:
            barrier.reset()
        barrier2.wait()
        barrier.wait()
        results3.append(True)

    run_parties(f)
    assert (len(results1), len(results2), len(results3)) == (0, N_PARTIES - 1, N_PARTIES)


def test_cpython_barrier_single_thread_and_many_rounds():
    b = pyconc.Barrier(1)
    for _ in range(3):
        assert b.wait() == 0
    rounds = []
    b = pyconc.Barrier(N_PARTIES, action=lambda: rounds.append(True))

    def f():
        for _ in range(200):
            b.wait()

    run_parties(f)
    assert len(rounds) == 200


# ---- RWLock -------------------------------------------------------------------------------------------------


def test_rwlock_semantics():
    rw = pyconc.RWLock()
    assert rw.lock_read() and rw.lock_read()
    assert rw.read_count == 2 and rw.readers() == 2
    r, t = elapsed(rw.lock_write, 0.05)
    assert r is False and t < 1.5, "a writer waits for readers"
    rw.unlock_read()
    rw.unlock_read()
    with pytest.raises(RuntimeError):
        rw.unlock_read()
    with pytest.raises(RuntimeError):
        rw.unlock_write()
    with rw.write():
        assert rw.write_locked
        out = []
        t = threading.Thread(target=lambda: out.append(rw.lock_read(0.05)))
        t.start()
        t.join()
        assert out == [False], "readers wait for the writer"
    with rw.read():
        pass
    with pytest.raises(TimeoutError):
        with rw.write():
            with rw.read(timeout=0.01):
                pass


def _wait_for_writer_claim(rw):
    # lock_read(0) fails exactly when a writer holds or waits (it bars new readers).
    deadline = time.monotonic() + 10
    while rw.lock_read(0):
        rw.unlock_read()
        assert time.monotonic() < deadline, "the writer never claimed the lock"
        time.sleep(0.001)


def test_rwlock_writer_priority(ctx):
    # Regression: a writer waiting longer than one 20 ms slice released its claim at every slice end (to run
    # signal handlers), so late readers got in ahead of it (81 times out of 81 across processes).
    rw = pyconc.RWLock()
    rw.lock_read()
    got = []
    t = threading.Thread(target=lambda: got.append(rw.lock_write(30)))
    t.start()
    _wait_for_writer_claim(rw)
    time.sleep(0.1)  # several slice ends: the writer keeps its claim through each
    late_thread = []
    t2 = threading.Thread(target=lambda: late_thread.append(rw.lock_read(0.3)))
    t2.start()
    result = pyconc.AtomicInt64(0)
    run_procs(ctx, w.rw_try_read, [(rw, result, 0.3)])
    t2.join()
    assert late_thread == [False], "a reader thread got in ahead of a waiting writer"
    assert result.get() == 2, "a reader in another process got in ahead of a waiting writer"
    rw.unlock_read()
    t.join(30)
    assert got == [True]
    assert rw.write_locked and rw.readers() == 0
    rw.unlock_write()


def test_rwlock_interrupted_writer_gives_up_its_claim():
    # A signal handler that raises while the writer drains readers: the claim is released with the exception.
    rw = pyconc.RWLock()
    rw.lock_read()
    old = signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            rw.lock_write(10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert rw.lock_read(0), "the interrupted writer still bars readers"
    rw.unlock_read()
    rw.unlock_read()
    assert rw.lock_write(1)
    rw.unlock_write()


# ---- handles ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [pyconc.Lock, pyconc.RLock, pyconc.Semaphore, pyconc.BoundedSemaphore, pyconc.Event, pyconc.RWLock,
     lambda: pyconc.Barrier(2), pyconc.Condition],
)
def test_pickles_as_a_handle(make):
    obj = make()
    data = pickle.dumps(obj)
    assert len(data) < 400
    obj2 = pickle.loads(data)
    assert type(obj2) is type(obj)


def test_handle_of_wrong_type_is_rejected():
    e = pyconc.Event()
    h = e._handle
    with pytest.raises(ValueError):
        _native.Lock(_handle=("Lock", *h[1:]))  # a forged type name: the segment's own header says Event
    with pytest.raises(TypeError, match="a handle of a Event cannot be opened as a Semaphore"):
        _native.Semaphore(_handle=h)


def test_embedded_lock_in_a_block_segment():
    buf = _native.SharedBuffer("i", 4, 8, ord("i"))
    name, off = buf.segment_name, buf.lock_offset
    a = pyconc.RLock._embedded(name, off)
    b = pickle.loads(pickle.dumps(a))
    assert b._handle == a._handle == ("RLock", name, off, 2, a._handle[4])
    with a:
        assert b.locked() and b._is_owned()
    lk = pyconc.Lock._embedded(name, off)
    assert type(lk) is pyconc.Lock
    with lk:
        assert a.locked()
    with pytest.raises(ValueError):
        pyconc.Lock._embedded(name, off + 4)  # misaligned
    with pytest.raises(ValueError):
        pyconc.Lock._embedded(name, 8)  # inside the segment header
    with pytest.raises(ValueError):
        pyconc.Lock._embedded(name, 1 << 40)  # out of bounds
    with pytest.raises(FileNotFoundError):
        pyconc.Lock._embedded("pyconc-" + "0" * 32, 4096)
    ev = pyconc.Event()
    with pytest.raises(ValueError):
        pyconc.Lock._embedded(ev._handle[1], ev._handle[2])  # a sync segment of another type
    del a, b, lk, buf, ev


# ---- processes ------------------------------------------------------------------------------------------------


def test_lock_across_processes(ctx):
    lock, counter = pyconc.Lock(), pyconc.AtomicInt64()
    run_procs(ctx, w.locked_increments, [(lock, counter, 2000)] * 2)
    assert counter.get() == 4000


def test_rlock_across_processes(ctx):
    lock, counter = pyconc.RLock(), pyconc.AtomicInt64()
    run_procs(ctx, w.rlock_increments, [(lock, counter, 1000)] * 2)
    assert counter.get() == 2000


def test_event_ping_pong_across_processes(ctx):
    ping, pong = pyconc.Event(), pyconc.Event()
    p = ctx.Process(target=w.event_pong, args=(ping, pong, 50))
    p.start()
    for _ in range(50):
        ping.set()
        assert pong.wait(10)
        pong.clear()
    p.join(10)
    assert p.exitcode == 0


def test_barrier_across_processes(ctx):
    counter = pyconc.AtomicInt64()
    b = pyconc.Barrier(3, action=counter.incr)
    q = ctx.Queue()
    run_procs(ctx, w.barrier_rounds, [(b, q, 10)] * 3)
    res = [q.get(timeout=5) for _ in range(30)]
    assert counter.get() == 10
    for r in range(10):
        assert sorted(i for rr, i in res if rr == r) == [0, 1, 2]


def test_barrier_abort_reaches_other_processes(ctx):
    b = pyconc.Barrier(3)
    started = pyconc.Event()
    p = ctx.Process(target=w.barrier_expect_broken, args=(b, started, 10))
    p.start()
    assert started.wait(10)
    deadline = time.monotonic() + 10
    while b.n_waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.002)
    b.abort()
    p.join(10)
    assert p.exitcode == 0


def test_condition_across_processes(ctx):
    cond = pyconc.Condition()
    woken, ready = pyconc.AtomicInt64(), pyconc.Semaphore(0)
    procs = [ctx.Process(target=w.condition_waiter, args=(cond, woken, ready)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=10)
    with cond:
        cond.notify()
    time.sleep(0.2)
    assert woken.get() == 1
    with cond:
        cond.notify_all()
    for p in procs:
        p.join(10)
    assert [p.exitcode for p in procs] == [0, 0] and woken.get() == 2


def test_semaphore_across_processes(ctx):
    sem = pyconc.BoundedSemaphore(2)
    inside, max_inside = pyconc.AtomicInt64(), pyconc.AtomicInt64()
    run_procs(ctx, w.semaphore_worker, [(sem, inside, max_inside, 50)] * 3)
    assert max_inside.get() <= 2 and sem.get_value() == 2


def test_rwlock_across_processes(ctx):
    rw, data, bad = pyconc.RWLock(), pyconc.AtomicInt64(), pyconc.AtomicInt64()
    procs = [ctx.Process(target=w.rw_writer, args=(rw, data, 300))]
    procs += [ctx.Process(target=w.rw_reader, args=(rw, data, bad, 600)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert data.get() == 600 and bad.get() == 0


def test_lock_through_a_queue(ctx):
    """Unlike multiprocessing's locks, ours may travel through queues after the process started."""
    inq, outq = ctx.Queue(), ctx.Queue()
    lock = pyconc.Lock()
    p = ctx.Process(target=w.hold_and_report, args=(inq, outq))
    p.start()
    inq.put(lock)
    assert outq.get(timeout=10) == "held"
    p.join(10)
    assert p.exitcode == 0 and not lock.locked()


def test_lock_to_pool_workers(ctx):
    lock, counter = pyconc.Lock(), pyconc.AtomicInt64()
    with ctx.Pool(2) as pool:
        assert all(pool.map(w.pool_task, [(lock, counter)] * 20, chunksize=1))
    assert counter.get() == 20


# ---- Ctrl-C -------------------------------------------------------------------------------------------------

BLOCKERS = {
    "lock": "l = pyconc.Lock(); l.acquire(); l.acquire()",
    "rlock_other_thread": (
        "import threading; l = pyconc.RLock(); t = threading.Thread(target=l.acquire); t.start(); t.join(); "
        "l.acquire()"
    ),
    "semaphore": "pyconc.Semaphore(0).acquire()",
    "event": "pyconc.Event().wait()",
    "barrier": "pyconc.Barrier(2).wait()",
    "condition": "c = pyconc.Condition(); c.acquire(); c.wait()",
    "rwlock": "rw = pyconc.RWLock(); rw.lock_read(); rw.lock_write()",
    "queue_get": "pyconc.Queue().get()",
    "queue_put": "q = pyconc.Queue(1); q.put(1); q.put(2)",
    "queue_join": "q = pyconc.JoinableQueue(); q.put(1); q.join()",
    "simplequeue_get": "pyconc.SimpleQueue().get()",
    "dict_shard_lock": (
        "import threading, time; d = pyconc.ConcurrentDict(1); "
        "threading.Thread(target=d.update_with, args=('a', lambda v: time.sleep(60)), daemon=True).start(); "
        "time.sleep(0.05); d['b'] = 1"
    ),
}

# Blocking calls that must outlast a signal whose handler returns (PEP 475): name -> (setup, call, check).
RETRIED = {
    "lock": ("l = pyconc.Lock(); l.acquire(); threading.Timer(0.3, l.release).start()", "l.acquire()"),
    "semaphore": ("s = pyconc.Semaphore(0); threading.Timer(0.3, s.release).start()", "s.acquire()"),
    "event": ("e = pyconc.Event(); threading.Timer(0.3, e.set).start()", "e.wait()"),
    "queue_get": ("q = pyconc.Queue(); threading.Timer(0.3, q.put, (1,)).start()", "q.get()"),
    "queue_put": ("q = pyconc.Queue(1); q.put(0); threading.Timer(0.3, q.get).start()", "q.put(1)"),
    "queue_join": (
        "q = pyconc.JoinableQueue(); q.put(1); q.get(); threading.Timer(0.3, q.task_done).start()",
        "q.join()",
    ),
    "dict_shard_lock": (
        "d = pyconc.ConcurrentDict(1); "
        "threading.Thread(target=d.update_with, args=('a', lambda v: time.sleep(0.3))).start(); time.sleep(0.05)",
        "d.__setitem__('b', 1)",
    ),
    "rwlock": ("rw = pyconc.RWLock(); rw.lock_read(); threading.Timer(0.3, rw.unlock_read).start()",
               "rw.lock_write()"),
}


@pytest.mark.parametrize("kind", sorted(BLOCKERS))
def test_ctrl_c_interrupts_a_blocked_wait(kind):
    code = f"import sys, pyconc; print('ready', flush=True); {BLOCKERS[kind]}"
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.15)
        assert p.poll() is None, "the call must block"
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=5)
        assert time.monotonic() - t0 < 1.0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err, err
    assert p.returncode != 0


@pytest.mark.parametrize("kind", sorted(RETRIED))
def test_wait_is_retried_after_a_signal_handler_returns(kind):
    """PEP 475: a handler that returns normally neither aborts the wait (no InterruptedError) nor ends it early."""
    setup, call = RETRIED[kind]
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
    try:
        env = {"pyconc": pyconc, "threading": threading, "time": time}
        exec(setup, env)
        signal.setitimer(signal.ITIMER_REAL, 0.02, 0.02)
        t0 = time.monotonic()
        eval(call, env)
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert hits, "the handler never ran during the wait"
    assert elapsed >= 0.2, f"the wait ended after {elapsed:.3f} s, before its release"


@pytest.mark.parametrize(
    "call",
    ["pyconc.Queue().get(timeout=0.4)", "pyconc.Lock().acquire() and L.acquire(timeout=0.4)"],
)
def test_timeout_is_kept_across_signal_handlers(call):
    """A handler that returns does not restart the timeout: the call still ends after about `timeout`."""
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *_: hits.append(1))
    env = {"pyconc": pyconc}
    if "L." in call:
        env["L"] = pyconc.Lock()
        env["L"].acquire()
        call = "L.acquire(timeout=0.4)"
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.03, 0.03)
        t0 = time.monotonic()
        try:
            result = eval(call, env)
        except Exception as e:  # queue.Empty
            result = e
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert hits
    assert result is False or type(result).__name__ == "Empty", result
    assert 0.35 <= elapsed < 2.0, elapsed


# ---- asyncio ------------------------------------------------------------------------------------------------


def test_asyncio_forms_do_not_block_the_loop():
    async def main():
        lock, sem, ev, rw = pyconc.Lock(), pyconc.Semaphore(0), pyconc.Event(), pyconc.RWLock()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick = asyncio.ensure_future(ticker())
        lock.acquire()
        threading.Timer(0.1, lock.release).start()
        t0 = time.monotonic()
        async with lock:
            assert lock.locked()
        assert time.monotonic() - t0 < 1
        assert not lock.locked()
        assert await lock.acquire_async(timeout=0) is True
        assert await lock.acquire_async(timeout=0.05) is False
        lock.release()

        threading.Timer(0.05, sem.release).start()
        assert await sem.acquire_async(timeout=5)
        assert await sem.acquire_async(timeout=0.05) is False

        threading.Timer(0.05, ev.set).start()
        assert await ev.wait_async(5)
        ev.clear()
        assert await ev.wait_async(0.05) is False

        rw.lock_read()
        threading.Timer(0.05, rw.unlock_read).start()
        async with rw.write():
            assert rw.write_locked
        assert not rw.write_locked

        b = pyconc.Barrier(2)
        threading.Timer(0.05, b.wait).start()
        assert await b.wait_async(5) in (0, 1)

        cond = pyconc.Condition(pyconc.Lock())

        def notifier():
            time.sleep(0.05)
            with cond:
                cond.notify()

        threading.Thread(target=notifier).start()
        async with cond:
            assert await cond.wait_async(5) is True
            assert cond._lock._is_owned()
            assert await cond.wait_async(0.05) is False
        rl = pyconc.Condition()
        async with rl:
            assert await rl.wait_for_async(lambda: True)
        tick.cancel()
        assert ticks >= 20, f"the event loop ran only {ticks} ticks"

    asyncio.run(main())


def test_asyncio_cancelled_waiter_leaves_nothing_acquired():
    async def main():
        lock, sem = pyconc.Lock(), pyconc.Semaphore(0)
        lock.acquire()
        for coro in (lock.acquire_async(), sem.acquire_async()):
            task = asyncio.ensure_future(coro)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        lock.release()
        sem.release()
        await asyncio.sleep(0.3)  # let worker threads finish their slice
        assert not lock.locked() and sem.get_value() == 1

    asyncio.run(main())
