import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyconc
from pyconc import _native


def _names():
    return {r["name"] for r in _native.list_segments()}


def test_segment_is_unlinked_when_last_user_lets_go():
    a = pyconc.AtomicInt64()
    name = a._handle[1]
    assert os.path.exists(f"/dev/shm/{name}")
    assert oct(os.stat(f"/dev/shm/{name}").st_mode & 0o777) == "0o600"
    del a
    import gc

    gc.collect()
    _native._arena_trim()  # the emptied arena kept for this process's next small objects
    assert not os.path.exists(f"/dev/shm/{name}")


def test_names_are_unguessable():
    a, b = pyconc.RWLock(), pyconc.RWLock()  # objects with segments of their own (small ones share arenas)
    na, nb = a._handle[1], b._handle[1]
    prefix = f"pyconc-{_native.namespace()}-" if _native.namespace() else "pyconc-"
    assert na.startswith(prefix) and len(na) == len(prefix) + 32
    assert na != nb


def test_corrupt_segments_raise_value_error(tmp_path):
    name = "pyconc-" + "ab" * 16
    path = f"/dev/shm/{name}"
    try:
        with open(path, "wb") as f:
            f.write(b"x" * 8192)
        with pytest.raises(ValueError, match="not a pyconc segment"):
            _native._rebuild(pyconc.AtomicInt64, ("AtomicInt64", name, 4096, 1, _native.LAYOUT_VERSION))
        with open(path, "wb") as f:
            f.write(b"x" * 100)
        with pytest.raises(ValueError, match="truncated"):
            _native._rebuild(pyconc.AtomicInt64, ("AtomicInt64", name, 4096, 1, _native.LAYOUT_VERSION))
    finally:
        os.unlink(path)
    with pytest.raises(FileNotFoundError):
        _native._rebuild(pyconc.AtomicInt64, ("AtomicInt64", name, 4096, 1, _native.LAYOUT_VERSION))
    with pytest.raises(ValueError, match="layout version"):
        _native._rebuild(pyconc.AtomicInt64, ("AtomicInt64", name, 4096, 1, 99))


