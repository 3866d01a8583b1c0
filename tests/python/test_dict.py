import multiprocessing as mp
import pickle
import threading
from collections.abc import MutableMapping

import pytest

import pyconc
from conftest import run_procs
from dict_workers import add_many, check_and_write, update_with_many, write_range
from pyconc import ConcurrentDict
from pyconc.tools.stress_dict import run_dict


def test_basic_mapping_api():
    d = ConcurrentDict()
    assert isinstance(d, MutableMapping)
    assert len(d) == 0 and d == {} and list(d) == []
    d["a"] = 1
    d[(1, "x")] = [1, 2]
    d[b"b"] = {"nested": (1, 2.5)}
    assert d["a"] == 1 and d[(1, "x")] == [1, 2] and d[b"b"] == {"nested": (1, 2.5)}
    assert "a" in d and "z" not in d
    assert len(d) == 3
    d["a"] = "overwritten"
    assert d["a"] == "overwritten" and len(d) == 3
    del d["a"]
    assert "a" not in d
    with pytest.raises(KeyError) as e:
        d["a"]
    assert e.value.args == ("a",)
    with pytest.raises(KeyError):
        del d["a"]
    assert d.get("a") is None and d.get("a", 7) == 7
    assert sorted(map(repr, d.keys())) == sorted(map(repr, [(1, "x"), b"b"]))
    assert d.as_dict() == {(1, "x"): [1, 2], b"b": {"nested": (1, 2.5)}}
    assert d == d.as_dict() and d != {"other": 1}
    assert repr(d).startswith("ConcurrentDict({")
    d.clear()
    assert len(d) == 0 and d == {}


def test_canonical_keys_and_bad_keys():
    d = ConcurrentDict()
    d[1] = "int"
    d[True] = "bool"
    d[1.0] = "float"
    assert len(d) == 1 and d[1] == "float"
    assert list(d.keys()) == [1] and type(next(iter(d))) is int
    d[2.0] = "two"
    assert next(iter(d.items())) in [(1, "float"), (2.0, "two")]
    assert any(type(k) is float for k in d)  # the as-inserted spelling is kept
    for bad in ([1], {"a": 1}, {1}, object()):
        with pytest.raises(TypeError, match="key"):
            d[bad] = 1
        with pytest.raises(TypeError):
            _ = bad in d


def test_dict_methods():
    d = ConcurrentDict(scaling=3, initial={"a": 1})
    assert d.scaling == 3 and d["a"] == 1
    assert d.setdefault("a", 5) == 1
    assert d.setdefault("b", 5) == 5 and d["b"] == 5
    assert d.pop("b") == 5 and d.pop("b", None) is None
    with pytest.raises(KeyError):
        d.pop("b")
    d.update({"x": 1}, y=2)
    d.update([("z", 3)])
    d.update(ConcurrentDict(initial={"w": 4}))
    assert d == {"a": 1, "x": 1, "y": 2, "z": 3, "w": 4}
    assert sorted(d.values()) == [1, 1, 2, 3, 4]
    seen = {}
    while d:
        k, v = d.popitem()
        seen[k] = v
    assert seen == {"a": 1, "x": 1, "y": 2, "z": 3, "w": 4}
    with pytest.raises(KeyError):
        d.popitem()


def test_atomic_read_modify_write():
    d = ConcurrentDict()
    assert d.add("n") == 1 and d.add("n", 5) == 6 and d.add("f", 0.5, 1.0) == 1.5
    assert d.compare_and_set("n", 6, 10) and d["n"] == 10
    assert not d.compare_and_set("n", 6, 11) and d["n"] == 10
    assert not d.compare_and_set("missing", None, 1) and "missing" not in d
    assert d.update_with("l", lambda v: [*v, 1], []) == [1]
    assert d.update_with("l", lambda v: [*v, 2]) == [1, 2]

    def boom(v):
        raise ValueError("no")

    with pytest.raises(ValueError):
        d.update_with("l", boom)
    assert d["l"] == [1, 2]
    with pytest.raises(RuntimeError, match="already holds"):
        d.update_with("l", lambda v: d.__setitem__("l", 0))
    assert d["l"] == [1, 2]
    d["s"] = "x"
    with pytest.raises(TypeError):
        d.add("s", 1)


def test_growth_and_reuse():
    d = ConcurrentDict(scaling=2)
    for i in range(20000):
        d[i] = i * 2
    assert len(d) == 20000 and d[12345] == 24690
    for r in range(3):
        for i in range(0, 20000, 2):
            del d[i]
        for i in range(0, 20000, 2):
            d[i] = r
    assert len(d) == 20000 and d[0] == 2 and d[1] == 2


def test_large_values_chain_segments():
    d = ConcurrentDict(scaling=2)
    big = b"x" * (1 << 20)
    for i in range(80):  # 80 MiB: more than the 64 MiB main heap
        d[i] = big
    assert all(len(d[i]) == len(big) for i in range(0, 80, 7))
    e = pickle.loads(pickle.dumps(d))
    assert len(e[79]) == len(big)
    d.clear()


def test_threads():
    d = ConcurrentDict()
    errors = []

    def work(t):
        try:
            for i in range(2000):
                d[(t, i)] = i
                assert d[(t, i)] == i
                d.add("total")
        except Exception as e:  # pragma: no cover
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors and d["total"] == 8000 and len(d) == 8001


