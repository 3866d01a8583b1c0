"""`pyconc.ProcessPoolExecutor`: concurrent.futures semantics, asyncio and dask integration."""

import asyncio
import concurrent.futures as cf
import time

import pytest
from pool_fixtures import no_leaked_workers  # noqa: F401 (autouse)
from pool_tasks import add, c_sleep, c_sleep_on, fail_on, pid_of, slow_square, square

from pyconc import ProcessPoolExecutor, TaskTimeoutError

pytestmark = pytest.mark.timeout(60)


def test_submit_map_shutdown(ctx):
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        assert isinstance(ex, cf.Executor)
        f = ex.submit(add, 1, 2, c=3)
        assert isinstance(f, cf.Future) and f.result(30) == 6
        assert list(ex.map(square, range(20))) == [x * x for x in range(20)]
        assert list(ex.map(add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]
        assert list(ex.map(square, range(5), chunksize=1)) == [0, 1, 4, 9, 16]
        done, _ = cf.wait([ex.submit(square, i) for i in range(10)], timeout=30)
        assert sorted(f.result() for f in done) == [x * x for x in range(10)]
        assert sorted(f.result() for f in cf.as_completed([ex.submit(square, 3), ex.submit(square, 4)])) == [9, 16]
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(square, 1)


def test_map_errors_and_timeout():
    with ProcessPoolExecutor(2) as ex:
        it = ex.map(fail_on, range(6))
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError, match="bad item 3"):
            next(it)
        with pytest.raises(TimeoutError):
            list(ex.map(slow_square, [1, 2], [1, 1], timeout=0.2))
        with pytest.raises(ValueError):
            ex.map(square, [1], chunksize=0)


def test_map_task_timeout():
    with ProcessPoolExecutor(2) as ex:
        it = ex.map(c_sleep_on, range(4), task_timeout=0.5)
        with pytest.raises(TaskTimeoutError):
            next(it)
        f = ex.submit_with_timeout(0.5, c_sleep, 30)
        with pytest.raises(TimeoutError):
            f.result(20)
        assert ex.submit(square, 3).result(30) == 9


def test_cancel_pending_and_shutdown_cancel_futures():
    ex = ProcessPoolExecutor(1)
    ex.submit(square, 1).result(30)
    running = ex.submit(slow_square, 1, 1.0)
    many = [ex.submit(square, i) for i in range(2000)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert running.result() == 1
    assert any(f.cancelled() for f in many)
    assert all(f.done() for f in many)


def test_stdlib_argument_rules():
    import multiprocessing

    with pytest.raises(ValueError, match="incompatible with the 'fork'"):
        ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"), max_tasks_per_child=2)
    with pytest.raises(ValueError):
        ProcessPoolExecutor(0)
    with pytest.raises(TypeError):
        ProcessPoolExecutor(1, initializer=5)
    with pytest.raises(ValueError):
        ProcessPoolExecutor(1, max_tasks_per_child=0)


def test_max_tasks_per_child_defaults_to_spawn():
    with ProcessPoolExecutor(1, max_tasks_per_child=2) as ex:
        assert ex._mp_context.get_start_method() == "spawn"
        pids = [ex.submit(pid_of).result(60) for _ in range(4)]
        assert len(set(pids)) == 2


def test_unpicklable_argument_fails_the_future_not_submit():
    import threading

    with ProcessPoolExecutor(1) as ex:
        f = ex.submit(square, threading.Lock())
        with pytest.raises(TypeError):
            f.result(30)
        assert ex.submit(square, 2).result(30) == 4


def test_asyncio_run_in_executor_and_await():
    async def main(ex):
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(ex, square, 7)
        b = await ex.submit(square, 8)
        c = await asyncio.gather(*(loop.run_in_executor(ex, square, i) for i in range(5)))
        return a, b, c

    with ProcessPoolExecutor(2) as ex:
        assert asyncio.run(main(ex)) == (49, 64, [0, 1, 4, 9, 16])


def test_dask_compute_with_the_executor():
    dask = pytest.importorskip("dask")
    from dask import delayed

    with ProcessPoolExecutor(2) as ex:
        total = delayed(sum)([delayed(square)(i) for i in range(10)])
        assert dask.compute(total, scheduler=ex)[0] == sum(x * x for x in range(10))


def test_future_cancel_semantics():
    with ProcessPoolExecutor(1) as ex:
        f = ex.submit(square, 2)
        f.result(30)
        assert f.cancel() is False  # finished
        g = ex.submit(slow_square, 2, 0.5)
        time.sleep(0.2)
        assert g.cancel() is True and g.cancel() is True
        with pytest.raises(cf.CancelledError):
            g.result()


def test_shutdown_waits_for_an_unconsumed_lazy_map():
    ex = ProcessPoolExecutor(2)
    it = ex.map(square, iter(range(5000)), buffersize=16)
    t = time.monotonic()
    ex.shutdown(wait=True)  # the input is read to the end once shutting down, as the stdlib reads it
    assert time.monotonic() - t < 30
    assert sum(it) == sum(x * x for x in range(5000))
