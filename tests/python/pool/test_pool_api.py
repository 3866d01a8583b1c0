"""`pyconc.Pool`: the multiprocessing.Pool API and behaviour, under fork, spawn and forkserver."""

import asyncio
import multiprocessing
import multiprocessing.pool
import os
import time

import pytest
from pool_fixtures import no_leaked_workers  # noqa: F401 (autouse)
from pool_tasks import (
    add,
    big_result,
    fail_on,
    identity,
    initialized_value,
    length,
    pid_of,
    queue_put,
    record_initializer,
    return_fails_to_unpickle,
    return_unpicklable,
    slow_square,
    square,
)

import pyconc
from pyconc import Pool

pytestmark = pytest.mark.timeout(60)


def test_import_is_lazy():
    import subprocess
    import sys

    code = "import sys, pyconc; print('pyconc.pool' in sys.modules, 'multiprocessing.pool' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["False", "False"], out


def test_the_api_under_every_start_method(ctx):
    with Pool(2, context=ctx) as p:
        assert p.apply(square, (7,)) == 49
        assert p.apply(add, (1, 2), {"c": 3}) == 6
        assert p.map(square, range(50)) == [x * x for x in range(50)]
        assert p.map(square, range(50), chunksize=7) == [x * x for x in range(50)]
        assert p.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
        assert list(p.imap(square, range(30))) == [x * x for x in range(30)]
        assert list(p.imap(square, range(30), chunksize=1)) == [x * x for x in range(30)]
        assert sorted(p.imap_unordered(square, range(30))) == [x * x for x in range(30)]
        assert p.map(square, []) == []
        assert p.map(square, iter(range(5))) == [0, 1, 4, 9, 16]
        r = p.map_async(square, range(10))
        assert r.get(30) == [x * x for x in range(10)] and r.ready() and r.successful()
        r = p.starmap_async(add, [(1, 1)])
        assert r.get(30) == [2]
        assert len(set(p.map(pid_of, range(200), chunksize=1))) >= 1


def test_lambdas_and_closures_with_cloudpickle():
    pytest.importorskip("cloudpickle")
    k = 3
    with Pool(2) as p:
        assert p.apply(lambda x: x + k, (1,)) == 4
        assert p.map(lambda x: x * k, range(5)) == [0, 3, 6, 9, 12]


def test_async_result_api():
    with Pool(2) as p:
        r = p.apply_async(slow_square, (3, 0.3))
        assert not r.ready()
        with pytest.raises(ValueError):
            r.successful()
        with pytest.raises(multiprocessing.TimeoutError):
            r.get(0.01)
        r.wait(30)
        assert r.ready() and r.successful() and r.get() == 9


def test_callbacks_run_before_get_returns():
    got, errors = [], []
    with Pool(2) as p:
        r = p.apply_async(square, (4,), callback=got.append)
        assert r.get(30) == 16 and got == [16]
        r = p.apply_async(fail_on, (3,), error_callback=errors.append)
        with pytest.raises(ValueError):
            r.get(30)
        assert isinstance(errors[0], ValueError)
        r = p.map_async(square, range(4), callback=got.append)
        r.wait(30)
        assert got[-1] == [0, 1, 4, 9]


def test_callbacks_never_run_in_the_waiting_thread():
    """A thread waiting in get() handles arriving results itself (to skip a thread hand-off), but callbacks, its
    own and other tasks', still run in the pool's result thread, as in multiprocessing."""
    import threading

    threads = set()
    with Pool(2) as p:
        plain = [p.apply_async(square, (i,)) for i in range(300)]
        with_cb = [p.apply_async(square, (i,), callback=lambda v: threads.add(threading.get_ident()))
                   for i in range(300)]
        assert [r.get(30) for r in plain] == [i * i for i in range(300)]
        assert [r.get(30) for r in with_cb] == [i * i for i in range(300)]
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_exceptions_carry_the_remote_traceback():
    with Pool(2) as p:
        with pytest.raises(ValueError, match="bad item 3") as info:
            p.apply(fail_on, (3,))
        cause = info.value.__cause__
        assert type(cause).__name__ == "RemoteTraceback" and "fail_on" in str(cause)
        with pytest.raises(ValueError, match="bad item 3"):
            p.map(fail_on, range(10))
        r = p.map_async(fail_on, range(10))
        r.wait(30)
        assert not r.successful()
        # imap yields the error at its position and goes on
        it = p.imap(fail_on, range(6), chunksize=2)
        out = []
        for _ in range(6):
            try:
                out.append(next(it))
            except ValueError:
                out.append("E")
        assert out == [0, 1, 2, "E", 4, 5]
        with pytest.raises(StopIteration):
            next(it)
        # the pool is fine afterwards
        assert p.apply(square, (2,)) == 4


