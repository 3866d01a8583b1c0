import collections
import contextlib
import os
import pickle
import queue
import random
import signal
import threading
import time

import pytest

import deque_workers
import pyconc
from conftest import run_procs
from pyconc import ConcurrentDeque


def test_matches_collections_deque_under_random_operations():
    rng = random.Random(5)
    for maxlen in (None, 0, 1, 7):
        ours, model = ConcurrentDeque(maxlen=maxlen), collections.deque(maxlen=maxlen)
        for step in range(3000):
            op = rng.randrange(12)
            v = rng.choice([step, str(step), (step, "t"), [step], None, 1.5])
            if op < 3:
                ours.append(v), model.append(v)
            elif op < 5:
                ours.appendleft(v), model.appendleft(v)
            elif op == 5:
                items = [step, step + 1, step + 2]
                ours.extend(items), model.extend(items)
            elif op == 6:
                items = [-step, -step - 1]
                ours.extendleft(items), model.extendleft(items)
            elif op in (7, 8):
                name = "pop" if op == 7 else "popleft"
                if model:
                    assert getattr(ours, name)() == getattr(model, name)()
                else:
                    with pytest.raises(IndexError, match="pop from an empty deque"):
                        getattr(ours, name)()
            elif op == 9:
                n = rng.randrange(-12, 13)
                ours.rotate(n), model.rotate(n)
            elif op == 10 and model:
                x = rng.choice(list(model))
                ours.remove(x), model.remove(x)
            elif op == 11 and step % 300 == 0:
                ours.clear(), model.clear()
            assert len(ours) == len(model)
            if step % 97 == 0:
                assert list(ours) == list(model)
                assert ours == model and ours == list(model)
                if model:
                    i = rng.randrange(-len(model), len(model))
                    assert ours[i] == model[i]
        assert list(ours) == list(model)
        assert list(reversed(ours)) == list(reversed(model))
        assert ours.maxlen == model.maxlen
        assert repr(ours) == repr(model).replace("deque(", "ConcurrentDeque(", 1)


def test_deque_api_details():
    d = ConcurrentDeque("abc")
    assert list(d) == ["a", "b", "c"]
    assert "b" in d and "z" not in d
    assert d.count("a") == 1 and len(d) == 3 and bool(d) and not ConcurrentDeque()
    d.rotate()
    assert list(d) == ["c", "a", "b"]
    del d[0]
    assert list(d) == ["a", "b"]
    assert d < ["b"] and d <= ["a", "b"] and d > ["a"] and d == collections.deque("ab", maxlen=5)
    assert d == collections.deque("ab") and d == ConcurrentDeque("ab")
    assert (d == 3) is False and d != "ab"
    c = d.copy()
    c.append("z")
    assert list(d) == ["a", "b"] and list(c) == ["a", "b", "z"]
    with pytest.raises(IndexError, match="deque index out of range"):
        d[2]
    with pytest.raises(IndexError, match="deque index out of range"):
        d[-3]
    with pytest.raises(TypeError, match="sequence index must be integer"):
        d["x"]
    with pytest.raises(ValueError, match="'zz' is not in deque"):
        d.remove("zz")
    with pytest.raises(ValueError, match="maxlen must be non-negative"):
        ConcurrentDeque(maxlen=-1)
    with pytest.raises(TypeError):
        ConcurrentDeque(maxlen="3")
    with pytest.raises(TypeError, match="unhashable"):
        hash(d)
    assert isinstance(d, collections.abc.MutableSequence)
    b = ConcurrentDeque(range(10), 3)
    assert list(b) == [7, 8, 9] and repr(b) == "ConcurrentDeque([7, 8, 9], maxlen=3)"
    b.appendleft(0)
    assert list(b) == [0, 7, 8]
    # Values are copies made by the codec.
    lst = [1, 2]
    d.append(lst)
    assert d[-1] == lst and d[-1] is not lst
    # An item that cannot be encoded adds nothing, even in the middle of an extend.
    n = len(d)
    with pytest.raises(TypeError):  # pickle's "cannot pickle '_thread.lock' object"
        d.extend([1, 2, threading.Lock()])
    assert len(d) == n


class _Raises:
    def __eq__(self, other):
        raise ZeroDivisionError("no comparing")

    __hash__ = object.__hash__


def test_comparisons_that_raise_propagate():
    d = ConcurrentDeque([1, 2, 3])
    with pytest.raises(ZeroDivisionError):
        _ = _Raises() in d
    with pytest.raises(ZeroDivisionError):
        d.remove(_Raises())
    with pytest.raises(ZeroDivisionError):
        d.count(_Raises())
    assert list(d) == [1, 2, 3]


