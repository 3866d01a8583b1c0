//! The value codec for Python objects: encoding into a `Vec<u8>`, decoding from a slice or straight from shared
//! memory, canonical key encoding and the stable hash. The byte format is the core's ([`crate::codec`],
//! `shm-layouts/codec.md`).
//!
//! Native code (the queue, the dict) calls [`encode_into`], [`encode_key_into`], [`decode_from`] and
//! [`decode_raw`] directly; Python sees `_native.encode`, `decode`, `encode_key` and `stable_hash`.
//!
//! Encoding dispatches on the exact type (a pointer comparison), so subclasses (IntEnum, namedtuple, str
//! subclasses) are pickled and come back with their type. Containers nested deeper than [`MAX_DEPTH`] are not
//! encoded natively: the whole value is pickled instead. This also catches self-referencing containers, which
//! recurse until they hit the limit; pickle then preserves their structure.

use crate::codec::{self, key, read, write, Builder, NdArray, Raw, Reader, SeqKind, MAX_DEPTH};
use crate::Error;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyUnicodeEncodeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::critical_section::with_critical_section;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyInt, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, Borrowed};
use std::ffi::c_int;
use std::ptr;

// ---------------------------------------------------------------------------------------------------------------
// Cached Python callables: looked up once per interpreter, never on the fast paths.

static PICKLE_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static PICKLE_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// `numpy.ndarray`, recorded the first time an object of that type is met (numpy is never imported by us
/// before that).
static NDARRAY_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static NUMPY: PyOnceLock<NumpyCache> = PyOnceLock::new();

struct NumpyCache {
    empty: Py<PyAny>,
    dtype: Py<PyAny>,
    uint8: Py<PyAny>,
    /// dtype object -> `(dtype.str, itemsize)` for dtypes stored natively, or `None` for the others.
    enc_dtypes: Py<PyDict>,
    /// `dtype.str` -> dtype object, for decoding.
    dec_dtypes: Py<PyDict>,
}

fn pickle_dumps(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    PICKLE_DUMPS.import(py, "pickle", "dumps")
}

fn pickle_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    PICKLE_LOADS.import(py, "pickle", "loads")
}

fn numpy(py: Python<'_>) -> PyResult<&NumpyCache> {
    NUMPY.get_or_try_init(py, || {
        let np = py.import("numpy")?;
        Ok(NumpyCache {
            empty: np.getattr("empty")?.unbind(),
            dtype: np.getattr("dtype")?.unbind(),
            uint8: np.getattr("uint8")?.unbind(),
            enc_dtypes: PyDict::new(py).unbind(),
            dec_dtypes: PyDict::new(py).unbind(),
        })
    })
}

/// Whether `tp` is `numpy.ndarray`, without importing numpy.
fn is_ndarray_type(tp: &Bound<'_, PyType>) -> bool {
    let py = tp.py();
    if let Some(known) = NDARRAY_TYPE.get(py) {
        return known.as_ptr() == tp.as_ptr();
    }
    let named = |attr: &str, want: &str| {
        tp.getattr(attr).ok().and_then(|v| v.extract::<String>().ok()).is_some_and(|v| v == want)
    };
    // The names could be borrowed by another class: confirm against numpy itself (already imported, since an
    // object of a type claiming to be numpy's exists).
    let confirmed = named("__module__", "numpy")
        && named("__qualname__", "ndarray")
        && py.import("numpy").and_then(|np| np.getattr("ndarray")).is_ok_and(|t| t.is(tp));
    if confirmed {
        let _ = NDARRAY_TYPE.set(py, tp.clone().unbind());
    }
    confirmed
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

enum Stop {
    /// Not encodable natively as a whole (too deep or self-referencing): pickle the top-level value.
    Fallback,
    Err(PyErr),
}

impl From<PyErr> for Stop {
    fn from(e: PyErr) -> Self {
        Stop::Err(e)
    }
}

type EncResult = Result<(), Stop>;

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    /// Canonical key mode: normalise, refuse non-keys with `TypeError`.
    key: bool,
    /// Key mode: set when normalisation changed something, so the canonical bytes do not decode to the
    /// key's own type.
    normalised: bool,
}

