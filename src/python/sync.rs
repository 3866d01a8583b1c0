//! `Lock`, `RLock`, `Semaphore`, `Event`, `CondQueue`, `Barrier`, `RWLock`: thin wrappers over `crate::sync`.
//!
//! The classes are subclassable; `pyconc.synchronize` derives the public classes from them (adding reprs,
//! asyncio forms, `BoundedSemaphore` and `Condition`). Each pickles as a handle through the one rebuild path of
//! `super::handle`.
//!
//! Blocking calls release the GIL and wake at least once per 20 ms slice (and on EINTR) to run Python's signal
//! handlers, so Ctrl-C raises `KeyboardInterrupt` promptly; then they resume with the same deadline.

use super::blocking::{block_on, block_until};
use super::errors::IntoPyResult;
use super::handle::{handle_kwargs, reduce, reduce_with, shared_class, Handle};
use super::lifetime::Held;
use super::timeouts::{self, Negative};
use crate::base::atomic::local::{AtomicU64, Ordering};
use crate::platform::futex::Deadline;
use crate::segment::{Kind, Segment, ShmSafe};
use crate::sync::barrier::{Arrival, BarrierCall, BarrierError};
use crate::sync::lock::{Acquired, LockState, RLockState};
use crate::sync::owner;
use crate::sync::rwlock::{RwError, RwState};
use crate::sync::semaphore::{EventState, SemState, SEM_VALUE_MAX};
use crate::sync::shared::{BarrierHandle, CondHandle, PrepareError, SyncHandle, SyncType};
use crate::sync::wait::WaitError;
use pyo3::exceptions::{PyRuntimeError, PyRuntimeWarning, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyClass;
use std::ffi::CString;

pyo3::create_exception!(
    pyconc._native,
    OwnerDiedWarning,
    PyRuntimeWarning,
    "Issued by an acquire that took over a lock whose owner process died holding it. The acquire succeeded and the \
     caller holds the lock, but the data it protects may be half-updated. Turn it into an exception with \
     warnings.simplefilter('error', OwnerDiedWarning): the exception is then raised with the lock held."
);

const TOO_MANY: &str = "semaphore or lock released too many times";
const NOT_OWNED: &str = "cannot release un-acquired lock";

/// The handle of the primitive `ty` at `offset` of `seg`.
fn handle_of(ty: SyncType, seg: &Segment, offset: u64) -> Handle {
    Handle::new(ty.name(), seg, offset)
}

/// Attaches to the primitive a handle names: its own segment, or a lock embedded in a block.
fn open<T: ShmSafe>(py: Python<'_>, h: &Handle, ty: SyncType) -> PyResult<SyncHandle<T>> {
    let kinds: &[Kind] = match ty {
        SyncType::Lock | SyncType::RLock => &[Kind::Arena, Kind::Sync, Kind::Block],
        SyncType::Semaphore | SyncType::Event => &[Kind::Arena, Kind::Sync],
        _ => &[Kind::Sync],
    };
    h.expect(&[ty.name()], kinds)?;
    py.detach(|| crate::objects::block::attach_sync::<T>(Segment::open(&h.segment)?, h.offset, ty)).py(py)
}

/// Turns `timeout` into a deadline as multiprocessing reads it (see `super::timeouts`): `None` waits forever, a
/// negative timeout means 0.
fn deadline(timeout: Option<f64>) -> PyResult<Deadline> {
    Ok(Deadline::after(timeouts::timeout(timeout, Negative::Zero)?))
}

/// The deadline of `acquire(block, timeout, *, blocking)`: as [`deadline`], except that a caller using
/// threading's `blocking=` keyword gets threading's reading of `timeout=-1` (forever).
fn acquire_deadline(timeout: Option<f64>, blocking: Option<bool>) -> PyResult<Deadline> {
    let negative = if blocking.is_some() { Negative::MinusOneForever } else { Negative::Zero };
    Ok(Deadline::after(timeouts::timeout(timeout, negative)?))
}

/// Reports a takeover from a dead owner as an `OwnerDiedWarning` (the lock is held either way).
pub(super) fn report(py: Python<'_>, a: Acquired, what: &str) -> PyResult<()> {
    if a == Acquired::OwnerDied {
        let msg = CString::new(format!(
            "the process that held this {what} died holding it; the lock is now held by this thread, and the \
             data it protects may be inconsistent"
        ))
        .unwrap_or_default();
        let cat = py.get_type::<OwnerDiedWarning>();
        PyErr::warn(py, cat.as_any(), &msg, 2)?;
    }
    Ok(())
}

fn block_arg(block: bool, blocking: Option<bool>) -> bool {
    blocking.unwrap_or(block)
}

/// `BrokenBarrierError`, or `TimeoutError` naming a process that keeps the barrier's internals locked.
pub(super) fn barrier_err(py: Python<'_>, e: BarrierError) -> PyErr {
    match e {
        BarrierError::Stuck(m) => pyo3::exceptions::PyTimeoutError::new_err(m),
        BarrierError::Interrupted => match py.check_signals() {
            Err(err) => err,
            Ok(()) => pyo3::exceptions::PyInterruptedError::new_err("interrupted by a signal"),
        },
        BarrierError::Broken => broken_barrier(py),
    }
}

pub(super) fn broken_barrier(py: Python<'_>) -> PyErr {
    let ty = py.import("threading").and_then(|m| m.getattr("BrokenBarrierError"));
    match ty.map(|t| t.cast_into::<PyType>()) {
        Ok(Ok(t)) => PyErr::from_type(t, ()),
        Ok(Err(e)) => e.into(),
        Err(e) => e,
    }
}

/// A helper that `pyconc.synchronize` registered (the asyncio forms and reprs are written in Python).
use super::helper;

/// `repr()` through `pyconc.synchronize._repr`.
fn py_repr(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    helper(obj.py(), "_repr")?.call1((obj,))?.extract()
}

// ---- Lock -------------------------------------------------------------------------------------------------

/// A non-recursive lock shared by threads and processes (`multiprocessing.Lock` semantics: any thread or
/// process may release it). Robust: if its holder's process dies, the next acquirer takes it over and gets an
/// `OwnerDiedWarning`.
#[pyclass(module = "pyconc", name = "Lock", subclass, frozen)]
pub struct PyLock {
    pub(super) h: Held<SyncHandle<LockState>>,
}

#[pymethods]
impl PyLock {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (*, _handle=None))]
    fn new(py: Python<'_>, _handle: Option<Handle>) -> PyResult<Self> {
        let h = match _handle {
            Some(h) => open(py, &h, SyncType::Lock)?,
            None => SyncHandle::create(SyncType::Lock, 0, 0).py(py)?,
        };
        Ok(PyLock { h: Held::new("Lock", h) })
    }

    /// Attaches to lock state stored at `offset` of an existing segment (kind block or sync; 64 bytes reserved
    /// there, zero = unlocked), named by `source` or holding the `SharedBuffer` `source`. Pickles as that handle.
    #[classmethod]
    fn _embedded<'py>(
        cls: &Bound<'py, PyType>,
        source: &Bound<'py, PyAny>,
        offset: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        embedded(cls, SyncType::Lock, source, offset, |h| Bound::new(cls.py(), PyLock { h: Held::new("Lock", h) }))
    }

    /// Acquires the lock; returns whether it did (False only for `block=False` or a timeout).
    #[pyo3(signature = (block=true, timeout=None, *, blocking=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>, blocking: Option<bool>) -> PyResult<bool> {
        let me = owner::me();
        let h = self.h.open()?;
        let st = h.get();
        if st.try_lock_as(me).is_some() {
            return Ok(true);
        }
        if !block_arg(block, blocking) {
            return Ok(false);
        }
        let d = acquire_deadline(timeout, blocking)?;
        match block_until(py, || st.lock_as(owner::me(), &d))? {
            Some(a) => {
                report(py, a, "Lock")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases the lock (from any thread or process). ValueError if it is not locked.
    fn release(&self) -> PyResult<()> {
        if self.h.open()?.get().release() {
            Ok(())
        } else {
            Err(PyValueError::new_err(TOO_MANY))
        }
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None, None)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release()
    }

    /// Whether the lock is held (by anyone).
    fn locked(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().word.load(Ordering::Relaxed) != 0)
    }

    /// True while the current holding was taken over from a process that died holding the lock.
    #[getter]
    fn owner_died(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().owner_died())
    }

    /// How many times a dead owner's holding was taken over.
    #[getter]
    fn _takeovers(&self) -> PyResult<u64> {
        Ok(self.h.open()?.get().takeovers())
    }

    /// Whether the calling thread holds the lock.
    fn _is_owned(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().is_mine(owner::me()))
    }

    /// (pid, tid) of the holder, or None.
    fn _owner(&self) -> PyResult<Option<(u32, u32)>> {
        Ok(self.h.open()?.get().owner().map(|o| (o.pid, o.tid)))
    }

    /// Awaitable `acquire`: never blocks the event loop; a cancelled call leaves nothing acquired.
    #[pyo3(signature = (timeout=None))]
    fn acquire_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_acquire_async_of")?.call1((slf, timeout))
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_aenter")?.call1((slf,))
    }

    #[pyo3(signature = (*_args))]
    fn __aexit__<'py>(slf: &Bound<'py, Self>, _args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_aexit")?.call1((slf,))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        py_repr(slf.as_any())
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory once calls running in other threads
    /// return (idempotent).
    fn close(&self) {
        self.h.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.h.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.h.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.h.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let h = self.h.open()?;
        Ok(handle_of(SyncType::Lock, h.segment(), h.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let h = slf.get()._handle()?;
        reduce(slf.as_any(), h)
    }
}

/// `_embedded` of `Lock` and `RLock`: the lock state at `offset` of an existing segment, named by `source` or
/// holding the `SharedBuffer` `source`, validated now (kind, bounds, alignment) so a bad offset fails here. The
/// native class `T` is built directly around it (`wrap`); a Python subclass goes through its constructor's
/// `_handle`, which reopens the segment through this process's registry.
fn embedded<'py, T: PyClass, S: ShmSafe>(
    cls: &Bound<'py, PyType>,
    ty: SyncType,
    source: &Bound<'py, PyAny>,
    offset: u64,
    wrap: impl FnOnce(SyncHandle<S>) -> PyResult<Bound<'py, T>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let h = match source.cast::<super::block::PySharedBuffer>() {
        Ok(buf) => buf.get().block()?.lock::<S>(offset, ty).py(py)?,
        Err(_) => {
            let name: String = source.extract()?;
            py.detach(|| crate::objects::block::attach_sync::<S>(Segment::open(&name)?, offset, ty)).py(py)?
        }
    };
    if cls.is(py.get_type::<T>()) {
        return Ok(wrap(h)?.into_any());
    }
    // The local name: the handle stays in this process, so it must not mark a never-shared segment shared.
    let seg = h.segment();
    let handle = Handle::local(ty.name(), seg, offset);
    cls.call((), Some(&handle_kwargs(py, handle)?))
}

