"""Every blocking call reads `timeout=` as its stdlib counterpart does: 0 and negative values try once and fail at
once (multiprocessing, threading's Event/Condition/Barrier), `queue.Queue`'s ValueError for negative values,
threading's `blocking=True, timeout=-1` as forever. Huge values wait forever (the stdlib sometimes raises
OverflowError instead) and NaN is a ValueError when the call has to wait (the stdlib raises OSError or
ValueError)."""

import multiprocessing
import queue
import threading
import time

import pytest

import pyconc

# Timeouts for which pyconc must behave exactly like the stdlib.
EXACT = [0, 0.0, -0.001, -1, -5, 0.001]


def _held_by_thread(lock):
    """Makes another thread hold `lock` until the returned function is called."""
    got, done = threading.Event(), threading.Event()

    def hold():
        lock.acquire()
        got.set()
        done.wait()
        lock.release()

    t = threading.Thread(target=hold)
    t.start()
    got.wait()

    def stop():
        done.set()
        t.join()

    return stop


def _filled(q, n=1):
    for i in range(n):
        q.put(i)
    while q.empty():  # multiprocessing.Queue's feeder thread
        time.sleep(0.001)
    return q


# name -> (make(module) -> (obj, cleanup), call(obj, timeout)); module is multiprocessing/queue or pyconc.
def _lock_held(m):
    lk = m.Lock()
    lk.acquire()
    return lk, lk.release


def _rlock_held(m):
    lk = m.RLock()
    return lk, _held_by_thread(lk)


def _cond_held(m):
    c = m.Condition()
    c.acquire()
    return c, c.release


def _mp_queue(cls, n, maxsize=0):
    def make(m):
        q = getattr(m, cls)(maxsize)
        return _filled(q, n) if n else q, getattr(q, "close", lambda: None)

    return make


def _std_queue(n, maxsize=0):
    def make(m):
        q = (m.Queue if m is queue else m.StdConcurrentQueue)(maxsize)
        return _filled(q, n) if n else q, lambda: None

    return make


CASES = {
    "Lock held: acquire": (_lock_held, lambda o, t: o.acquire(True, t)),
    "Lock free: acquire": (lambda m: (m.Lock(), lambda: None), lambda o, t: o.acquire(True, t)),
    "RLock held elsewhere: acquire": (_rlock_held, lambda o, t: o.acquire(True, t)),
    "Semaphore(0): acquire": (lambda m: (m.Semaphore(0), lambda: None), lambda o, t: o.acquire(True, t)),
    "Semaphore(1): acquire": (lambda m: (m.Semaphore(1), lambda: None), lambda o, t: o.acquire(True, t)),
    "Event unset: wait": (lambda m: (m.Event(), lambda: None), lambda o, t: o.wait(t)),
    "Condition: wait": (_cond_held, lambda o, t: o.wait(t)),
    "Barrier(1): wait": (lambda m: (m.Barrier(1), lambda: None), lambda o, t: o.wait(t)),
    "Barrier(2): wait": (lambda m: (m.Barrier(2), lambda: None), lambda o, t: o.wait(t)),
    "Queue empty: get": (_mp_queue("Queue", 0), lambda o, t: o.get(True, t)),
    "Queue holding one: get": (_mp_queue("Queue", 1), lambda o, t: o.get(True, t)),
    "Queue: put": (_mp_queue("Queue", 0), lambda o, t: o.put(1, True, t)),
    "Queue(1) full: put": (_mp_queue("Queue", 1, 1), lambda o, t: o.put(1, True, t)),
    "JoinableQueue empty: get": (_mp_queue("JoinableQueue", 0), lambda o, t: o.get(True, t)),
    "queue.Queue empty: get": (_std_queue(0), lambda o, t: o.get(True, t)),
    "queue.Queue holding one: get": (_std_queue(1), lambda o, t: o.get(True, t)),
    "queue.Queue: put": (_std_queue(0), lambda o, t: o.put(1, True, t)),
    "queue.Queue(2): put": (_std_queue(0, 2), lambda o, t: o.put(1, True, t)),
    "queue.Queue(1) full: put": (_std_queue(1, 1), lambda o, t: o.put(1, True, t)),
}