def test_wrong_version_in_header_is_reported():
    a = pyconc.AtomicInt64()
    name = a._handle[1]
    # Overwrite the layout version field (offset 8) through the file.
    with open(f"/dev/shm/{name}", "r+b") as f:
        f.seek(8)
        f.write((3).to_bytes(4, "little"))
    import subprocess

    code = f"""
import pickle, pyconc
from pyconc import _native
try:
    _native._rebuild(pyconc.AtomicInt64, ("AtomicInt64", {name!r}, 4096, 1, _native.LAYOUT_VERSION))
except ValueError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert f"layout version 3, this build reads {_native.LAYOUT_VERSION}" in out.stdout, out
    with open(f"/dev/shm/{name}", "r+b") as f:
        f.seek(8)
        f.write(_native.LAYOUT_VERSION.to_bytes(4, "little"))


def _run(code, timeout=60):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_unrelated_process_attach_does_not_unlink_early():
    a = pyconc.AtomicInt64(5)
    h = pickle.dumps(a).hex()
    out = _run(f"""
        import pickle
        b = pickle.loads(bytes.fromhex({h!r}))
        b.incr()
        print(b.get())
    """)
    assert out.stdout.strip() == "6", out
    assert a.incr() == 7
    assert os.path.exists(f"/dev/shm/{a._handle[1]}"), "the other process's exit must not unlink our segment"


def test_segment_outlives_creator_while_another_process_uses_it():
    # A child creates a counter, hands its handle over and exits; we keep using it; when we drop it, it is gone.
    out = _run("""
        import pickle, sys, pyconc
        a = pyconc.AtomicInt64(10)
        sys.stdout.write(pickle.dumps(a).hex())
    """)
    # The creator exited before we attached: the segment is gone, and attaching says so clearly.
    with pytest.raises(FileNotFoundError, match="let go"):
        pickle.loads(bytes.fromhex(out.stdout))

    proc = subprocess.Popen(
        [sys.executable, "-c", "import pickle, sys, pyconc\n"
         "a = pyconc.AtomicInt64(10)\nprint(pickle.dumps(a).hex(), flush=True)\nsys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        h = proc.stdout.readline().strip()
        b = pickle.loads(bytes.fromhex(h))
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(60) == 0
        assert b.incr() == 11, "the creator exiting must not unlink a segment we use"
        name = b._handle[1]
        assert os.path.exists(f"/dev/shm/{name}")
        del b
        import gc

        gc.collect()
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        proc.kill()


def test_sigkilled_users_do_not_keep_segments_alive():
    proc = subprocess.Popen(
        [sys.executable, "-c", "import pickle, sys, time, pyconc\n"
         "a = pyconc.AtomicInt64(1)\nprint(pickle.dumps(a).hex(), flush=True)\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        h = proc.stdout.readline().strip()
        b = pickle.loads(bytes.fromhex(h))
        name = b._handle[1]
        assert proc.pid in _native.segment_users(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        assert _native.segment_users(name) == [os.getpid()]
        del b
        import gc

        gc.collect()
        assert not os.path.exists(f"/dev/shm/{name}"), "the dead creator must not keep the segment alive"
    finally:
        proc.kill()


def test_gc_removes_segments_of_dead_processes():
    proc = subprocess.Popen(
        [sys.executable, "-c", "import pickle, sys, time, pyconc\n"
         "a = pyconc.AtomicInt64(1)\nprint(a._handle[1], flush=True)\ntime.sleep(120)\n"],
        stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    assert os.path.exists(f"/dev/shm/{name}")
    # PYCONC_REAP=0: the tools' own import would otherwise reap it before ls shows it.
    env = dict(os.environ, PYCONC_REAP="0")
    out = subprocess.run([sys.executable, "-m", "pyconc", "ls"], capture_output=True, text=True, timeout=60, env=env)
    assert name in out.stdout
    out = subprocess.run([sys.executable, "-m", "pyconc", "gc"], capture_output=True, text=True, timeout=60, env=env)
    assert f"removed {name}" in out.stdout, out
    assert not os.path.exists(f"/dev/shm/{name}")


def test_fork_child_keeps_segment_alive_after_parent_drops_it():
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    a = pyconc.AtomicInt64(0)
    name = a._handle[1]
    ready, go = ctx.Event(), ctx.Event()

    def child(a):
        ready.set()
        go.wait(60)
        a.incr()
        # The name must still exist: this child is a registered user.
        import sys as _sys

        _sys.exit(0 if os.path.exists(f"/dev/shm/{name}") else 3)

    # Passed as an argument, not captured: start() drops the Process's reference, so `del a` below leaves the
    # parent without any.
    p = ctx.Process(target=child, args=(a,))
    p.start()
    assert ready.wait(60)
    assert p.pid in _native.segment_users(name)
    del a
    import gc

    gc.collect()
    _native._arena_trim()
    assert os.path.exists(f"/dev/shm/{name}"), "the forked child still uses it"
    go.set()
    p.join(60)
    assert p.exitcode == 0
    # The child was the last user: its exit finalizer unlinked the segment.
    assert not os.path.exists(f"/dev/shm/{name}")


def _new_segment_names(before):
    # Only this run's namespace: other pyconc programs on the machine create segments meanwhile.
    ns = os.environ.get("PYCONC_NAMESPACE")
    prefix = f"pyconc-{ns}-" if ns else "pyconc-"
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)} - before


def test_fork_child_keeps_alive_a_segment_whose_name_was_never_read():
    # A creator that never exposed the name skips the user table when it lets go; a fork must end that shortcut.
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    before = _new_segment_names(set())
    arr = pyconc.RawArray("q", 4)
    (name,) = _new_segment_names(before)
    ready, go = ctx.Event(), ctx.Event()

    def child(arr):
        ready.set()
        go.wait(60)
        arr[0] = 7
        import sys as _sys

        _sys.exit(0 if os.path.exists(f"/dev/shm/{name}") else 3)

    p = ctx.Process(target=child, args=(arr,))  # an argument: start() drops it, so `del arr` drops the last
    p.start()
    try:
        assert ready.wait(60)
        del arr
        import gc

        gc.collect()
        _native._arena_trim()
        assert os.path.exists(f"/dev/shm/{name}"), "the forked child is still a user"
        go.set()
        p.join(60)
        assert p.exitcode == 0
    finally:
        if p.is_alive():
            p.kill()
            p.join(60)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_unshared_segment_is_unlinked_on_drop():
    before = _new_segment_names(set())
    arr = pyconc.RawArray("d", 1000)
    (name,) = _new_segment_names(before)
    assert _native.segment_users(name) == [os.getpid()]
    del arr
    assert not os.path.exists(f"/dev/shm/{name}")


FAULT_SCALE = max(1, int(os.environ.get("PYCONC_FAULT_SCALE", "1")))


def _spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_attach_while_the_last_user_exits_never_hangs():
    # Issue 11, hang 1: a process attaching by handle while the last user lets go could map the segment, then
    # find it marked unlinked; the failed attach dropped its half-built mapping under the process-wide registry
    # lock, whose destructor took that lock again: a deadlock. Each round forks a creator that hands a handle
    # over a pipe and lets go after a delay, and an attacher; the delay follows a staircase (shorter after an
    # attach, longer after a miss) so that most rounds land where the attach and the unlink cross (the old code
    # hung in about 3% of such rounds). Every round must end within its deadline, attached or FileNotFoundError.
    rng = random.Random(11)
    rounds = 300 * FAULT_SCALE
    outcomes = {"attached": 0, "gone": 0}
    delay = 100e-6
    for _ in range(rounds):
        r, w = os.pipe()
        wait = max(0.0, delay + rng.uniform(-3e-6, 3e-6))
        creator = os.fork()
        if creator == 0:
            code = 1
            try:
                os.close(r)
                a = pyconc.AtomicInt64(7)
                data = pickle.dumps(a)
                os.write(w, len(data).to_bytes(4, "little") + data)
                _spin(wait)
                del a  # the last (only) user lets go: marks the segment unlinked, removes the name
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        attacher = os.fork()
        if attacher == 0:
            code = 1
            try:
                data = b""
                while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "little"):
                    data += os.read(r, 4096)
                try:
                    code = 0 if pickle.loads(data[4:]).get() == 7 else 1
                except FileNotFoundError:
                    code = 3
            finally:
                os._exit(code)
        os.close(r)
        deadline = time.monotonic() + 20
        statuses = {}
        while len(statuses) < 2 and time.monotonic() < deadline:
            for pid in (creator, attacher):
                if pid not in statuses:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        statuses[pid] = os.waitstatus_to_exitcode(status)
            time.sleep(0.0005)
        hung = [pid for pid in (creator, attacher) if pid not in statuses]
        for pid in hung:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        assert not hung, "a process hung at the end of a segment's life"
        assert statuses[creator] == 0 and statuses[attacher] in (0, 3), statuses
        attached = statuses[attacher] == 0
        outcomes["attached" if attached else "gone"] += 1
        delay = max(0.0, delay - 2e-6) if attached else delay + 2e-6
    assert sum(outcomes.values()) == rounds
