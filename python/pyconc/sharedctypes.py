"""ctypes objects in pyconc shared memory: drop-ins for ``multiprocessing.sharedctypes``.

``RawValue``/``RawArray`` return ctypes objects whose memory is a pyconc segment; ``Value``/``Array`` wrap them
with a lock (by default a cross-process ``RLock`` stored in the same segment). Unlike ``multiprocessing``, all
of them pickle as handles, so they can be sent to any process (spawn, forkserver, through queues, to pools), and
arrays export the buffer protocol: ``numpy.frombuffer(arr, dtype)`` and ``memoryview(arr)`` are zero-copy views.
"""

from __future__ import annotations

import ctypes
import functools

from . import _native

TYPE_CHECKING = False  # a type checker takes it as true; `typing` is not imported at run time
if not TYPE_CHECKING:

    def overload(fn):  # typing.overload's run-time effect, without importing typing: the last definition stays
        return fn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from ctypes import _CData, _SimpleCData
    from typing import Any, Literal, Protocol, SupportsIndex, TypeVar, overload

    from typing_extensions import Self

    from ._native import _Handle

    _CT = TypeVar("_CT", bound=_CData)

    class _LockLike(Protocol):
        """What ``lock=`` takes besides True/False: any lock (``acquire``/``release``, a context manager)."""

        def acquire(self, *args: Any, **kwargs: Any) -> Any: ...
        def release(self) -> object: ...
        def __enter__(self) -> Any: ...
        def __exit__(self, *args: Any, **kwargs: Any) -> Any: ...  # noqa: PYI036 - (...) matches every lock's

__all__ = [
    "Array",
    "RawArray",
    "RawValue",
    "Synchronized",
    "SynchronizedArray",
    "SynchronizedString",
    "Value",
    "synchronized",
    "typecode_to_type",
]

typecode_to_type: dict[str, type[_SimpleCData[Any]]] = {
    "c": ctypes.c_char,
    "u": ctypes.c_wchar,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}

# The inverse, for the integer types that support lock-free fetch_add (ctypes aliases map to the same code).
_int_typecodes: dict[type[Any], str] = {}
for _code in "bBhHiIlLqQ":
    _int_typecodes.setdefault(typecode_to_type[_code], _code)


def _resolve_type(typecode_or_type: str | type[_CData]) -> type[Any]:
    if isinstance(typecode_or_type, str):
        try:
            return typecode_to_type[typecode_or_type]
        except KeyError:
            raise TypeError(
                "bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)"
            ) from None
    try:
        ctypes.sizeof(typecode_or_type)
    except TypeError:
        raise TypeError(f"expected a typecode or a ctypes type, got {typecode_or_type!r}") from None
    return typecode_or_type


def _typecode_of(type_: type[Any]) -> str:
    return _int_typecodes.get(type_, "")


# Native struct codes for the simple ctypes types, so memoryview(arr)[i] works (ctypes itself exports "<d",
# which memoryview cannot index).
_native_codes: dict[type[Any], str] = {
    ctypes.c_char: "c", ctypes.c_bool: "?", ctypes.c_byte: "b", ctypes.c_ubyte: "B", ctypes.c_short: "h",
    ctypes.c_ushort: "H", ctypes.c_int: "i", ctypes.c_uint: "I", ctypes.c_long: "l", ctypes.c_ulong: "L",
    ctypes.c_longlong: "q", ctypes.c_ulonglong: "Q", ctypes.c_float: "f", ctypes.c_double: "d",
}


@functools.cache
def _buffer_format(type_: type[Any]) -> str:
    return _native_codes.get(type_) or memoryview(type_()).format


def _new_buffer(
    type_: type[Any], length: int, handle: _Handle | None = None, reserve: bool = True
) -> _native.SharedBuffer:
    code = _typecode_of(type_)
    fmt = _buffer_format(type_)  # type: ignore[arg-type]  # to mypy a class is not Hashable (it is)
    # small=True: a block whose items fit 128 bytes shares an arena segment with other small objects.
    return _native.SharedBuffer(
        fmt, ctypes.sizeof(type_), length, ord(code) if code else 0, reserve=reserve, small=True, _handle=handle
    )


