"""Process-local helpers of the concurrency API: `LocalWrapper`, `BatchExecutor`."""


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



class BatchExecutor:
    """Calls ``source()`` ``size`` times at once to fill a buffer and hands the values out one by one:
    ``load()`` returns the next value, refilling the buffer when it is empty. Thread-safe (one thread refills
    while the others wait for it). An exception from ``source`` propagates out of the ``load()`` that ran it;
    values produced before it stay in the buffer. ``as_local()`` returns a ``LocalWrapper`` around the executor.

    Process-local: the buffer lives in this process (``source`` is any callable, e.g. one that pops a shared
    queue).
    """

    __slots__ = ("_buffer", "_lock", "_size", "_source")

    def __init__(self, source, size):
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

    def load(self):
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

    def as_local(self):
        """A ``LocalWrapper`` around this executor."""
        return LocalWrapper(self)

    def __repr__(self):
        return f"BatchExecutor({self._source!r}, {self._size})"


__all__ = ["BatchExecutor", "LocalWrapper"]
