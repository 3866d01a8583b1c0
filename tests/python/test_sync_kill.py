"""Kill tests: SIGKILL a process holding a Lock/RLock/RWLock or waiting at a Barrier at random points.

Documented behaviour checked here: nobody hangs; the next acquirer of a lock whose holder died gets the lock
within ~20 ms, with an OwnerDiedWarning and `owner_died` True until it releases; a waiter that dies inside a
Barrier breaks it (BrokenBarrierError for the others). 210 trials by default (a few seconds);
PYCONC_KILL_SCALE=10 runs ten times as many.
"""

import os
import random
import signal
import threading
import time
import warnings

import pytest

import pyconc

SCALE = int(os.environ.get("PYCONC_KILL_SCALE", "1"))


def fork(fn):
    pid = os.fork()
    if pid == 0:
        try:
            fn()
        finally:
            os._exit(0)
    return pid


def kill(pid):
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def wait_flag(flag, timeout=10):
    deadline = time.monotonic() + timeout
    while not flag and time.monotonic() < deadline:
        time.sleep(0.0002)
    assert flag, "child did not start"


def busy(us):
    end = time.perf_counter() + us / 1e6
    while time.perf_counter() < end:
        pass


def acquire_reporting(acquire):
    """Runs `acquire`; returns (acquired, owner_died_warned, seconds)."""
    t0 = time.monotonic()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ok = acquire()
    warned = [r for r in rec if issubclass(r.category, pyconc.OwnerDiedWarning)]
    return ok, bool(warned), time.monotonic() - t0


@pytest.mark.parametrize("kind, trials", [("Lock", 60), ("RLock", 50)])
def test_kill_lock_holder(kind, trials):
    lock = getattr(pyconc, kind)()
    rlock = kind == "RLock"
    died = 0
    for _ in range(trials * SCALE):
        started = pyconc.AtomicFlag()

        def child(started=started):  # this trial's flag, bound now
            rnd = random.Random(os.getpid())
            while True:
                lock.acquire()
                if rlock:
                    lock.acquire()
                started.set(True)
                busy(rnd.uniform(0, 300))
                if rlock:
                    lock.release()
                lock.release()
                busy(rnd.uniform(0, 50))

        pid = fork(child)
        wait_flag(started)
        time.sleep(random.uniform(0, 0.003))
        kill(pid)
        ok, warned, took = acquire_reporting(lambda: lock.acquire(timeout=5))
        assert ok and took < 2.0, f"acquire after the kill took {took:.3f}s"
        assert lock.owner_died == warned
        if warned:
            died += 1
            assert lock._takeovers >= died
        if rlock:
            assert lock._count() == 1
        lock.release()
        assert not lock.locked()
        assert not lock.owner_died
    assert died > 0, "no trial killed the holder while it held the lock"


def test_kill_rwlock_holder():
    rw = pyconc.RWLock()
    writer_died = 0
    for _ in range(50 * SCALE):
        started = pyconc.AtomicFlag()

        def child(started=started):  # this trial's flag, bound now
            rnd = random.Random(os.getpid())
            while True:
                if rnd.random() < 0.5:
                    rw.lock_write()
                    started.set(True)
                    busy(rnd.uniform(0, 300))
                    rw.unlock_write()
                else:
                    rw.lock_read()
                    started.set(True)
                    busy(rnd.uniform(0, 300))
                    rw.unlock_read()

        pid = fork(child)
        wait_flag(started)
        time.sleep(random.uniform(0, 0.003))
        kill(pid)
        ok, warned, took = acquire_reporting(lambda: rw.lock_write(5))
        assert ok and took < 2.0, f"lock_write after the kill took {took:.3f}s"
        writer_died += warned
        rw.unlock_write()
        assert rw.lock_read(1)
        rw.unlock_read()
        assert rw.readers() == 0
    assert writer_died > 0


def reap(pid, timeout):
    """Waits for `pid` to exit; returns its exit code, or None (after killing it) if it hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.001)
    kill(pid)
    return None


def test_kill_barrier_waiter():
    """Parties: this process, a victim and a witness. The victim is killed at a random point of its rounds; the
    witness, waiting for a round that cannot complete, must get BrokenBarrierError instead of hanging."""
    b = pyconc.Barrier(3)
    detected = 0
    for _ in range(50 * SCALE):
        b.reset()
        started = pyconc.AtomicInt64()

        def party(timeout, started=started):  # this trial's counter, bound now
            started.incr()
            try:
                while True:
                    b.wait(timeout)
            except threading.BrokenBarrierError:
                os._exit(0)
            os._exit(1)

        victim = fork(lambda: party(None))
        witness = fork(lambda: party(1.0))
        deadline = time.monotonic() + 10
        while started.get() < 2 and time.monotonic() < deadline:
            time.sleep(0.0002)
        for _ in range(random.randint(0, 3)):
            b.wait(5)
        time.sleep(random.uniform(0, 0.002))
        kill(victim)
        t0 = time.monotonic()
        code = reap(witness, 3)
        took = time.monotonic() - t0
        assert code == 0, f"witness exit code {code} (None: hung)"
        assert b.broken
        # Killed inside wait(): detected within a slice. Killed between rounds (a tiny window): the witness's
        # wait times out after 1 s instead, which breaks the barrier too (so "prompt" means under 0.9 s).
        detected += took < 0.9
    assert detected >= 25 * SCALE, f"only {detected} dead waiters were detected promptly"


def test_owner_died_warning_as_error_keeps_the_lock_held():
    lock = pyconc.Lock()
    flag = pyconc.AtomicFlag()

    def child():
        lock.acquire()
        flag.set(True)
        time.sleep(60)

    pid = fork(child)
    wait_flag(flag)
    kill(pid)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pyconc.OwnerDiedWarning)
        with pytest.raises(pyconc.OwnerDiedWarning):
            lock.acquire(timeout=5)
    assert lock.locked() and lock.owner_died and lock._is_owned()
    lock.release()
    assert not lock.owner_died