def test_threads_update_with_contended():
    d = ConcurrentDict(scaling=1)
    ts = [threading.Thread(target=update_with_many, args=(d, "k", 200)) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(d["k"]) == 800


def test_pickle_handle_and_processes(ctx):
    d = ConcurrentDict()
    d["from_parent"] = [1, 2, 3]
    assert pickle.loads(pickle.dumps(d)) == d
    run_procs(ctx, check_and_write, [(d, "child", {"x": 1})])
    assert d["child"] == {"x": 1}


def test_processes_add_on_shared_keys(ctx):
    d = ConcurrentDict()
    keys = ["a", "b", ("t", 1)]
    run_procs(ctx, add_many, [(d, keys, 3000) for _ in range(4)], timeout=90)
    assert sum(d[k] for k in keys) == 12000


def test_two_processes_disjoint_keys(ctx):
    d = ConcurrentDict()
    run_procs(ctx, write_range, [(d, 0, 5000), (d, 5000, 10000)], timeout=90)
    assert len(d) == 10000 and all(d[i] == ("v", i) for i in range(0, 10000, 97))


def test_processes_update_with(ctx):
    d = ConcurrentDict(scaling=1)
    run_procs(ctx, update_with_many, [(d, "k", 150) for _ in range(3)], timeout=90)
    assert len(d["k"]) == 450


def test_exported():
    assert pyconc.ConcurrentDict is ConcurrentDict


@pytest.mark.parametrize("kill", [False, True])
def test_short_stress(kill):
    ok, result = run_dict(procs=3, ops=1500, start_method="fork", kill=kill, seed=7, timeout=90, out=None)
    assert ok, result


def test_extension_segment_outlives_the_process_that_created_it(ctx):
    # The parent maps only the main segment; a child grows the dict into an extension segment and exits. The
    # extension must stay (the parent was registered as its user on its behalf), and go once the parent lets go.
    import os

    from conftest import run_procs
    from workers import dict_fill_past_main_heap

    d = ConcurrentDict(scaling=2)
    d["small"] = 1
    run_procs(ctx, dict_fill_past_main_heap, [(d,)])
    assert all(len(d[("big", i)]) == 1 << 20 for i in range(80))
    names = {r["name"] for r in __import__("pyconc")._native.list_segments() if os.getpid() in r["users"]}
    assert len(names) >= 2, "main and extension segments"
    del d
    import gc

    gc.collect()
    left = {r["name"] for r in __import__("pyconc")._native.list_segments()} & names
    assert not left, f"segments left behind: {left}"


def test_keys_values_items_are_live_views():
    import collections.abc as abc

    d = pyconc.ConcurrentDict()
    d.update(a=1, b=2)
    keys, values, items = d.keys(), d.values(), d.items()
    assert isinstance(keys, abc.KeysView) and isinstance(values, abc.ValuesView)
    assert isinstance(items, abc.ItemsView)
    d["c"] = 3
    del d["a"]
    assert len(keys) == 2 and "c" in keys and "a" not in keys
    assert sorted(values) == [2, 3] and 3 in values and 1 not in values
    assert ("b", 2) in items and ("b", 3) not in items and ("a", 1) not in items
    assert keys & {"b", "z"} == {"b"} and keys == {"b", "c"}
    assert sorted(items) == [("b", 2), ("c", 3)]
    assert "ConcurrentDict_keys" in repr(keys)
    d.clear()


def _insert_and_die(d, key):
    from pyconc import _native

    _native._dict_crash_point(3)  # after building the new entry, before publishing it: the block leaks
    d[key] = "x" * 500


@pytest.mark.parametrize("auto", [False, True])
def test_blocks_leaked_by_a_killed_writer_are_reclaimed(auto):
    ctx = mp.get_context("fork")
    d = pyconc.ConcurrentDict(scaling=2)
    d.update({i: i for i in range(50)})
    p = ctx.Process(target=_insert_and_die, args=(d, "doomed"))
    p.start()
    p.join(60)
    assert p.exitcode == 9, "the writer died at the crash point"
    if auto:
        # The next write to that shard repairs it (the lock's owner died); the write after that reclaims.
        d["doomed"] = 1
        d["other"] = 2
        assert d.reclaim() == 0, "already reclaimed automatically"
    else:
        assert d.reclaim() >= 500
        assert d.reclaim() == 0
    assert {i: d[i] for i in range(50)} == {i: i for i in range(50)}
    d.clear()


def test_update_with_is_atomic_against_plain_sets_of_the_same_key():
    # A set that lands between update_with's read and its write would be lost (the result would then be
    # positive). The callback gives other threads the GIL, so the set often arrives while the key is held.
    import time

    d = pyconc.ConcurrentDict()
    for _ in range(5):
        d["k"] = 0
        started = threading.Event()

        def bump(v, started=started):  # this round's event, bound now
            started.set()
            time.sleep(0)  # let the setter run while the key is held
            return v + 1

        def incr():
            for _ in range(300):
                d.update_with("k", bump)

        t = threading.Thread(target=incr)
        t.start()
        started.wait(10)
        d["k"] = -(10**6)
        t.join(60)
        assert not t.is_alive()
        assert -(10**6) <= d["k"] <= -(10**6) + 300, d["k"]
    d.clear()


def test_constructor_takes_scaling_then_dictionary():
    d = ConcurrentDict(3, {"a": 1})
    assert d.scaling == 3 and d.as_dict() == {"a": 1}
    assert ConcurrentDict(dictionary=[("b", 2)]).as_dict() == {"b": 2}
    assert ConcurrentDict(5, dictionary={"c": 3}).as_dict() == {"c": 3}
    assert ConcurrentDict(initial={"d": 4}).as_dict() == {"d": 4}  # the older keyword, kept as an alias
    with pytest.raises(TypeError):
        ConcurrentDict(dictionary={"a": 1}, initial={"b": 2})
@pytest.mark.parametrize("scaling", [-1, 0, -(2**70), 2**40])
def test_bad_scaling_is_a_value_error(scaling):
    with pytest.raises(ValueError, match="scaling"):
        pyconc.ConcurrentDict(scaling=scaling)
