"""The value codec: round trips, cross-process decoding, canonical keys, the stable hash, corrupt input."""

import collections
import enum
import math
import os
import pickle
import random
import subprocess
import sys
import textwrap

import pytest

from pyconc import _native
from pyconc._native import decode, encode, encode_key, stable_hash

np = pytest.importorskip("numpy")

# Tag bytes (shm-layouts/codec.md).
T_NONE, T_FALSE, T_TRUE, T_INT, T_BIG_INT, T_FLOAT, T_STR, T_STR_SUR = range(1, 9)
T_BYTES, T_BYTEARRAY, T_TUPLE, T_LIST, T_DICT, T_NDARRAY, T_PICKLE = range(9, 16)


class Color(enum.IntEnum):
    RED = 1


class Name(str):
    pass


Point = collections.namedtuple("Point", "x y")


class Plain:
    def __init__(self, v):
        self.v = v

    def __eq__(self, other):
        return type(other) is Plain and other.v == self.v


def same(a, b):
    """Equality that also holds for NaN, -0.0 vs 0.0 (by sign), numpy arrays, and checks exact types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


SCALARS = [
    None, True, False, 0, 1, -1, 2**62, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 2**200, -(2**200),
    0.0, -0.0, 1.5, -1e300, float("inf"), float("-inf"), float("nan"), 5e-324,
    "", "a", "x" * 100, "héllo wörld", "日本語", "emoji 🎉", "\x00nul", "\udc80lone surrogate", "\ud800",
    b"", b"\x00\xff" * 10, bytes(range(256)), bytearray(), bytearray(b"abc"),
]

CONTAINERS = [
    (), (1,), (1, "a", 2.0, None), [], [1, [2, [3, []]]], {}, {"a": 1, 2: "b", (1, 2): [3], None: {}},
    {"z": 1, "a": 2, "m": 3},  # insertion order, not sorted
    [b"x", bytearray(b"y"), (True, False)],
    {1: {2: {3: (4, [5, {6: 7}])}}},
]

ARRAYS = [
    np.arange(10, dtype=np.int64), np.arange(12.0).reshape(3, 4), np.array(3.5), np.array(7, dtype=np.uint8),
    np.zeros((0, 3)), np.zeros((2, 0, 4), dtype=np.int16), np.array([True, False]),
    np.arange(24, dtype=">i4").reshape(2, 3, 4), np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
    np.array(["ab", "c"]), np.array([b"ab", b"c"]), np.array(["2024-01-02", "NaT"], dtype="datetime64[ns]"),
    np.array([1, 2], dtype="timedelta64[s]"), np.arange(20.0)[::3], np.arange(12).reshape(3, 4).T,
    np.arange(60).reshape(3, 4, 5)[:, 1:3, ::2], np.float16([1.5, -2]), np.zeros(3, dtype="V4"),
]

OTHERS = [
    Color.RED, Name("sub"), Point(1, 2), collections.OrderedDict(a=1), collections.defaultdict(int, a=1),
    {1, 2}, frozenset({3}), complex(1, 2), Plain([1, 2]), range(3), slice(1, 2),
    np.float64(1.5), np.int32(3),  # numpy scalars are pickled
    np.array([object(), 1], dtype=object)[1:],  # object arrays are pickled
    np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]),  # structured dtypes are pickled
]


@pytest.mark.parametrize("value", SCALARS + CONTAINERS + ARRAYS + OTHERS, ids=repr)
def test_round_trip(value):
    data = encode(value)
    assert isinstance(data, bytes)
    back = decode(data)
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        assert list(back) == list(value)
    else:
        assert same(back, value), (value, back)
    # Any buffer decodes, including mutable ones (through the raw-pointer path).
    assert same(decode(bytearray(data)), back) or (isinstance(value, np.ndarray) and value.dtype.hasobject)
    assert same(decode(memoryview(data)), back) or (isinstance(value, np.ndarray) and value.dtype.hasobject)


def test_native_types_are_not_pickled():
    for v in SCALARS + CONTAINERS + ARRAYS:
        assert T_PICKLE not in encode(v)[:1], v
    for v in OTHERS:
        assert encode(v)[0] == T_PICKLE, v


def test_exact_encodings():
    assert encode(None) == bytes([T_NONE])
    assert encode(False) == bytes([T_FALSE])
    assert encode(True) == bytes([T_TRUE])
    assert encode(0) == bytes([T_INT, 0])
    assert encode(-1) == bytes([T_INT, 1])
    assert encode(64) == bytes([T_INT, 0x80, 0x01])
    assert encode(2**63) == bytes([T_BIG_INT, 9]) + (2**63).to_bytes(9, "little", signed=True)
    assert encode(1.5) == bytes([T_FLOAT]) + (0x3FF8000000000000).to_bytes(8, "little")
    assert encode("hé") == bytes([T_STR, 3]) + "hé".encode()
    assert encode(b"ab") == bytes([T_BYTES, 2]) + b"ab"
    assert encode(bytearray(b"ab")) == bytes([T_BYTEARRAY, 2]) + b"ab"
    assert encode((None, [])) == bytes([T_TUPLE, 2, T_NONE, T_LIST, 0])
    assert encode({"a": True}) == bytes([T_DICT, 1, T_STR, 1]) + b"a" + bytes([T_TRUE])
    arr = np.arange(3, dtype="<i2")
    assert encode(arr) == bytes([T_NDARRAY, 3]) + b"<i2" + bytes([2, 1, 3]) + arr.tobytes()
    assert _native.CODEC_FORMAT_VERSION == 1
    assert _native.CODEC_MAX_DEPTH == 200


def test_decoded_arrays_are_fresh_and_writable():
    a = np.arange(6.0).reshape(2, 3)
    data = bytearray(encode(a))
    b = decode(data)
    assert b.flags.writeable and b.flags.c_contiguous and b.flags.owndata
    data[-8:] = bytes(8)  # the decoded array does not share the input
    assert b[1, 2] == 5.0
    b[0, 0] = 42
    assert a[0, 0] == 0


def test_recursive_and_deep_values_are_pickled_whole():
    lst = [1, 2]
    lst.append(lst)
    data = encode(lst)
    assert data[0] == T_PICKLE
    back = decode(data)
    assert back[:2] == [1, 2] and back[2] is back

    d = {"k": 1}
    d["self"] = [d]
    back = decode(encode(d))
    assert back["self"][0] is back

    deep = None
    for _ in range(_native.CODEC_MAX_DEPTH):
        deep = [deep]
    assert encode(deep)[0] == T_LIST  # exactly at the limit: native
    assert same(decode(encode(deep)), deep)
    deeper = (deep,)
    data = encode(deeper)
    assert data[0] == T_PICKLE
    assert same(decode(data), deeper)


def test_shared_references_are_copied():
    x = [1]
    back = decode(encode([x, x]))
    assert back == [[1], [1]] and back[0] is not back[1]


class _Mutator:
    """Clears its container when pickled (to simulate a change during encoding)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        self.target.clear()
        return (int, (0,))


