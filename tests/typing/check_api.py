"""What users' type checkers see of the public API (the package ships py.typed). Checked by `make lint` (mypy's
`files`); never run."""

import ctypes
import threading
from typing import Any

from typing_extensions import assert_type

import pyconc
from pyconc.pool import Future, IMapIterator, MapResult
from pyconc.sharedctypes import Synchronized, SynchronizedArray, SynchronizedString, synchronized

# sharedctypes: ctypes types give ctypes objects, typecodes give Any (as typeshed's multiprocessing.sharedctypes).
assert_type(pyconc.RawValue(ctypes.c_int, 3), ctypes.c_int)
assert_type(pyconc.RawValue("i", 3), Any)
assert_type(pyconc.RawArray(ctypes.c_double, 10), ctypes.Array[ctypes.c_double])
assert_type(pyconc.RawArray("d", [1.0, 2.0]), Any)
assert_type(pyconc.Value("i", 3), Synchronized)
assert_type(pyconc.Value(ctypes.c_int, 3, lock=threading.Lock()), Synchronized)
assert_type(pyconc.Value(ctypes.c_int, 3, lock=pyconc.RLock()), Synchronized)
assert_type(pyconc.Value(ctypes.c_int, 3, lock=False), ctypes.c_int)
assert_type(pyconc.Array("d", 3), SynchronizedArray)
assert_type(pyconc.Array("c", 3), SynchronizedString)
assert_type(pyconc.Array(ctypes.c_char, 3), SynchronizedString)
assert_type(pyconc.Array(ctypes.c_double, [1.0], lock=False), ctypes.Array[ctypes.c_double])
assert_type(synchronized(pyconc.RawValue(ctypes.c_int)), Synchronized)
assert_type(synchronized(pyconc.RawArray(ctypes.c_char, 4)), SynchronizedString)
v = pyconc.Value("i", 3)
v.value += 1
with v.get_lock():
    assert_type(v.fetch_add(1), int)

# The lazily imported names are typed like the others.
ref = pyconc.AtomicReference([1])
assert_type(ref.compare_exchange([1], [2]), bool)
with pyconc.IntervalLock() as held:
    assert_type(held, pyconc.IntervalLock)
rw = pyconc.RWLock()
with pyconc.RWReadContext(rw) as ctx:
    assert_type(ctx, pyconc.RWReadContext)
with rw.write(timeout=1.0) as locked:
    assert_type(locked, pyconc.RWLock)
assert_type(pyconc.ConcurrentDeque([1]).maxlen, int | None)
assert_type(pyconc.synchronization.IntervalLock, type[pyconc.IntervalLock])
assert_type(pyconc.ProcessSemaphore(2), pyconc.ProcessSemaphore)
# ... and an unknown name is an error (the module's run-time __getattr__ is hidden from type checkers); the
# ignore must be used (warn_unused_ignores).
_ = pyconc.AtomicRefrence  # type: ignore[attr-defined]

# LocalWrapper forwards the protocols of what it wraps.
w = pyconc.LocalWrapper([1, 2])
assert_type(len(w), int)
assert_type([x for x in w], list[Any])
assert_type(w.wrapped, Any)
assert_type(pyconc.BatchExecutor(lambda: 1, 8).as_local(), pyconc.LocalWrapper)

g = pyconc.ConcurrentGatheringIterator()
g.insert(0, "x")
assert_type(list(g.iterator_local(0)), list[pyconc.LocalWrapper])
assert_type(pyconc.exit_on_sigterm(), bool)

# The lifetime API, on every shared object.
for shared in (pyconc.Lock(), pyconc.Queue(), pyconc.ConcurrentDict(), pyconc.AtomicInt64(), pyconc.Condition()):
    assert_type(shared.segment_name, str)
    assert_type(shared.closed, bool)
    assert_type(shared.unlink(), None)
    assert_type(shared.close(), None)
assert_type(pyconc.ProcessSemaphore(2).segment_name, str)
assert_type(pyconc.AtomicReference(1).closed, bool)
assert_type(pyconc.ConcurrentGatheringIterator().close(), None)
assert_type(pyconc.Value("i", 1).segment_name, str)


# Pools: results typed by the function.
def _square(x: int) -> int:
    return x * x


pool = pyconc.Pool(2)
assert_type(pool.map(_square, [1, 2]), list[int])
assert_type(pool.map_async(_square, [1, 2]), MapResult[int])
assert_type(pool.apply_async(_square, (3,)).get(), int)
assert_type(pool.imap(_square, [1]), IMapIterator[int])
assert_type(next(pool.imap_unordered(_square, [1])), int)
executor = pyconc.ProcessPoolExecutor(2)
assert_type(executor.submit(_square, 3), Future[int])
assert_type(list(executor.map(_square, [1])), list[int])
