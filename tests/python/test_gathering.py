"""ConcurrentGatheringIterator: values inserted out of order by several processes come out in key order."""

import threading
import time

import pytest

import pyconc
from conftest import run_procs
from workers import gather_insert, gather_insert_bad


def test_yields_in_key_order_and_clears():
    it = pyconc.ConcurrentGatheringIterator()
    for k in (3, 0, 2, 1):
        it.insert(k, k * 10)
    assert list(it.iterator(3)) == [0, 10, 20, 30]
    it.insert(0, "again")
    assert list(it.iterator(0, clear=False)) == ["again"]
    assert list(it.iterator(0)) == ["again"]


def test_waits_for_late_keys_from_a_thread():
    it = pyconc.ConcurrentGatheringIterator()
    t = threading.Thread(target=gather_insert, args=(it, [2, 1, 0], 0.05))
    t.start()
    t0 = time.monotonic()
    assert list(it.iterator(2)) == [("v", 0), ("v", 1), ("v", 2)]
    assert time.monotonic() - t0 < 5
    t.join(10)


def test_gathers_from_processes(ctx):
    it = pyconc.ConcurrentGatheringIterator()
    keys = list(range(40))
    run_procs(ctx, gather_insert, [(it, keys[1::2], 0.001), (it, keys[0::2][::-1], 0.001)])
    assert list(it.iterator(39)) == [("v", k) for k in keys]


def test_a_failed_insert_makes_the_iterator_raise(ctx):
    it = pyconc.ConcurrentGatheringIterator()
    it.insert(0, "ok")
    p = ctx.Process(target=gather_insert_bad, args=(it,))
    p.start()
    p.join(60)
    assert p.exitcode != 0
    gen = it.iterator(1)
    assert next(gen) == "ok"
    with pytest.raises(RuntimeError, match="failed"):
        next(gen)


def test_iterator_local_yields_local_wrappers():
    from pyconc.local import LocalWrapper

    it = pyconc.ConcurrentGatheringIterator()
    for k in (1, 0):
        it.insert(k, [k])
    got = list(it.iterator_local(1))
    assert all(isinstance(w, LocalWrapper) for w in got)
    assert [w.wrapped for w in got] == [[0], [1]]
    it.insert(0, "x")
    assert [w.wrapped for w in it.iterator_local(0, clear=False)] == ["x"]
    assert [w.wrapped for w in it.iterator_local(0)] == ["x"]
