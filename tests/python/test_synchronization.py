import pickle
import signal
import threading
import time

import pytest

import pyconc
import sync_workers
from pyconc.synchronization import IntervalLock, RWLock, RWReadContext, RWWriteContext


def _wait_until(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition never held"
        time.sleep(0.005)


def test_module_names():
    import pyconc.synchronization as s

    assert s.RWLock is pyconc.RWLock
    assert sorted(s.__all__) == ["IntervalLock", "RWLock", "RWReadContext", "RWWriteContext"]
    assert pyconc.synchronization is s


def test_rwlock_inspection_and_contexts():
    rw = RWLock()
    assert rw.readers() == 0 and rw.writers_waiting() == 0 and not rw.writer_locked()
    with RWReadContext(rw):
        with RWReadContext(rw):
            assert rw.readers() == 2 and not rw.writer_locked()
        # A writer waits while a read lock is held, and is counted.
        got, done = threading.Event(), threading.Event()

        def writer():
            with RWWriteContext(rw):
                got.set()
                done.wait(30)

        t = threading.Thread(target=writer)
        t.start()
        _wait_until(lambda: rw.writers_waiting() == 1)
        assert not got.is_set() and not rw.writer_locked()
    got.wait(10)
    assert rw.writer_locked() and rw.writers_waiting() == 0 and rw.readers() == 0
    done.set()
    t.join(10)
    assert not rw.writer_locked()
    with RWWriteContext(rw):
        assert rw.writer_locked() and rw.write_locked
    assert not rw.writer_locked()


def test_rwlock_inspection_across_processes(ctx):
    rw = RWLock()
    held, release = pyconc.Event(), pyconc.Event()
    p = ctx.Process(target=sync_workers.hold_read_lock, args=(rw, held, release))
    p.start()
    try:
        assert held.wait(30)
        assert rw.readers() == 1 and not rw.writer_locked()
        t = threading.Thread(target=lambda: (rw.lock_write(), rw.unlock_write()))
        t.start()
        _wait_until(lambda: rw.writers_waiting() == 1)
    finally:
        release.set()
        p.join(30)
    t.join(30)
    assert p.exitcode == 0 and rw.writers_waiting() == 0 and rw.readers() == 0


def test_interval_lock_rules():
    il = IntervalLock()
    with pytest.raises(RuntimeError):
        il.unlock()
    with pytest.raises(RuntimeError):
        il.poll()
    with pytest.raises(RuntimeError):
        il.cede()
    il.lock()
    with pytest.raises(RuntimeError):
        il.lock()
    errors = []

    def other():
        for f in (il.unlock, il.poll, il.cede):
            try:
                f()
            except RuntimeError:
                errors.append(f.__name__)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert errors == ["unlock", "poll", "cede"]
    il.poll()  # no waiter: keeps it
    il.cede()
    assert il.locked()
    il.unlock()
    assert not il.locked()
    with il:
        assert il.locked()
    assert not il.locked()
    with pytest.raises(ValueError):
        IntervalLock(-1)


def test_interval_lock_poll_yields_to_waiters_after_the_interval():
    il = IntervalLock(0.05)
    order = []
    il.lock()
    waiter = threading.Thread(target=lambda: (il.lock(), order.append("waiter"), il.unlock()))
    waiter.start()
    _wait_until(lambda: il._waiters.get() == 1)
    il.poll()  # held for less than the interval: keeps it
    order.append("holder-1")
    time.sleep(0.06)
    il.poll()  # past the interval: the waiter runs, then we have it back
    order.append("holder-2")
    il.unlock()
    waiter.join(10)
    assert order == ["holder-1", "waiter", "holder-2"]
    # cede() yields at once.
    il.lock()
    waiter = threading.Thread(target=lambda: (il.lock(), order.append("waiter-2"), il.unlock()))
    waiter.start()
    _wait_until(lambda: il._waiters.get() == 1)
    il.cede()
    order.append("holder-3")
    il.unlock()
    waiter.join(10)
    assert order[-2:] == ["waiter-2", "holder-3"]


def test_interval_lock_across_processes(ctx):
    il = IntervalLock(0.01)
    counter = pyconc.AtomicInt64(0)
    il.lock()
    p = ctx.Process(target=sync_workers.interval_lock_increment, args=(il, counter))
    p.start()
    try:
        _wait_until(lambda: il._waiters.get() == 1, 60)
        assert counter.get() == 0
        il.cede()  # the child gets the lock, increments, releases; then it is ours again
        assert counter.get() == 1
    finally:
        il.unlock()
        p.join(30)
    assert p.exitcode == 0
    assert pickle.loads(pickle.dumps(il)) == il and il != IntervalLock()


def test_interval_lock_wait_is_interruptible():
    il = IntervalLock()
    holder_ready, done = threading.Event(), threading.Event()

    def hold():
        il.lock()
        holder_ready.set()
        done.wait(30)
        il.unlock()

    t = threading.Thread(target=hold)
    t.start()
    holder_ready.wait(10)

    def on_alarm(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            il.lock()
        assert time.monotonic() - t0 < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        done.set()
        t.join(10)
    assert il._waiters.get() == 0 and not il._mine()
    with il:
        pass