@functools.cache
def _shared_type(type_: type[Any], length: int | None) -> type[Any]:
    """A subclass of ``type_`` (or of ``type_ * length``) whose instances pickle as shared-memory handles."""
    base = type_ if length is None else type_ * length

    def __reduce__(self: Any) -> tuple[Any, ...]:
        return _rebuild_ctype, (type_, length, self._pyconc_buffer._handle)

    def fetch_add(self: Any, *args: Any) -> int:
        """Atomically add to an integer item without any lock; return the previous value.

        ``fetch_add(delta)`` for a value, ``fetch_add(index, delta)`` for an array."""
        buf: _native.SharedBuffer = self._pyconc_buffer
        if length is None:
            (delta,) = args
            return buf._fetch_add(0, delta)
        index, delta = args
        return buf._fetch_add(_norm_index(index, length), delta)

    def __repr__(self: Any) -> str:
        # ctypes shows "c_int(5)" only for its own simple types; keep that for ours.
        return f"{type_.__name__}({self.value!r})"

    def __eq__(self: Any, other: Any) -> bool:
        # Identity of the shared memory, across handles (ctypes objects compare by identity).
        if type(other) is not type(self):
            return NotImplemented
        buf: _native.SharedBuffer = self._pyconc_buffer
        peer: _native.SharedBuffer = other._pyconc_buffer
        return buf == peer

    def __hash__(self: Any) -> int:
        return hash(self._pyconc_buffer)

    # The lifetime API, through the buffer. ctypes reads and writes the memory directly, so after close() the
    # object itself still reaches it (it is not unmapped under it): the segment is let go of when the object is
    # garbage collected; pickling and fetch_add raise at once.

    def close(self: Any) -> None:
        """Closes the object's buffer; the memory is let go of when this ctypes object is collected."""
        self._pyconc_buffer.close()

    def closed(self: Any) -> bool:
        return bool(self._pyconc_buffer.closed)

    def unlink(self: Any) -> None:
        """Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError."""
        self._pyconc_buffer.unlink()

    def segment_name(self: Any) -> str:
        return str(self._pyconc_buffer.segment_name)

    name = base.__name__ if length is None else f"{type_.__name__}_Array_{length}"
    ns: dict[str, Any] = {
        "__reduce__": __reduce__, "__module__": __name__, "_pyconc_spec": (type_, length),
        "__eq__": __eq__, "__hash__": __hash__,
        "close": close, "closed": property(closed, doc="Whether ``close()`` was called on this object."),
        "unlink": unlink,
        "segment_name": property(segment_name, doc="The name of the shared-memory segment the object lives in."),
    }
    for member in ("close", "closed", "unlink", "segment_name"):
        if hasattr(base, member):  # a Structure field of that name stays the user's
            del ns[member]
    if length is None and not _is_simple(type_):
        # A Structure or Union: its instances show as the user's type, as multiprocessing's do.
        ns["__module__"] = type_.__module__
        ns["__qualname__"] = type_.__qualname__
    if length is None and _is_simple(type_):
        ns["__repr__"] = __repr__
    if type_ in _int_typecodes:
        ns["fetch_add"] = fetch_add
    return type(name, (base,), ns)


def _is_simple(type_: type[Any]) -> bool:
    return isinstance(getattr(type_, "_type_", None), str)


def _norm_index(index: SupportsIndex, length: int) -> int:
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError("index out of range")
    return index


def _attach_ctype(type_: type[Any], length: int | None, buf: _native.SharedBuffer) -> Any:
    obj = _shared_type(type_, length).from_buffer(buf)  # type: ignore[arg-type]  # as in _new_buffer
    obj._pyconc_buffer = buf
    return obj


def _rebuild_ctype(type_: type[Any], length: int | None, handle: _Handle) -> Any:
    buf = _new_buffer(type_, 1 if length is None else length, handle)
    return _attach_ctype(type_, length, buf)