/// Appends the encoding of `obj` to `out`.
///
/// None, bool, int, float, str, bytes, bytearray, tuple, list, dict (of exactly these types) and
/// `numpy.ndarray` of plain dtypes are encoded natively; anything else, and any value nested deeper than
/// [`MAX_DEPTH`] containers or containing itself, is pickled (protocol 5). Errors are those of pickle
/// (`PicklingError`, `TypeError`, ...) or `RuntimeError` if a list or dict changes size while it is being
/// encoded (only possible from another thread, or from a `__reduce__` of one of its items). On error `out` is
/// left as it was.
pub fn encode_into(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let start = out.len();
    let mut enc = Encoder { out, key: false, normalised: false };
    match enc.value(obj, 0) {
        Ok(()) => Ok(()),
        Err(stop) => {
            enc.out.truncate(start);
            match stop {
                Stop::Fallback => pickle_into(obj, enc.out),
                Stop::Err(e) => Err(e),
            }
        }
    }
}

/// Appends the canonical key encoding of `obj` to `out` (see [`crate::codec::key`]): `True`, `1` and `1.0`
/// give identical bytes. Raises `TypeError` for anything that is not None, bool, int, float, str, bytes or a
/// tuple of those (exact types); `out` is then left as it was.
///
/// Returns whether the canonical bytes decode to a value of the key's own type (`false` for `True` or `1.0`,
/// which decode as `1`): when `true`, the dict need not store a separate "key as inserted" encoding.
pub fn encode_key_into(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<bool> {
    let start = out.len();
    let mut enc = Encoder { out, key: true, normalised: false };
    match enc.value(obj, 0) {
        Ok(()) => Ok(!enc.normalised),
        Err(stop) => {
            enc.out.truncate(start);
            Err(match stop {
                Stop::Fallback => PyTypeError::new_err(key::too_deep().to_string()),
                Stop::Err(e) => e,
            })
        }
    }
}

fn pickle_into(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    let py = obj.py();
    let data = pickle_dumps(py)?.call1((obj, 5))?;
    let data = data.cast_into::<PyBytes>()?;
    write::pickle(out, data.as_bytes());
    Ok(())
}

fn same_type(tp: *mut ffi::PyTypeObject, want: *mut ffi::PyTypeObject) -> bool {
    ptr::eq(tp, want)
}

impl Encoder<'_> {
    fn value(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> EncResult {
        let p = obj.as_ptr();
        // SAFETY: `p` is a live object (we hold a reference through `obj`); reading its type is always valid.
        let tp = unsafe { ffi::Py_TYPE(p) };
        if same_type(tp, &raw mut ffi::PyLong_Type) {
            self.int(obj)
        } else if same_type(tp, &raw mut ffi::PyUnicode_Type) {
            self.str(obj)
        } else if same_type(tp, &raw mut ffi::PyFloat_Type) {
            // SAFETY: `p` is exactly a float.
            let f = unsafe { ffi::PyFloat_AS_DOUBLE(p) };
            if self.key {
                self.normalised |= key::float(self.out, f);
            } else {
                write::float(self.out, f);
            }
            Ok(())
        } else if same_type(tp, &raw mut ffi::PyBytes_Type) {
            let b = obj.cast::<PyBytes>().map_err(PyErr::from)?;
            write::bytes(self.out, b.as_bytes());
            Ok(())
        } else if same_type(tp, &raw mut ffi::PyTuple_Type) {
            self.tuple(obj, depth)
        } else if obj.is_none() {
            write::none(self.out);
            Ok(())
        } else if same_type(tp, &raw mut ffi::PyBool_Type) {
            // SAFETY: Py_True only returns the address of the True singleton.
            let v = ptr::eq(p, unsafe { ffi::Py_True() });
            if self.key {
                write::int(self.out, i64::from(v));
                self.normalised = true;
            } else {
                write::boolean(self.out, v);
            }
            Ok(())
        } else if self.key {
            Err(PyTypeError::new_err(key::not_a_key(&type_name(obj)).to_string()).into())
        } else if same_type(tp, &raw mut ffi::PyList_Type) {
            self.list(obj, depth)
        } else if same_type(tp, &raw mut ffi::PyDict_Type) {
            self.dict(obj, depth)
        } else if same_type(tp, &raw mut ffi::PyByteArray_Type) {
            let out = &mut *self.out;
            // The bytearray's critical section (the GIL on a GIL build) keeps other threads from resizing it
            // while its bytes are copied.
            with_critical_section(obj, || {
                // SAFETY: `p` is exactly a bytearray; pointer and size are read and the bytes copied with no Python
                // code running in between, under its critical section, so the buffer is neither resized nor freed.
                unsafe {
                    let n = ffi::PyByteArray_Size(p) as usize;
                    let data = ffi::PyByteArray_AsString(p) as *const u8;
                    write::bytearray(out, bytes_at(data, n));
                }
            });
            Ok(())
        } else if is_ndarray_type(&obj.get_type()) && ndarray_into(obj, self.out)? {
            Ok(())
        } else {
            pickle_into(obj, self.out)?;
            Ok(())
        }
    }

    fn int(&mut self, obj: &Bound<'_, PyAny>) -> EncResult {
        let mut overflow: c_int = 0;
        // SAFETY: `obj` is exactly an int; the out-pointer is a live local.
        let v = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &mut overflow) };
        if overflow == 0 {
            if v == -1 {
                if let Some(e) = PyErr::take(obj.py()) {
                    return Err(e.into());
                }
            }
            write::int(self.out, v);
            return Ok(());
        }
        // Beyond i64: minimal two's complement through int.to_bytes (rare, so a Python call is fine).
        let py = obj.py();
        let negative = overflow < 0;
        let magnitude = if negative { obj.call_method0(intern!(py, "__invert__"))? } else { obj.clone() };
        let bits: usize = magnitude.call_method0(intern!(py, "bit_length"))?.extract()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "signed"), true)?;
        let le = obj.call_method(intern!(py, "to_bytes"), (bits / 8 + 1, intern!(py, "little")), Some(&kwargs))?;
        write::big_int(self.out, le.cast::<PyBytes>().map_err(PyErr::from)?.as_bytes());
        Ok(())
    }

    fn str(&mut self, obj: &Bound<'_, PyAny>) -> EncResult {
        let mut size: ffi::Py_ssize_t = 0;
        // SAFETY: `obj` is exactly a str; the out-pointer is a live local.
        let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(obj.as_ptr(), &mut size) };
        if !data.is_null() {
            // SAFETY: CPython returns a buffer of `size` bytes owned by (and cached in) the str object, which
            // `obj` keeps alive while we copy it.
            let s = unsafe { bytes_at(data as *const u8, size as usize) };
            // SAFETY: PyUnicode_AsUTF8AndSize returns valid UTF-8 (it failed above for anything else).
            write::str(self.out, unsafe { std::str::from_utf8_unchecked(s) });
            return Ok(());
        }
        let py = obj.py();
        let err = PyErr::fetch(py);
        if !err.is_instance_of::<PyUnicodeEncodeError>(py) {
            return Err(err.into());
        }
        // Lone surrogates: not valid UTF-8, kept with surrogatepass under their own tag.
        let b = obj.call_method1(intern!(py, "encode"), (intern!(py, "utf-8"), intern!(py, "surrogatepass")))?;
        write::str_surrogates(self.out, b.cast::<PyBytes>().map_err(PyErr::from)?.as_bytes());
        Ok(())
    }

    fn tuple(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> EncResult {
        if depth >= MAX_DEPTH {
            return Err(Stop::Fallback);
        }
        let t = obj.cast::<PyTuple>().map_err(PyErr::from)?;
        let n = t.len();
        write::tuple_header(self.out, n);
        for item in t.iter_borrowed() {
            self.value(&item, depth + 1)?;
        }
        Ok(())
    }

    fn list(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> EncResult {
        if depth >= MAX_DEPTH {
            return Err(Stop::Fallback);
        }
        let list = obj.cast::<PyList>().map_err(PyErr::from)?;
        let n = list.len();
        write::list_header(self.out, n);
        for i in 0..n {
            // Items are fetched one by one as strong references (`get_item` takes one atomically, also without
            // the GIL) and owned while encoded: pickling an item may run Python code that changes the list.
            let item = list.get_item(i).map_err(|_| changed_size("list"))?;
            self.value(&item, depth + 1)?;
        }
        if list.len() != n {
            return Err(changed_size("list").into());
        }
        Ok(())
    }

    fn dict(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> EncResult {
        if depth >= MAX_DEPTH {
            return Err(Stop::Fallback);
        }
        let py = obj.py();
        let dict = obj.cast::<PyDict>().map_err(PyErr::from)?;
        // Take strong references to every key and value first, inside the dict's critical section (a no-op
        // with the GIL; without it, no other thread changes the dict while we walk it), running no Python code
        // meanwhile; then encode, which may run Python code (pickling) that changes the dict.
        let pairs = with_critical_section(dict.as_any(), || {
            let n = dict.len();
            let mut pairs = Vec::with_capacity(n);
            let mut pos: ffi::Py_ssize_t = 0;
            loop {
                let mut k: *mut ffi::PyObject = ptr::null_mut();
                let mut v: *mut ffi::PyObject = ptr::null_mut();
                // SAFETY: `dict` is a live dict whose critical section we hold (or the GIL); `pos`, `k`, `v` are
                // live locals. PyDict_Next returns borrowed references valid until the dict changes, which nothing
                // can do before they are made strong on the next line.
                if unsafe { ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut k, &mut v) } == 0 {
                    break;
                }
                // SAFETY: borrowed references to a live key and value (see above), made owned at once.
                pairs.push(unsafe { (Borrowed::from_ptr(py, k).to_owned(), Borrowed::from_ptr(py, v).to_owned()) });
            }
            pairs
        });
        write::dict_header(self.out, pairs.len());
        for (k, v) in &pairs {
            self.value(k, depth + 1)?;
            self.value(v, depth + 1)?;
        }
        if dict.len() != pairs.len() {
            return Err(changed_size("dict").into());
        }
        Ok(())
    }
}

fn changed_size(what: &str) -> PyErr {
    PyRuntimeError::new_err(format!("{what} changed size while it was being encoded"))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    let tp = obj.get_type();
    match (tp.module(), tp.qualname()) {
        (Ok(m), Ok(q)) if m != "builtins" => format!("{m}.{q}"),
        (_, Ok(q)) => q.to_string(),
        _ => "?".to_owned(),
    }
}

/// A slice over memory owned by a Python object that outlives the (immediately consumed) slice.
///
/// # Safety
/// `data` must be valid for reading `n` bytes for the lifetime the caller gives the slice, and nothing may
/// write them meanwhile. Only used on private process memory (str/bytes/bytearray/ndarray buffers), never on
/// shared memory.
unsafe fn bytes_at<'a>(data: *const u8, n: usize) -> &'a [u8] {
    if n == 0 {
        return &[];
    }
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(data, n) }
}

