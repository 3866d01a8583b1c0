"""Nothing stays in /dev/shm after every user of a segment is killed: the next pyconc process (or a running one,
within a few seconds) removes it. Segment namespaces keep programs (and this test suite) apart."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyconc
import workers
from pyconc import _native

NS = _native.namespace()

VICTIM = """
import multiprocessing as mp, os, sys, time
import pyconc

def child(objs, ready):
    for o in objs[:-1]:
        pass                      # attached by unpickling: every object counts this child as a user
    ready.release()
    time.sleep(600)

if __name__ == "__main__":
    method = sys.argv[1]
    if sys.argv[2] == "exit_on_sigterm":
        assert pyconc.exit_on_sigterm()
    q, arr, d = pyconc.Queue(), pyconc.Array("d", 1000), pyconc.ConcurrentDict()
    lock, a = pyconc.Lock(), pyconc.AtomicInt64()
    q.put(b"x" * 1000)
    d["k"] = "v"
    objs = [q, arr, d, lock, a]
    ctx = mp.get_context(method)
    ready = ctx.Semaphore(0)
    procs = [ctx.Process(target=child, args=(objs, ready)) for _ in range(int(sys.argv[3]))]
    for p in procs: p.start()
    for p in procs: assert ready.acquire(timeout=60)
    names = [q.segment_name, arr.get_obj()._pyconc_buffer.segment_name, d.segment_name, lock._handle[1], a._handle[1]]
    print(" ".join(names), flush=True)
    time.sleep(600)
"""


def _names_present(names):
    return {n for n in names if os.path.exists(f"/dev/shm/{n}")}


def _start_victim(tmp_path, method, mode="default", children=2):
    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    p = subprocess.Popen([sys.executable, str(script), method, mode, str(children)], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    line = p.stdout.readline()
    assert line, f"victim exited with {p.wait(30)}"
    return p, line.split()


def _kill_tree(p, sig):
    os.killpg(p.pid, sig)
    p.wait(30)
    deadline = time.monotonic() + 30
    while True:  # every process of the session (children, forkserver) is gone
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, "the victim's process tree did not die"
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_kill_then_restart_leaves_nothing(ctx, tmp_path, sig):
    p, names = _start_victim(tmp_path, ctx.get_start_method())
    assert _names_present(names) == set(names)
    _kill_tree(p, sig)
    assert p.returncode == -sig
    assert _names_present(names) == set(names), "killed processes cannot clean up themselves"
    # The next pyconc process of the namespace removes them when it imports pyconc.
    out = subprocess.run([sys.executable, "-c", "import pyconc"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert _names_present(names) == set()


def test_a_running_process_reaps_within_seconds(tmp_path):
    p, names = _start_victim(tmp_path, "fork", children=1)
    _kill_tree(p, signal.SIGKILL)
    assert _names_present(names) == set(names)
    # This process keeps creating objects, as a running program does: within a few seconds it reaps them.
    start = time.monotonic()
    while _names_present(names) and time.monotonic() - start < 10:
        pyconc.AtomicInt64()
        time.sleep(0.05)
    assert _names_present(names) == set(), "not reaped within 10 s"
    assert time.monotonic() - start < 5


def _dead_segment():
    """The name of a segment whose only user (a subprocess) was killed."""
    code = "import os, pyconc; a = pyconc.AtomicInt64(); print(a._handle[1], flush=True); os.kill(os.getpid(), 9)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    return out.stdout.strip()


def test_a_process_that_only_attaches_reaps(ctx):
    conn, child_conn = ctx.Pipe()
    p = ctx.Process(target=workers.attach_when_sent, args=(child_conn,))
    p.start()
    try:
        assert conn.poll(60) and conn.recv() == "ready"
        a = pyconc.AtomicInt64(7)  # made after the fork: the child maps it only when it is sent
        dead = _dead_segment()
        # The child's last pass (at import, or the parent's inherited through fork) is now over 2 s old. This
        # process creates nothing from here on, so only the child's attach can reap.
        time.sleep(2.2)
        assert _names_present([dead]) == {dead}
        conn.send(a)
        assert conn.poll(60) and conn.recv() == 7
        assert _names_present([dead]) == set(), "the attaching process did not reap"
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0


def test_exit_on_sigterm_runs_the_exit_path(tmp_path):
    p, names = _start_victim(tmp_path, "fork", mode="exit_on_sigterm", children=0)
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(30) == 143
    assert _names_present(names) == set(), "the exit path removed the segments at once"


def test_exit_on_sigterm_keeps_an_existing_handler():
    code = textwrap.dedent("""
        import signal, pyconc
        handler = lambda *a: None
        signal.signal(signal.SIGTERM, handler)
        assert pyconc.exit_on_sigterm() is False
        assert signal.getsignal(signal.SIGTERM) is handler
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert pyconc.exit_on_sigterm() is True
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_sigterm_is_left_alone_by_default():
    code = "import signal, pyconc; print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr


def _in_namespace(ns, code):
    env = dict(os.environ, PYCONC_NAMESPACE=ns)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)


def test_namespaces_scope_ls_gc_and_reaping():
    other = "o" + str(os.getpid() % 10**6)
    # A process of another namespace leaves a segment behind (os._exit skips the exit path).
    out = _in_namespace(other, "import os, pyconc; a = pyconc.AtomicInt64(); print(a._handle[1], flush=True); "
                               "os._exit(0)")
    name = out.stdout.strip()
    assert name.startswith(f"pyconc-{other}-"), (name, out.stderr)
    try:
        assert os.path.exists(f"/dev/shm/{name}")
        # Our namespace's ls, gc and reaping do not see it; --all does.
        assert name not in {r["name"] for r in _native.list_segments()}
        assert name in {r["name"] for r in _native.list_segments(all=True)}
        removed, _, _, _ = _native.collect_segments()
        assert name not in removed
        _native._reap_dead_segments(1.0)
        assert os.path.exists(f"/dev/shm/{name}")
        cli = subprocess.run([sys.executable, "-m", "pyconc", "ls"], capture_output=True, text=True, timeout=60)
        assert name not in cli.stdout
        cli = subprocess.run([sys.executable, "-m", "pyconc", "ls", "--all"], capture_output=True, text=True,
                             timeout=60)
        assert name in cli.stdout
        # Its own namespace's next process reaps it at import.
        assert _in_namespace(other, "import pyconc").returncode == 0
        assert not os.path.exists(f"/dev/shm/{name}")
    finally:
        if os.path.exists(f"/dev/shm/{name}"):
            os.unlink(f"/dev/shm/{name}")


def test_a_handle_opens_across_namespaces():
    a = pyconc.AtomicInt64(41)
    code = f"import pickle, pyconc; a = pickle.loads({pickle_dumps(a)!r}); a.incr(); print(a.get())"
    out = _in_namespace("elsewhere", code)
    assert out.stdout.strip() == "42", out.stderr
    assert a.get() == 42


def pickle_dumps(obj):
    import pickle

    return pickle.dumps(obj)


@pytest.mark.parametrize("bad", ["has space", "waytoolongname", "a-b", "é"])
def test_an_invalid_namespace_is_a_clear_error(bad):
    out = _in_namespace(bad, "import pyconc\ntry:\n    pyconc.AtomicInt64()\nexcept ValueError as e:\n    print(e)")
    assert "PYCONC_NAMESPACE" in out.stdout, out.stdout + out.stderr


def test_the_suite_runs_in_its_own_namespace():
    assert NS, "conftest (or make test) sets PYCONC_NAMESPACE"
    a = pyconc.AtomicInt64()
    assert a._handle[1].startswith(f"pyconc-{NS}-")


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_release_at_exit_when_multiprocessing_is_imported_after_pyconc(method, tmp_path):
    """`import pyconc` does not import multiprocessing; the hook that makes multiprocessing's children (which end
    with os._exit) release their segments is installed at the first fork instead. Automatic reaping is off, so
    only the child's own exit path can remove its queue."""
    script = textwrap.dedent(f"""
        import os, sys
        import pyconc
        fresh = "multiprocessing" not in sys.modules  # (a spawned child re-runs this with it loaded)
        import multiprocessing as mp

        def child(conn):
            q = pyconc.Queue()
            conn.send(q.segment_name)
            globals()["keep"] = q  # never collected: only the exit path releases it

        if __name__ == "__main__":
            assert fresh, "import pyconc imported multiprocessing"
            ctx = mp.get_context("{method}")
            a, b = ctx.Pipe()
            p = ctx.Process(target=child, args=(b,))
            p.start()
            name = a.recv()
            p.join(60)
            print("exitcode", p.exitcode, "left", os.path.exists("/dev/shm/" + name))
    """)
    path = tmp_path / "main.py"  # a file, so that spawn and forkserver children can import __main__
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=100,
                         env=dict(os.environ, PYCONC_REAP="0"))
    assert out.stdout.strip() == "exitcode 0 left False", out.stdout + out.stderr
