"""One handle type and one rebuild path for every shared class: `(type, segment, offset, kind, version)`,
rebuilt by `_native._rebuild`, with a clear error for a handle of another structure or another layout."""

import pickle

import pytest

import pyconc
from pyconc import _native


def _objects():
    return {
        "AtomicInt64": pyconc.AtomicInt64(3),
        "AtomicFlag": pyconc.AtomicFlag(True),
        "Lock": pyconc.Lock(),
        "RLock": pyconc.RLock(),
        "Semaphore": pyconc.Semaphore(2),
        "Event": pyconc.Event(),
        "Barrier": pyconc.Barrier(2),
        "RWLock": pyconc.RWLock(),
        "Queue": pyconc.Queue(),
        "ConcurrentDict": pyconc.ConcurrentDict(),
        "ConcurrentDeque": pyconc.ConcurrentDeque(),
    }


def _native_class(obj):
    return next(t for t in type(obj).__mro__ if t.__module__ in ("pyconc._native", "pyconc") and t.__name__ in (
        "AtomicInt64", "AtomicFlag", "Lock", "RLock", "Semaphore", "Event", "Barrier", "RWLock", "QueueCore",
        "ConcurrentDict", "ConcurrentDeque",
    ))


def test_every_handle_has_the_same_shape_and_pickles_through_rebuild():
    for name, obj in _objects().items():
        h = obj._handle
        assert isinstance(h, tuple) and len(h) == 5, name
        type_name, segment, _offset, _kind, version = h
        assert segment.startswith("pyconc-") and version == _native.LAYOUT_VERSION, name
        assert (type_name == name) or (name == "Queue" and type_name == "Queue"), name
        fn = obj.__reduce__()[0]
        assert fn is _native._rebuild, name
        again = pickle.loads(pickle.dumps(obj))
        assert type(again) is type(obj) and again._handle == h, name


@pytest.mark.parametrize("target", sorted(_objects()))
def test_a_handle_of_another_structure_is_a_type_error(target):
    objs = _objects()
    cls = _native_class(objs[target])
    for name, obj in objs.items():
        if name == target:
            continue
        with pytest.raises(TypeError, match=f"a handle of a {obj._handle[0]} cannot be opened as"):
            _native._rebuild(cls, obj._handle)


def test_a_handle_of_another_layout_version_or_kind_is_a_value_error():
    q = pyconc.Queue()
    h = q._handle
    with pytest.raises(ValueError, match="layout version"):
        _native._rebuild(type(q), (*h[:4], h[4] + 1))
    with pytest.raises(ValueError, match="kind"):
        _native._rebuild(type(q), (*h[:3], 1, *h[4:]))
    with pytest.raises(ValueError, match="start"):
        _native._rebuild(type(q), (*h[:2], h[2] + 64, *h[3:]))
    with pytest.raises(TypeError, match="not a pyconc handle"):
        _native._rebuild(type(q), ("Queue", h[1]))
    with pytest.raises(TypeError, match="not a pyconc shared class"):
        _native._rebuild(dict, h)


def test_a_python_subclass_is_rebuilt_with_its_state_and_without_running_its_constructor():
    class Counted(pyconc.Lock):
        made = 0

        def __init__(self):
            Counted.made += 1
            self.label = "mine"

    a = Counted()
    b = _native._rebuild(Counted, *a.__reduce__()[1][1:])
    assert type(b) is Counted and b.label == "mine" and Counted.made == 1
    assert b._handle == a._handle
