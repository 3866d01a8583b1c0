"""Small objects share arena segments, each with its own lifetime (issue 10, `segment::arena`)."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest

import pyconc
from conftest import run_procs
from pyconc import _native


def arenas():
    """{name: live objects} of the arenas this process uses."""
    me = os.getpid()
    return {r["name"]: r["objects"] for r in _native.list_segments() if r["kind"] == "arena" and me in r["users"]}


def test_a_million_atomics_and_100k_locks_take_a_handful_of_segments():
    xs = [pyconc.AtomicInt64(i) for i in range(1_000_000)]
    locks = [pyconc.Lock() for _ in range(100_000)]
    mine = arenas()
    assert 4 <= len(mine) <= 6, mine
    assert sum(mine.values()) == 1_100_000
    assert xs[999_999].get() == 999_999 and xs[123].incr() == 124
    assert locks[-1].acquire(timeout=0) and not locks[-1].acquire(timeout=0)
    locks[-1].release()
    del xs, locks
    assert set(arenas().values()) == {0}, "every object is freed"
    assert len(arenas()) <= 1, "one emptied arena is kept for the next small objects"
    _native._arena_trim()
    assert arenas() == {}, "and removed by trim (or at exit)"


def _bump(a, lock, sem, ev, n):
    for _ in range(n):
        with lock:
            a.incr()
    sem.release()
    ev.wait(30)


def test_objects_are_attached_in_children_and_freed_after_all_let_go(ctx):
    a, lock, sem, ev = pyconc.AtomicInt64(0), pyconc.Lock(), pyconc.Semaphore(0), pyconc.Event()
    arena = a._handle[1]
    assert {o._handle[1] for o in (lock, sem, ev)} == {arena}, "one arena for all four"
    procs = [ctx.Process(target=_bump, args=(a, lock, sem, ev, 500)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        assert sem.acquire(timeout=60)
    assert a.get() == 1000
    assert arenas()[arena] == 4
    handle = pickle.dumps(a)
    ev.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    del a, lock, sem, ev
    _native._arena_trim()  # the spare this process kept
    assert not os.path.exists(f"/dev/shm/{arena}"), "the arena goes with the last holder of its last object"
    with pytest.raises(FileNotFoundError):
        pickle.loads(handle)


def _attach_and_wait(h, ready):
    a = pickle.loads(h)
    a.incr()
    ready.set()
    signal.pause()


def test_a_killed_holder_does_not_keep_a_cell_alive(ctx):
    keep, a = pyconc.AtomicInt64(), pyconc.AtomicInt64(7)
    arena = a._handle[1]
    ready = pyconc.Event()
    p = ctx.Process(target=_attach_and_wait, args=(pickle.dumps(a), ready))
    p.start()
    assert ready.wait(60)
    assert a.get() == 8
    p.kill()
    p.join(30)
    handle = pickle.dumps(a)
    del a
    # The dead child still counts as a holder of `a` until it is reaped: what gc, ls and the automatic reaping
    # do (and a process allocating in the arena, now and then).
    _native.collect_segments()
    assert arenas()[arena] == 2, "keep and the Event"
    with pytest.raises(FileNotFoundError):
        pickle.loads(handle)
    del keep, ready


def test_a_stale_handle_after_reuse_is_file_not_found():
    keep = pyconc.AtomicInt64()
    a = pyconc.AtomicInt64(5)
    handle, offset = pickle.dumps(a), a._handle[2]
    assert pickle.loads(handle) == 5, "same process: shares the hold"
    del a
    reused = [pyconc.AtomicInt64(9) for _ in range(4)]
    same = [b for b in reused if b._handle[2] & 0xFFFFFFFF == offset & 0xFFFFFFFF]
    assert same, "the freed cell is reused"
    assert same[0]._handle[2] != offset, "with a new generation"
    with pytest.raises(FileNotFoundError):
        pickle.loads(handle)
    assert same[0].get() == 9
    del keep, reused, same


def _try_attach(h, q):
    try:
        pickle.loads(h)
        q.put("attached")
    except FileNotFoundError:
        q.put("FileNotFoundError")


def test_unlink_stops_new_attaches_and_close_lets_go(ctx):
    keep = pyconc.AtomicInt64()
    a = pyconc.AtomicInt64(3)
    q = pyconc.SimpleQueue()
    a.unlink()
    h = pickle.dumps(a)
    run_procs(ctx, _try_attach, [(h, q)])
    # A forked child inherited this process's hold (and handles); other children are new attaches.
    assert q.get() == ("attached" if ctx.get_start_method() == "fork" else "FileNotFoundError")
    assert a.get() == 3, "holders keep it"
    b = pickle.loads(h)  # this process holds it already
    a.close()
    assert a.closed
    with pytest.raises(ValueError):
        a.get()
    assert b.get() == 3, "another handle of this process keeps the hold"
    objects = arenas()[keep._handle[1]]
    b.close()
    assert arenas()[keep._handle[1]] == objects - 1, "the last handle's close() frees the cell"
    del a, b, keep, q


def test_objects_in_own_segments_still_open_by_handle():
    # A Condition's wait table, a Barrier and an RWLock keep segments of their own; their handles name them.
    c, b, rw = pyconc.Condition(), pyconc.Barrier(2), pyconc.RWLock()
    for o in (c._queue, b, rw):
        assert _native.list_segments() and o._handle[3] != 8
    assert c._lock._handle[3] == 8, "a Condition's lock is in an arena"
    c2 = pickle.loads(pickle.dumps(c))
    with c2:
        c2.notify()


def _run(code, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.timeout(600)
def test_running_out_of_mappings_is_a_memory_error_not_an_abort():
    # Objects with segments of their own take one mapping each; at vm.max_map_count the next one fails with a
    # Python exception, and what was created is cleaned up at exit.
    out = _run("""
        import pyconc
        xs = []
        try:
            while True:
                xs.append(pyconc.Barrier(1))
        except MemoryError as e:
            print("MemoryError after", len(xs), "max_map_count" in str(e))
        del xs[:100]
        atoms = [pyconc.AtomicInt64() for _ in range(1000)]  # arenas work once mappings are free again
        print("ok")
    """)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"
    assert "MemoryError after" in out.stdout and "ok" in out.stdout, out.stdout + out.stderr[-3000:]


def _add_to_values(v, arr, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1
        with arr.get_lock():  # `arr[0] += 1` alone takes the lock twice (get, then set): not atomic
            arr[0] += 1


def test_small_values_and_arrays_share_an_arena_with_their_locks(ctx):
    v, arr, raw = pyconc.Value("q", 0), pyconc.Array("i", 4), pyconc.RawValue("d", 2.5)
    big = pyconc.Array("d", 100)  # 800 bytes of items: a segment of its own
    names = {o.get_obj()._pyconc_buffer.segment_name for o in (v, arr)} | {raw._pyconc_buffer.segment_name}
    assert len(names) == 1 and next(iter(names)) in arenas()
    assert big.get_obj()._pyconc_buffer.segment_name not in arenas()
    run_procs(ctx, _add_to_values, [(v, arr, 200), (v, arr, 200)])
    assert v.value == 400 and arr[0] == 400 and raw.value == 2.5
    lock_handle = v.get_lock()._handle
    assert lock_handle[1] in names and lock_handle[3] == 8, "the embedded lock is in the cell"
    del v, arr, raw, big
    assert set(arenas().values()) == {0}


def test_create_and_drop_reuses_the_spare_arena():
    # Creating and dropping one object at a time keeps one empty arena (this process's spare) instead of
    # creating and removing a segment per object.
    _native._arena_trim()
    names = set()
    for _ in range(100):
        a = pyconc.AtomicInt64()
        names.add(a._handle[1])
        del a
    assert len(names) == 1 and arenas() == {names.pop(): 0}
    _native._arena_trim()
    assert arenas() == {}
