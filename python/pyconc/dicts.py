"""Shared dicts: `ConcurrentDict` (native; a sharded hash map in shared memory).

`ConcurrentDict` behaves like a `dict` shared by every thread and process that holds it (it pickles as a small
handle, so it can be passed to processes started by fork, spawn or forkserver). Single operations are atomic,
including `setdefault`, `pop` and the read-modify-write methods `add`, `compare_and_set` and `update_with`
(which `d[k] += 1` can never be: that is a read followed by a write).

Not snapshot-consistent: `len()`, iteration, `keys()`/`values()`/`items()`, `as_dict()`, `==` and `repr()` visit
one shard at a time, so while other threads or processes write they may mix states from different moments
(each key is seen either before or after any single write, never half-written). `keys()`, `values()` and
`items()` return lists (copies), not live views.

Keys must be None, bool, int, float, str, bytes or tuples of those (exact types); `1`, `1.0` and `True` are the
same key, and the first inserted spelling is kept. Other keys raise `TypeError`.

`update_with(key, fn, default=None)` runs `fn` in the calling process while the key's shard is locked: other
writers of that shard wait (readers do not). If `fn` raises, the exception propagates and the dict is unchanged.
`fn` must not use the same dict (a re-entrant write raises `RuntimeError` instead of deadlocking).
`compare_and_set` compares encoded values: `1` and `1.0` are different values there.
"""

from collections.abc import MutableMapping as _MutableMapping

from ._native import ConcurrentDict

_MutableMapping.register(ConcurrentDict)

__all__ = ["ConcurrentDict"]
