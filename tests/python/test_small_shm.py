"""A full /dev/shm is a MemoryError where the space is taken, never a SIGBUS later.

Each scenario runs in a private mount namespace (`unshare -m`) with a 64 MB tmpfs on /dev/shm (the Docker and
Kubernetes default), so it neither sees nor fills the machine's /dev/shm. Needs root (skipped otherwise).
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

SMALL_MB = 64


def _can_unshare():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -m (a private /dev/shm)")

PRELUDE = """
import multiprocessing as mp, os, sys
import pyconc

def free_mb():
    st = os.statvfs("/dev/shm")
    return st.f_bavail * st.f_frsize / 2**20
"""


def run_small(body, mb=SMALL_MB, timeout=120):
    """Runs `body` (Python) with a private `mb`-MB tmpfs on /dev/shm; returns the CompletedProcess."""
    script = PRELUDE + textwrap.dedent(body)
    cmd = (
        f"mount -t tmpfs -o size={mb}m tmpfs /dev/shm && exec {sys.executable} -c {_shell_quote(script)}"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def _shell_quote(s):
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _check(out, expect):
    assert out.returncode != -signal.SIGBUS, f"killed by SIGBUS\n{out.stdout}\n{out.stderr}"
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    for line in expect:
        assert line in out.stdout, f"{line!r} not in\n{out.stdout}\n{out.stderr}"


def test_two_big_arrays_the_second_is_a_memory_error_at_creation():
    # Two Array('d', 4M) (32 MB each) and a third do not fit in 64 MB: the one that does not fit fails when it
    # is created, and filling the others is safe.
    out = run_small("""
        import numpy as np
        arrays = []
        try:
            for i in range(3):
                arrays.append(pyconc.Array("d", 4_000_000))
                np.frombuffer(arrays[-1].get_obj(), "d")[:] = 1.0
            print("all fit")
        except MemoryError as e:
            print("MemoryError at array", len(arrays), "/dev/shm" in str(e))
        for a in arrays:
            assert np.frombuffer(a.get_obj(), "d").sum() == 4_000_000
        print("filled ok")
    """)
    _check(out, ["MemoryError at array 2 True", "filled ok"])


def test_reserve_false_is_sharedmemory_like():
    # The documented trade-off: reserve=False creates at once, and filling past what /dev/shm holds is SIGBUS.
    out = run_small("""
        import numpy as np
        arrays = [pyconc.RawArray("d", 4_000_000, reserve=False) for _ in range(3)]
        print("created", flush=True)
        for a in arrays:
            np.frombuffer(a, "d")[:] = 1.0
        print("filled")
    """)
    assert "created" in out.stdout and "filled" not in out.stdout
    assert out.returncode == -signal.SIGBUS, (out.returncode, out.stderr)


def test_readme_quickstart_in_64_mb():
    # The README's quickstart asks for an 80 MB array: on a 64 MB /dev/shm that is a MemoryError at creation.
    # With a 1M-double array, the whole quickstart runs (spawn children, an atomic, a queue) in 64 MB.
    body = """
        import multiprocessing as mp
        import pyconc

        def work(counter, data, results):
            for _ in range(100_000):
                counter.incr()
            with data.get_lock():
                data[0] += 1.0
            results.put(("done", mp.current_process().name))

        if __name__ == "__main__":
            try:
                pyconc.Array("d", 10_000_000)
                print("80 MB array fit")
            except MemoryError:
                print("80 MB array: MemoryError")
            counter = pyconc.AtomicInt64(0)
            data = pyconc.Array("d", 1_000_000)
            results = pyconc.Queue()
            ctx = mp.get_context("spawn")
            procs = [ctx.Process(target=work, args=(counter, data, results)) for _ in range(4)]
            for p in procs: p.start()
            got = [results.get(timeout=60) for _ in procs]
            for p in procs: p.join(60)
            assert counter.get() == 400_000 and data[0] == 4.0, (counter.get(), data[0])
            print("quickstart ok", len(got))
    """
    # spawn children re-import the main module: give them a file, not -c.
    out = run_small(f"""
        import tempfile, runpy
        src = {textwrap.dedent(body)!r}
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(src)
        runpy.run_path(f.name, run_name="__main__")
        os.unlink(f.name)
    """)
    _check(out, ["80 MB array: MemoryError", "quickstart ok 4"])


def test_queue_put_is_a_memory_error_when_dev_shm_is_full():
    # A queue reserves its ring at creation and its heap as items arrive: once /dev/shm is full a put raises
    # MemoryError (it does not wait: taking items out would not give /dev/shm room), and the queue stays usable.
    out = run_small("""
        q = pyconc.Queue()
        filler = pyconc.Array("b", int((free_mb() - 12) * 2**20))  # leave ~12 MB
        item = b"x" * (1 << 20)
        n = 0
        try:
            for _ in range(64):
                q.put(item, timeout=5)
                n += 1
            print("no error")
        except MemoryError as e:
            print("MemoryError after", n, "puts")
        assert 3 <= n <= 12, n
        assert q.get(timeout=5) == item
        q.put(item, timeout=5)  # the freed block is reused: no new space needed
        for _ in range(n):
            assert q.get(timeout=5) == item
        print("queue ok")
    """)
    _check(out, ["MemoryError after", "queue ok"])


def test_dict_insert_is_a_memory_error_when_dev_shm_is_full():
    out = run_small("""
        d = pyconc.ConcurrentDict()
        filler = pyconc.Array("b", int((free_mb() - 8) * 2**20))  # leave ~8 MB
        n = 0
        try:
            for i in range(1_000_000):
                d[i] = b"v" * 1000
                n += 1
            print("no error")
        except MemoryError as e:
            print("MemoryError after", n, "inserts")
        assert n > 100, n
        assert d[0] == b"v" * 1000 and d[n - 1] == b"v" * 1000
        del d[0]
        print("dict ok", len(d) == n - 1)
    """)
    _check(out, ["MemoryError after", "dict ok True"])


def test_small_objects_until_full():
    # Atomics, locks and values: each creation that does not fit is a MemoryError.
    out = run_small("""
        keep = [pyconc.Array("b", int((free_mb() - 1) * 2**20))]
        kinds = [pyconc.AtomicInt64, pyconc.Lock, pyconc.Event, pyconc.RWLock, lambda: pyconc.Value("d", 1.0)]
        try:
            for i in range(100_000):
                keep.append(kinds[i % len(kinds)]())
            print("no error")
        except MemoryError:
            print("MemoryError after", len(keep) - 1)
    """, mb=8)
    _check(out, ["MemoryError after"])


def test_pool_like_workload_in_64_mb():
    # 2 queues and 8 workers: tasks out, results back, 1 KiB to 256 KiB items.
    out = run_small("""
        def worker(tasks, results):
            while True:
                t = tasks.get(timeout=60)
                if t is None:
                    return
                results.put((t[0], len(t[1])))

        tasks, results = pyconc.Queue(), pyconc.Queue()
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=worker, args=(tasks, results)) for _ in range(8)]
        for p in procs: p.start()
        n = 2000
        for i in range(n):
            tasks.put((i, b"x" * (1024 << (i % 9))))
        got = sorted(results.get(timeout=60) for _ in range(n))
        for _ in procs: tasks.put(None)
        for p in procs: p.join(60)
        assert got == [(i, 1024 << (i % 9)) for i in range(n)]
        assert all(p.exitcode == 0 for p in procs)
        print("pool-like ok", round(free_mb()))
    """)
    _check(out, ["pool-like ok"])


def test_many_empty_queues_in_64_mb():
    # Issue 10: empty structures start small (a default queue reserves 64 KiB of slots, not its 65,536-slot
    # capacity; a dict's heap reserves 64 KiB first), so 16 default queues and 16 dicts fit in 64 MB, and with
    # room to spare: a queue filled to its capacity still fits next to them.
    out = run_small("""
        queues = [pyconc.Queue() for _ in range(16)] + [pyconc.ConcurrentDict() for _ in range(16)]
        print("fit", round(free_mb()))
        assert free_mb() > 50, free_mb()
        q = queues[0]
        for i in range(65_536):
            q.put_nowait(i)
        try:
            q.put_nowait("one too many")
        except pyconc.Full:
            print("filled", q.qsize())
        assert [q.get_nowait() for _ in range(65_536)] == list(range(65_536))
        print("drained", q.empty())
    """)
    _check(out, ["fit", "filled 65536", "drained True"])


def test_condition_reserves_its_waiter_table_a_page_at_a_time():
    # A Condition reserves only its header page (the queue head and its first ten slots); each further page of
    # its 1,024-slot table is reserved when a waiter needs it. On a full /dev/shm that waiter gets MemoryError
    # from wait(), the ten waiting threads are not disturbed, and nobody gets a SIGBUS.
    out = run_small("""
        import threading
        c = pyconc.Condition()
        blobs, n = [], 1 << 20
        while True:  # fill /dev/shm with arrays of their own segments (over 128 bytes: not in an arena)
            try:
                blobs.append(pyconc.RawArray("b", n))
            except MemoryError:
                if n == 1024:
                    break
                n = max(1024, n // 4)
        with open("/dev/shm/filler", "wb") as f:  # and the last pages with a plain file
            st = os.statvfs("/dev/shm")
            left = st.f_bavail * st.f_frsize
            if left:
                os.posix_fallocate(f.fileno(), 0, left)
        print("free below a page", free_mb() * 2**20 < 4096)
        results = []

        def waiter():
            with c:
                results.append(c.wait(30))

        ts = [threading.Thread(target=waiter) for _ in range(10)]
        for t in ts:
            t.start()
        while c._queue.waiting < 10:
            pass
        with c:
            try:
                c.wait(0.5)
                print("eleventh waiter waited")
            except MemoryError as e:
                print("eleventh waiter: MemoryError", "/dev/shm" in str(e))
            c.notify_all()
        for t in ts:
            t.join(30)
        print("woken", results.count(True))
        os.unlink("/dev/shm/filler")
        del blobs[:4]
        ts = [threading.Thread(target=waiter) for _ in range(20)]
        for t in ts:
            t.start()
        while c._queue.waiting < 20:
            pass
        with c:
            c.notify_all()
        for t in ts:
            t.join(30)
        print("after freeing space", results.count(True))
    """)
    _check(out, ["free below a page True", "eleventh waiter: MemoryError True", "woken 10", "after freeing space 30"])


def test_small_objects_filling_dev_shm_are_a_memory_error():
    # Atomics share arenas whose cells are reserved a chunk at a time: when 64 MB are used up, the next one
    # raises MemoryError (no SIGBUS), every object made before works, and freed cells are reused.
    out = run_small("""
        xs = []
        try:
            while True:
                xs.append(pyconc.AtomicInt64(len(xs)))
        except MemoryError as e:
            print("MemoryError after", len(xs) > 300_000, "/dev/shm" in str(e))
        assert all(x.get() == i for i, x in enumerate(xs))
        for x in xs:
            x.incr()
        print("all usable")
        del xs[: len(xs) // 2]
        locks = [pyconc.Lock() for _ in range(10_000)]
        assert all(l.acquire(timeout=0) for l in locks)
        print("freed cells reused")
    """)
    _check(out, ["MemoryError after True True", "all usable", "freed cells reused"])
