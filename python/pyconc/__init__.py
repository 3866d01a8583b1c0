"""pyconc: shared-memory queues, atomics, dicts and locks for Python processes.

Every object lives in a POSIX shared-memory segment and pickles as a small handle (segment name, offset, kind,
layout version), so it can be passed to processes started by fork, spawn or forkserver, through queues and to
pool workers, without copying its contents.

The core structures are imported with the package; the parts that not every program needs are imported on first
use (PEP 562), so `import pyconc` stays fast.
"""

import importlib as _importlib

from . import _lifecycle, _native
from ._native import AtomicFlag, AtomicInt64
from .dicts import ConcurrentDict
from .queues import ConcurrentQueue, JoinableQueue, Queue, ShutDown, SimpleQueue, StdConcurrentQueue
from .sharedctypes import Array, RawArray, RawValue, Value
from .synchronize import (
    Barrier,
    BoundedSemaphore,
    BrokenBarrierError,
    Condition,
    Event,
    Lock,
    OwnerDiedWarning,
    RLock,
    RWLock,
    Semaphore,
)

__version__: str = _native.__version__

# Public names imported on first use: name -> module (relative to the package).
_LAZY = {
    "AtomicReference": ".reference",
    "ConcurrentGatheringIterator": ".gathering",
    "LocalWrapper": ".local",
    "Pool": ".pool",
    "ProcessPoolExecutor": ".pool",
    "WorkerCrashedError": ".pool",
    "TaskTimeoutError": ".pool",
}

__all__ = [
    "Array",
    "AtomicFlag",
    "AtomicInt64",
    "AtomicReference",
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "ConcurrentDict",
    "ConcurrentGatheringIterator",
    "ConcurrentQueue",
    "Condition",
    "Event",
    "JoinableQueue",
    "LocalWrapper",
    "Lock",
    "OwnerDiedWarning",
    "Pool",
    "ProcessPoolExecutor",
    "Queue",
    "RLock",
    "RWLock",
    "RawArray",
    "RawValue",
    "Semaphore",
    "ShutDown",
    "SimpleQueue",
    "StdConcurrentQueue",
    "TaskTimeoutError",
    "Value",
    "WorkerCrashedError",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyconc' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


_lifecycle.install()