@overload
def RawValue(typecode_or_type: type[_CT], *args: Any) -> _CT: ...
@overload
def RawValue(typecode_or_type: str, *args: Any) -> Any: ...
def RawValue(typecode_or_type: str | type[_CData], *args: Any) -> Any:
    """A ctypes object in shared memory, initialised with ``args`` (zero-filled otherwise)."""
    type_ = _resolve_type(typecode_or_type)
    obj = _attach_ctype(type_, None, _new_buffer(type_, 1))
    obj.__init__(*args)
    return obj


@overload
def RawArray(
    typecode_or_type: type[_CT], size_or_initializer: int | Iterable[Any], *, reserve: bool = True
) -> ctypes.Array[_CT]: ...
@overload
def RawArray(typecode_or_type: str, size_or_initializer: int | Iterable[Any], *, reserve: bool = True) -> Any: ...
def RawArray(
    typecode_or_type: str | type[_CData], size_or_initializer: int | Iterable[Any], *, reserve: bool = True
) -> Any:
    """A ctypes array in shared memory: ``size`` zeroed items, or a copy of ``initializer``.

    ``reserve=True`` (default) allocates all its pages in /dev/shm at creation, so a full /dev/shm is a
    MemoryError here and never a SIGBUS later (as ``multiprocessing``'s arrays, which write their zeros). This
    costs about 0.6 ms per 10 MB; ``reserve=False`` creates in microseconds whatever the size, like
    ``multiprocessing.shared_memory.SharedMemory``, and like it a write to a page that a full /dev/shm cannot
    back kills the process with SIGBUS.
    """
    type_ = _resolve_type(typecode_or_type)
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError("array size must be non-negative")
        buf = _new_buffer(type_, size_or_initializer, reserve=reserve)
        return _attach_ctype(type_, size_or_initializer, buf)
    init = list(size_or_initializer)
    obj = _attach_ctype(type_, len(init), _new_buffer(type_, len(init)))
    obj.__init__(*init)
    return obj


# ---- synchronized wrappers ---------------------------------------------------------------------------------------

def _embedded_rlock(buf: _native.SharedBuffer) -> _native.RLock:
    """The cross-process RLock stored in the block's own lock area (no extra segment)."""
    return _native.RLock._embedded(buf, buf.lock_offset)


def _resolve_lock(lock: _LockLike | Literal[True] | None, buf: _native.SharedBuffer) -> _LockLike:
    if lock is None or lock is True:
        return _embedded_rlock(buf)
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    return lock


@overload
def Value(typecode_or_type: type[_CT], *args: Any, lock: Literal[False], ctx: object = None) -> _CT: ...
@overload
def Value(
    typecode_or_type: type[_SimpleCData[Any]] | str, *args: Any, lock: Literal[True] | _LockLike = True,
    ctx: object = None,
) -> Synchronized: ...
@overload
def Value(
    typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True, ctx: object = None
) -> Any: ...
def Value(
    typecode_or_type: str | type[_CData], *args: Any, lock: bool | _LockLike = True, ctx: object = None
) -> Any:
    """A ctypes object in shared memory, wrapped with a lock unless ``lock=False``.

    ``lock=True`` (default) gives a cross-process ``RLock`` stored in the same segment; pass any object with
    ``acquire``/``release`` to use it instead. Integer values also have a lock-free ``fetch_add(delta)``.
    """
    obj: Any = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return synchronized(obj, _resolve_lock(lock, obj._pyconc_buffer))


@overload
def Array(
    typecode_or_type: type[_CT], size_or_initializer: int | Iterable[Any], *, lock: Literal[False],
    ctx: object = None, reserve: bool = True,
) -> ctypes.Array[_CT]: ...
@overload
def Array(
    typecode_or_type: type[ctypes.c_char] | Literal["c"], size_or_initializer: int | Iterable[Any], *,
    lock: Literal[True] | _LockLike = True, ctx: object = None, reserve: bool = True,
) -> SynchronizedString: ...
@overload
def Array(
    typecode_or_type: str | type[_CData], size_or_initializer: int | Iterable[Any], *,
    lock: Literal[True] | _LockLike = True, ctx: object = None, reserve: bool = True,
) -> SynchronizedArray: ...
@overload
def Array(
    typecode_or_type: str | type[_CData], size_or_initializer: int | Iterable[Any], *,
    lock: bool | _LockLike = True, ctx: object = None, reserve: bool = True,
) -> Any: ...
def Array(
    typecode_or_type: str | type[_CData], size_or_initializer: int | Iterable[Any], *,
    lock: bool | _LockLike = True, ctx: object = None, reserve: bool = True,
) -> Any:
    """A ctypes array in shared memory, wrapped with a lock unless ``lock=False``.

    The wrapper (and the raw array) export the buffer protocol: ``numpy.frombuffer(arr, dtype)`` and
    ``memoryview(arr)`` are zero-copy views of the shared memory. ``reserve``: see :func:`RawArray`.
    """
    obj: Any = RawArray(typecode_or_type, size_or_initializer, reserve=reserve)
    if lock is False:
        return obj
    return synchronized(obj, _resolve_lock(lock, obj._pyconc_buffer))