def test_blocking_pops():
    assert pyconc.Empty is queue.Empty and pyconc.Full is queue.Full
    d = ConcurrentDeque()
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        d.popleft(timeout=0.1)
    with pytest.raises(queue.Empty):
        d.pop(True, 0.05)
    assert time.monotonic() - t0 >= 0.14
    # block=False never waits; a timeout is then ignored (as in queue.Queue).
    with pytest.raises(IndexError):
        d.pop(False, 5)
    with pytest.raises(ValueError):
        d.pop(True, -1)
    out = []
    t = threading.Thread(target=lambda: out.append(d.popleft(block=True)))
    t.start()
    time.sleep(0.05)
    assert t.is_alive()
    d.append("hello")
    t.join(10)
    assert out == ["hello"]


def test_threads_push_and_pop_every_item_once():
    d = ConcurrentDeque()
    n, producers = 3000, 3
    got, lock = [], threading.Lock()

    def produce(k):
        for i in range(n):
            (d.append if i % 2 else d.appendleft)((k, i))

    def consume():
        mine = []
        for _ in range(n):
            mine.append(d.pop(block=True, timeout=30) if len(mine) % 2 else d.popleft(block=True, timeout=30))
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    threads += [threading.Thread(target=consume) for _ in range(producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got) == sorted((k, i) for k in range(producers) for i in range(n))
    assert len(d) == 0


def test_processes_push_and_pop_every_item_once(ctx):
    d = ConcurrentDeque()
    results = pyconc.Queue()
    n = 2000
    consumer = ctx.Process(target=deque_workers.consume, args=(d, 2 * n, results))
    consumer.start()
    run_procs(ctx, deque_workers.produce, [(d, 0, n), (d, n, n)])
    assert results.get(timeout=60) == list(range(2 * n))
    consumer.join(30)
    assert consumer.exitcode == 0 and len(d) == 0


def test_blocked_pop_in_a_child_wakes_on_a_push(ctx):
    d = ConcurrentDeque()
    q = pyconc.Queue()
    p = ctx.Process(target=deque_workers.pop_blocking, args=(d, q))
    p.start()
    time.sleep(0.2)
    d.appendleft({"k": [1, 2]})
    assert q.get(timeout=30) == {"k": [1, 2]}
    p.join(30)
    assert p.exitcode == 0


def test_pickles_as_a_handle():
    d = ConcurrentDeque([1], maxlen=4)
    e = pickle.loads(pickle.dumps(d))
    e.append(2)
    assert list(d) == [1, 2] and e.maxlen == 4
    # Through another shared structure.
    q = pyconc.Queue()
    q.put(d)
    f = q.get(timeout=5)
    f.appendleft(0)
    assert list(d) == [0, 1, 2]


def test_starts_small_and_grows():
    d = ConcurrentDeque()
    size = os.stat(f"/dev/shm/{d.segment_name}").st_size
    assert size < 256 << 10, size
    d.extend([b"x" * 10_000] * 500)
    assert d.stats()["segments"] > 1 and len(d) == 500
    e = pickle.loads(pickle.dumps(d))
    assert e[499] == b"x" * 10_000
    d.clear()
    assert len(e) == 0


@pytest.mark.parametrize("mode", ["crash-points", "sigkill"])
def test_processes_killed_mid_operation_do_not_wedge_it(ctx, mode):
    d = ConcurrentDeque(maxlen=500)
    if mode == "crash-points":
        # Each child `_exit`s inside an operation (see `deque::crash_point`: after allocating, after publishing a
        # push or a pop, inside a ring replacement, after a resize, inside a rotation, inside a clear): the next
        # locker completes or rolls it back.
        for point in (1, 2, 3, 4, 5, 6, 7, 9):
            p = ctx.Process(target=deque_workers.churn, args=(d, point, point))
            p.start()
            p.join(60)
            assert p.exitcode == 9, f"crash point {point} not reached"
    else:
        for round in range(3):
            procs = [ctx.Process(target=deque_workers.churn, args=(d, 10 + round * 2 + i, 0)) for i in range(2)]
            for p in procs:
                p.start()
            time.sleep(0.3 + 0.1 * round)
            for p in procs:
                with contextlib.suppress(ProcessLookupError):  # reaped already: the exit code tells why
                    os.kill(p.pid, signal.SIGKILL)
                p.join(30)
                assert p.exitcode == -signal.SIGKILL, f"a worker ended by itself (exit code {p.exitcode})"
    # Usable at once, and every item whole.
    t0 = time.monotonic()
    d.append(("item", -1, 0, ""))
    assert time.monotonic() - t0 < 5
    for item in d:
        assert item[0] == "item" and len(item) == 4
    n = len(d)
    d.rotate(3)
    d.appendleft(("item", -1, 1, ""))
    assert len(d) == min(n + 1, 500)
    if mode == "crash-points":
        assert d.stats()["repairs"] >= 8
