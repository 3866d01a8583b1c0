"""`ConcurrentDict`: a sharded hash map in shared memory (native), and its `keys()`/`values()`/`items()` views.

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

from __future__ import annotations

from collections.abc import ItemsView as _ItemsViewBase
from collections.abc import KeysView as _KeysViewBase
from collections.abc import MutableMapping as _MutableMapping
from collections.abc import ValuesView as _ValuesViewBase

from . import _native
from ._native import ConcurrentDict

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

_MutableMapping.register(ConcurrentDict)


class _ShardCopies:
    """What the views of ConcurrentDict.keys()/values()/items() add to the `collections.abc` views: they stay live
    like dict's (len and membership ask the dict), and iteration copies one shard at a time (`_list` names the
    native method) instead of looking every key up again, which could raise KeyError under concurrent deletes."""

    __slots__ = ()
    _list = _label = ""
    _mapping: ConcurrentDict  # set by the collections.abc view's __init__

    def __iter__(self) -> Iterator[Any]:
        return iter(getattr(self._mapping, self._list)())

    def __repr__(self) -> str:
        return f"ConcurrentDict_{self._label}({list(self)!r})"


# The views' type parameters are `object` (a subscript evaluated at run time; Any would need `typing`): users see
# the stub's KeysView[Any] etc., not these classes.
class _KeysView(_ShardCopies, _KeysViewBase[object]):
    __slots__ = ()
    _list, _label = "_keys_list", "keys"


class _ValuesView(_ShardCopies, _ValuesViewBase[object]):
    __slots__ = ()
    _list, _label = "_values_list", "values"


class _ItemsView(_ShardCopies, _ItemsViewBase[object, object]):
    __slots__ = ()
    _list, _label = "_items_list", "items"


class _SameDictIdentity:
    """For Python objects built on a `ConcurrentDict` (held in `_d`): they compare and hash by the identity of that
    shared dict, across handles and processes (not by the values it holds)."""

    __slots__ = ()
    _d: ConcurrentDict

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._d._same_object(other._d)

    def __hash__(self) -> int:
        return self._d._identity_hash()


# The native ConcurrentDict builds its views through these.
for _view in (_KeysView, _ValuesView, _ItemsView):
    _native._register(_view.__name__, _view)
del _view

__all__ = ["ConcurrentDict"]
