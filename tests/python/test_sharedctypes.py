"""Value/Array/RawValue/RawArray: the multiprocessing.sharedctypes behaviour, plus handles and buffers."""

import ctypes
import multiprocessing as mp
import pickle
import re

import pytest

import pyconc
from conftest import run_procs
from workers import Point, double_point, fetch_add_many, locked_increments, modify_array, modify_values, numpy_double

CODES_VALUES = [
    ("i", 4343, 24234),
    ("d", 3.625, -4.25),
    ("h", -232, 234),
    ("q", 2**33, 2**34),
    ("c", b"x", b"y"),
]


@pytest.mark.parametrize("raw", [False, True])
def test_value_initial_and_child_update(ctx, raw):
    make = pyconc.RawValue if raw else pyconc.Value
    values = [make(code, value) for code, value, _ in CODES_VALUES]
    for sv, (_, value, _) in zip(values, CODES_VALUES):
        assert sv.value == value
    run_procs(ctx, modify_values, [(values, [r for _, _, r in CODES_VALUES])])
    for sv, (_, _, rawvalue) in zip(values, CODES_VALUES):
        assert sv.value == rawvalue


def test_value_defaults_to_zero_and_accepts_ctypes_types():
    assert pyconc.Value("i").value == 0
    assert pyconc.Value(ctypes.c_double, 1.5).value == 1.5
    assert pyconc.RawValue(ctypes.c_ubyte, 255).value == 255
    assert isinstance(pyconc.RawValue("d", 1.0), ctypes.c_double)


def test_bad_typecode_and_sizes():
    with pytest.raises(TypeError):
        pyconc.Value("x")
    with pytest.raises(TypeError):
        pyconc.RawArray("x", 3)
    with pytest.raises(ValueError):
        pyconc.Array("i", -1)


def test_getobj_getlock():
    val1 = pyconc.Value("i", 5)
    lock1 = val1.get_lock()
    obj1 = val1.get_obj()
    assert obj1.value == 5 and hasattr(lock1, "acquire")

    val2 = pyconc.Value("i", 5, lock=None)
    assert hasattr(val2.get_lock(), "acquire")

    lock = mp.Lock()
    val3 = pyconc.Value("i", 5, lock=lock)
    assert val3.get_lock() is lock

    val4 = pyconc.Value("i", 5, lock=False)
    assert not hasattr(val4, "get_lock") and val4.value == 5

    with pytest.raises(AttributeError):
        pyconc.Value("i", 5, lock="navalue")

    arr1 = pyconc.Array("i", range(10))
    assert hasattr(arr1.get_lock(), "acquire") and list(arr1.get_obj()) == list(range(10))
    arr4 = pyconc.Array("i", range(10), lock=False)
    assert not hasattr(arr4, "get_lock")
    with pytest.raises(AttributeError):
        pyconc.Array("i", range(10), lock="notalock")
    assert not hasattr(pyconc.RawArray("i", range(10)), "get_lock")


def test_value_lock_is_reentrant_and_usable_as_context():
    v = pyconc.Value("i", 0)
    with v:
        with v.get_lock():
            v.value += 1
    assert v.acquire() and v.acquire()
    v.release()
    v.release()
    assert v.value == 1
    assert "Synchronized wrapper for c_int(1)" in repr(v)


@pytest.mark.parametrize("raw", [False, True])
def test_array(ctx, raw):
    seq = [680, 626, 934, 821, 150, 233, 548, 982, 714, 831]
    arr = pyconc.RawArray("i", seq) if raw else pyconc.Array("i", seq)
    assert len(arr) == len(seq)
    assert arr[3] == seq[3]
    assert list(arr[2:7]) == seq[2:7]
    arr[4:8] = seq[4:8] = [1, 2, 3, 4]
    assert list(arr[:]) == seq
    run_procs(ctx, modify_array, [(arr, 2)])
    assert list(arr[:]) == [x * 2 for x in seq]


def test_array_from_size():
    arr = pyconc.Array("i", 10)
    assert len(arr) == 10 and list(arr) == [0] * 10
    assert len(pyconc.RawArray("d", 0)) == 0


def test_char_array_value_and_raw():
    arr = pyconc.Array("c", 10)
    arr.value = b"hello"
    assert arr.value == b"hello"
    assert arr.raw == b"hello\0\0\0\0\0"
    raw = pyconc.RawArray("c", b"abc")
    assert raw.value == b"abc"