/// Encodes an exact `numpy.ndarray` natively if its dtype allows; returns `false` (nothing written) when the
/// array should be pickled instead (object, structured or sub-array dtypes, or anything numpy refuses).
fn ndarray_into(arr: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<bool> {
    let np = numpy(arr.py())?;
    let start = out.len();
    match ndarray_native(arr, np, out) {
        Ok(done) => Ok(done),
        Err(_) => {
            // numpy could not give us plain bytes (an unusual dtype): pickle handles it.
            out.truncate(start);
            Ok(false)
        }
    }
}

fn ndarray_native(arr: &Bound<'_, PyAny>, np: &NumpyCache, out: &mut Vec<u8>) -> PyResult<bool> {
    let py = arr.py();
    let dtype = arr.getattr(intern!(py, "dtype"))?;
    let info = match np.enc_dtypes.bind(py).get_item(&dtype)? {
        Some(info) => info,
        None => {
            let info = dtype_info(&dtype)?;
            np.enc_dtypes.bind(py).set_item(&dtype, &info)?;
            info
        }
    };
    if info.is_none() {
        return Ok(false);
    }
    let (dstr, itemsize): (Bound<'_, PyString>, u64) = info.extract()?;
    let shape: Vec<u64> = arr.getattr(intern!(py, "shape"))?.extract()?;
    // The elements in C order, contiguous (`ravel` copies only if `arr` is not C-contiguous), as bytes.
    let flat = arr.call_method0(intern!(py, "ravel"))?.call_method1(intern!(py, "view"), (np.uint8.bind(py),))?;
    let buf = pyo3::buffer::PyBuffer::<u8>::get(&flat)?;
    let nbytes = itemsize * shape.iter().product::<u64>();
    if !buf.is_c_contiguous() || buf.len_bytes() as u64 != nbytes {
        return Ok(false);
    }
    write::ndarray_header(out, dstr.to_str()?, itemsize, &shape);
    // SAFETY: the buffer is C-contiguous and `len_bytes` long; `buf` holds a buffer export, which keeps the memory
    // alive and stops numpy from resizing the array (also from another thread), during the copy.
    out.extend_from_slice(unsafe { bytes_at(buf.buf_ptr() as *const u8, buf.len_bytes()) });
    Ok(true)
}

/// `(dtype.str, itemsize)` for a dtype the codec stores natively, `None` otherwise.
fn dtype_info<'py>(dtype: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = dtype.py();
    let plain = !dtype.getattr(intern!(py, "hasobject"))?.is_truthy()?
        && dtype.getattr(intern!(py, "names"))?.is_none()
        && dtype.getattr(intern!(py, "subdtype"))?.is_none();
    if plain {
        let s = dtype.getattr(intern!(py, "str"))?.cast_into::<PyString>()?;
        let itemsize: u64 = dtype.getattr(intern!(py, "itemsize"))?.extract()?;
        // Only dtypes that survive the trip through their string (the decoder rebuilds them from it).
        let back = numpy(py)?.dtype.bind(py).call1((&s,))?;
        if read::dtype_ok(s.to_str()?) && back.eq(dtype)? {
            return Ok(PyTuple::new(py, [s.into_any(), itemsize.into_pyobject(py)?.into_any()])?.into_any());
        }
    }
    Ok(py.None().into_bound(py))
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

/// A `PyErr` the decoder can convert core errors into.
struct DecodeError(PyErr);

impl From<Error> for DecodeError {
    fn from(e: Error) -> Self {
        DecodeError(PyValueError::new_err(e.to_string()))
    }
}

impl From<PyErr> for DecodeError {
    fn from(e: PyErr) -> Self {
        DecodeError(e)
    }
}

fn corrupt(msg: impl Into<String>) -> DecodeError {
    DecodeError(PyValueError::new_err(msg.into()))
}

/// Builds Python objects; payloads are copied by the CPython constructors straight from the input range.
struct PyBuilder<'py> {
    py: Python<'py>,
}

type Built<'py> = Result<Bound<'py, PyAny>, DecodeError>;

impl<'py> PyBuilder<'py> {
    fn owned(&self, p: *mut ffi::PyObject) -> Built<'py> {
        // SAFETY: `p` is the result of a CPython constructor: a new reference, or NULL with an exception set.
        Ok(unsafe { Bound::from_owned_ptr_or_err(self.py, p) }?)
    }
}

