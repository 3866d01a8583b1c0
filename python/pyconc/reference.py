"""`AtomicReference`: one value in shared memory, replaced atomically (built on a one-shard `ConcurrentDict`)."""

from __future__ import annotations

from .dicts import ConcurrentDict, _SameDictIdentity

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    from typing import Any


class AtomicReference(_SameDictIdentity):
    """A reference to one value in shared memory, replaced atomically from any thread or process.

    Built on a one-shard `ConcurrentDict`; pickles as a handle. Values are stored encoded, so `get()` returns a
    copy, and identity means nothing across processes: `compare_exchange(expected, obj)` compares the *encoded*
    value of `expected` with the stored one (so `1` and `1.0` differ, and equal lists match).
    """

    __slots__ = ("_d",)

    def __init__(self, obj: Any = None, *, _dict: ConcurrentDict | None = None) -> None:
        if _dict is None:
            _dict = ConcurrentDict(scaling=1)
            _dict[0] = obj
        self._d = _dict

    def get(self) -> Any:
        """The current value (a copy)."""
        return self._d[0]

    def set(self, obj: Any) -> None:
        """Stores `obj`."""
        self._d[0] = obj

    def exchange(self, obj: Any) -> Any:
        """Stores `obj` and returns the previous value, atomically."""
        old: list[Any] = []

        def swap(v: Any) -> Any:
            old.append(v)
            return obj

        self._d.update_with(0, swap)
        return old[0]

    def compare_exchange(self, expected: Any, obj: Any) -> bool:
        """Stores `obj` if the value encodes like `expected`; returns whether it did."""
        return self._d.compare_and_set(0, expected, obj)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_reference, (self._d,))

    # The lifetime API: the reference's shared state is its dict.

    def close(self) -> None:
        """Makes this object unusable here and lets go of its shared memory (idempotent)."""
        self._d.close()

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called on this object."""
        return self._d.closed

    def unlink(self) -> None:
        """Removes the reference's name now: holders keep working, new attaches fail with FileNotFoundError."""
        self._d.unlink()

    @property
    def segment_name(self) -> str:
        """The name of the shared-memory segment the reference lives in."""
        return self._d.segment_name

    def __repr__(self) -> str:
        if self.closed:
            return "AtomicReference(<closed>)"
        return f"AtomicReference({self.get()!r})"


def _rebuild_reference(d: ConcurrentDict) -> AtomicReference:
    return AtomicReference(_dict=d)


__all__ = ["AtomicReference"]
