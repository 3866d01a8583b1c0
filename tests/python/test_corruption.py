"""Corrupt and hostile segments never hang pyconc (issue 11), nor crash it: every operation ends with a result or
an exception within its deadline.

* Every field of every structure (from `shm-layouts/*.md`, see `corrupt.py`) set to a few values, and seeded
  random writes, on live objects, each structure in a child process with a deadline (and a watchdog per
  scenario inside it).
* A scribbler process writing random bytes into a live queue's and dict's body while another process uses them.
* The hangs of the issue one by one, with what they must end in now.

`PYCONC_FAULT_SCALE=10` runs every value of every field and ten times the random writes and scribbling; the
default run is seeded and takes about 25 s. The children wait at most `PYCONC_LOCK_TIMEOUT` = 0.05 s for a lock
whose word names a live process (the runner's pid, which the corruptions write into lock words).
"""

import os
import subprocess
import sys
import textwrap

import pytest

import pyconc
from pyconc import _native

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = max(1, int(os.environ.get("PYCONC_FAULT_SCALE", "1")))
SEED = int(os.environ.get("PYCONC_FAULT_SEED", "11"))
KINDS = ["segment", "atomic", "arena", "block", "smallblock", "lock", "rlock", "semaphore", "event", "condition",
         "barrier", "rwlock", "queue", "dict"]  # fmt: skip