@overload
def synchronized(
    obj: ctypes.Array[ctypes.c_char], lock: _LockLike | None = None, ctx: object = None
) -> SynchronizedString: ...
@overload
def synchronized(obj: ctypes.Array[Any], lock: _LockLike | None = None, ctx: object = None) -> SynchronizedArray: ...
@overload
def synchronized(obj: _SimpleCData[Any], lock: _LockLike | None = None, ctx: object = None) -> Synchronized: ...
@overload
def synchronized(obj: _CData, lock: _LockLike | None = None, ctx: object = None) -> SynchronizedBase: ...
def synchronized(obj: _CData, lock: _LockLike | None = None, ctx: object = None) -> SynchronizedBase:
    """Wraps a pyconc shared ctypes object (from RawValue/RawArray) with a lock."""
    buf = getattr(obj, "_pyconc_buffer", None)
    if buf is None:
        raise TypeError("synchronized() needs a pyconc shared ctypes object (from RawValue or RawArray)")
    return _wrapper_class(obj)(obj, _resolve_lock(lock, buf))


def _wrapper_class(obj: Any) -> type[SynchronizedBase]:
    if isinstance(obj, ctypes.Array):
        return SynchronizedString if obj._type_ is ctypes.c_char else SynchronizedArray
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized
    return _struct_wrapper(obj._pyconc_spec[0])


@functools.cache
def _struct_wrapper(type_: type[Any]) -> type[SynchronizedBase]:
    """``Synchronized<Name>`` for a ctypes Structure/Union: each field is a property read and written under the
    lock (what ``multiprocessing.sharedctypes.synchronized`` builds)."""
    names: list[str] = []
    for klass in reversed(type_.__mro__):
        for field in klass.__dict__.get("_fields_", ()):
            if field[0] not in names:
                names.append(field[0])
    ns = {name: _locked_property(name) for name in names}
    ns["__module__"] = __name__
    return type("Synchronized" + type_.__name__, (SynchronizedBase,), ns)


def _rebuild_synchronized(
    cls: type[SynchronizedBase] | None, type_: type[Any], length: int | None, handle: _Handle,
    lock: _LockLike | None,
) -> SynchronizedBase:
    obj = _rebuild_ctype(type_, length, handle)
    if cls is None:
        cls = _wrapper_class(obj)
    return cls(obj, lock if lock is not None else _embedded_rlock(obj._pyconc_buffer))


