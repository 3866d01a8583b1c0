"""Process-local helpers of the concurrency API: `LocalWrapper`, `BatchExecutor`."""

from __future__ import annotations

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if TYPE_CHECKING:
    import collections
    import threading
    from collections.abc import Callable, Iterator
    from typing import Any


class LocalWrapper:
    """Wraps an object and forwards attribute access and the common protocols to it (like the concurrency
    docs' `LocalWrapper`): code can hold a per-thread wrapper instead of sharing the object itself. The
    wrapper is a plain process-local object; `wrapped` is the object."""

    __slots__ = ("wrapped",)
    wrapped: Any

    def __init__(self, obj: Any) -> None:
        object.__setattr__(self, "wrapped", obj)

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "wrapped"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.wrapped, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"LocalWrapper({self.wrapped!r})"

    if TYPE_CHECKING:
        # The protocols forwarded below (_FORWARDED), as type checkers see them: whatever the wrapped object does.
        def __len__(self) -> int: ...
        def __iter__(self) -> Iterator[Any]: ...
        def __next__(self) -> Any: ...
        def __contains__(self, item: object) -> bool: ...
        def __getitem__(self, key: Any) -> Any: ...
        def __setitem__(self, key: Any, value: Any) -> None: ...
        def __delitem__(self, key: Any) -> None: ...
        def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
        def __enter__(self) -> Any: ...
        def __exit__(self, *exc: object) -> Any: ...
        def __bool__(self) -> bool: ...
        def __int__(self) -> int: ...
        def __float__(self) -> float: ...
        def __index__(self) -> int: ...
        def __add__(self, other: Any) -> Any: ...
        def __radd__(self, other: Any) -> Any: ...
        def __iadd__(self, other: Any) -> Any: ...
        def __sub__(self, other: Any) -> Any: ...
        def __rsub__(self, other: Any) -> Any: ...
        def __mul__(self, other: Any) -> Any: ...
        def __rmul__(self, other: Any) -> Any: ...
        def __truediv__(self, other: Any) -> Any: ...
        def __floordiv__(self, other: Any) -> Any: ...
        def __mod__(self, other: Any) -> Any: ...
        def __neg__(self) -> Any: ...
        def __lt__(self, other: Any) -> Any: ...
        def __le__(self, other: Any) -> Any: ...
        def __gt__(self, other: Any) -> Any: ...
        def __ge__(self, other: Any) -> Any: ...
        def __eq__(self, other: object) -> Any: ...
        def __ne__(self, other: object) -> Any: ...
        def __hash__(self) -> int: ...


def _forward(name: str) -> Callable[..., Any]:
    def method(self: LocalWrapper, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.wrapped, name)(*args, **kwargs)

    method.__name__ = name
    return method


_FORWARDED = (
    "__len__", "__iter__", "__next__", "__contains__", "__getitem__", "__setitem__", "__delitem__", "__call__",
    "__enter__", "__exit__", "__bool__", "__str__", "__hash__", "__int__", "__float__", "__index__",
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__floordiv__", "__mod__", "__neg__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
)
for _name in _FORWARDED:
    setattr(LocalWrapper, _name, _forward(_name))
del _name


class BatchExecutor:
    """Calls ``source()`` ``size`` times at once to fill a buffer and hands the values out one by one:
    ``load()`` returns the next value, refilling the buffer when it is empty. Thread-safe (one thread refills
    while the others wait for it). An exception from ``source`` propagates out of the ``load()`` that ran it;
    values produced before it stay in the buffer. ``as_local()`` returns a ``LocalWrapper`` around the executor.

    Process-local: the buffer lives in this process (``source`` is any callable, e.g. one that pops a shared
    queue).
    """

    __slots__ = ("_buffer", "_lock", "_size", "_source")

    _source: Callable[[], Any]
    _size: int
    _buffer: collections.deque[Any]
    _lock: threading.Lock

    def __init__(self, source: Callable[[], Any], size: int) -> None:
        if not callable(source):
            raise TypeError(f"BatchExecutor: source must be callable, not {type(source).__name__}")
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError(f"BatchExecutor: size must be an int, not {type(size).__name__}")
        if size < 1:
            raise ValueError(f"BatchExecutor: size must be at least 1, got {size}")
        import collections
        import threading

        self._source = source
        self._size = size
        self._buffer = collections.deque()
        self._lock = threading.Lock()

    def load(self) -> Any:
        """The next value (calling ``source`` ``size`` times first if the buffer is empty)."""
        try:
            return self._buffer.popleft()
        except IndexError:
            pass
        with self._lock:
            while True:
                try:
                    return self._buffer.popleft()
                except IndexError:
                    pass
                source, append = self._source, self._buffer.append
                for _ in range(self._size):
                    append(source())

    def as_local(self) -> LocalWrapper:
        """A ``LocalWrapper`` around this executor."""
        return LocalWrapper(self)

    def __repr__(self) -> str:
        return f"BatchExecutor({self._source!r}, {self._size})"


__all__ = ["BatchExecutor", "LocalWrapper"]