ENV = dict(os.environ, PYCONC_LOCK_TIMEOUT="0.05", PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_child(args, deadline):
    """Runs `corrupt.py args` with a deadline; fails naming the scenario that hung or crashed."""
    try:
        out = subprocess.run(
            [sys.executable, os.path.join(HERE, "corrupt.py"), *args],
            capture_output=True,
            text=True,
            timeout=deadline,
            env=ENV,
        )
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        begun = [line for line in text.splitlines() if line.startswith("BEGIN")]
        pytest.fail(f"corrupt.py {' '.join(args)} hung after {deadline} s, in {begun[-1:]}")
    begun = [line for line in out.stdout.splitlines() if line.startswith("BEGIN")]
    assert out.returncode == 0 and "DONE" in out.stdout, (
        f"corrupt.py {' '.join(args)} exited {out.returncode} in {begun[-1:]}:\n{out.stdout[-2000:]}\n"
        f"{out.stderr[-4000:]}"
    )
    return out.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_of_every_structure(kind):
    run_child(["fields", kind, str(SEED), str(SCALE)], deadline=120 * SCALE)


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_random_corruptions(kind):
    run_child(["random", kind, str(SEED), str(SCALE)], deadline=120 * SCALE)


@pytest.mark.parametrize("kind", ["queue", "dict"])
def test_scribbler_writes_random_bytes_while_another_process_uses_it(kind):
    seconds = 1.5 * SCALE
    out = run_child(["scribble", kind, str(SEED), str(seconds)], deadline=60 + 3 * seconds)
    assert "rounds" in out


# ---- the hangs of issue 11, one by one ------------------------------------------------------------------------


def run_snippet(code, deadline=60, lock_timeout="0.3"):
    """Runs Python `code` in a fresh process (with a lock timeout of `lock_timeout` s); returns its stdout."""
    env = dict(ENV, PYCONC_LOCK_TIMEOUT=lock_timeout)
    prelude = textwrap.dedent(
        """
        import os, pickle, sys, threading, time
        import pyconc
        from pyconc import _native
        from corrupt import Mapped, DATA_OFFSET, STATE_AT, live_pid, remove_own, add_fake_user

        def elapsed(fn, *a, **k):
            t0 = time.monotonic()
            try:
                r = fn(*a, **k)
            except Exception as e:
                r = e
            return r, time.monotonic() - t0
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=deadline,
        env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_user_table_lock_held_by_a_live_process_is_reported_and_ls_gc_go_on():
    # Issue 11, item 6: the lock word of a segment's user table naming a live pid blocked attach, the creator's
    # exit and the per-segment query behind `pyconc ls`/`gc`, forever.
    out = run_snippet(
        """
        stuck, fine = pyconc.AtomicInt64(1), pyconc.RWLock()  # two segments (atomics share an arena)
        names = [stuck._handle[1], fine._handle[1]]
        handle = pickle.dumps(stuck)
        m = Mapped(names[0])
        add_fake_user(m)
        m.put(40, 4, live_pid())  # SegmentHeader.users_lock
        rows, t = elapsed(_native.list_segments)
        by_name = {r["name"]: r for r in rows}
        assert t < 5, t
        assert "live process" in by_name[names[0]]["problem"], by_name[names[0]]
        assert os.getpid() in by_name[names[1]]["users"], "ls went on to the other segment"
        r, t = elapsed(_native.collect_segments, 3600)
        assert t < 5 and any(n == names[0] and "live process" in why for n, why in r[3]), r
        del stuck
        _native._arena_trim()  # the emptied arena is no longer kept for reuse: reattaching must open it afresh
        r, t = elapsed(pickle.loads, handle)
        assert isinstance(r, ValueError) and "user-table lock" in str(r) and t < 5, (r, t)
        m.put(40, 4, 0)
        remove_own(names[:1])
        print("ok")
        """
    )
    assert "ok" in out


def test_segment_marked_unlinked_is_file_not_found_and_removed_by_gc():
    # Issue 11, items 1 and 10: the "unlinked" header while the file exists: attaching must be
    # FileNotFoundError (it deadlocked), and gc must remove the file (it counted it "in use").
    out = run_snippet(
        """
        a = pyconc.AtomicInt64(1)
        name = a._handle[1]
        handle = pickle.dumps(a)
        m = Mapped(name)
        add_fake_user(m)
        m.put(28, 4, 2)  # SegmentHeader.state = STATE_UNLINKED
        del a
        r, t = elapsed(pickle.loads, handle)
        assert isinstance(r, FileNotFoundError) and t < 5, (r, t)
        assert os.path.exists("/dev/shm/" + name)
        removed, _, _, _ = _native.collect_segments(3600)
        assert name in removed and not os.path.exists("/dev/shm/" + name), removed
        print("ok")
        """
    )
    assert "ok" in out


def test_dict_shard_lock_held_by_a_live_process_times_out_naming_it():
    # Issue 11, item 8: dict writes waited forever on a shard lock whose word names a live pid.
    out = run_snippet(
        """
        d = pyconc.ConcurrentDict(scaling=1)
        d["a"] = 1
        m = Mapped(d.segment_name)
        shards = m.get(DATA_OFFSET + 16, 8)
        m.put(shards, 4, live_pid())  # Shard[0].lock.word
        r, t = elapsed(d.__setitem__, "b", 2)
        assert isinstance(r, TimeoutError) and str(live_pid()) in str(r), r
        assert 0.25 <= t < 5, t
        assert d["a"] == 1, "lock-free reads go on"
        m.put(shards, 4, 0)
        d["b"] = 2
        print("ok")
        """
    )
    assert "ok" in out


def test_dict_len_rejects_a_corrupt_counter_and_a_rehash_is_sized_from_the_table():
    # Issue 11, items 7 and 8: len() returned corrupt counters (list(d.items()) raised MemoryError), and an
    # insert sized its rehash from them (wrapping to 0 and hanging, or asking for a huge segment).
    out = run_snippet(
        """
        d = pyconc.ConcurrentDict(scaling=1)
        for i in range(5):
            d[i] = i
        m = Mapped(d.segment_name)
        shards = m.get(DATA_OFFSET + 16, 8)
        for bad in [1 << 62, (1 << 64) - 1, 1 << 22]:
            m.put(shards + 48, 8, bad)  # Shard[0].len
            r, _ = elapsed(len, d)
            assert isinstance(r, ValueError), r
            r, _ = elapsed(lambda: list(d.items()))
            assert isinstance(r, ValueError), r
            r, t = elapsed(d.__setitem__, "new", 1)
            assert r is None and t < 5, (r, t)
            assert len(d) == 6, len(d)
            del d["new"]
        print("ok")
        """
    )
    assert "ok" in out


def test_barrier_with_a_bad_phase_or_a_stuck_internal_lock_honours_timeouts():
    # Issue 11, item 5.
    out = run_snippet(
        """
        import threading
        b = pyconc.Barrier(2)
        m = Mapped(b._handle[1])
        st = DATA_OFFSET + STATE_AT
        for phase in (1, 2, 9):
            m.put(st + 44, 4, phase)  # BarrierState.phase
            r, t = elapsed(b.wait, 0.2)
            assert isinstance(r, threading.BrokenBarrierError) and t < 3, (phase, r, t)
            b.reset()
        m.put(st, 4, live_pid())  # BarrierState.lock.word
        r, t = elapsed(b.wait, 0.2)
        assert isinstance(r, threading.BrokenBarrierError) and 0.15 <= t < 3, (r, t)
        r, t = elapsed(b.wait)
        assert isinstance(r, TimeoutError) and str(live_pid()) in str(r) and t < 5, (r, t)
        r, t = elapsed(b.reset)
        assert isinstance(r, TimeoutError) and t < 5, (r, t)
        m.put(st, 4, 0)
        b.reset()
        print("ok")
        """
    )
    assert "ok" in out


def test_queue_slot_ahead_of_its_position_and_busy_op_records_honour_timeouts():
    # Issue 11, items 3 and 4.
    out = run_snippet(
        """
        import queue
        q = pyconc.Queue(4, capacity_bytes=1 << 16)
        q.put(1)
        q.get()
        m = Mapped(q.segment_name)
        slots, parts = m.get(DATA_OFFSET + 40, 8), m.get(DATA_OFFSET + 32, 8)
        for i in range(4):
            m.put(slots + 64 * i, 8, m.get(slots + 64 * i, 8) + 0x40000000)  # far ahead
        r, t = elapsed(q.put, 2, timeout=0.2)
        assert (r is None or isinstance(r, (ValueError, queue.Full))) and t < 3, (r, t)
        r, t = elapsed(q.get, timeout=0.2)
        assert (not isinstance(r, BaseException) or isinstance(r, (ValueError, queue.Empty))) and t < 3, (r, t)
        for i in range(4):  # every operation record of our participant entry busy
            m.put(parts + 16 + 24 * i, 4, 1)
        r, t = elapsed(q.put, 3, timeout=0.2)
        assert isinstance(r, ValueError) and "operation record" in str(r) and t < 3, (r, t)
        print("ok")
        """
    )
    assert "ok" in out


def test_forged_handles_are_rejected():
    # Issue 11, item 9: a forged AtomicInt64 handle at an offset inside the segment header was accepted (get()
    # returned the header magic, set(0) destroyed the segment); handles must name the object's own offset and
    # tag.
    a = pyconc.AtomicInt64(5)
    name, off = a._handle[1], a._handle[2]
    for bad in (0, 8, 40, 256, 4096, off + 8):
        with pytest.raises(ValueError):
            _native._rebuild(pyconc.AtomicInt64, ("AtomicInt64", name, bad, *a._handle[3:]))
    # This cell in another generation: a stale handle.
    with pytest.raises(FileNotFoundError):
        _native._rebuild(pyconc.AtomicInt64, ("AtomicInt64", name, off + (1 << 32), *a._handle[3:]))
    assert a.get() == 5
    e, s = pyconc.Event(), pyconc.Semaphore(1)
    forged = ("Semaphore", *e._handle[1:])  # a Semaphore handle pointing at an Event's cell
    with pytest.raises(ValueError):
        _native._rebuild(type(s), forged)
    with pytest.raises(ValueError):
        pyconc.Semaphore(_handle=forged)
    lock = pyconc.Lock()
    for bad in (0, 40, lock._handle[2] + 8):
        with pytest.raises(ValueError):
            pyconc.Lock(_handle=(lock._handle[0], lock._handle[1], bad, *lock._handle[3:]))
    arr = pyconc.Array("i", 4)
    buf = arr.get_obj()._pyconc_buffer
    for bad in (0, 256, buf.lock_offset + 8):
        with pytest.raises(ValueError):
            pyconc.Lock._embedded(buf.segment_name, bad)
    assert e.is_set() is False and s.get_value() == 1


def test_creator_exit_with_a_stuck_user_table_lock_is_bounded():
    # Issue 11, item 6: the creator's normal exit waited forever to leave a table whose lock a live pid held.
    out = run_snippet(
        """
        a = pyconc.AtomicInt64(1)
        name = a._handle[1]
        m = Mapped(name)
        m.put(40, 4, live_pid())
        print(name)
        """,
        deadline=30,
    )
    name = out.split()[-1]
    # The child exited (within the deadline) without being able to leave the table: its slot is dead now, and the
    # lock names a live process (us), so gc reports it. Free the lock and collect it.
    path = f"/dev/shm/{name}"
    if os.path.exists(path):
        with open(path, "r+b") as f:
            f.seek(40)
            f.write(b"\0\0\0\0")
        removed, _, _, _ = _native.collect_segments(3600)
        assert name in removed
    assert not os.path.exists(path)
