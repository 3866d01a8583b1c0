"""ctypes objects in pyconc shared memory: drop-ins for ``multiprocessing.sharedctypes``.

``RawValue``/``RawArray`` return ctypes objects whose memory is a pyconc segment; ``Value``/``Array`` wrap them
with a lock (by default a cross-process ``RLock`` stored in the same segment). Unlike ``multiprocessing``, all
of them pickle as handles, so they can be sent to any process (spawn, forkserver, through queues, to pools), and
arrays export the buffer protocol: ``numpy.frombuffer(arr, dtype)`` and ``memoryview(arr)`` are zero-copy views.
"""

import ctypes
import functools

from . import _native

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

typecode_to_type = {
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
_int_typecodes = {}
for _code in "bBhHiIlLqQ":
    _int_typecodes.setdefault(typecode_to_type[_code], _code)


def _resolve_type(typecode_or_type):
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


def _typecode_of(type_):
    return _int_typecodes.get(type_, "")


# Native struct codes for the simple ctypes types, so memoryview(arr)[i] works (ctypes itself exports "<d",
# which memoryview cannot index).
_native_codes = {
    ctypes.c_char: "c", ctypes.c_bool: "?", ctypes.c_byte: "b", ctypes.c_ubyte: "B", ctypes.c_short: "h",
    ctypes.c_ushort: "H", ctypes.c_int: "i", ctypes.c_uint: "I", ctypes.c_long: "l", ctypes.c_ulong: "L",
    ctypes.c_longlong: "q", ctypes.c_ulonglong: "Q", ctypes.c_float: "f", ctypes.c_double: "d",
}


@functools.cache
def _buffer_format(type_):
    return _native_codes.get(type_) or memoryview(type_()).format


def _new_buffer(type_, length, handle=None, reserve=True):
    code = _typecode_of(type_)
    return _native.SharedBuffer(
        _buffer_format(type_), ctypes.sizeof(type_), length, ord(code) if code else 0, reserve=reserve, _handle=handle
    )


@functools.cache
def _shared_type(type_, length):
    """A subclass of ``type_`` (or of ``type_ * length``) whose instances pickle as shared-memory handles."""
    base = type_ if length is None else type_ * length

    def __reduce__(self):
        return _rebuild_ctype, (type_, length, self._pyconc_buffer._handle)

    def fetch_add(self, *args):
        """Atomically add to an integer item without any lock; return the previous value.

        ``fetch_add(delta)`` for a value, ``fetch_add(index, delta)`` for an array."""
        if length is None:
            (delta,) = args
            return self._pyconc_buffer._fetch_add(0, delta)
        index, delta = args
        return self._pyconc_buffer._fetch_add(_norm_index(index, length), delta)

    def __repr__(self):
        # ctypes shows "c_int(5)" only for its own simple types; keep that for ours.
        return f"{type_.__name__}({self.value!r})"

    def __eq__(self, other):
        # Identity of the shared memory, across handles (ctypes objects compare by identity).
        if type(other) is not type(self):
            return NotImplemented
        return self._pyconc_buffer == other._pyconc_buffer

    def __hash__(self):
        return hash(self._pyconc_buffer)

    name = base.__name__ if length is None else f"{type_.__name__}_Array_{length}"
    ns = {
        "__reduce__": __reduce__, "__module__": __name__, "_pyconc_spec": (type_, length),
        "__eq__": __eq__, "__hash__": __hash__,
    }
    if length is None and not _is_simple(type_):
        # A Structure or Union: its instances show as the user's type, as multiprocessing's do.
        ns["__module__"] = type_.__module__
        ns["__qualname__"] = type_.__qualname__
    if length is None and _is_simple(type_):
        ns["__repr__"] = __repr__
    if type_ in _int_typecodes:
        ns["fetch_add"] = fetch_add
    return type(name, (base,), ns)


def _is_simple(type_):
    return isinstance(getattr(type_, "_type_", None), str)


def _norm_index(index, length):
    index = int(index)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError("index out of range")
    return index


def _attach_ctype(type_, length, buf):
    obj = _shared_type(type_, length).from_buffer(buf)
    obj._pyconc_buffer = buf
    return obj


def _rebuild_ctype(type_, length, handle):
    buf = _new_buffer(type_, 1 if length is None else length, handle)
    return _attach_ctype(type_, length, buf)


def RawValue(typecode_or_type, *args):
    """A ctypes object in shared memory, initialised with ``args`` (zero-filled otherwise)."""
    type_ = _resolve_type(typecode_or_type)
    obj = _attach_ctype(type_, None, _new_buffer(type_, 1))
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer, *, reserve=True):
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

def _embedded_rlock(buf):
    """The cross-process RLock stored in the block's own lock area (no extra segment)."""
    return _native.RLock._embedded(buf, buf.lock_offset)


