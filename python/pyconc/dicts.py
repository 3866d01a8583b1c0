"""Shared dicts: `ConcurrentDict` (native; a sharded hash map in shared memory), `AtomicReference` (one value
replaced atomically, built on it) and `LocalWrapper` (a forwarding wrapper).

`ConcurrentDict` behaves like a `dict` shared by every thread and process that holds it (it pickles as a small
handle, so it can be passed to processes started by fork, spawn or forkserver). Single operations are atomic,
including `setdefault`, `pop` and the read-modify-write methods `add`, `compare_and_set` and `update_with`
(which `d[k] += 1` can never be: that is a read followed by a write).

Not snapshot-consistent: `len()`, iteration, `keys()`/`values()`/`items()`, `as_dict()`, `==` and `repr()` visit
one shard at a time, so while other threads or processes write they may mix states from different moments
(each key is seen either before or after any single write, never half-written). `keys()`, `values()` and
`items()` are live views, as with `dict` (`collections.abc` views: `len`, `in`, set operations on keys and
items); iterating one copies the dict shard by shard, so it never raises for keys deleted meanwhile.

Keys must be None, bool, int, float, str, bytes or tuples of those (exact types); `1`, `1.0` and `True` are the
same key, and the first inserted spelling is kept. Other keys raise `TypeError`.

`update_with(key, fn, default=None)` runs `fn` in the calling process while the key's shard is locked: other
writers of that key, and inserts and deletes in that shard, wait; readers, and overwrites of other existing keys
(done in place, without the shard lock), do not. If `fn` raises, the exception propagates and the dict is
unchanged. `fn` must not write to the same dict (a write that needs the shard lock it holds raises
`RuntimeError` instead of deadlocking). `compare_and_set` compares encoded values: `1` and `1.0` are different
values there.

`reclaim()` frees the shared memory that writers killed in the middle of a write leaked (it runs by itself after
a process finds such a writer, when no shard is busy) and returns the bytes freed.
"""

from collections.abc import ItemsView as _ItemsViewBase
from collections.abc import KeysView as _KeysViewBase
from collections.abc import MutableMapping as _MutableMapping
from collections.abc import ValuesView as _ValuesViewBase

from ._native import ConcurrentDict

_MutableMapping.register(ConcurrentDict)


class _ShardCopies:
    """What the views of ConcurrentDict.keys()/values()/items() add to the `collections.abc` views: they stay live
    like dict's (len and membership ask the dict), and iteration copies one shard at a time (`_list` names the
    native method) instead of looking every key up again, which could raise KeyError under concurrent deletes."""

    __slots__ = ()
    _list = _label = ""

    def __iter__(self):
        return iter(getattr(self._mapping, self._list)())

    def __repr__(self):
        return f"ConcurrentDict_{self._label}({list(self)!r})"


class _KeysView(_ShardCopies, _KeysViewBase):
    __slots__ = ()
    _list, _label = "_keys_list", "keys"


class _ValuesView(_ShardCopies, _ValuesViewBase):
    __slots__ = ()
    _list, _label = "_values_list", "values"


class _ItemsView(_ShardCopies, _ItemsViewBase):
    __slots__ = ()
    _list, _label = "_items_list", "items"


class AtomicReference:
    """A reference to one value in shared memory, replaced atomically from any thread or process.

    Built on a one-shard `ConcurrentDict`; pickles as a handle. Values are stored encoded, so `get()` returns a
    copy, and identity means nothing across processes: `compare_exchange(expected, obj)` compares the *encoded*
    value of `expected` with the stored one (so `1` and `1.0` differ, and equal lists match).
    """

    __slots__ = ("_d",)

    def __init__(self, obj=None, *, _dict=None):
        if _dict is None:
            _dict = ConcurrentDict(scaling=1)
            _dict[0] = obj
        self._d = _dict

    def get(self):
        """The current value (a copy)."""
        return self._d[0]

    def set(self, obj):
        """Stores `obj`."""
        self._d[0] = obj

    def exchange(self, obj):
        """Stores `obj` and returns the previous value, atomically."""
        old = []

        def swap(v):
            old.append(v)
            return obj

        self._d.update_with(0, swap)
        return old[0]

    def compare_exchange(self, expected, obj):
        """Stores `obj` if the value encodes like `expected`; returns whether it did."""
        return self._d.compare_and_set(0, expected, obj)

    def __reduce__(self):
        return (_rebuild_reference, (self._d,))

    def __repr__(self):
        return f"AtomicReference({self.get()!r})"