def test_container_changing_size_during_encoding_raises():
    lst = [1]
    lst.append(_Mutator(lst))
    lst.append(3)
    with pytest.raises(RuntimeError, match="list changed size"):
        encode(lst)
    d = {}
    d["a"] = _Mutator(d)
    d["b"] = 2
    with pytest.raises(RuntimeError, match="dict changed size"):
        encode(d)


def test_unpicklable_raises_pickles_error():
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        encode(lambda: 1)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        encode([1, {"f": lambda: 1}])


# --- canonical keys and the stable hash ---------------------------------------------------------------------


def test_equal_keys_encode_identically():
    assert encode_key(1) == encode_key(True) == encode_key(1.0) == encode(1)
    assert encode_key(0) == encode_key(False) == encode_key(0.0) == encode_key(-0.0)
    assert encode_key(-7.0) == encode_key(-7)
    assert encode_key(2.0**80) == encode_key(2**80)
    assert encode_key(-(2.0**80)) == encode_key(-(2**80))
    assert encode_key(2.0**63) == encode_key(2**63)
    assert encode_key(-(2.0**63)) == encode_key(-(2**63))
    assert encode_key(1e300) == encode_key(int(1e300))
    assert encode_key(float("nan")) == encode_key(-float("nan"))
    assert encode_key((1, True, 2.0, ("a", b"b"))) == encode_key((1.0, 1, 2, ("a", b"b")))
    assert encode_key(1.5) != encode_key(1)
    assert encode_key("1") != encode_key(1) != encode_key(b"1")
    assert encode_key(float("inf")) == encode(float("inf"))
    for k in [None, "s", b"b", 5, 2**100, 0.25, (1, "x", (None,)), "\udc80"]:
        assert encode_key(k) == encode(k)
        assert decode(encode_key(k)) == k
    assert decode(encode_key(True)) == 1 and type(decode(encode_key(True))) is int
    assert decode(encode_key(3.0)) == 3 and type(decode(encode_key(3.0))) is int


@pytest.mark.parametrize(
    "key",
    [[1], {}, {1}, bytearray(b"x"), np.arange(3), (1, [2]), Color.RED, Name("x"), Point(1, 2), complex(1, 0)],
    ids=repr,
)
def test_non_keys_raise_type_error(key):
    with pytest.raises(TypeError, match="key"):
        encode_key(key)
    with pytest.raises(TypeError, match="key"):
        stable_hash(key)


def test_deep_key_raises_type_error():
    k = ()
    for _ in range(300):
        k = (k,)
    with pytest.raises(TypeError, match="nested deeper"):
        encode_key(k)


def test_stable_hash_agrees_with_equality():
    assert stable_hash(1) == stable_hash(True) == stable_hash(1.0)
    assert stable_hash("a") != stable_hash("b")
    assert 0 <= stable_hash("a") < 2**64


HASH_KEYS = [None, True, 0, 1, -5, 2**70, 1.5, 2.0, float("inf"), "", "key", "日本", b"k", (1, "a", (2.0,))]


