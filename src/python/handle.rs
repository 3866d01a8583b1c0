//! The one pickled form of every shared object, and the one way back.
//!
//! A shared object pickles as `(_native._rebuild, (cls, handle, state))`. The handle is the tuple
//! `(type name, segment name, offset, segment kind, layout version)`: which native structure, where it lives,
//! and the layout it was written with. `_rebuild` finds the native class in `cls`'s MRO and calls its
//! `__new__(cls, _handle=handle)` (so Python subclasses are rebuilt without running their own `__new__` or
//! `__init__`, as pickle does), then restores `state` (the instance `__dict__` of a Python subclass).
//!
//! Every native constructor that takes `_handle` checks it with [`Handle::expect`]: a handle of another
//! structure is a `TypeError`, one of another layout version a `ValueError`, before any segment is opened. The
//! structure's own layer then validates what it finds at the offset.

use crate::segment::{Kind, Segment, LAYOUT_VERSION};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use pyo3::PyTypeInfo;

/// `(type name, segment name, offset, segment kind, layout version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// The native structure: `"Lock"`, `"Queue"`, `"ConcurrentDict"`, ...
    pub type_name: String,
    /// The segment's name.
    pub segment: String,
    /// Offset of the structure in the segment.
    pub offset: u64,
    /// `Kind` of the segment, as a number.
    pub kind: u32,
    /// `LAYOUT_VERSION` of the build that made the handle.
    pub version: u32,
}

impl Handle {
    /// The handle of `type_name` at `offset` of `seg`, to send to another process (marks the segment shared).
    pub fn new(type_name: &str, seg: &Segment, offset: u64) -> Self {
        Self::with_name(type_name, seg.name(), seg, offset)
    }

    /// The same for a handle that stays in this process (does not mark the segment shared).
    pub fn local(type_name: &str, seg: &Segment, offset: u64) -> Self {
        Self::with_name(type_name, seg.name_local(), seg, offset)
    }

    fn with_name(type_name: &str, name: &str, seg: &Segment, offset: u64) -> Self {
        Handle {
            type_name: type_name.into(),
            segment: name.into(),
            offset,
            kind: seg.info().kind as u32,
            version: LAYOUT_VERSION,
        }
    }

    /// Checks that this handle names one of `type_names` in a segment of one of `kinds`, written with this
    /// build's layout version.
    pub fn expect(&self, type_names: &[&str], kinds: &[Kind]) -> PyResult<()> {
        if !type_names.contains(&self.type_name.as_str()) {
            return Err(PyTypeError::new_err(format!(
                "a handle of a {} cannot be opened as a {}",
                self.type_name,
                type_names.join(" or ")
            )));
        }
        if !kinds.iter().any(|k| *k as u32 == self.kind) {
            return Err(PyValueError::new_err(format!(
                "handle of a {} names a segment of kind {}, not {}",
                self.type_name,
                self.kind,
                kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(" or ")
            )));
        }
        if self.version != LAYOUT_VERSION {
            return Err(PyValueError::new_err(format!(
                "handle of a {} has layout version {}, this build reads {LAYOUT_VERSION}; open it with the \
                 pyconc version that created it",
                self.type_name, self.version
            )));
        }
        Ok(())
    }
}

impl Handle {
    /// For a structure that fills its segment (queue, dict, block): checks that the handle points at its start.
    pub fn expect_whole(&self, seg: &Segment) -> PyResult<()> {
        if self.offset != seg.info().data_offset {
            return Err(PyValueError::new_err(format!(
                "handle of a {} at offset {:#x}: it lives at the start of {}",
                self.type_name,
                self.offset,
                seg.name_local()
            )));
        }
        Ok(())
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Handle {
    type Error = PyErr;

    fn extract(ob: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let t: (String, String, u64, u32, u32) = ob.extract().map_err(|_| {
            PyTypeError::new_err("not a pyconc handle: expected (type, segment, offset, kind, version)")
        })?;
        Ok(Handle { type_name: t.0, segment: t.1, offset: t.2, kind: t.3, version: t.4 })
    }
}

impl<'py> IntoPyObject<'py> for Handle {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (self.type_name, self.segment, self.offset, self.kind, self.version).into_pyobject(py)
    }
}

/// `{"_handle": handle}`, the keyword that makes a native constructor attach instead of create.
pub fn handle_kwargs(py: Python<'_>, handle: Handle) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("_handle", handle)?;
    Ok(d)
}

/// `__reduce__` of a shared object: `(_rebuild, (type(obj), handle, state))`, where `state` is the instance
/// `__dict__` of a Python subclass (or None).
pub fn reduce<'py>(obj: &Bound<'py, PyAny>, handle: Handle) -> PyResult<Bound<'py, PyTuple>> {
    reduce_with(obj, handle, PyDict::new(obj.py()))
}

/// [`reduce`] for a class whose process-local settings (a Barrier's `action` and `timeout`) travel as keywords
/// of its native constructor, passed beside `_handle`.
pub fn reduce_with<'py>(
    obj: &Bound<'py, PyAny>,
    handle: Handle,
    kwargs: Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyTuple>> {
    let py = obj.py();
    let state = match obj.getattr(pyo3::intern!(py, "__dict__")) {
        Ok(d) if d.cast::<PyDict>().is_ok_and(|d| !d.is_empty()) => d.cast_into::<PyDict>()?.copy()?.into_any(),
        _ => py.None().into_bound(py),
    };
    let rebuild = py.import(pyo3::intern!(py, "pyconc._native"))?.getattr(pyo3::intern!(py, "_rebuild"))?;
    if kwargs.is_empty() {
        (rebuild, (obj.get_type(), handle, state)).into_pyobject(py)
    } else {
        (rebuild, (obj.get_type(), handle, state, kwargs)).into_pyobject(py)
    }
}

/// The native classes that `_rebuild` can rebuild (each module's `register` adds its own).
static NATIVE_CLASSES: PyOnceLock<Py<PyList>> = PyOnceLock::new();

/// Makes the native class `T` rebuildable by `_rebuild`.
pub fn shared_class<T: PyTypeInfo>(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    NATIVE_CLASSES.get_or_init(py, || PyList::empty(py).unbind()).bind(py).append(py.get_type::<T>())
}

/// Rebuilds a shared object of class `cls` from its handle (see the module documentation).
#[pyfunction]
#[pyo3(signature = (cls, handle, state=None, kwargs=None))]
pub fn _rebuild<'py>(
    cls: &Bound<'py, PyType>,
    handle: Handle,
    state: Option<&Bound<'py, PyAny>>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let natives = NATIVE_CLASSES.get_or_init(py, || PyList::empty(py).unbind()).bind(py);
    let mut native = None;
    for t in cls.getattr(pyo3::intern!(py, "__mro__"))?.try_iter()? {
        let t = t?;
        if natives.contains(&t)? {
            native = Some(t);
            break;
        }
    }
    let Some(native) = native else {
        return Err(PyTypeError::new_err(format!("{} is not a pyconc shared class", cls.name()?)));
    };
    let kw = handle_kwargs(py, handle)?;
    if let Some(extra) = kwargs {
        kw.update(extra.as_mapping())?;
    }
    let obj = native.call_method(pyo3::intern!(py, "__new__"), (cls,), Some(&kw))?;
    if let Some(state) = state.filter(|s| !s.is_none()) {
        obj.getattr(pyo3::intern!(py, "__dict__"))?.call_method1(pyo3::intern!(py, "update"), (state,))?;
    }
    Ok(obj)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_rebuild, m)?)?;
    Ok(())
}