def test_fetch_add_is_lock_free_and_exact(ctx):
    v = pyconc.Value("q", 0)
    arr = pyconc.Array("I", 4)
    assert v.fetch_add(5) == 0 and v.value == 5
    run_procs(ctx, fetch_add_many, [(v, 2000), (v, 2000)])
    assert v.value == 4005
    run_procs(ctx, fetch_add_many, [(arr, 1000, 2), (arr, 1000, -2)])
    assert list(arr) == [0, 0, 2000, 0]
    assert arr.fetch_add(0, -1) == 0 and arr[0] == 2**32 - 1, "unsigned items wrap"
    b = pyconc.RawValue("b", 127)
    assert b.fetch_add(1) == 127 and b.value == -128
    with pytest.raises(TypeError):
        pyconc.Value("d", 1.0).fetch_add(1)
    with pytest.raises(IndexError):
        arr.fetch_add(4, 1)


def test_lock_protects_read_modify_write(ctx):
    v = pyconc.Value("i", 0)
    run_procs(ctx, locked_increments, [(v, 2000)] * 3)
    assert v.value == 6000


def test_pickle_is_a_handle():
    arr = pyconc.Array("d", 100_000)
    data = pickle.dumps(arr)
    assert len(data) < 1000, "the contents must not be pickled"
    arr2 = pickle.loads(data)
    arr2[5] = 2.5
    assert arr[5] == 2.5
    raw = pyconc.RawArray("i", [1, 2, 3])
    raw2 = pickle.loads(pickle.dumps(raw))
    raw2[0] = 9
    assert raw[0] == 9
    lock = pyconc.Lock()
    v = pyconc.Value("i", 1, lock=lock)
    v2 = pickle.loads(pickle.dumps(v))
    assert v2.value == 1
    with v2.get_lock():
        assert v.get_lock().locked(), "the unpickled Value shares the same lock"
    v_embedded = pyconc.Value("i", 2)
    v3 = pickle.loads(pickle.dumps(v_embedded))
    with v3.get_lock():
        assert v_embedded.get_lock().acquire(False), "the embedded RLock is shared and re-entrant"
        v_embedded.get_lock().release()
    # An mp lock can only travel by inheritance, as with multiprocessing itself.
    with pytest.raises(RuntimeError, match="inheritance"):
        pickle.dumps(pyconc.Value("i", 1, lock=mp.get_context("fork").Lock()))


def test_buffer_protocol_is_zero_copy(ctx):
    np = pytest.importorskip("numpy")
    arr = pyconc.Array("d", [1.0, 2.0, 3.0])
    m = memoryview(arr)
    assert m.format == "d" and m.itemsize == 8 and m.shape == (3,) and not m.readonly
    m[0] = 10.0
    assert arr[0] == 10.0
    view = np.frombuffer(arr, dtype="d")
    view[1] = 20.0
    assert arr[1] == 20.0
    raw = pyconc.RawArray("i", 4)
    np.frombuffer(raw, dtype=np.int32)[:] = 7
    assert list(raw) == [7, 7, 7, 7]
    run_procs(ctx, numpy_double, [(arr,)])
    assert list(view) == [20.0, 40.0, 6.0]
    del m, view


def test_synchronized_array_outlives_its_creator_while_a_child_uses_it(ctx):
    from workers import hold_array_until

    arr = pyconc.Array("d", 1000)  # the lock is embedded; nothing touches the segment name until pickling
    attached, release, out = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=hold_array_until, args=(arr, attached, release, out))
    p.start()
    try:
        assert attached.wait(60)
        del arr
        import gc

        gc.collect()
        release.set()
        exists, value = out.get(timeout=60)
        assert exists, "the child is a user: the name must survive the creator's drop"
        assert value == 1.0
    finally:
        p.join(60)
        if p.is_alive():
            p.kill()
            p.join(60)
    assert p.exitcode == 0



def test_structure_value_and_array_like_multiprocessing(ctx):
    v = pyconc.Value(Point, 3, 1.5)
    ref = mp.Value(Point, 3, 1.5)
    assert type(v).__name__ == type(ref).__name__ == "SynchronizedPoint"
    assert (v.x, v.y) == (ref.x, ref.y) == (3, 1.5)
    v.x *= 2
    assert v.x == 6 and v.get_obj().x == 6
    assert re.sub(r"0x[0-9a-f]+", "0x", repr(v)) == re.sub(r"0x[0-9a-f]+", "0x", repr(ref))
    raw = pyconc.Value(Point, 1, 2.0, lock=False)
    assert isinstance(raw, Point) and raw.x == 1
    a = pyconc.Array(Point, [(1, 1.0), (2, 2.0)])
    assert len(a) == 2 and a[1].x == 2 and a[0].y == 1.0
    run_procs(ctx, double_point, [(v, a)])
    assert (v.x, v.y) == (12, 3.0) and a[1].x == 102
    # The wrapper class is built on the fly, yet the wrapper pickles (as a handle) and compares by identity.
    w = pickle.loads(pickle.dumps(v))
    assert type(w) is type(v) and w.x == 12 and w == v and hash(w) == hash(v)