class SynchronizedBase(_native.SharedBuffer):
    """A lock plus a shared ctypes object; also a zero-copy buffer over the object's memory."""

    _obj: Any
    _lock: _LockLike
    acquire: Callable[..., Any]
    release: Callable[[], object]

    def __new__(cls, obj: Any, lock: _LockLike | None = None, ctx: object = None) -> Self:
        buf = obj._pyconc_buffer
        return super().__new__(cls, buf.format, buf.itemsize, buf.length, buf.typecode, buf)

    def __init__(self, obj: Any, lock: _LockLike | None = None, ctx: object = None) -> None:
        self._obj = obj
        self._lock = lock if lock is not None else _embedded_rlock(obj._pyconc_buffer)
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self) -> Any:
        return self._lock.__enter__()

    def __exit__(self, *args: object) -> Any:
        return self._lock.__exit__(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        buf = self._obj._pyconc_buffer
        type_, length = self._obj._pyconc_spec
        embedded = _is_embedded(self._lock, buf)
        # A structure's wrapper class is built on the fly (not importable by name): rebuilt from the type.
        cls = type(self) if type(self) in (Synchronized, SynchronizedArray, SynchronizedString) else None
        return _rebuild_synchronized, (cls, type_, length, buf._handle, None if embedded else self._lock)

    def close(self) -> None:
        """Makes this object unusable here (``value``/items raise ValueError) and lets go of its shared memory:
        its embedded lock is closed too (a lock passed in is the caller's and stays open). A ctypes object taken
        with ``get_obj()`` before still reaches the memory until it is collected. Idempotent."""
        if self.closed:
            return
        obj, buf = self._obj, self._obj._pyconc_buffer
        if _is_embedded(self._lock, buf):
            self._lock.close()  # type: ignore[attr-defined]  # an embedded lock is a native RLock
        self._obj = _Closed(type(self).__name__)
        buf.close()
        super().close()
        del obj  # the last reference here: the ctypes object's export of the memory goes with it

    def get_obj(self) -> Any:
        return self._obj

    def get_lock(self) -> _LockLike:
        return self._lock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wrapper for {self._obj}>"


class _Closed:
    """What a closed ``Value``/``Array`` wraps instead of its ctypes object: every use is the closed error."""

    __slots__ = ("_what",)

    def __init__(self, what: str) -> None:
        self._what = what

    def _error(self) -> ValueError:
        return ValueError(f"{self._what} is closed; create a new one or unpickle a handle to reopen it")

    def __getattr__(self, name: str) -> Any:
        raise self._error()

    def __setattr__(self, name: str, value: object) -> None:
        if name != "_what":
            raise self._error()
        object.__setattr__(self, name, value)

    def __len__(self) -> int:
        raise self._error()

    def __getitem__(self, i: object) -> Any:
        raise self._error()

    def __setitem__(self, i: object, value: object) -> None:
        raise self._error()

    def __repr__(self) -> str:
        return "<closed>"


def _is_embedded(lock: object, buf: _native.SharedBuffer) -> bool:
    handle = getattr(lock, "_handle", None)
    if not handle:
        return False
    return bool(handle[1] == buf.segment_name and handle[2] == buf.lock_offset)


def _locked_property(name: str) -> Any:
    """A property reading and writing attribute `name` of the wrapped object under the lock."""

    def get(self: SynchronizedBase) -> Any:
        with self._lock:
            return getattr(self._obj, name)

    def set(self: SynchronizedBase, v: Any) -> None:
        with self._lock:
            setattr(self._obj, name, v)

    return property(get, set, doc=f"``{name}`` of the shared object, under the lock")


class Synchronized(SynchronizedBase):
    """``Value(...)``: ``.value`` reads and writes under the lock."""

    value = _locked_property("value")

    def fetch_add(self, delta: int) -> int:
        """Atomically add ``delta`` (integer values only) without taking the lock; return the previous value."""
        buf: _native.SharedBuffer = self._obj._pyconc_buffer
        return buf._fetch_add(0, delta)


class SynchronizedArray(SynchronizedBase):
    """``Array(...)``: indexing and slicing under the lock."""

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, i: SupportsIndex | slice) -> Any:
        with self._lock:
            return self._obj[i]

    def __setitem__(self, i: SupportsIndex | slice, value: Any) -> None:
        with self._lock:
            self._obj[i] = value

    def __getslice__(self, start: int, stop: int) -> Any:
        with self._lock:
            return self._obj[start:stop]

    def __setslice__(self, start: int, stop: int, values: Any) -> None:
        with self._lock:
            self._obj[start:stop] = values

    def fetch_add(self, index: SupportsIndex, delta: int) -> int:
        """Atomically add ``delta`` to item ``index`` (integer arrays only) without the lock; return the old value."""
        buf: _native.SharedBuffer = self._obj._pyconc_buffer
        return buf._fetch_add(_norm_index(index, len(self._obj)), delta)


class SynchronizedString(SynchronizedArray):
    """``Array('c', ...)``: also ``.value`` and ``.raw`` under the lock."""

    value = _locked_property("value")
    raw = _locked_property("raw")
