"""`ConcurrentGatheringIterator`: values inserted under integer keys by any thread or process, yielded in key
order (a `ConcurrentDict` plus a shared `Condition`)."""

from __future__ import annotations

from ._native import AtomicFlag
from .dicts import ConcurrentDict, _SameDictIdentity
from .local import LocalWrapper
from .synchronize import Condition

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, SupportsIndex

    _Parts = tuple[ConcurrentDict, Condition, AtomicFlag]


class ConcurrentGatheringIterator(_SameDictIdentity):
    """Gathers values inserted under integer keys by any thread or process and yields them in key order.

    ``insert(key, value)`` may be called from anywhere, in any order. ``iterator(max_key, clear=True)`` yields
    the values for keys ``0 .. max_key`` (inclusive) in key order, waiting for each key to arrive: the wait sleeps
    on a cross-process condition (a shared futex) and wakes when an insert lands, with no polling. With
    ``clear=True`` each value is removed once yielded. If an insert fails (its value cannot be stored), every
    iterator raises ``RuntimeError`` instead of waiting forever for that key. Pickles as a handle.
    """

    def __init__(self, scaling: int | None = None, *, _parts: _Parts | None = None) -> None:
        if _parts is None:
            _parts = (ConcurrentDict(scaling=scaling or 17), Condition(), AtomicFlag(False))
        self._d, self._cond, self._failed = _parts

    def insert(self, key: SupportsIndex, value: Any) -> None:
        """Stores `value` under integer `key` and wakes iterators waiting for it."""
        try:
            self._d[int(key)] = value
        except BaseException:
            self._failed.set(True)
            raise
        finally:
            with self._cond:
                self._cond.notify_all()

    def iterator(self, max_key: SupportsIndex, clear: bool = True) -> Iterator[Any]:
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

    def iterator_local(self, max_key: SupportsIndex, clear: bool = True) -> Iterator[LocalWrapper]:
        """As `iterator`, yielding each value in a `LocalWrapper`."""
        for value in self.iterator(max_key, clear):
            yield LocalWrapper(value)

    def _take(self, key: int, clear: bool) -> tuple[bool, Any]:
        missing = object()
        value = self._d.pop(key, missing) if clear else self._d.get(key, missing)
        return value is not missing, value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_gathering, ((self._d, self._cond, self._failed),))

    # The lifetime API: the iterator's shared state is its dict, its condition and its failure flag.

    def close(self) -> None:
        """Makes this object unusable here and lets go of its shared memory (idempotent)."""
        self._d.close()
        self._cond.close()
        self._failed.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this object."""
        return self._d.closed

    def unlink(self) -> None:
        """Removes the iterator's names now: holders keep working, new attaches fail with FileNotFoundError."""
        self._d.unlink()
        self._cond.unlink()
        self._failed.unlink()

    @property
    def segment_name(self) -> str:
        """The name of the segment of the iterator's dict (its main part)."""
        return self._d.segment_name


def _rebuild_gathering(parts: _Parts) -> ConcurrentGatheringIterator:
    return ConcurrentGatheringIterator(_parts=parts)


__all__ = ["ConcurrentGatheringIterator"]