# Cases that succeed at once whatever the timeout (so huge timeouts can be tried without waiting forever).
AVAILABLE = [
    "Lock free: acquire",
    "Semaphore(1): acquire",
    "Barrier(1): wait",
    "Queue holding one: get",
    "Queue: put",
    "queue.Queue holding one: get",
]


def _outcome(case, module, timeout):
    make, call = CASES[case]
    if module is not pyconc and case.startswith("queue.Queue"):
        module = queue
    elif module is not pyconc:
        module = multiprocessing
    obj, cleanup = make(module)
    start = time.monotonic()
    try:
        result = call(obj, timeout)
        out = ("returned", result)
    except Exception as e:  # any exception: its type is the outcome compared
        out = ("raised", type(e).__name__)
    finally:
        elapsed = time.monotonic() - start
        cleanup()
    return out, elapsed


@pytest.mark.parametrize("timeout", EXACT)
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_outcome_as_the_stdlib(case, timeout):
    expected, _ = _outcome(case, None, timeout)
    got, elapsed = _outcome(case, pyconc, timeout)
    assert got == expected, f"{case} with timeout={timeout!r}: stdlib {expected}, pyconc {got}"
    assert elapsed < 1.0, f"{case} with timeout={timeout!r} took {elapsed:.2f} s"


@pytest.mark.parametrize("timeout", [1e300, float("inf"), 1e12, None])
@pytest.mark.parametrize("case", AVAILABLE)
def test_huge_timeouts_mean_forever(case, timeout):
    got, elapsed = _outcome(case, pyconc, timeout)
    assert got[0] == "returned", got
    assert elapsed < 1.0


@pytest.mark.parametrize("case", sorted(set(CASES) - set(AVAILABLE)))
def test_nan_is_a_value_error(case):
    # (A call that succeeds without waiting may not look at the timeout, as in multiprocessing.)
    got, _elapsed = _outcome(case, pyconc, float("nan"))
    assert got == ("raised", "ValueError")


def test_huge_timeout_waits_until_released():
    q = pyconc.Queue()
    threading.Timer(0.1, q.put, (7,)).start()
    start = time.monotonic()
    assert q.get(timeout=1e300) == 7
    assert time.monotonic() - start >= 0.05


@pytest.mark.parametrize("make", [threading.Lock, pyconc.Lock, pyconc.RLock, pyconc.Semaphore])
def test_threading_blocking_minus_one_is_forever(make):
    lk = make() if make is not pyconc.Semaphore else make(1)
    stop = _held_by_thread(lk)
    threading.Timer(0.1, stop).start()
    start = time.monotonic()
    assert lk.acquire(blocking=True, timeout=-1) is True
    assert time.monotonic() - start >= 0.05
    lk.release()


def test_rwlock_negative_timeouts_fail_at_once():
    rw = pyconc.RWLock()
    assert rw.lock_write()
    for t in (0, -0.001, -1):
        start = time.monotonic()
        assert rw.lock_read(t) is False
        assert time.monotonic() - start < 1.0
    rw.unlock_write()
    assert rw.lock_read()
    for t in (0, -1):
        assert rw.lock_write(t) is False
    rw.unlock_read()


def test_nonblocking_ignores_the_timeout():
    # block=False never waits and never looks at the timeout (multiprocessing and queue.Queue alike).
    q = pyconc.StdConcurrentQueue()
    with pytest.raises(queue.Empty):
        q.get(False, -1)
    lk = pyconc.Lock()
    lk.acquire()
    assert lk.acquire(False, float("nan")) is False
    lk.release()
