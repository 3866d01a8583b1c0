"""Handles compare by the identity of the shared object, and drop-in reprs match the stdlib's."""

import multiprocessing as mp
import pickle
import re

import pytest

import pyconc
from pyconc.synchronization import IntervalLock
from workers import echo_handles


def _makers():
    return {
        "Lock": pyconc.Lock,
        "RLock": pyconc.RLock,
        "Semaphore": lambda: pyconc.Semaphore(2),
        "BoundedSemaphore": lambda: pyconc.BoundedSemaphore(2),
        "Event": pyconc.Event,
        "Condition": pyconc.Condition,
        "Barrier": lambda: pyconc.Barrier(2),
        "RWLock": pyconc.RWLock,
        "IntervalLock": IntervalLock,
        "Queue": pyconc.Queue,
        "SimpleQueue": pyconc.SimpleQueue,
        "JoinableQueue": pyconc.JoinableQueue,
        "ConcurrentQueue": pyconc.ConcurrentQueue,
        "StdConcurrentQueue": pyconc.StdConcurrentQueue,
        "AtomicFlag": pyconc.AtomicFlag,
        "AtomicReference": pyconc.AtomicReference,
        "ConcurrentGatheringIterator": pyconc.ConcurrentGatheringIterator,
        "Value": lambda: pyconc.Value("i", 1),
        "Array": lambda: pyconc.Array("d", 3),
        "Array('c')": lambda: pyconc.Array("c", 3),
        "RawValue": lambda: pyconc.RawValue("i", 1),
        "RawArray": lambda: pyconc.RawArray("i", 3),
    }


@pytest.mark.parametrize("kind", sorted(_makers()))
def test_handles_of_one_object_are_equal_and_hash_alike(kind):
    make = _makers()[kind]
    a = make()
    b = pickle.loads(pickle.dumps(a))
    assert a is not b
    assert a == b and not (a != b) and hash(a) == hash(b)
    assert {a: 1}[b] == 1
    c = make()
    assert a != c and not (a == c)
    assert a != object() and (a == 5) is False
    # What AtomicReference.get() returns is a handle of the stored object.
    r = pyconc.AtomicReference(a)
    assert r.get() == a and hash(r.get()) == hash(a)


def test_handles_returned_by_other_processes_are_equal(ctx):
    objs = [pyconc.Lock(), pyconc.Event(), pyconc.Queue(), pyconc.Value("d", 1.0), IntervalLock(),
            pyconc.AtomicReference(1), pyconc.ConcurrentDeque([1])]
    out = pyconc.Queue()
    p = ctx.Process(target=echo_handles, args=(objs, out))
    p.start()
    back = out.get(timeout=60)
    p.join(30)
    assert p.exitcode == 0
    for a, b in zip(objs, back):
        assert a == b, type(a)
        if not isinstance(a, pyconc.ConcurrentDeque):  # a container: unhashable, compares by contents
            assert hash(a) == hash(b)


def test_containers_and_counters_keep_value_semantics():
    d = pyconc.ConcurrentDict(dictionary={"a": 1})
    assert d == {"a": 1} and d == pickle.loads(pickle.dumps(d))
    assert d == pyconc.ConcurrentDict(dictionary={"a": 1})  # equal contents, as dicts
    q = pyconc.ConcurrentDeque([1])
    assert q == pyconc.ConcurrentDeque([1]) and q == [1]
    n = pyconc.AtomicInt64(3)
    assert n == 3 and n == pyconc.AtomicInt64(3)


def _norm(s):
    s = re.sub(r"0x[0-9a-f]+", "0x?", s)
    # ctypes names an array type after the module that first built it (pyconc or multiprocessing): drop it.
    s = re.sub(r"<[\w.]+\.(\w+_Array_\d+) object", r"<\1 object", s)
    return s.replace("multiprocessing.synchronize.", "").replace("multiprocessing.sharedctypes.", "")


def _norm_ours(s):
    return _norm(s).replace("pyconc.sharedctypes.", "").replace("pyconc.", "")


def test_dropin_reprs_match_multiprocessing():
    import ctypes
    import threading

    from workers import Point

    cases = [
        (mp.Lock, pyconc.Lock), (mp.RLock, pyconc.RLock),
        (lambda: mp.Semaphore(2), lambda: pyconc.Semaphore(2)),
        (lambda: mp.BoundedSemaphore(2), lambda: pyconc.BoundedSemaphore(2)),
        (mp.Event, pyconc.Event), (mp.Condition, pyconc.Condition),
        (lambda: mp.Barrier(2), lambda: pyconc.Barrier(2)),
        (lambda: mp.Value("i", 3), lambda: pyconc.Value("i", 3)),
        (lambda: mp.Value("i", 3, lock=False), lambda: pyconc.Value("i", 3, lock=False)),
        (lambda: mp.RawValue("d", 2.5), lambda: pyconc.RawValue("d", 2.5)),
        (lambda: mp.Array("d", 3), lambda: pyconc.Array("d", 3)),
        (lambda: mp.Array("c", 3), lambda: pyconc.Array("c", 3)),
        (lambda: mp.RawArray("i", 3), lambda: pyconc.RawArray("i", 3)),
        (lambda: mp.Value(Point, 1, 2.0), lambda: pyconc.Value(Point, 1, 2.0)),
        (lambda: mp.RawValue(Point, 1, 2.0), lambda: pyconc.RawValue(Point, 1, 2.0)),
    ]
    for theirs, ours in cases:
        t, o = theirs(), ours()
        assert _norm_ours(repr(o)) == _norm(repr(t))
        if hasattr(t, "acquire"):
            t.acquire(), o.acquire()
            assert _norm_ours(repr(o)) == _norm(repr(t))
            t.release(), o.release()
        if hasattr(t, "set") and hasattr(t, "is_set"):
            t.set(), o.set()
            assert _norm_ours(repr(o)) == _norm(repr(t))
    b1, b2 = mp.Barrier(2), pyconc.Barrier(2)
    b1.abort(), b2.abort()
    assert _norm_ours(repr(b2)) == _norm(repr(b1))
    # A lock held by another thread.
    l1, l2 = mp.Lock(), pyconc.Lock()
    t = threading.Thread(target=lambda: (l1.acquire(), l2.acquire()))
    t.start()
    t.join(10)
    assert repr(l2) == repr(l1) == "<Lock(owner=SomeOtherThread)>"
    # Queues show the default object repr, as multiprocessing's do.
    for theirs, ours in ((mp.Queue, pyconc.Queue), (mp.SimpleQueue, pyconc.SimpleQueue),
                         (mp.JoinableQueue, pyconc.JoinableQueue)):
        t, o = theirs(), ours()
        assert re.fullmatch(r"<pyconc\.queues\.\w+ object at 0x[0-9a-f]+>", repr(o))
        assert repr(o).split()[0].rsplit(".", 1)[1] == repr(t).split()[0].rsplit(".", 1)[1]
    del ctypes
