"""ctypes objects in pyconc shared memory: drop-ins for ``multiprocessing.sharedctypes``.

``RawValue``/``RawArray`` return ctypes objects whose memory is a pyconc segment; ``Value``/``Array`` wrap them
with a lock (by default a cross-process ``RLock`` stored in the same segment). Unlike ``multiprocessing``, all
of them pickle as handles, so they can be sent to any process (spawn, forkserver, through queues, to pools), and
arrays export the buffer protocol: ``numpy.frombuffer(arr, dtype)`` and ``memoryview(arr)`` are zero-copy views.
"""

import ctypes
import functools

from . import _native

__all__ = ["RawValue", "RawArray", "typecode_to_type"]

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


@functools.lru_cache(maxsize=None)
def _buffer_format(type_):
    return memoryview(type_()).format


def _new_buffer(type_, length, name=None):
    code = _typecode_of(type_)
    return _native.SharedBuffer(
        _buffer_format(type_), ctypes.sizeof(type_), length, ord(code) if code else 0, name
    )


@functools.lru_cache(maxsize=None)
def _shared_type(type_, length):
    """A subclass of ``type_`` (or of ``type_ * length``) whose instances pickle as shared-memory handles."""
    base = type_ if length is None else type_ * length

    def __reduce__(self):
        return _rebuild_ctype, (type_, length, self._pyconc_buffer.segment_name)

    name = base.__name__ if length is None else f"{type_.__name__}_Array_{length}"
    return type(name, (base,), {"__reduce__": __reduce__, "__module__": __name__})


def _attach_ctype(type_, length, buf):
    obj = _shared_type(type_, length).from_buffer(buf)
    obj._pyconc_buffer = buf
    return obj


def _rebuild_ctype(type_, length, segment_name):
    buf = _new_buffer(type_, 1 if length is None else length, segment_name)
    return _attach_ctype(type_, length, buf)


def RawValue(typecode_or_type, *args):
    """A ctypes object in shared memory, initialised with ``args`` (zero-filled otherwise)."""
    type_ = _resolve_type(typecode_or_type)
    obj = _attach_ctype(type_, None, _new_buffer(type_, 1))
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer):
    """A ctypes array in shared memory: ``size`` zeroed items, or a copy of ``initializer``."""
    type_ = _resolve_type(typecode_or_type)
    if isinstance(size_or_initializer, int):
        if size_or_initializer < 0:
            raise ValueError("array size must be non-negative")
        return _attach_ctype(type_, size_or_initializer, _new_buffer(type_, size_or_initializer))
    init = list(size_or_initializer)
    obj = _attach_ctype(type_, len(init), _new_buffer(type_, len(init)))
    obj.__init__(*init)
    return obj