// ---- RLock ------------------------------------------------------------------------------------------------

/// A recursive lock owned by one thread of one process at a time; re-entered by its owner. Robust like `Lock`.
#[pyclass(module = "pyconc", name = "RLock", subclass, frozen)]
pub struct PyRLock {
    pub(super) h: Held<SyncHandle<RLockState>>,
}

#[pymethods]
impl PyRLock {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (*, _handle=None))]
    fn new(py: Python<'_>, _handle: Option<Handle>) -> PyResult<Self> {
        let h = match _handle {
            Some(h) => open(py, &h, SyncType::RLock)?,
            None => SyncHandle::create(SyncType::RLock, 0, 0).py(py)?,
        };
        Ok(PyRLock { h: Held::new("RLock", h) })
    }

    /// Attaches to RLock state stored at `offset` of an existing segment (kind block or sync), named by `source`
    /// or holding the `SharedBuffer` `source`.
    #[classmethod]
    fn _embedded<'py>(
        cls: &Bound<'py, PyType>,
        source: &Bound<'py, PyAny>,
        offset: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        embedded(cls, SyncType::RLock, source, offset, |h| Bound::new(cls.py(), PyRLock { h: Held::new("RLock", h) }))
    }

    /// Acquires (or re-enters) the lock; returns whether it did.
    #[pyo3(signature = (block=true, timeout=None, *, blocking=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>, blocking: Option<bool>) -> PyResult<bool> {
        let h = self.h.open()?;
        let st = h.get();
        let me = owner::me();
        if st.0.is_mine(me) {
            st.0.count.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        if st.0.try_lock_as(me).is_some() {
            st.0.count.store(1, Ordering::Relaxed);
            return Ok(true);
        }
        if !block_arg(block, blocking) {
            return Ok(false);
        }
        let d = acquire_deadline(timeout, blocking)?;
        match block_until(py, || st.acquire(&d))? {
            Some(a) => {
                report(py, a, "RLock")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Releases one level. RuntimeError if the calling thread does not hold it.
    fn release(&self) -> PyResult<()> {
        self.h.open()?.get().release().map(|_| ()).map_err(|_| PyRuntimeError::new_err(NOT_OWNED))
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None, None)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release()
    }

    /// Whether the lock is held (by anyone).
    fn locked(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().0.word.load(Ordering::Relaxed) != 0)
    }

    /// True while the current holding was taken over from a process that died holding the lock.
    #[getter]
    fn owner_died(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().0.owner_died())
    }

    #[getter]
    fn _takeovers(&self) -> PyResult<u64> {
        Ok(self.h.open()?.get().0.takeovers())
    }

    fn _is_owned(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().is_mine())
    }

    fn _owner(&self) -> PyResult<Option<(u32, u32)>> {
        Ok(self.h.open()?.get().0.owner().map(|o| (o.pid, o.tid)))
    }

    fn _count(&self) -> PyResult<u32> {
        Ok(self.h.open()?.get().count())
    }

    /// Releases every level (Condition.wait); returns the depth for `_acquire_restore`.
    fn _release_save(&self) -> PyResult<u32> {
        self.h.open()?.get().release_save().map_err(|_| PyRuntimeError::new_err("cannot wait on un-acquired lock"))
    }

    /// Re-acquires and restores the depth saved by `_release_save`.
    fn _acquire_restore(&self, py: Python<'_>, count: u32) -> PyResult<()> {
        let h = self.h.open()?;
        let st = h.get();
        let d = Deadline::after(None);
        if let Some(a) = block_until(py, || st.acquire_restore(count, &d))? {
            report(py, a, "RLock")?;
        }
        Ok(())
    }

    /// Takes the lock without waiting and sets its depth (asyncio `_acquire_restore`); returns success.
    fn _try_acquire_restore(&self, py: Python<'_>, count: u32) -> PyResult<bool> {
        let h = self.h.open()?;
        let st = h.get();
        let me = owner::me();
        let got = match st.0.try_lock_as(me) {
            Some(a) => Some(a),
            None => st.0.lock_as(me, &Deadline::passed()).ok(),
        };
        match got {
            Some(a) => {
                st.0.count.store(count.max(1), Ordering::Relaxed);
                report(py, a, "RLock")?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Awaitable `acquire`: never blocks the event loop; a cancelled call leaves nothing acquired.
    #[pyo3(signature = (timeout=None))]
    fn acquire_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_acquire_async_of")?.call1((slf, timeout))
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_aenter")?.call1((slf,))
    }

    #[pyo3(signature = (*_args))]
    fn __aexit__<'py>(slf: &Bound<'py, Self>, _args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_aexit")?.call1((slf,))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        py_repr(slf.as_any())
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory once calls running in other threads
    /// return (idempotent).
    fn close(&self) {
        self.h.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.h.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.h.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.h.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let h = self.h.open()?;
        Ok(handle_of(SyncType::RLock, h.segment(), h.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let h = slf.get()._handle()?;
        reduce(slf.as_any(), h)
    }
}

// ---- Semaphore --------------------------------------------------------------------------------------------

/// A counting semaphore shared by threads and processes (bounded when `_maxvalue` is given).
#[pyclass(module = "pyconc", name = "Semaphore", subclass, frozen)]
pub struct PySemaphore {
    pub(super) h: Held<SyncHandle<SemState>>,
}

#[pymethods]
impl PySemaphore {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (value=1, *, _maxvalue=None, _handle=None))]
    fn new(py: Python<'_>, value: i64, _maxvalue: Option<i64>, _handle: Option<Handle>) -> PyResult<Self> {
        if let Some(h) = _handle {
            return Ok(PySemaphore { h: Held::new("Semaphore", open(py, &h, SyncType::Semaphore)?) });
        }
        if value < 0 {
            return Err(PyValueError::new_err("semaphore initial value must be >= 0"));
        }
        if value > SEM_VALUE_MAX as i64 || _maxvalue.is_some_and(|m| m > SEM_VALUE_MAX as i64) {
            return Err(PyValueError::new_err(format!("semaphore value must be <= {SEM_VALUE_MAX}")));
        }
        let max = match _maxvalue {
            Some(m) if m < value || m < 1 => {
                return Err(PyValueError::new_err("a bounded semaphore's maximum must be >= its value and >= 1"))
            }
            Some(m) => Some(m as u32),
            None => None,
        };
        let h = SyncHandle::<SemState>::create(SyncType::Semaphore, 0, 0).py(py)?;
        h.get().init(value as u32, max);
        Ok(PySemaphore { h: Held::new("Semaphore", h) })
    }

    /// Decrements the value, waiting while it is 0; returns whether it did.
    #[pyo3(signature = (block=true, timeout=None, *, blocking=None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>, blocking: Option<bool>) -> PyResult<bool> {
        let h = self.h.open()?;
        let st = h.get();
        if st.try_acquire() {
            return Ok(true);
        }
        if !block_arg(block, blocking) {
            return Ok(false);
        }
        let d = acquire_deadline(timeout, blocking)?;
        Ok(block_until(py, || st.acquire(&d))?.is_some())
    }

    /// Increments the value by `n`, waking waiters. ValueError past a bounded semaphore's maximum.
    #[pyo3(signature = (n=1))]
    fn release(&self, n: u32) -> PyResult<()> {
        if n == 0 {
            return Err(PyValueError::new_err("n must be one or more"));
        }
        self.h.open()?.get().release(n).map_err(|_| PyValueError::new_err(TOO_MANY))
    }

    fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
        self.acquire(py, true, None, None)
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.release(1)
    }

    /// The current value.
    fn get_value(&self) -> PyResult<u32> {
        Ok(self.h.open()?.get().value())
    }

    /// The maximum of a bounded semaphore, else None.
    #[getter]
    fn _maxvalue(&self) -> PyResult<Option<u32>> {
        Ok(self.h.open()?.get().maxvalue())
    }

    /// Awaitable `acquire`: never blocks the event loop; a cancelled call leaves nothing acquired.
    #[pyo3(signature = (timeout=None))]
    fn acquire_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_acquire_async_of")?.call1((slf, timeout))
    }

    fn __aenter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_aenter")?.call1((slf,))
    }

    #[pyo3(signature = (*_args))]
    fn __aexit__<'py>(slf: &Bound<'py, Self>, _args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_aexit")?.call1((slf,))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        py_repr(slf.as_any())
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory once calls running in other threads
    /// return (idempotent).
    fn close(&self) {
        self.h.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.h.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.h.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.h.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let h = self.h.open()?;
        Ok(handle_of(SyncType::Semaphore, h.segment(), h.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let h = slf.get()._handle()?;
        reduce(slf.as_any(), h)
    }
}

// ---- Event ------------------------------------------------------------------------------------------------

/// A flag that threads and processes can wait for.
#[pyclass(module = "pyconc", name = "Event", subclass, frozen)]
pub struct PyEvent {
    pub(super) h: Held<SyncHandle<EventState>>,
}

#[pymethods]
impl PyEvent {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (*, _handle=None))]
    fn new(py: Python<'_>, _handle: Option<Handle>) -> PyResult<Self> {
        let h = match _handle {
            Some(h) => open(py, &h, SyncType::Event)?,
            None => SyncHandle::create(SyncType::Event, 0, 0).py(py)?,
        };
        Ok(PyEvent { h: Held::new("Event", h) })
    }

    /// Sets the flag, waking every waiter.
    fn set(&self) -> PyResult<()> {
        self.h.open()?.get().set();
        Ok(())
    }

    /// Clears the flag.
    fn clear(&self) -> PyResult<()> {
        self.h.open()?.get().clear();
        Ok(())
    }

    /// Whether the flag is set.
    fn is_set(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().is_set())
    }

    /// Awaitable `wait`: never blocks the event loop.
    #[pyo3(signature = (timeout=None))]
    fn wait_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_event_wait_async")?.call1((slf, timeout))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        py_repr(slf.as_any())
    }

    /// Waits until the flag is set or `timeout` passes; returns the flag.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let h = self.h.open()?;
        let st = h.get();
        if st.is_set() {
            return Ok(true);
        }
        let d = deadline(timeout)?;
        Ok(block_until(py, || st.wait(&d))?.unwrap_or(false))
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory once calls running in other threads
    /// return (idempotent).
    fn close(&self) {
        self.h.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.h.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.h.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.h.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let h = self.h.open()?;
        Ok(handle_of(SyncType::Event, h.segment(), h.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let h = slf.get()._handle()?;
        reduce(slf.as_any(), h)
    }
}

// ---- Condition's wait queue -------------------------------------------------------------------------------

/// Slot `slot` of `h`, if it is one `prepare` may have returned (in the table, and reserved).
pub(super) fn check_slot(h: &CondHandle, slot: usize) -> PyResult<&crate::sync::condvar::CondSlot> {
    h.slot(slot).ok_or_else(|| PyValueError::new_err(format!("no condition slot {slot}")))
}

/// The per-waiter queue behind `pyconc.Condition` (which pairs it with a Lock or RLock).
#[pyclass(module = "pyconc._native", name = "CondQueue", subclass, frozen)]
pub struct PyCondQueue {
    pub(super) h: Held<CondHandle>,
}

#[pymethods]
impl PyCondQueue {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (*, _handle=None))]
    fn new(py: Python<'_>, _handle: Option<Handle>) -> PyResult<Self> {
        let h = match _handle {
            Some(h) => CondHandle::from_handle(open(py, &h, SyncType::Condition)?),
            None => CondHandle::create().py(py)?,
        };
        Ok(PyCondQueue { h: Held::new("Condition", h) })
    }

    /// Registers the caller as a waiter (call with the lock held); returns its slot.
    fn prepare(&self, py: Python<'_>) -> PyResult<usize> {
        match self.h.open()?.prepare() {
            Ok(i) => Ok(i),
            Err(PrepareError::TooManyWaiters) => Err(PyRuntimeError::new_err(format!(
                "too many waiters on one Condition (at most {})",
                crate::sync::condvar::COND_SLOTS
            ))),
            Err(PrepareError::NoSpace(e)) => Err::<usize, _>(e).py(py),
        }
    }

    /// Sleeps in `slot` until notified (True) or timeout (False). On an exception (Ctrl-C) the slot is freed.
    #[pyo3(signature = (slot, timeout=None))]
    fn wait(&self, py: Python<'_>, slot: usize, timeout: Option<f64>) -> PyResult<bool> {
        let h = self.h.open()?;
        check_slot(&h, slot)?;
        let d = deadline(timeout)?;
        let st = h.get();
        match block_until(py, || st.wait(slot, &d)) {
            Ok(r) => Ok(r.unwrap_or(false)),
            Err(e) => {
                st.cancel(slot);
                Err(e)
            }
        }
    }

    /// Withdraws a waiter; returns whether a notify had reached it (and frees the slot either way).
    fn cancel(&self, slot: usize) -> PyResult<bool> {
        let h = self.h.open()?;
        check_slot(&h, slot)?;
        Ok(h.get().cancel(slot))
    }

    /// Wakes up to `n` waiters, longest waiting first; returns how many.
    #[pyo3(signature = (n=1))]
    fn notify(&self, n: usize) -> PyResult<usize> {
        Ok(self.h.open()?.notify(n))
    }

    /// Registered waiters.
    #[getter]
    fn waiting(&self) -> PyResult<usize> {
        Ok(self.h.open()?.waiting())
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory once calls running in other threads
    /// return (idempotent).
    fn close(&self) {
        self.h.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.h.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.h.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.h.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let h = self.h.open()?;
        Ok(handle_of(SyncType::Condition, h.segment(), h.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let h = slf.get()._handle()?;
        reduce(slf.as_any(), h)
    }
}

// ---- Barrier ----------------------------------------------------------------------------------------------

/// A barrier for `parties` threads/processes (`threading.Barrier` semantics). A party whose process dies while
/// waiting breaks the barrier for the others.
#[pyclass(module = "pyconc", name = "Barrier", subclass, frozen)]
pub struct PyBarrier {
    pub(super) h: Held<BarrierHandle>,
    action: Option<Py<PyAny>>,
    timeout: Option<f64>,
}

#[pymethods]
impl PyBarrier {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (parties=None, action=None, timeout=None, *, _handle=None))]
    fn new(
        py: Python<'_>,
        parties: Option<i64>,
        action: Option<Py<PyAny>>,
        timeout: Option<f64>,
        _handle: Option<Handle>,
    ) -> PyResult<Self> {
        let h = match _handle {
            Some(h) => {
                h.expect(&[SyncType::Barrier.name()], &[Kind::Sync])?;
                py.detach(|| BarrierHandle::open(&h.segment, h.offset)).py(py)?
            }
            None => {
                let parties = parties.ok_or_else(|| {
                    PyTypeError::new_err("Barrier.__init__() missing 1 required positional argument: 'parties'")
                })?;
                let p = u32::try_from(parties)
                    .ok()
                    .filter(|&p| p >= 1)
                    .ok_or_else(|| PyValueError::new_err("parties must be > 0"))?;
                BarrierHandle::create(p).py(py)?
            }
        };
        Ok(PyBarrier { h: Held::new("Barrier", h), action: action.filter(|a| !a.is_none(py)), timeout })
    }

    /// Waits until all parties have called wait(); returns this party's index, unique in the round (arrival
    /// order, 0 to parties-1). Raises threading.BrokenBarrierError if the barrier breaks.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<u32> {
        let b = self.h.open()?.clone();
        // One deadline for the whole call: it also bounds waiting for another round's action to finish.
        let call = BarrierCall::new(deadline(timeout.or(self.timeout))?);
        let arrival: Arrival = match block_on(py, || b.get().arrive(&call))? {
            Ok(a) => a,
            Err(e) => return Err(barrier_err(py, e)),
        };
        if arrival.last {
            let action_result = match &self.action {
                Some(a) => a.call0(py).map(|_| ()),
                None => Ok(()),
            };
            let ok = action_result.is_ok();
            let r = py.detach(|| b.get().finish_last(&arrival, ok));
            action_result?;
            return match r {
                Ok(()) => Ok(arrival.index),
                Err(e) => Err(barrier_err(py, e)),
            };
        }
        match block_on(py, || b.get().wait_release(&arrival, &call)) {
            Ok(Ok(())) => Ok(arrival.index),
            Ok(Err(e)) => Err(barrier_err(py, e)),
            Err(e) => {
                py.detach(|| b.get().abandon(&arrival));
                Err(e)
            }
        }
    }

    /// Awaitable `wait`: never blocks the event loop; a cancelled waiter leaves the round.
    #[pyo3(signature = (timeout=None))]
    fn wait_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_barrier_wait_async")?.call1((slf, timeout))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        py_repr(slf.as_any())
    }

    /// Puts the barrier into the broken state: current and future waiters get BrokenBarrierError.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let b = self.h.open()?.clone();
        py.detach(|| b.get().abort()).map_err(|e| barrier_err(py, e))
    }

    /// Returns the barrier to its empty state; current waiters get BrokenBarrierError.
    fn reset(&self, py: Python<'_>) -> PyResult<()> {
        let b = self.h.open()?.clone();
        py.detach(|| b.get().reset()).map_err(|e| barrier_err(py, e))
    }

    /// Number of parties.
    #[getter]
    fn parties(&self) -> PyResult<u32> {
        Ok(self.h.open()?.get().parties())
    }

    /// Parties currently waiting.
    #[getter]
    fn n_waiting(&self) -> PyResult<u32> {
        Ok(self.h.open()?.get().n_waiting())
    }

    /// Whether the barrier is broken.
    #[getter]
    fn broken(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().broken())
    }

    /// The action run by the last arriver of each round.
    #[getter]
    fn action(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.action.as_ref().map(|a| a.clone_ref(py))
    }

    /// The default timeout of wait().
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.timeout
    }

    /// Rounds completed.
    #[getter]
    fn _rounds(&self) -> PyResult<u64> {
        Ok(self.h.open()?.get().rounds())
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory once calls running in other threads
    /// return (idempotent).
    fn close(&self) {
        self.h.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.h.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.h.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.h.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let h = self.h.open()?;
        Ok(handle_of(SyncType::Barrier, h.segment(), h.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let me = slf.get();
        let kwargs = PyDict::new(py);
        kwargs.set_item("action", me.action(py))?;
        kwargs.set_item("timeout", me.timeout)?;
        reduce_with(slf.as_any(), me._handle()?, kwargs)
    }
}

// ---- RWLock -----------------------------------------------------------------------------------------------

fn rw_err(py: Python<'_>, e: RwError) -> PyResult<bool> {
    match e {
        RwError::Wait(WaitError::TimedOut) => Ok(false),
        RwError::Wait(WaitError::Interrupted) => {
            py.check_signals()?;
            Err(PyRuntimeError::new_err("interrupted"))
        }
        RwError::TooManyReaders => Err(PyRuntimeError::new_err(format!(
            "too many processes hold read locks at once (at most {})",
            crate::sync::rwlock::RW_SLOTS
        ))),
        RwError::NotHeld => Err(PyRuntimeError::new_err(NOT_OWNED)),
    }
}

/// A reader-writer lock with writer priority: many readers or one writer, across threads and processes. Read
/// locks are counted per process; the write lock belongs to the process that took it. Robust to dead writers
/// (`OwnerDiedWarning` for the next acquirer) and dead readers.
#[pyclass(module = "pyconc", name = "RWLock", subclass, frozen)]
pub struct PyRwLock {
    pub(super) h: Held<SyncHandle<RwState>>,
    /// (pid << 32) | (slot + 1) of this process's reader slot, 0 = not looked up yet.
    slot: AtomicU64,
}

impl PyRwLock {
    /// This process's reader slot in `h` (this object's open state).
    pub(super) fn slot(&self, h: &SyncHandle<RwState>) -> Result<usize, RwError> {
        let me = owner::me();
        let c = self.slot.load(Ordering::Relaxed);
        if c != 0 && (c >> 32) as u32 == me.pid {
            return Ok((c as u32 - 1) as usize);
        }
        let i = h.get().slot_of(me)?;
        self.slot.store(((me.pid as u64) << 32) | (i as u64 + 1), Ordering::Relaxed);
        Ok(i)
    }

    fn blocking_rw(&self, py: Python<'_>, f: impl FnMut() -> Result<Acquired, RwError> + Send) -> PyResult<bool> {
        match block_on(py, f)? {
            Ok(a) => {
                report(py, a, "RWLock")?;
                Ok(true)
            }
            Err(e) => rw_err(py, e),
        }
    }
}

#[pymethods]
impl PyRwLock {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (*, _handle=None))]
    fn new(py: Python<'_>, _handle: Option<Handle>) -> PyResult<Self> {
        let h = match _handle {
            Some(h) => open(py, &h, SyncType::RwLock)?,
            None => SyncHandle::create(SyncType::RwLock, 0, 0).py(py)?,
        };
        Ok(PyRwLock { h: Held::new("RWLock", h), slot: AtomicU64::new(0) })
    }

    /// Takes a read lock; returns False on timeout.
    #[pyo3(signature = (timeout=None))]
    fn lock_read(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let h = self.h.open()?;
        let i = self.slot(&h).or_else(|e| rw_err(py, e).map(|_| 0))?;
        let d = deadline(timeout)?;
        let st = h.get();
        self.blocking_rw(py, || st.lock_read(i, &d))
    }

    /// Releases a read lock held by this process. RuntimeError if it holds none.
    fn unlock_read(&self, py: Python<'_>) -> PyResult<()> {
        let h = self.h.open()?;
        let i = self.slot(&h).or_else(|e| rw_err(py, e).map(|_| 0))?;
        h.get().unlock_read(i).or_else(|e| rw_err(py, e).map(|_| ()))
    }

    /// Takes the write lock; returns False on timeout.
    #[pyo3(signature = (timeout=None))]
    fn lock_write(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let d = deadline(timeout)?;
        let h = self.h.open()?;
        let st = h.get();
        // Claim first (new readers wait from then on), then wait for the readers to leave. The claim is kept
        // while signal handlers run between slices, so readers never slip in ahead of a waiting writer.
        let a = match block_on(py, || st.claim_write(&d))? {
            Ok(a) => a,
            Err(e) => return rw_err(py, e),
        };
        match block_on(py, || st.drain_readers(&d)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return rw_err(py, e), // timed out: the claim was given up
            Err(e) => {
                st.abandon_write(); // a signal handler raised
                return Err(e);
            }
        }
        report(py, a, "RWLock")?;
        Ok(true)
    }

    /// Releases the write lock held by this process. RuntimeError if it does not hold it.
    fn unlock_write(&self, py: Python<'_>) -> PyResult<()> {
        self.h.open()?.get().unlock_write().or_else(|e| rw_err(py, e).map(|_| ()))
    }

    /// Context manager (also async) holding a read lock; TimeoutError if `timeout` passes first.
    #[pyo3(signature = (timeout=None))]
    fn read<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_RWHold")?.call1((slf, false, timeout))
    }

    /// Context manager (also async) holding the write lock; TimeoutError if `timeout` passes first.
    #[pyo3(signature = (timeout=None))]
    fn write<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_RWHold")?.call1((slf, true, timeout))
    }

    /// Awaitable `lock_read`.
    #[pyo3(signature = (timeout=None))]
    fn lock_read_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_rw_lock_async")?.call1((slf, false, timeout))
    }

    /// Awaitable `lock_write`.
    #[pyo3(signature = (timeout=None))]
    fn lock_write_async<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        helper(slf.py(), "_rw_lock_async")?.call1((slf, true, timeout))
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        py_repr(slf.as_any())
    }

    /// Read locks held by this process.
    #[getter]
    fn read_count(&self) -> PyResult<u32> {
        let h = self.h.open()?;
        Ok(self.slot(&h).map(|i| h.get().read_count(i)).unwrap_or(0))
    }

    /// readers(): read locks held now, by every thread of every process.
    fn readers(&self) -> PyResult<u32> {
        Ok(self.h.open()?.get().total_readers())
    }

    /// writers_waiting(): writers waiting for the lock now (for the writers' mutex or for readers to leave),
    /// in every process.
    fn writers_waiting(&self) -> PyResult<u32> {
        Ok(self.h.open()?.get().writers_waiting())
    }

    /// writer_locked(): whether some writer (of any process) holds the lock now.
    fn writer_locked(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().writer_locked())
    }

    /// Whether this process holds the write lock.
    #[getter]
    fn write_locked(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().write_held_by_me())
    }

    /// True while the current write holding was taken over from a dead writer.
    #[getter]
    fn owner_died(&self) -> PyResult<bool> {
        Ok(self.h.open()?.get().wlock.owner_died())
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory once calls running in other threads
    /// return (idempotent).
    fn close(&self) {
        self.h.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.h.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.h.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.h.segment_name()
    }

    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let h = self.h.open()?;
        Ok(handle_of(SyncType::RwLock, h.segment(), h.offset()))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let h = slf.get()._handle()?;
        reduce(slf.as_any(), h)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("OwnerDiedWarning", m.py().get_type::<OwnerDiedWarning>())?;
    m.add_class::<PyLock>()?;
    shared_class::<PyLock>(m)?;
    m.add_class::<PyRLock>()?;
    shared_class::<PyRLock>(m)?;
    m.add_class::<PySemaphore>()?;
    shared_class::<PySemaphore>(m)?;
    m.add_class::<PyEvent>()?;
    shared_class::<PyEvent>(m)?;
    m.add_class::<PyCondQueue>()?;
    shared_class::<PyCondQueue>(m)?;
    m.add_class::<PyBarrier>()?;
    shared_class::<PyBarrier>(m)?;
    m.add_class::<PyRwLock>()?;
    shared_class::<PyRwLock>(m)?;
    Ok(())
}

super::identity::identity_of!(PyLock, h, |s| s.segment(), s.offset());
super::identity::identity_of!(PyRLock, h, |s| s.segment(), s.offset());
super::identity::identity_of!(PySemaphore, h, |s| s.segment(), s.offset());
super::identity::identity_of!(PyEvent, h, |s| s.segment(), s.offset());
super::identity::identity_of!(PyCondQueue, h, |s| s.segment(), s.offset());
super::identity::identity_of!(PyBarrier, h, |s| s.segment(), s.offset());
super::identity::identity_of!(PyRwLock, h, |s| s.segment(), s.offset());