def test_unpicklable_argument_and_results():
    import threading

    with Pool(2) as p:
        r = p.apply_async(identity, (threading.Lock(),))
        with pytest.raises(TypeError):
            r.get(30)
        with pytest.raises(multiprocessing.pool.MaybeEncodingError, match="Error sending result"):
            p.apply(return_unpicklable)
        with pytest.raises(RuntimeError, match="cannot be rebuilt"):
            p.apply(return_fails_to_unpickle)
        with pytest.raises(multiprocessing.pool.MaybeEncodingError):
            p.map(return_unpicklable, range(3))
        assert p.apply(square, (5,)) == 25


def test_closed_pool_refuses_work():
    p = Pool(1)
    p.close()
    with pytest.raises(ValueError, match="Pool not running"):
        p.apply_async(square, (1,))
    with pytest.raises(ValueError, match="Pool not running"):
        p.map(square, [1])
    p.join()
    p = Pool(1)
    with pytest.raises(ValueError, match="still running"):
        p.join()
    p.terminate()
    p.join()


def test_argument_validation():
    with pytest.raises(ValueError):
        Pool(0)
    with pytest.raises(ValueError):
        Pool(1, maxtasksperchild=0)
    with pytest.raises(TypeError):
        Pool(1, initializer=3)
    with Pool(1) as p:
        with pytest.raises(ValueError):
            p.map(square, [1], chunksize=0)
    with pytest.raises(NotImplementedError):
        import pickle

        with Pool(1) as p:
            pickle.dumps(p)


def test_close_join_waits_for_the_work():
    p = Pool(2)
    r = p.map_async(slow_square, [(i) for i in range(20)], chunksize=1)
    p.close()
    p.join()
    assert r.ready() and r.get() == [x * x for x in range(20)]


def test_terminate_fails_pending_results():
    from concurrent.futures import CancelledError

    p = Pool(1)
    r = p.apply_async(slow_square, (2, 30))
    time.sleep(0.2)
    t = time.monotonic()
    p.terminate()
    p.join()
    assert time.monotonic() - t < 5
    with pytest.raises(CancelledError):
        r.get(5)


def test_initializer_runs_in_each_worker(ctx):
    with Pool(2, initializer=record_initializer, initargs=(42,), context=ctx) as p:
        assert set(p.map(initialized_value, range(20), chunksize=1)) == {42}


def test_maxtasksperchild_replaces_workers(ctx):
    with Pool(1, maxtasksperchild=2, context=ctx) as p:
        pids = [p.apply(pid_of) for _ in range(6)]
        assert len(set(pids)) == 3, pids
        assert p.stats()["workers"][0]["restarts"] >= 2


def test_large_arguments_and_results():
    with Pool(2) as p:
        n = 20 << 20  # beyond one queue message
        assert p.apply(length, (b"y" * n,)) == n
        assert len(p.apply(big_result, (n,))) == n
        assert p.map(length, [b"z" * n, b"z"]) == [n, 1]


def test_pyconc_objects_travel_as_handles(ctx):
    q = pyconc.Queue()
    with Pool(2, context=ctx) as p:
        assert p.apply(queue_put, (q, 7)) == 7
    assert q.get(timeout=10) == 7


def test_await_async_result():
    async def main(p):
        a = await p.apply_async(square, (6,))
        b = await p.map_async(square, range(3))
        with pytest.raises(ValueError):
            await p.apply_async(fail_on, (3,))
        return a, b

    with Pool(2) as p:
        assert asyncio.run(main(p)) == (36, [0, 1, 4])


