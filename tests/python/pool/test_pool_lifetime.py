"""Interpreter exit, KeyboardInterrupt and a dead parent leave no worker and no segment behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from pool_fixtures import no_leaked_workers  # noqa: F401 (autouse)

pytestmark = pytest.mark.timeout(90)

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(code, timeout=60):
    script = textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=env)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _segments_of(pids):
    from pyconc import _native

    return [r["name"] for r in _native.list_segments() if set(r["users"]) & set(pids) or r["creator_pid"] in pids]


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("kind", ["Pool", "ProcessPoolExecutor"])
def test_interpreter_exit_without_closing(kind, method):
    arg = "context" if kind == "Pool" else "mp_context"
    out = _run(f"""
        import multiprocessing as mp, os, pyconc
        from pool_tasks import pid_of
        if __name__ == "__main__":
            p = pyconc.{kind}(2, {arg}=mp.get_context("{method}"))
            pids = set(p.map(pid_of, range(50), chunksize=1))
            print(os.getpid(), *pids)
    """)
    assert out.returncode == 0, out.stderr
    pids = [int(x) for x in out.stdout.split()]
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids[1:]), "workers outlived the interpreter"
    assert not _segments_of(pids), "segments left behind"


def test_keyboard_interrupt_in_the_parent():
    out = _run("""
        import os, signal, threading, pyconc
        from pool_tasks import pid_of, slow_square
        if __name__ == "__main__":
            p = pyconc.Pool(2)
            print(os.getpid(), *set(p.map(pid_of, range(20), chunksize=1)), flush=True)
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
            try:
                with p:
                    p.map(slow_square, [(1)] * 1000, chunksize=1)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
    """)
    lines = out.stdout.split("\n")
    assert "interrupted" in out.stdout, (out.stdout, out.stderr)
    pids = [int(x) for x in lines[0].split()]
    assert not any(_alive(p) for p in pids[1:])
    assert not _segments_of(pids)
    assert "Traceback" not in out.stderr, out.stderr  # workers ignore SIGINT: no tracebacks from them


def test_workers_die_with_a_killed_parent():
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, sys, time, pyconc
        from pool_tasks import pid_of, c_sleep
        if __name__ == "__main__":
            p = pyconc.Pool(2)
            pids = set(p.map(pid_of, range(20), chunksize=1))
            p.apply_async(c_sleep, (60,))
            print(*pids, flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=HERE))
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "workers outlived their killed parent"
    finally:
        proc.kill()
        proc.wait()
        # A SIGKILLed parent cannot release its segments: remove exactly those it created.
        from pyconc import _native

        for r in _native.list_segments():
            if r["creator_pid"] == proc.pid:
                try:
                    _native.unlink_segment(r["name"])
                except FileNotFoundError:  # reaped meanwhile (every user is dead), e.g. by the attach above
                    pass


def test_failing_initializer_is_logged_as_concurrent_futures_does():
    out = _run("""
        import pyconc
        from concurrent.futures.process import BrokenProcessPool
        from pool_tasks import failing_initializer, square
        if __name__ == "__main__":
            with pyconc.ProcessPoolExecutor(1, initializer=failing_initializer) as ex:
                try:
                    ex.submit(square, 1).result(30)
                except BrokenProcessPool as e:
                    print("broken:", type(e.__cause__).__name__ if e.__cause__ else None)
    """)
    assert "broken: RemoteTraceback" in out.stdout, (out.stdout, out.stderr)
    assert "Exception in initializer:" in out.stderr and "initializer failed on purpose" in out.stderr, out.stderr
