"""Every shared class, how to make one and how to use it: the table of the lifetime tests (test_lifetime.py), and
the child process they drive (importable by spawned children)."""

import gc
import pickle

import pyconc


def _lock(o):
    assert o.acquire(timeout=5)
    o.release()


def _cond(o):
    with o:
        o.notify()


def _rw(o):
    assert o.lock_read(5)
    o.unlock_read()


def _queue(o):
    o.put(1)
    assert o.get(timeout=5) == 1


def _joinable(o):
    _queue(o)
    o.task_done()


def _simple(o):
    o.put(1)
    assert o.get() == 1


def _cq(o):
    o.push(1)
    assert o.pop(5) == 1


def _dict(o):
    o["k"] = 1
    assert o["k"] == 1


def _ref(o):
    o.set(2)
    assert o.get() == 2


def _deque(o):
    o.append(1)
    assert o.pop() == 1


def _gather(o):
    o.insert(0, "x")
    assert list(o.iterator(0, clear=False)) == ["x"]


def _get(o):
    o.get()


#: name -> (make, use). `use` raises after close() (except for the raw ctypes objects, see RAW).
CLASSES = {
    "AtomicInt64": (lambda: pyconc.AtomicInt64(3), _get),
    "AtomicFlag": (lambda: pyconc.AtomicFlag(True), bool),
    "Value": (lambda: pyconc.Value("i", 4), lambda o: o.value),
    "Array": (lambda: pyconc.Array("d", 10), lambda o: o[0]),
    "RawValue": (lambda: pyconc.RawValue("i", 2), lambda o: o.value),
    "RawArray": (lambda: pyconc.RawArray("b", 5), lambda o: o[0]),
    "Lock": (pyconc.Lock, _lock),
    "RLock": (pyconc.RLock, _lock),
    "Semaphore": (lambda: pyconc.Semaphore(2), _lock),
    "BoundedSemaphore": (lambda: pyconc.BoundedSemaphore(2), _lock),
    "Event": (pyconc.Event, lambda o: o.set() or o.is_set()),
    "Condition": (pyconc.Condition, _cond),
    "Barrier": (lambda: pyconc.Barrier(2), lambda o: o.parties),
    "RWLock": (pyconc.RWLock, _rw),
    "ProcessSemaphore": (lambda: pyconc.ProcessSemaphore(2), lambda o: o.value),
    "Queue": (pyconc.Queue, _queue),
    "JoinableQueue": (pyconc.JoinableQueue, _joinable),
    "SimpleQueue": (pyconc.SimpleQueue, _simple),
    "ConcurrentQueue": (pyconc.ConcurrentQueue, _cq),
    "StdConcurrentQueue": (pyconc.StdConcurrentQueue, _joinable),
    "ConcurrentDict": (pyconc.ConcurrentDict, _dict),
    "AtomicReference": (lambda: pyconc.AtomicReference(1), _ref),
    "ConcurrentDeque": (pyconc.ConcurrentDeque, _deque),
    "ConcurrentGatheringIterator": (pyconc.ConcurrentGatheringIterator, _gather),
}

#: ctypes objects whose memory *is* the segment: ctypes reaches it directly, so close() cannot stop `o.value`;
#: their hold goes when the object is collected.
RAW = {"RawValue", "RawArray"}


def attach_use_close(conn):
    """The child of the cross-process lifetime test. Receives {name: pickled object}, attaches to each and says
    which attached (else the exception's type name); on "use", uses each and says how it went; on "close",
    closes and drops each, then says so."""
    blobs = conn.recv()
    objs, attached = {}, {}
    for name, blob in blobs.items():
        try:
            objs[name] = pickle.loads(blob)
            attached[name] = "ok"
        except Exception as e:
            attached[name] = type(e).__name__
    conn.send(attached)
    assert conn.recv() == "use"
    used = {}
    for name, o in objs.items():
        try:
            CLASSES[name][1](o)
            used[name] = "ok"
        except Exception as e:
            used[name] = f"{type(e).__name__}: {e}"
    conn.send(used)
    assert conn.recv() == "close"
    for name in list(objs):
        objs.pop(name).close()
    gc.collect()
    conn.send("closed")