def _resolve_lock(lock, buf):
    if lock is None or lock is True:
        return _embedded_rlock(buf)
    if not hasattr(lock, "acquire"):
        raise AttributeError(f"{lock!r} has no method 'acquire'")
    return lock


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """A ctypes object in shared memory, wrapped with a lock unless ``lock=False``.

    ``lock=True`` (default) gives a cross-process ``RLock`` stored in the same segment; pass any object with
    ``acquire``/``release`` to use it instead. Integer values also have a lock-free ``fetch_add(delta)``.
    """
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return synchronized(obj, _resolve_lock(lock, obj._pyconc_buffer))


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None, reserve=True):
    """A ctypes array in shared memory, wrapped with a lock unless ``lock=False``.

    The wrapper (and the raw array) export the buffer protocol: ``numpy.frombuffer(arr, dtype)`` and
    ``memoryview(arr)`` are zero-copy views of the shared memory. ``reserve``: see :func:`RawArray`.
    """
    obj = RawArray(typecode_or_type, size_or_initializer, reserve=reserve)
    if lock is False:
        return obj
    return synchronized(obj, _resolve_lock(lock, obj._pyconc_buffer))


def synchronized(obj, lock=None, ctx=None):
    """Wraps a pyconc shared ctypes object (from RawValue/RawArray) with a lock."""
    buf = getattr(obj, "_pyconc_buffer", None)
    if buf is None:
        raise TypeError("synchronized() needs a pyconc shared ctypes object (from RawValue or RawArray)")
    return _wrapper_class(obj)(obj, _resolve_lock(lock, buf))


def _wrapper_class(obj):
    if isinstance(obj, ctypes.Array):
        return SynchronizedString if obj._type_ is ctypes.c_char else SynchronizedArray
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized
    return _struct_wrapper(obj._pyconc_spec[0])


@functools.cache
def _struct_wrapper(type_):
    """``Synchronized<Name>`` for a ctypes Structure/Union: each field is a property read and written under the
    lock (what ``multiprocessing.sharedctypes.synchronized`` builds)."""
    names = []
    for klass in reversed(type_.__mro__):
        for field in klass.__dict__.get("_fields_", ()):
            if field[0] not in names:
                names.append(field[0])
    ns = {name: _locked_property(name) for name in names}
    ns["__module__"] = __name__
    return type("Synchronized" + type_.__name__, (SynchronizedBase,), ns)


def _rebuild_synchronized(cls, type_, length, handle, lock):
    obj = _rebuild_ctype(type_, length, handle)
    if cls is None:
        cls = _wrapper_class(obj)
    return cls(obj, lock if lock is not None else _embedded_rlock(obj._pyconc_buffer))


class SynchronizedBase(_native.SharedBuffer):
    """A lock plus a shared ctypes object; also a zero-copy buffer over the object's memory."""

    def __new__(cls, obj, lock=None, ctx=None):
        buf = obj._pyconc_buffer
        return super().__new__(cls, buf.format, buf.itemsize, buf.length, buf.typecode, buf)

    def __init__(self, obj, lock=None, ctx=None):
        self._obj = obj
        self._lock = lock if lock is not None else _embedded_rlock(obj._pyconc_buffer)
        self.acquire = self._lock.acquire
        self.release = self._lock.release

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *args):
        return self._lock.__exit__(*args)

    def __reduce__(self):
        buf = self._obj._pyconc_buffer
        type_, length = self._obj._pyconc_spec
        embedded = _is_embedded(self._lock, buf)
        # A structure's wrapper class is built on the fly (not importable by name): rebuilt from the type.
        cls = type(self) if type(self) in (Synchronized, SynchronizedArray, SynchronizedString) else None
        return _rebuild_synchronized, (cls, type_, length, buf._handle, None if embedded else self._lock)

    def get_obj(self):
        return self._obj

    def get_lock(self):
        return self._lock

    def __repr__(self):
        return f"<{type(self).__name__} wrapper for {self._obj}>"


def _is_embedded(lock, buf):
    handle = getattr(lock, "_handle", None)
    return bool(handle) and handle[1] == buf.segment_name and handle[2] == buf.lock_offset


def _locked_property(name):
    """A property reading and writing attribute `name` of the wrapped object under the lock."""

    def get(self):
        with self._lock:
            return getattr(self._obj, name)

    def set(self, v):
        with self._lock:
            setattr(self._obj, name, v)

    return property(get, set, doc=f"``{name}`` of the shared object, under the lock")


class Synchronized(SynchronizedBase):
    """``Value(...)``: ``.value`` reads and writes under the lock."""

    value = _locked_property("value")

    def fetch_add(self, delta):
        """Atomically add ``delta`` (integer values only) without taking the lock; return the previous value."""
        return self._obj._pyconc_buffer._fetch_add(0, delta)


class SynchronizedArray(SynchronizedBase):
    """``Array(...)``: indexing and slicing under the lock."""

    def __len__(self):
        return len(self._obj)

    def __getitem__(self, i):
        with self._lock:
            return self._obj[i]

    def __setitem__(self, i, value):
        with self._lock:
            self._obj[i] = value

    def __getslice__(self, start, stop):
        with self._lock:
            return self._obj[start:stop]

    def __setslice__(self, start, stop, values):
        with self._lock:
            self._obj[start:stop] = values

    def fetch_add(self, index, delta):
        """Atomically add ``delta`` to item ``index`` (integer arrays only) without the lock; return the old value."""
        return self._obj._pyconc_buffer._fetch_add(_norm_index(index, len(self._obj)), delta)


class SynchronizedString(SynchronizedArray):
    """``Array('c', ...)``: also ``.value`` and ``.raw`` under the lock."""

    value = _locked_property("value")
    raw = _locked_property("raw")
