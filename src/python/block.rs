//! `SharedBuffer`: a block of shared memory exported through the buffer protocol. The Python-level `Value`,
//! `Array`, `RawValue` and `RawArray` are built on it (ctypes `from_buffer`, numpy `frombuffer`, memoryview).

use super::errors::{closed, IntoPyResult};
use super::handle::Handle;
use crate::base::atomic::local::{AtomicBool, AtomicUsize, Ordering};
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
    block: SharedBlock,
    format: CString,
    shape: [ffi::Py_ssize_t; 1],
    strides: [ffi::Py_ssize_t; 1],
    exports: AtomicUsize,
    closed: AtomicBool,
}

impl PySharedBuffer {
    fn check_open(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(closed("shared buffer"));
        }
        Ok(())
    }

    /// The block (for other native classes that embed a lock in it).
    pub fn block(&self) -> &SharedBlock {
        &self.block
    }
}

#[pymethods]
impl PySharedBuffer {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> u64 {
        super::identity::hash(super::identity::Identity::key(self))
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
            (Some(other), _) => Some(other.get().block.clone()),
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
            block,
            format: CString::new(format).map_err(|_| PyValueError::new_err("format contains NUL"))?,
            shape: [length],
            strides: [itemsize as ffi::Py_ssize_t],
            exports: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Size of the block in bytes.
    #[getter]
    fn nbytes(&self) -> usize {
        self.block.nbytes()
    }

    /// Size of one item.
    #[getter]
    fn itemsize(&self) -> u32 {
        self.block.itemsize()
    }

    /// Number of items.
    #[getter]
    fn length(&self) -> u64 {
        self.block.length()
    }

    /// The struct format of one item, as exported through the buffer protocol.
    #[getter]
    fn format(&self) -> String {
        self.format.to_string_lossy().into_owned()
    }

    /// Atomically adds `delta` to integer item `index` (wrapping at the item's width) and returns the previous
    /// value. Lock-free: it does not take the block's lock. Only for integer typecodes.
    fn _fetch_add(&self, index: u64, delta: i128) -> PyResult<i128> {
        self.check_open()?;
        let code = char::from_u32(self.block.typecode()).unwrap_or('\0');
        let signed = match code {
            'b' | 'h' | 'i' | 'l' | 'q' => true,
            'B' | 'H' | 'I' | 'L' | 'Q' => false,
            _ => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "fetch_add needs an integer typecode (b, B, h, H, i, I, l, L, q, Q)",
                ))
            }
        };
        if index >= self.block.length() {
            return Err(pyo3::exceptions::PyIndexError::new_err("index out of range"));
        }
        let size = self.block.itemsize() as usize;
        // SAFETY: index < length, so the item lies inside the items range validated at attach; items are
        // 64-aligned and `size` is a power of two <= 8, so the pointer is aligned for the atomic of that width.
        let ptr = unsafe { self.block.items_ptr().add(index as usize * size) };
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

    /// The typecode recorded at creation (0 for a ctypes type).
    #[getter]
    fn typecode(&self) -> u32 {
        self.block.typecode()
    }

    /// The segment's name.
    #[getter]
    fn segment_name(&self) -> String {
        self.block.segment().name().to_string()
    }

    /// Offset of the block's lock storage in the segment.
    #[getter]
    fn lock_offset(&self) -> u64 {
        self.block.lock_offset()
    }

    /// What a pickle of the shared ctypes object over this buffer carries.
    #[getter]
    fn _handle(&self) -> Handle {
        Handle::new("SharedBuffer", self.block.segment(), self.block.handle_offset())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Stops exporting the memory from this object. Raises BufferError while views of it exist.
    fn close(&self) -> PyResult<()> {
        if self.exports.load(Ordering::Acquire) > 0 {
            return Err(PyBufferError::new_err("cannot close: memoryviews or arrays still use this buffer"));
        }
        if !self.closed.swap(true, Ordering::Relaxed) {
            // In an arena, this object's hold on the cell goes now (the process lets go with its last handle).
            self.block.close();
        }
        Ok(())
    }

    /// No new process can attach from now on (the segment's name is removed, or an arena cell marked
    /// unlinked); processes that hold it keep working.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.block.unlink().py(py)
    }

    /// Copies the block's bytes out.
    fn _tobytes(&self) -> PyResult<Vec<u8>> {
        self.check_open()?;
        let mut v = vec![0u8; self.block.nbytes()];
        // SAFETY: items_ptr is valid for nbytes bytes while the block lives; v has nbytes bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.block.items_ptr(), v.as_mut_ptr(), v.len()) };
        Ok(v)
    }

    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("NULL view in __getbuffer__"));
        }
        let me = slf.get();
        me.check_open()?;
        // SAFETY: CPython passes a valid, writable Py_buffer; every pointer we store (items, format, shape,
        // strides) stays valid while `obj` (a strong reference to this object, which owns the mapping, the
        // format and the shape arrays) is held by the view.
        unsafe {
            (*view).obj = slf.clone().into_any().into_ptr();
            (*view).buf = me.block.items_ptr() as *mut std::ffi::c_void;
            (*view).len = me.block.nbytes() as ffi::Py_ssize_t;
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
        me.exports.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::AcqRel);
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

super::identity::identity_of!(PySharedBuffer, |s| s.block.segment(), s.block.handle_offset());