def test_lazy_imap_with_an_endless_generator(ctx):
    pulled = []

    def endless():
        i = 0
        while True:
            pulled.append(i)
            yield i
            i += 1

    with Pool(2, context=ctx) as p:
        it = p.imap(square, endless(), buffersize=64)
        out = [next(it) for _ in range(500)]
        assert out == [x * x for x in range(500)]
        time.sleep(0.2)
        # bounded: never more than buffersize items read beyond what was taken (plus one chunk being cut)
        assert len(pulled) <= 500 + 64 + 64, len(pulled)
        it2 = p.imap_unordered(square, endless(), chunksize=1, buffersize=8)
        assert len([next(it2) for _ in range(50)]) == 50


def test_progress_bar_needs_tqdm(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *a, **k):
        if name.startswith("tqdm"):
            raise ImportError("no tqdm here")
        return real_import(name, *a, **k)

    with Pool(1) as p:
        monkeypatch.setattr(builtins, "__import__", no_tqdm)
        with pytest.raises(ImportError, match="needs tqdm"):
            p.map(square, range(3), progress=True)
        monkeypatch.undo()
        pytest.importorskip("tqdm")
        assert p.map(square, range(30), progress=True) == [x * x for x in range(30)]


def test_stats_and_print_stats(capsys):
    with Pool(2) as p:
        p.map(square, range(100), chunksize=10)
        # workers write their counters when they go idle (or every 10 ms): they may lag the results a little
        deadline = time.monotonic() + 20
        while sum(w["items"] for w in p.stats()["workers"]) < 100 and time.monotonic() < deadline:
            time.sleep(0.005)
        s = p.stats()
        assert len(s["workers"]) == 2
        assert sum(w["items"] for w in s["workers"]) == 100
        assert all(w["pid"] for w in s["workers"])
        assert s["completed"] == 100
        p.print_stats()
    out = capsys.readouterr().out
    assert "slot" in out and "completed=100" in out


def test_ls_shows_the_pool_and_its_workers_from_another_process():
    import subprocess
    import sys

    with Pool(2) as p:
        p.map(square, range(100), chunksize=10)
        r = p.apply_async(slow_square, (2, 5))
        deadline = time.monotonic() + 20
        while not any(w["task"] for w in p.stats()["workers"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        out = subprocess.run([sys.executable, "-m", "pyconc", "ls"], capture_output=True, text=True, timeout=60)
        pids = {w["pid"] for w in p.stats()["workers"]}
    assert out.returncode == 0, out.stderr
    assert "pool of process" in out.stdout and "2 workers" in out.stdout, out.stdout
    assert "completed 100" in out.stdout, out.stdout
    for pid in pids:
        assert f"pid {pid}" in out.stdout
    assert "running task" in out.stdout, out.stdout
    del r


def test_close_join_with_an_unconsumed_imap():
    p = Pool(2)
    it = p.imap(square, iter(range(3000)), buffersize=8)
    p.close()
    p.join()
    assert list(it) == [x * x for x in range(3000)]


def test_the_worker_table_tells_live_workers_from_dead_ones_by_owner_word():
    """Rows carry the owner word of every owner table (pid and start time), so a reader in another process tells
    a dead worker from a live one even when its pid was reused."""
    import subprocess
    import sys

    from pyconc import _native
    from pyconc.pool import _table as T

    dead = int(subprocess.run([sys.executable, "-c", "from pyconc import _native; print(_native._owner_word())"],
                              capture_output=True, text=True, timeout=60, check=True).stdout)
    me = _native._owner_word()
    assert me & ((1 << 22) - 1) == os.getpid() and dead != me
    t = T.Table.create(2, os.getpid(), time.monotonic_ns())
    try:
        w = t.words
        w[T.base(0) + T.PID], w[T.base(0) + T.OWNER] = os.getpid(), me
        w[T.base(1) + T.PID], w[T.base(1) + T.OWNER] = dead & ((1 << 22) - 1), dead
        head, rows = T.describe(t)
        assert head["parent_alive"] and rows[0]["alive"] and not rows[1]["alive"]
        # A live pid with another start time is not the recorded process (a reused pid).
        w[T.base(0) + T.OWNER] = (me & ((1 << 22) - 1)) | (((me >> 22) + 1) << 22)
        assert not T.describe(t)[1][0]["alive"]
    finally:
        t.close()