def _rebuild_reference(d):
    return AtomicReference(_dict=d)


class LocalWrapper:
    """Wraps an object and forwards attribute access and the common protocols to it (like the concurrency
    docs' `LocalWrapper`): code can hold a per-thread wrapper instead of sharing the object itself. The
    wrapper is a plain process-local object; `wrapped` is the object."""

    __slots__ = ("wrapped",)

    def __init__(self, obj):
        object.__setattr__(self, "wrapped", obj)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "wrapped"), name)

    def __setattr__(self, name, value):
        setattr(self.wrapped, name, value)

    def __delattr__(self, name):
        delattr(self.wrapped, name)

    def __repr__(self):
        return f"LocalWrapper({self.wrapped!r})"


def _forward(name):
    def method(self, *args, **kwargs):
        return getattr(self.wrapped, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in (
    "__len__", "__iter__", "__next__", "__contains__", "__getitem__", "__setitem__", "__delitem__", "__call__",
    "__enter__", "__exit__", "__bool__", "__str__", "__hash__", "__int__", "__float__", "__index__",
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__floordiv__", "__mod__", "__neg__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
):
    setattr(LocalWrapper, _name, _forward(_name))
del _name

class ConcurrentGatheringIterator:
    """Gathers values inserted under integer keys by any thread or process and yields them in key order.

    ``insert(key, value)`` may be called from anywhere, in any order. ``iterator(max_key, clear=True)`` yields
    the values for keys ``0 .. max_key`` (inclusive) in key order, waiting for each key to arrive: the wait sleeps
    on a cross-process condition (a shared futex) and wakes when an insert lands, with no polling. With
    ``clear=True`` each value is removed once yielded. If an insert fails (its value cannot be stored), every
    iterator raises ``RuntimeError`` instead of waiting forever for that key. Pickles as a handle.
    """

    def __init__(self, scaling=None, *, _parts=None):
        if _parts is None:
            from ._native import AtomicFlag
            from .synchronize import Condition

            _parts = (ConcurrentDict(scaling=scaling or 17), Condition(), AtomicFlag(False))
        self._d, self._cond, self._failed = _parts

    def insert(self, key, value):
        """Stores `value` under integer `key` and wakes iterators waiting for it."""
        try:
            self._d[int(key)] = value
        except BaseException:
            self._failed.set(True)
            raise
        finally:
            with self._cond:
                self._cond.notify_all()

    def iterator(self, max_key, clear=True):
        """Yields the values of keys 0..max_key in order, waiting for each to be inserted."""
        for key in range(int(max_key) + 1):
            while True:
                found, value = self._take(key, clear)
                if found:
                    break
                if self._failed:
                    raise RuntimeError(
                        f"an insert into this ConcurrentGatheringIterator failed; key {key} may never arrive"
                    )
                with self._cond:
                    # Re-check under the lock: an insert notifies while holding it, so none is missed.
                    if key in self._d or self._failed:
                        continue
                    self._cond.wait(1.0)
            yield value

    def _take(self, key, clear):
        missing = object()
        value = self._d.pop(key, missing) if clear else self._d.get(key, missing)
        return value is not missing, value

    def __reduce__(self):
        return (_rebuild_gathering, ((self._d, self._cond, self._failed),))


def _rebuild_gathering(parts):
    return ConcurrentGatheringIterator(_parts=parts)


__all__ = ["AtomicReference", "ConcurrentDict", "ConcurrentGatheringIterator", "LocalWrapper"]
