//! `ConcurrentDeque`: the Python face of [`crate::deque::SharedDeque`].
//!
//! Items are stored as codec encodings. Encoding and decoding, and every Python comparison (`in`, `remove`,
//! `count`, `==`), happen outside the deque's lock: the lock is only held to copy bytes in or out.

use super::codec::{decode_bytes, encode_into, with_scratch};
use super::errors::{to_py, IntoPyResult};
use super::handle::{reduce, shared_class, Handle};
use super::lifetime::{Held, Open};
use crate::deque::{records, DequeGuard, End, SharedDeque, DEFAULT_HEAP_BYTES};
use crate::platform::futex::Deadline;
use crate::segment::Kind;
use crate::sync::wait;
use crate::Error;
use pyo3::basic::CompareOp;
use pyo3::exceptions::{PyIndexError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};
use std::cell::RefCell;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The longest stretch a blocked call spends without the GIL before checking for signals (Ctrl-C).
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

static EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static DEQUE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn stdlib_type<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    name: &str,
) -> PyResult<Bound<'py, PyType>> {
    cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        Ok(py.import(module)?.getattr(name)?.cast_into::<PyType>()?.unbind())
    })
    .map(|t| t.bind(py).clone())
}

thread_local! {
    /// Segment names of the deques whose repr this thread is building (a deque holding a handle of itself
    /// prints `[...]`, as `collections.deque` does for itself).
    static IN_REPR: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

fn check_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err("'timeout' must be a non-negative number")),
        Some(t) => Ok(Some(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX))),
    }
}

/// A double-ended queue in shared memory, usable from every thread and process that holds it (it pickles as a
/// handle). The `collections.deque` API plus blocking pops.
#[pyclass(module = "pyconc._native", name = "ConcurrentDeque", frozen)]
pub struct PyConcurrentDeque {
    inner: Held<SharedDeque>,
}

/// A call's borrow of an open deque.
struct Deque<'a> {
    inner: Open<'a, SharedDeque>,
}

impl PyConcurrentDeque {
    /// This call's view of the open deque (see `super::lifetime`); the helpers below work on it.
    fn d(&self) -> PyResult<Deque<'_>> {
        Ok(Deque { inner: self.inner.open()? })
    }
}

