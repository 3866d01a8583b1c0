//! `SharedBuffer`: a block of shared memory exported through the buffer protocol. The Python-level `Value`,
//! `Array`, `RawValue` and `RawArray` are built on it (ctypes `from_buffer`, numpy `frombuffer`, memoryview).

use super::errors::{closed, IntoPyResult};
use super::handle::Handle;
use super::lifetime::{Held, Open};
use crate::base::atomic::local::Ordering;
use crate::objects::block::SharedBlock;
use crate::segment::Kind;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{c_int, CString};

/// A fixed-size block of shared memory with a lock word, exported as a writable buffer.
///
/// `SharedBuffer(format, itemsize, length, typecode=0, name=None)` creates a zero-filled block of `length`
/// items (or attaches to the block called `name`, checking that it has that shape). The buffer has the given
/// struct `format`, one dimension of `length` items.
#[pyclass(module = "pyconc._native", name = "SharedBuffer", subclass, frozen)]
pub struct PySharedBuffer {
    /// Each buffer export (memoryview, numpy array, ctypes object) counts as a borrow (`Held::pin`): after
    /// `close()` the memory stays mapped until the last of them is released.
    block: Held<SharedBlock>,
    format: CString,
    shape: [ffi::Py_ssize_t; 1],
    strides: [ffi::Py_ssize_t; 1],
}

impl PySharedBuffer {
    /// The block (for other native classes that embed a lock in it).
    pub(crate) fn block(&self) -> PyResult<Open<'_, SharedBlock>> {
        self.block.open()
    }
}

#[pymethods]
impl PySharedBuffer {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    /// Creates a block, or with `view_of` (another `SharedBuffer`) makes a second view of the same block (no name
    /// lookup, nothing read from the segment), or with `_handle` attaches to the block a handle names.
    #[new]
    #[pyo3(signature = (format, itemsize, length, typecode=0, view_of=None, reserve=true, small=false, *, _handle=None))]
    #[allow(clippy::too_many_arguments)] // the Python signature
    fn new(
        py: Python<'_>,
        format: &str,
        itemsize: u32,
        length: u64,
        typecode: u32,
        view_of: Option<&Bound<'_, PySharedBuffer>>,
        reserve: bool,
        small: bool,
        _handle: Option<Handle>,
    ) -> PyResult<Self> {
        if itemsize == 0 {
            return Err(PyValueError::new_err("itemsize must be positive"));
        }
        let existing = match (view_of, _handle) {
            (Some(other), _) => Some(other.get().block.open()?.clone()),
            (None, Some(h)) => {
                h.expect(&["SharedBuffer"], &[Kind::Block, Kind::Arena])?;
                let b = py.detach(|| SharedBlock::open_handle(&h.segment, h.offset)).py(py)?;
                Some(b)
            }
            (None, None) => None,
        };
        let block = match existing {
            // `small`: a block whose items fit an arena cell goes there (Value, RawValue, small arrays).
            None if small => py.detach(|| SharedBlock::create_small(typecode, itemsize, length, reserve)).py(py)?,
            None => py.detach(|| SharedBlock::create_reserving(typecode, itemsize, length, reserve)).py(py)?,
            Some(b) => {
                if (b.itemsize(), b.length()) != (itemsize, length) {
                    return Err(PyValueError::new_err(format!(
                        "segment {} holds {} items of {} bytes, not {length} of {itemsize}",
                        b.segment().name_local(),
                        b.length(),
                        b.itemsize()
                    )));
                }
                b
            }
        };
        let length = ffi::Py_ssize_t::try_from(length).map_err(|_| PyValueError::new_err("too many items"))?;
        Ok(PySharedBuffer {
            block: Held::new("shared buffer", block),
            format: CString::new(format).map_err(|_| PyValueError::new_err("format contains NUL"))?,
            shape: [length],
            strides: [itemsize as ffi::Py_ssize_t],
        })
    }

