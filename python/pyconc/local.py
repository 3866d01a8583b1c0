"""Process-local helpers of the concurrency API: `LocalWrapper`."""


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


__all__ = ["LocalWrapper"]