def _child(script, env=None, python=sys.executable):
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = subprocess.run(
        [python, "-c", textwrap.dedent(script)],
        env=full_env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout


def test_stable_hash_is_the_same_in_another_process_and_hash_seed():
    script = f"""
        import sys
        from pyconc._native import stable_hash
        inf = float("inf")
        keys = {HASH_KEYS!r}
        print(repr([stable_hash(k) for k in keys]))
        print(hash("key"))
    """
    a = _child(script, {"PYTHONHASHSEED": "1"}).decode().splitlines()
    b = _child(script, {"PYTHONHASHSEED": "2"}).decode().splitlines()
    assert a[1] != b[1]  # Python's own str hash did change
    mine = repr([stable_hash(k) for k in HASH_KEYS])
    assert a[0] == b[0] == mine


# Another interpreter with pyconc and numpy installed (e.g. a venv of another CPython version) can be named in
# PYCONC_OTHER_PYTHON to check decoding across versions too.
OTHER_PYTHONS = [sys.executable] + [p for p in [os.environ.get("PYCONC_OTHER_PYTHON")] if p]


@pytest.mark.parametrize("python", OTHER_PYTHONS)
def test_decoding_in_another_process_gives_equal_values(tmp_path, python):
    values = SCALARS + CONTAINERS + ARRAYS + [v for v in OTHERS if not isinstance(v, Plain)]
    src = tmp_path / "in.bin"
    dst = tmp_path / "out.bin"
    src.write_bytes(pickle.dumps([encode(v) for v in values]))
    script = f"""
        import pickle, sys
        from pyconc._native import decode, encode
        blobs = pickle.loads(open({str(src)!r}, "rb").read())
        values = [decode(b) for b in blobs]
        # Re-encode in this process: native encodings must be byte-identical.
        open({str(dst)!r}, "wb").write(pickle.dumps([encode(v) for v in values]))
    """
    _child(script, {"PYTHONHASHSEED": "7", "PYTHONPATH": os.path.dirname(__file__)}, python=python)
    back = pickle.loads(dst.read_bytes())
    for v, b in zip(values, back):
        got = decode(b)
        if isinstance(v, np.ndarray) and v.dtype.hasobject:
            assert list(got) == list(v)
        else:
            assert same(got, v), (v, got)
        if encode(v)[0] != T_PICKLE:
            assert b == encode(v), v


# --- corrupt input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"", b"\x00", b"\x7f", bytes([T_INT]), bytes([T_INT, 0x80, 0x00]), bytes([T_FLOAT, 1, 2]),
        bytes([T_STR, 5, 65]), bytes([T_STR, 2, 0xC3, 0x28]), bytes([T_STR_SUR, 1, 0xFF]),
        bytes([T_BYTES, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), bytes([T_LIST, 100, T_NONE]),
        bytes([T_DICT, 1, T_LIST, 0, T_NONE]),  # unhashable key
        bytes([T_NONE, T_NONE]), bytes([T_BIG_INT, 1, 5]),
        bytes([T_NDARRAY, 3]) + b"<O8" + bytes([8, 0]) + bytes(8),
        bytes([T_NDARRAY, 3]) + b"<b8" + bytes([8, 0]) + bytes(8),  # numpy has no 8-byte bool
        bytes([T_NDARRAY, 3]) + b"<f8" + bytes([4, 0]) + bytes(4),  # itemsize disagrees with the dtype
        bytes([T_NDARRAY, 7]) + b"<M8[xx]" + bytes([8, 0]) + bytes(8),  # unknown datetime unit
        bytes([T_PICKLE, 3]) + b"\x80\x05\xff",  # a broken pickle
        bytes([T_TUPLE, 1]) * 201 + bytes([T_NONE]),
    ],
    ids=repr,
)
def test_corrupt_input_raises_value_error(data):
    with pytest.raises(ValueError, match=r"corrupt|codec|utf-8|can't decode"):
        decode(data)


def _decode_or_value_error(data):
    try:
        decode(data)
    except ValueError:
        pass


def test_fuzz_random_and_mutated_bytes():
    rng = random.Random(1234)
    seeds = [encode(v) for v in SCALARS + CONTAINERS + ARRAYS]
    for _ in range(3000):
        if rng.random() < 0.3:
            data = bytearray(rng.randbytes(rng.randrange(0, 40)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                i = rng.randrange(len(data)) if data else 0
                if op == 0 and data:
                    data[i] = rng.randrange(256)
                elif op == 1:
                    data.insert(i, rng.randrange(256))
                else:
                    del data[i:]
        # Random pickle payloads could call anything: fuzz the native format only.
        data = bytes(data).replace(bytes([T_PICKLE]), bytes([T_NDARRAY]))
        _decode_or_value_error(data)


def test_decode_rejects_non_buffers():
    with pytest.raises(TypeError):
        decode("not bytes")



def test_impostor_ndarray_type_is_not_taken_for_numpy():
    # A class that only borrows numpy.ndarray's names goes to pickle (which refuses it: the name does not
    # lead back to the class), and does not stop real arrays from being encoded natively.
    fake = type("ndarray", (), {"__module__": "numpy", "dtype": np.dtype("f8"), "shape": ()})
    with pytest.raises(pickle.PicklingError):
        encode(fake())
    assert encode(np.arange(3))[0] == T_NDARRAY