    /// Size of the block in bytes.
    #[getter]
    fn nbytes(&self) -> PyResult<usize> {
        Ok(self.block.open()?.nbytes())
    }

    /// Size of one item.
    #[getter]
    fn itemsize(&self) -> PyResult<u32> {
        Ok(self.block.open()?.itemsize())
    }

    /// Number of items.
    #[getter]
    fn length(&self) -> PyResult<u64> {
        Ok(self.block.open()?.length())
    }

    /// The struct format of one item, as exported through the buffer protocol.
    #[getter]
    fn format(&self) -> String {
        self.format.to_string_lossy().into_owned()
    }

    /// Atomically adds `delta` to integer item `index` (wrapping at the item's width) and returns the previous
    /// value. Lock-free: it does not take the block's lock. Only for integer typecodes.
    fn _fetch_add(&self, index: u64, delta: i128) -> PyResult<i128> {
        let block = self.block.open()?;
        let code = char::from_u32(block.typecode()).unwrap_or('\0');
        let signed = match code {
            'b' | 'h' | 'i' | 'l' | 'q' => true,
            'B' | 'H' | 'I' | 'L' | 'Q' => false,
            _ => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "fetch_add needs an integer typecode (b, B, h, H, i, I, l, L, q, Q)",
                ))
            }
        };
        if index >= block.length() {
            return Err(pyo3::exceptions::PyIndexError::new_err("index out of range"));
        }
        let size = block.itemsize() as usize;
        // SAFETY: index < length, so the item lies inside the items range validated at attach; items are
        // 64-aligned and `size` is a power of two <= 8, so the pointer is aligned for the atomic of that width.
        let ptr = unsafe { block.items_ptr().add(index as usize * size) };
        // Two's complement truncation: a wrapping add at every width.
        let d = delta as u64;
        // SAFETY: in each arm `ptr` is valid and aligned for the atomic of that width (see above); other
        // processes only access these bytes through the same atomics or through the user's own locking.
        let old: i128 = unsafe {
            use crate::base::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8};
            match (size, signed) {
                (1, s) => {
                    let o = (*(ptr as *const AtomicU8)).fetch_add(d as u8, Ordering::SeqCst);
                    if s {
                        o as i8 as i128
                    } else {
                        o as i128
                    }
                }
                (2, s) => {
                    let o = (*(ptr as *const AtomicU16)).fetch_add(d as u16, Ordering::SeqCst);
                    if s {
                        o as i16 as i128
                    } else {
                        o as i128
                    }
                }
                (4, s) => {
                    let o = (*(ptr as *const AtomicU32)).fetch_add(d as u32, Ordering::SeqCst);
                    if s {
                        o as i32 as i128
                    } else {
                        o as i128
                    }
                }
                (8, s) => {
                    let o = (*(ptr as *const AtomicU64)).fetch_add(d, Ordering::SeqCst);
                    if s {
                        o as i64 as i128
                    } else {
                        o as i128
                    }
                }
                _ => return Err(PyValueError::new_err(format!("unsupported integer size {size}"))),
            }
        };
        Ok(old)
    }

    /// Atomically replaces unsigned 64-bit item `index` with `new` if it equals `expected`; returns the value it
    /// held (equal to `expected` exactly when the swap happened). Lock-free. Only for 8-byte unsigned items.
    fn _compare_exchange(&self, index: u64, expected: u64, new: u64) -> PyResult<u64> {
        let block = self.block.open()?;
        if block.itemsize() != 8 || char::from_u32(block.typecode()) != Some('Q') {
            return Err(pyo3::exceptions::PyTypeError::new_err("compare_exchange needs typecode 'Q'"));
        }
        if index >= block.length() {
            return Err(pyo3::exceptions::PyIndexError::new_err("index out of range"));
        }
        // SAFETY: index < length, so the 8-byte item lies inside the items range validated at attach, and items
        // are 64-aligned, so the pointer is aligned for an AtomicU64; other processes access these words only
        // through atomics or plain loads and stores of whole words.
        let cell = unsafe { &*(block.items_ptr().add(index as usize * 8) as *const crate::base::atomic::AtomicU64) };
        Ok(match cell.compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(v) | Err(v) => v,
        })
    }

    /// The typecode recorded at creation (0 for a ctypes type).
    #[getter]
    fn typecode(&self) -> PyResult<u32> {
        Ok(self.block.open()?.typecode())
    }

    /// Offset of the block's lock storage in the segment.
    #[getter]
    fn lock_offset(&self) -> PyResult<u64> {
        Ok(self.block.open()?.lock_offset())
    }

    /// What a pickle of the shared ctypes object over this buffer carries.
    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let b = self.block.open()?;
        Ok(Handle::new("SharedBuffer", b.segment(), b.handle_offset()))
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here (no new exports) and lets go of its shared memory once the views
    /// exported before (memoryviews, numpy arrays, ctypes objects) are released. Idempotent.
    fn close(&self) {
        self.block.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.block.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.block.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.block.segment_name()
    }

    /// Copies the block's bytes out.
    fn _tobytes(&self) -> PyResult<Vec<u8>> {
        let block = self.block.open()?;
        let mut v = vec![0u8; block.nbytes()];
        // SAFETY: items_ptr is valid for nbytes bytes while the block lives; v has nbytes bytes.
        unsafe { std::ptr::copy_nonoverlapping(block.items_ptr(), v.as_mut_ptr(), v.len()) };
        Ok(v)
    }

    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("NULL view in __getbuffer__"));
        }
        let me = slf.get();
        let block = me.block.open()?;
        // Counted until __releasebuffer__: the mapping outlives the view even if the object is closed meanwhile.
        if !me.block.pin() {
            return Err(closed("shared buffer"));
        }
        // SAFETY: CPython passes a valid, writable Py_buffer; every pointer we store (items, format, shape,
        // strides) stays valid while `obj` (a strong reference to this object, which owns the format and the
        // shape arrays) is held by the view, and the mapping while the pin above is (until __releasebuffer__).
        unsafe {
            (*view).obj = slf.clone().into_any().into_ptr();
            (*view).buf = block.items_ptr() as *mut std::ffi::c_void;
            (*view).len = block.nbytes() as ffi::Py_ssize_t;
            (*view).readonly = 0;
            (*view).itemsize = me.strides[0];
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                me.format.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).ndim = 1;
            (*view).shape =
                if flags & ffi::PyBUF_ND == ffi::PyBUF_ND { me.shape.as_ptr() as *mut _ } else { std::ptr::null_mut() };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                me.strides.as_ptr() as *mut _
            } else {
                std::ptr::null_mut()
            };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = std::ptr::null_mut();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        // SAFETY: CPython calls this once per successful __getbuffer__ (which pinned), with the GIL held; the
        // view's pointers are not used after it.
        unsafe { self.block.unpin() };
    }
}

/// block_shape(name) -> (typecode, itemsize, length, handle): what the block in segment `name` records, and a
/// handle to attach a `SharedBuffer` of that shape to it (for tools: `python -m pyconc ls` recognises pool
/// tables by their typecode). Raises like any attach (FileNotFoundError, ValueError for another kind).
#[pyfunction]
fn block_shape(py: Python<'_>, name: &str) -> PyResult<(u32, u32, u64, Handle)> {
    let b = py.detach(|| SharedBlock::open(name)).py(py)?;
    let seg = b.segment();
    Ok((b.typecode(), b.itemsize(), b.length(), Handle::local("SharedBuffer", seg, seg.info().data_offset)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySharedBuffer>()?;
    m.add_function(wrap_pyfunction!(block_shape, m)?)?;
    Ok(())
}

super::identity::identity_of!(PySharedBuffer, block, |s| s.segment(), s.handle_offset());