impl<'a, 'py> Builder<'a> for PyBuilder<'py> {
    type Value = Bound<'py, PyAny>;
    type Seq = Bound<'py, PyAny>;
    type Map = Bound<'py, PyDict>;
    type Error = DecodeError;

    fn none(&mut self) -> Built<'py> {
        Ok(self.py.None().into_bound(self.py))
    }

    fn boolean(&mut self, v: bool) -> Built<'py> {
        Ok(pyo3::types::PyBool::new(self.py, v).to_owned().into_any())
    }

    fn int(&mut self, v: i64) -> Built<'py> {
        // SAFETY: plain constructor call with the GIL held.
        self.owned(unsafe { ffi::PyLong_FromLongLong(v) })
    }

    fn big_int(&mut self, le: Raw<'a>) -> Built<'py> {
        let b = self.bytes(le)?;
        let kwargs = PyDict::new(self.py);
        kwargs.set_item(intern!(self.py, "signed"), true)?;
        Ok(self.py.get_type::<PyInt>().call_method(
            intern!(self.py, "from_bytes"),
            (b, intern!(self.py, "little")),
            Some(&kwargs),
        )?)
    }

    fn float(&mut self, v: f64) -> Built<'py> {
        // SAFETY: plain constructor call with the GIL held.
        self.owned(unsafe { ffi::PyFloat_FromDouble(v) })
    }

    fn str(&mut self, utf8: Raw<'a>) -> Built<'py> {
        // SAFETY: `utf8` is readable for its length; CPython validates and copies the bytes (a
        // UnicodeDecodeError, a ValueError, if they are not UTF-8).
        self.owned(unsafe { ffi::PyUnicode_DecodeUTF8(utf8.as_ptr().cast(), utf8.len() as isize, ptr::null()) })
    }

    fn str_surrogates(&mut self, data: Raw<'a>) -> Built<'py> {
        // SAFETY: as for `str`, with a NUL-terminated error-handler name.
        self.owned(unsafe {
            ffi::PyUnicode_DecodeUTF8(data.as_ptr().cast(), data.len() as isize, c"surrogatepass".as_ptr())
        })
    }

    fn bytes(&mut self, data: Raw<'a>) -> Built<'py> {
        // SAFETY: `data` is readable for its length; CPython copies it into the new object.
        self.owned(unsafe { ffi::PyBytes_FromStringAndSize(data.as_ptr().cast(), data.len() as isize) })
    }

    fn bytearray(&mut self, data: Raw<'a>) -> Built<'py> {
        // SAFETY: `data` is readable for its length; CPython copies it into the new object.
        self.owned(unsafe { ffi::PyByteArray_FromStringAndSize(data.as_ptr().cast(), data.len() as isize) })
    }

    fn ndarray(&mut self, arr: NdArray<'_>) -> Built<'py> {
        let py = self.py;
        let np = numpy(py)?;
        let dtype = match np.dec_dtypes.bind(py).get_item(arr.dtype)? {
            Some(d) => d,
            None => {
                let d = np.dtype.bind(py).call1((arr.dtype,)).map_err(|e| {
                    corrupt(format!("corrupt encoded value: numpy does not know dtype {:?}: {e}", arr.dtype))
                })?;
                np.dec_dtypes.bind(py).set_item(arr.dtype, &d)?;
                d
            }
        };
        let itemsize: u64 = dtype.getattr(intern!(py, "itemsize"))?.extract()?;
        if itemsize != arr.itemsize || dtype.getattr(intern!(py, "hasobject"))?.is_truthy()? {
            return Err(corrupt(format!(
                "corrupt encoded value: dtype {:?} has itemsize {itemsize}, the data says {}",
                arr.dtype, arr.itemsize
            )));
        }
        let shape = PyTuple::new(py, arr.shape)?;
        let out = np.empty.bind(py).call1((shape, &dtype))?;
        if !arr.data.is_empty() {
            let flat = out
                .call_method1(intern!(py, "reshape"), (-1,))?
                .call_method1(intern!(py, "view"), (np.uint8.bind(py),))?;
            let buf = pyo3::buffer::PyBuffer::<u8>::get(&flat)?;
            if buf.readonly() || !buf.is_c_contiguous() || buf.len_bytes() != arr.data.len() {
                return Err(corrupt("corrupt encoded value: ndarray data does not match its shape"));
            }
            // SAFETY: the new array's buffer is writable, C-contiguous and exactly `data.len()` bytes, freshly
            // allocated (so it does not overlap the input); `buf` keeps it alive.
            unsafe { arr.data.copy_to(buf.buf_ptr().cast()) };
        }
        Ok(out)
    }

    fn pickle(&mut self, data: Raw<'a>) -> Built<'py> {
        let py = self.py;
        let b = self.bytes(data)?;
        pickle_loads(py)?.call1((b,)).map_err(|e| {
            // A broken pickle is corrupt input; errors of a well-formed pickle (a class that does not exist in
            // this process, a failing __setstate__) reach the caller as they are.
            let broken = py
                .import(intern!(py, "pickle"))
                .and_then(|m| m.getattr(intern!(py, "UnpicklingError")))
                .is_ok_and(|t| e.matches(py, t).unwrap_or(false));
            if broken {
                let err = PyValueError::new_err(format!("corrupt encoded value: the pickled payload is broken: {e}"));
                err.set_cause(py, Some(e));
                DecodeError(err)
            } else {
                DecodeError(e)
            }
        })
    }

    fn seq_begin(&mut self, kind: SeqKind, len: usize) -> Built<'py> {
        // SAFETY: plain constructor calls; `len` is bounded by the input length. The items start as NULL,
        // which both types' deallocators accept if decoding fails before they are filled.
        self.owned(unsafe {
            match kind {
                SeqKind::Tuple => ffi::PyTuple_New(len as isize),
                SeqKind::List => ffi::PyList_New(len as isize),
            }
        })
    }

    fn seq_item(
        &mut self,
        seq: &mut Bound<'py, PyAny>,
        index: usize,
        item: Bound<'py, PyAny>,
    ) -> Result<(), DecodeError> {
        let s = seq.as_ptr();
        // SAFETY: `seq` is the tuple or list made by `seq_begin` with `len > index` NULL slots, not yet visible
        // to any other code; SET_ITEM steals the reference `into_ptr` gives up.
        unsafe {
            if same_type(ffi::Py_TYPE(s), &raw mut ffi::PyTuple_Type) {
                ffi::PyTuple_SET_ITEM(s, index as isize, item.into_ptr());
            } else {
                ffi::PyList_SET_ITEM(s, index as isize, item.into_ptr());
            }
        }
        Ok(())
    }

    fn seq_end(&mut self, seq: Bound<'py, PyAny>) -> Built<'py> {
        Ok(seq)
    }

    fn map_begin(&mut self, _len: usize) -> Result<Bound<'py, PyDict>, DecodeError> {
        Ok(PyDict::new(self.py))
    }

    fn map_item(
        &mut self,
        map: &mut Bound<'py, PyDict>,
        key: Bound<'py, PyAny>,
        value: Bound<'py, PyAny>,
    ) -> Result<(), DecodeError> {
        map.set_item(&key, value).map_err(|e| {
            if e.is_instance_of::<PyTypeError>(self.py) {
                corrupt(format!("corrupt encoded value: dict key of unhashable type '{}'", type_name(&key)))
            } else {
                DecodeError(e)
            }
        })
    }

    fn map_end(&mut self, map: Bound<'py, PyDict>) -> Built<'py> {
        Ok(map.into_any())
    }
}

#[allow(dead_code)] // for the queue's batch reads (issue 4)
/// Decodes one value at the reader's position and leaves the reader after it (to decode a batch of values
/// written back to back). Corrupt input raises `ValueError`; a pickle inside raises whatever `pickle.loads`
/// raises.
pub fn decode_from<'py>(py: Python<'py>, r: &mut Reader<'_>) -> PyResult<Bound<'py, PyAny>> {
    codec::decode(r, &mut PyBuilder { py }).map_err(|e| e.0)
}

/// Decodes exactly one value spanning `data`.
pub fn decode_bytes<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    codec::decode_exact(&mut Reader::new(data), &mut PyBuilder { py }).map_err(|e| e.0)
}

/// Decodes exactly one value spanning `len` bytes at `ptr`, typically a message in a shared segment, copying
/// each payload straight into the Python object it becomes (no intermediate buffer, no `&[u8]` over the
/// shared bytes).
///
/// # Safety
/// `ptr..ptr + len` must stay mapped and readable until this returns, which includes the time `pickle.loads`
/// runs arbitrary Python code (so the caller must keep its mapping alive even if that code drops the Python
/// handle it came from). Concurrent writes by other processes make the result garbage or a `ValueError`, but
/// never make the decoder read outside the range.
pub unsafe fn decode_raw<'py>(py: Python<'py>, ptr: *const u8, len: usize) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: forwarded to our caller.
    let mut r = unsafe { Reader::from_raw(ptr, len) };
    codec::decode_exact(&mut r, &mut PyBuilder { py }).map_err(|e| e.0)
}

// ---------------------------------------------------------------------------------------------------------------
// Python functions

thread_local! {
    /// A reusable output buffer for the Python-level functions, so a large value does not cost a fresh
    /// allocation (and its page faults) per call.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with the thread's scratch buffer, emptied. Re-entrant calls (from a `__reduce__` run by pickle)
/// find the cell empty and use a fresh buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    const KEEP_AT_MOST: usize = 4 << 20;
    let mut buf = SCRATCH.with(|c| c.take());
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= KEEP_AT_MOST {
        SCRATCH.with(|c| c.set(buf));
    }
    r
}

/// encode(obj) -> bytes: the pyconc encoding of `obj` (see `shm-layouts/codec.md`).
#[pyfunction]
fn encode<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    with_scratch(|out| {
        encode_into(obj, out)?;
        Ok(PyBytes::new(obj.py(), out))
    })
}

/// decode(data) -> object: the value encoded in `data` (bytes or any buffer). Raises ValueError if `data` is
/// not exactly one well-formed encoded value.
#[pyfunction]
fn decode<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = data.py();
    if let Ok(b) = data.cast::<PyBytes>() {
        return decode_bytes(py, b.as_bytes());
    }
    // Any other buffer (bytearray, memoryview, mmap, a shared array...) may be shared with other processes or
    // mutable: decode through the raw path, which copies each payload and never borrows the bytes.
    let buf = pyo3::buffer::PyBuffer::<u8>::get(data)?;
    if !buf.is_c_contiguous() {
        return Err(PyValueError::new_err("decode() needs a C-contiguous buffer"));
    }
    // SAFETY: `buf` holds a buffer export for the whole call, so the exporter keeps the memory mapped and
    // cannot resize it (bytearray and mmap refuse while exports exist), even while `pickle.loads` runs.
    unsafe { decode_raw(py, buf.buf_ptr() as *const u8, buf.len_bytes()) }
}

/// encode_key(obj) -> bytes: the canonical key encoding of `obj` (equal keys give equal bytes:
/// `encode_key(1) == encode_key(True) == encode_key(1.0)`). TypeError for values that cannot be shared-dict
/// keys.
#[pyfunction]
fn encode_key<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    with_scratch(|out| {
        encode_key_into(obj, out)?;
        Ok(PyBytes::new(obj.py(), out))
    })
}

/// stable_hash(key) -> int: a 64-bit hash of the canonical key encoding of `key`, the same in every process
/// (unlike `hash()`, which str and bytes randomise per process).
#[pyfunction]
fn stable_hash(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    with_scratch(|out| {
        encode_key_into(obj, out)?;
        Ok(codec::stable_hash(out))
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(encode_key, m)?)?;
    m.add_function(wrap_pyfunction!(stable_hash, m)?)?;
    m.add("CODEC_FORMAT_VERSION", codec::FORMAT_VERSION)?;
    m.add("CODEC_MAX_DEPTH", MAX_DEPTH)?;
    Ok(())
}
