"""`ConcurrentDeque`: a double-ended queue in shared memory (native), usable from every thread and process.

It has the `collections.deque` API (`append`, `appendleft`, `pop`, `popleft`, `extend`, `extendleft`, `clear`,
`remove`, `rotate`, `count`, `copy`, `len`, `in`, `d[i]`, `del d[i]`, iteration, comparisons, `maxlen`, `repr`)
and pickles as a handle. Items are stored encoded by pyconc's codec (pickle for the types it does not know), so
what comes back is an equal copy, never the same object.

Blocking pops: `pop()` / `popleft()` without arguments raise `IndexError` on an empty deque, as
`collections.deque` does. `pop(block=True)` waits for an item (releasing the GIL, Ctrl-C works), `pop(True,
timeout)` or `pop(timeout=t)` waits at most `t` seconds and then raises `queue.Empty`; `block=False` never waits
(a timeout is then ignored, as in `queue.Queue`).

`in`, `remove`, `count` and comparisons decode the items and compare them with Python `==` in the calling
process, outside the deque's lock (so an exception from `__eq__` propagates and nothing is held meanwhile);
iteration and comparisons work on a copy of the items taken at one instant.
"""

from collections.abc import MutableSequence as _MutableSequence

from ._native import ConcurrentDeque

_MutableSequence.register(ConcurrentDeque)

__all__ = ["ConcurrentDeque"]