impl Deque<'_> {
    /// Takes the lock: at once if it is free, else without the GIL in slices that let Ctrl-C through.
    fn locked(&self, py: Python<'_>) -> PyResult<DequeGuard<'_>> {
        if let Some(g) = self.inner.try_lock().py(py)? {
            return Ok(g);
        }
        if self.inner.held_by_me() {
            return Err(PyRuntimeError::new_err("ConcurrentDeque: this thread already holds the deque's lock"));
        }
        let d: &SharedDeque = &self.inner;
        loop {
            let r = py.detach(|| {
                let _poll = wait::poll_signals();
                d.lock(&Deadline::after(Some(SIGNAL_SLICE)))
            });
            match r {
                Ok(g) => return Ok(g),
                Err(Error::Timeout) | Err(Error::Interrupted) => py.check_signals()?,
                Err(e) => return Err(to_py(py, e)),
            }
        }
    }

    fn push_one(&self, py: Python<'_>, end: End, item: &Bound<'_, PyAny>) -> PyResult<()> {
        with_scratch(|buf| {
            encode_into(item, buf)?;
            self.locked(py)?.push(end, buf).py(py)
        })
    }

    /// Encodes every item of `items` first (so a failing item adds nothing), then pushes them all under one
    /// holding of the lock.
    fn push_all(&self, py: Python<'_>, end: End, items: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut batch = Vec::new();
        let mut one = Vec::new();
        for item in items.try_iter()? {
            one.clear();
            encode_into(&item?, &mut one)?;
            batch.extend_from_slice(&(one.len() as u64).to_le_bytes());
            batch.extend_from_slice(&one);
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.locked(py)?.push_many(end, &batch).py(py)?;
        Ok(())
    }

    fn pop_end<'py>(
        &self,
        py: Python<'py>,
        end: End,
        block: Option<bool>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let blocking = block.unwrap_or(timeout.is_some());
        let timeout = if blocking { check_timeout(timeout)? } else { None };
        let until = timeout.and_then(|t| Instant::now().checked_add(t));
        with_scratch(|buf| loop {
            buf.clear();
            if self.locked(py)?.pop(end, buf).py(py)? {
                return decode_bytes(py, buf);
            }
            if !blocking {
                return Err(PyIndexError::new_err("pop from an empty deque"));
            }
            let left = until.map(|e| e.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(PyErr::from_type(stdlib_type(py, &EMPTY, "queue", "Empty")?, ()));
            }
            let slice = left.map_or(SIGNAL_SLICE, |l| l.min(SIGNAL_SLICE));
            let d: &SharedDeque = &self.inner;
            let r = py.detach(|| {
                let _poll = wait::poll_signals();
                d.wait_nonempty(&Deadline::after(Some(slice)))
            });
            match r {
                Ok(_) | Err(wait::WaitError::TimedOut) => py.check_signals()?,
                Err(wait::WaitError::Interrupted) => py.check_signals()?,
            }
        })
    }

    /// Copies every item out as `(id, encoding)` records.
    fn dump(&self, py: Python<'_>, buf: &mut Vec<u8>) -> PyResult<usize> {
        self.locked(py)?.dump(buf).py(py)
    }

    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut buf = Vec::new();
        self.dump(py, &mut buf)?;
        let list = PyList::empty(py);
        for r in records(&buf) {
            list.append(decode_bytes(py, r.py(py)?.1)?)?;
        }
        Ok(list)
    }

    /// The id of the first item `== value` (compared in Python, outside the lock), if any.
    fn find(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let mut buf = Vec::new();
        self.dump(py, &mut buf)?;
        for r in records(&buf) {
            let (id, bytes) = r.py(py)?;
            let item = decode_bytes(py, bytes)?;
            // Identity first, as list and deque do (`x in [x]` holds even when `x != x`).
            if item.is(value) || item.eq(value)? {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn index(&self, py: Python<'_>, i: isize) -> PyResult<(DequeGuard<'_>, u64)> {
        let g = self.locked(py)?;
        let len = g.len() as i128;
        let j = if i < 0 { i as i128 + len } else { i as i128 };
        if j < 0 || j >= len {
            return Err(PyIndexError::new_err("deque index out of range"));
        }
        Ok((g, j as u64))
    }
}

#[pymethods]
impl PyConcurrentDeque {
    #[new]
    #[pyo3(signature = (iterable=None, maxlen=None, *, _handle=None))]
    fn new(
        py: Python<'_>,
        iterable: Option<&Bound<'_, PyAny>>,
        maxlen: Option<&Bound<'_, PyAny>>,
        _handle: Option<Handle>,
    ) -> PyResult<Self> {
        if let Some(h) = _handle {
            h.expect(&["ConcurrentDeque"], &[Kind::Deque])?;
            let inner = py.detach(|| SharedDeque::open(&h.segment)).py(py)?;
            h.expect_whole(inner.segment())?;
            return Ok(PyConcurrentDeque { inner: Held::new("ConcurrentDeque", inner) });
        }
        let maxlen = match maxlen {
            None => None,
            Some(m) if m.is_none() => None,
            Some(m) => {
                let n: i64 = m.extract().map_err(|_| PyTypeError::new_err("an integer is required"))?;
                if n < 0 {
                    return Err(PyValueError::new_err("maxlen must be non-negative"));
                }
                Some(n as u64)
            }
        };
        let inner = py.detach(|| SharedDeque::create(maxlen, DEFAULT_HEAP_BYTES)).py(py)?;
        let d = PyConcurrentDeque { inner: Held::new("ConcurrentDeque", inner) };
        if let Some(it) = iterable {
            d.d()?.push_all(py, End::Back, it)?;
        }
        Ok(d)
    }

    /// append(x): adds x at the right end (dropping the leftmost item of a full bounded deque).
    fn append(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = self.d()?;
        this.push_one(py, End::Back, x)
    }

    /// appendleft(x): adds x at the left end (dropping the rightmost item of a full bounded deque).
    fn appendleft(&self, py: Python<'_>, x: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = self.d()?;
        this.push_one(py, End::Front, x)
    }

    /// extend(iterable): appends every item, in order, under one holding of the lock (all are encoded first,
    /// so an item that cannot be encoded adds nothing).
    fn extend(&self, py: Python<'_>, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = self.d()?;
        this.push_all(py, End::Back, iterable)
    }

    /// extendleft(iterable): appendleft of every item, in order (so they end up reversed).
    fn extendleft(&self, py: Python<'_>, iterable: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = self.d()?;
        this.push_all(py, End::Front, iterable)
    }

    /// pop(block=None, timeout=None): removes and returns the rightmost item. Without arguments (or with
    /// `block=False`) an empty deque raises IndexError at once, as collections.deque does; with `block=True`,
    /// or a timeout, it waits for an item (up to `timeout` seconds, None = forever) and raises queue.Empty
    /// when none came.
    #[pyo3(signature = (block=None, timeout=None))]
    fn pop<'py>(&self, py: Python<'py>, block: Option<bool>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        this.pop_end(py, End::Back, block, timeout)
    }

    /// popleft(block=None, timeout=None): as pop, from the left end.
    #[pyo3(signature = (block=None, timeout=None))]
    fn popleft<'py>(&self, py: Python<'py>, block: Option<bool>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        this.pop_end(py, End::Front, block, timeout)
    }

    /// clear(): removes every item.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        let this = self.d()?;
        let mut g = this.locked(py)?;
        g.clear().py(py)
    }

    /// rotate(n=1): rotates n steps to the right (n < 0: to the left).
    #[pyo3(signature = (n=1))]
    fn rotate(&self, py: Python<'_>, n: i64) -> PyResult<()> {
        let this = self.d()?;
        let mut g = this.locked(py)?;
        g.rotate(n).py(py)
    }

    /// remove(value): removes the first item equal to value (ValueError if there is none). Items are compared
    /// in this process, outside the lock; if another process removed the match meanwhile, the search restarts.
    fn remove(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let this = self.d()?;
        for _ in 0..10_000 {
            let Some(id) = this.find(py, value)? else {
                // collections.deque's message (Python 3.11+).
                return Err(PyValueError::new_err(format!("{} is not in deque", value.repr()?)));
            };
            if this.locked(py)?.remove_id(id).py(py)? {
                return Ok(());
            }
        }
        Err(PyRuntimeError::new_err("deque.remove(x): other processes kept removing the match"))
    }

    /// count(value): how many items equal value.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let this = self.d()?;
        let mut buf = Vec::new();
        this.dump(py, &mut buf)?;
        let mut n = 0;
        for r in records(&buf) {
            let item = decode_bytes(py, r.py(py)?.1)?;
            if item.is(value) || item.eq(value)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// copy(): a new ConcurrentDeque with the same items and maxlen.
    fn copy(&self, py: Python<'_>) -> PyResult<Self> {
        let this = self.d()?;
        let maxlen = this.inner.maxlen();
        let inner = py.detach(|| SharedDeque::create(maxlen, DEFAULT_HEAP_BYTES)).py(py)?;
        let mut buf = Vec::new();
        this.dump(py, &mut buf)?;
        let mut batch = Vec::with_capacity(buf.len());
        for r in records(&buf) {
            let bytes = r.py(py)?.1;
            batch.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            batch.extend_from_slice(bytes);
        }
        let d = PyConcurrentDeque { inner: Held::new("ConcurrentDeque", inner) };
        if !batch.is_empty() {
            d.d()?.locked(py)?.push_many(End::Back, &batch).py(py)?;
        }
        Ok(d)
    }

    fn __copy__(&self, py: Python<'_>) -> PyResult<Self> {
        self.copy(py)
    }

    fn __len__(&self) -> PyResult<usize> {
        let this = self.d()?;
        Ok(this.inner.len() as usize)
    }

    fn __bool__(&self) -> PyResult<bool> {
        let this = self.d()?;
        Ok(!this.inner.is_empty())
    }

    fn __contains__(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        let this = self.d()?;
        Ok(this.find(py, value)?.is_some())
    }

    fn __getitem__<'py>(&self, py: Python<'py>, i: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        let i: isize = i.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "sequence index must be integer, not '{}'",
                i.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        let mut buf = Vec::new();
        {
            let (g, j) = this.index(py, i)?;
            g.get(j, &mut buf).py(py)?;
        }
        decode_bytes(py, &buf)
    }

    fn __delitem__(&self, py: Python<'_>, i: isize) -> PyResult<()> {
        let this = self.d()?;
        let (mut g, j) = this.index(py, i)?;
        g.remove_at(j).py(py)?;
        Ok(())
    }

    /// Iterates over a copy of the items taken at the start (other processes may change the deque meanwhile).
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        this.to_list(py)?.try_iter().map(Bound::into_any)
    }

    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        let l = this.to_list(py)?;
        l.reverse()?;
        l.try_iter().map(Bound::into_any)
    }

    /// Compares the items (a copy) with another ConcurrentDeque, a collections.deque or a list, as lists.
    fn __richcmp__<'py>(&self, other: &Bound<'py, PyAny>, op: CompareOp) -> PyResult<Bound<'py, PyAny>> {
        let this = self.d()?;
        let py = other.py();
        let theirs = if let Ok(o) = other.cast::<PyConcurrentDeque>() {
            o.get().d()?.to_list(py)?
        } else if other.is_instance(stdlib_type(py, &DEQUE, "collections", "deque")?.as_any())?
            || other.is_instance_of::<PyList>()
        {
            PyList::new(py, other.try_iter()?.collect::<PyResult<Vec<_>>>()?)?
        } else {
            return Ok(py.NotImplemented().into_bound(py));
        };
        this.to_list(py)?.rich_compare(theirs, op)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let Ok(this) = self.d() else { return Ok("ConcurrentDeque(<closed>)".into()) };
        let name = this.inner.segment().name_local().to_string();
        let entered = IN_REPR.with(|s| s.borrow_mut().insert(name.clone()));
        if !entered {
            return Ok("[...]".to_string());
        }
        let r = (|| {
            let items = this.to_list(py)?.repr()?.to_string();
            Ok(match this.inner.maxlen() {
                Some(m) => format!("ConcurrentDeque({items}, maxlen={m})"),
                None => format!("ConcurrentDeque({items})"),
            })
        })();
        IN_REPR.with(|s| s.borrow_mut().remove(&name));
        r
    }

    /// The bound on the length, or None.
    #[getter]
    fn maxlen(&self) -> PyResult<Option<u64>> {
        let this = self.d()?;
        Ok(this.inner.maxlen())
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here and lets go of its shared memory (idempotent).
    fn close(&self) {
        self.inner.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.unlink(py)
    }

    /// The name of the deque's main segment.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.inner.segment_name()
    }

    /// {"repairs": repairs after processes died holding the lock, "segments": segments in use}.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let this = self.d()?;
        let d = PyDict::new(py);
        d.set_item("repairs", this.inner.repairs())?;
        d.set_item("segments", this.inner.segments())?;
        Ok(d)
    }

    /// What a pickle carries (see `pyconc._native._rebuild`).
    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let d = self.inner.open()?;
        Ok(Handle::new("ConcurrentDeque", d.segment(), d.segment().info().data_offset))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        reduce(slf.as_any(), slf.get()._handle()?)
    }
}

/// Test hook: the calling process `_exit`s at crash point `n` of its next deque operation (0 disarms). See
/// `deque::CRASH_POINT`.
#[pyfunction]
fn _deque_crash_point(n: u32) {
    crate::deque::CRASH_POINT.store(n, crate::base::atomic::local::Ordering::Relaxed);
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyConcurrentDeque>()?;
    shared_class::<PyConcurrentDeque>(m)?;
    m.add_function(wrap_pyfunction!(_deque_crash_point, m)?)?;
    Ok(())
}
