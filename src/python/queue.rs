//! `QueueCore`: the native queue under `pyconc.ConcurrentQueue`, `Queue`, `SimpleQueue`, `JoinableQueue` and
//! `StdConcurrentQueue` (the Python classes in `pyconc/queues.py` add the API shapes).

use super::blocking::block_on;
use super::codec::{decode_bytes, encode_into, with_scratch};
use super::errors::IntoPyResult;
use super::handle::{reduce_with, shared_class, Handle};
use super::lifetime::{Held, Open};
use super::timeouts::{timeout as read_timeout, Negative};
use crate::base::atomic::local::{AtomicU8, Ordering};
use crate::platform::futex::Deadline;
use crate::queue::{Attempt, QueueConfig, SharedQueue};
use crate::segment::Kind;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

pyo3::create_exception!(
    pyconc,
    ShutDown,
    pyo3::exceptions::PyException,
    "Raised by put/get on a queue that was shut down (queue.ShutDown on Python 3.13+)."
);

static EMPTY: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static FULL: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static SHUTDOWN: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn exc<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyType>>, name: &str) -> PyResult<Bound<'py, PyType>> {
    cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let queue = py.import("queue")?;
        match queue.getattr(name) {
            Ok(t) => Ok(t.cast_into::<PyType>()?.unbind()),
            // Before 3.13 `queue` has no ShutDown: ours stands in.
            Err(_) => Ok(py.get_type::<ShutDown>().unbind()),
        }
    })
    .map(|t| t.bind(py).clone())
}

fn raise(py: Python<'_>, cell: &'static PyOnceLock<Py<PyType>>, name: &str, msg: &str) -> PyErr {
    match exc(py, cell, name) {
        Ok(t) => PyErr::from_type(t, msg.to_string()),
        Err(e) => e,
    }
}

/// A queue of Python values in shared memory. Values are encoded with the pyconc codec (pickle only for types
/// it does not know). Pickles as a handle.
#[pyclass(module = "pyconc._native", name = "QueueCore", frozen, subclass)]
pub struct PyQueue {
    pub(super) q: Held<SharedQueue>,
    /// How `close()` was called, for the error of later calls (see `_close`).
    closed_as: AtomicU8,
    /// Which calls raise ValueError on a negative timeout, as `queue.Queue` does: [`STRICT_GET`] | [`STRICT_PUT`].
    /// The others treat it as 0, as `multiprocessing` does.
    strict_timeouts: u8,
}

/// `get` raises ValueError on a negative timeout.
const STRICT_GET: u8 = 1;
/// `put` raises ValueError on a negative timeout.
const STRICT_PUT: u8 = 2;

impl PyQueue {
    fn open(&self) -> PyResult<Open<'_, SharedQueue>> {
        self.q.try_open().ok_or_else(|| match self.closed_as.load(Ordering::Relaxed) {
            // multiprocessing.SimpleQueue: its closed pipe says so with OSError.
            2 => PyOSError::new_err("handle is closed"),
            // multiprocessing.Queue's message.
            _ => PyValueError::new_err("Queue is closed"),
        })
    }

    /// Runs `op` once with the GIL (no waiting); if it would block and `block` is set, again through the
    /// blocking path ([`block_on`]) until it completes, the timeout passes or a signal handler raises.
    fn blocking(
        &self,
        py: Python<'_>,
        block: bool,
        timeout: Option<f64>,
        strict: u8,
        op: &mut (dyn FnMut(Deadline) -> crate::Result<Attempt> + Send),
    ) -> PyResult<Attempt> {
        let negative = if self.strict_timeouts & strict != 0 { Negative::Error } else { Negative::Zero };
        let timeout = if block { read_timeout(timeout, negative)? } else { None };
        match op(Deadline::passed()).py(py)? {
            Attempt::WouldBlock if block => {}
            other => return Ok(other),
        }
        let d = Deadline::after(timeout);
        block_on(py, || op(d))?.py(py)
    }

    /// Takes one encoded item into `buf` (replacing its contents), waiting as `get` does; raises queue.Empty
    /// or ShutDown.
    fn get_one(
        &self,
        py: Python<'_>,
        ring: &crate::queue::Ring<'_>,
        buf: &mut Vec<u8>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let policy = self.open()?.policy();
        let r = self.blocking(py, block, timeout, STRICT_GET, &mut |d| {
            buf.clear();
            ring.get(buf, d, policy)
        })?;
        match r {
            Attempt::Done => Ok(()),
            Attempt::WouldBlock => Err(raise(py, &EMPTY, "Empty", "")),
            Attempt::ShutDown => Err(raise(py, &SHUTDOWN, "ShutDown", "the queue was shut down")),
        }
    }

    fn put_encoded(&self, py: Python<'_>, buf: &[u8], block: bool, timeout: Option<f64>) -> PyResult<()> {
        let q = self.open()?;
        let ring = q.ring().py(py)?;
        let policy = q.policy();
        match self.blocking(py, block, timeout, STRICT_PUT, &mut |d| ring.put(buf, d, policy))? {
            Attempt::Done => Ok(()),
            Attempt::WouldBlock => Err(raise(py, &FULL, "Full", "")),
            Attempt::ShutDown => Err(raise(py, &SHUTDOWN, "ShutDown", "the queue was shut down")),
        }
    }
}

#[pymethods]
impl PyQueue {
    fn __richcmp__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> Py<PyAny> {
        super::identity::richcmp(slf, other, op)
    }

    fn __hash__(&self) -> PyResult<u64> {
        super::identity::Identity::identity_hash(self)
    }

    #[new]
    #[pyo3(signature = (slots=65536, heap_bytes=67108864, lock_free=false, joinable=false, strict_timeouts=0, *, _handle=None))]
    fn new(
        py: Python<'_>,
        slots: u64,
        heap_bytes: u64,
        lock_free: bool,
        joinable: bool,
        strict_timeouts: u8,
        _handle: Option<Handle>,
    ) -> PyResult<Self> {
        let q = match _handle {
            Some(h) => {
                h.expect(&["Queue"], &[Kind::Queue])?;
                let q = py.detach(|| SharedQueue::open(&h.segment)).py(py)?;
                h.expect_whole(q.segment())?;
                q
            }
            None => py
                .detach(|| SharedQueue::create(QueueConfig { slots, first_ring: 0, heap_bytes, lock_free, joinable }))
                .py(py)?,
        };
        Ok(PyQueue { q: Held::new("Queue", q), closed_as: AtomicU8::new(0), strict_timeouts })
    }

    /// put(item, block=True, timeout=None): enqueue `item`; raises queue.Full if no room came in time,
    /// ShutDown after shutdown(), ValueError if the encoded item exceeds the per-message capacity.
    #[pyo3(signature = (item, block=true, timeout=None))]
    fn put(&self, py: Python<'_>, item: &Bound<'_, PyAny>, block: bool, timeout: Option<f64>) -> PyResult<()> {
        with_scratch(|buf| {
            encode_into(item, buf)?;
            self.put_encoded(py, buf, block, timeout)
        })
    }

    /// get(block=True, timeout=None): dequeue an item; raises queue.Empty if none came in time, ShutDown once a
    /// shut-down queue is drained (at once after an immediate shutdown).
    #[pyo3(signature = (block=true, timeout=None))]
    fn get<'py>(&self, py: Python<'py>, block: bool, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let q = self.open()?;
        let ring = q.ring().py(py)?;
        with_scratch(|buf| {
            self.get_one(py, &ring, buf, block, timeout)?;
            decode_bytes(py, buf)
        })
    }

    /// put_many(items, block=True, timeout=None): enqueue every item of the iterable in order (the timeout
    /// applies to each item). Returns how many were put. Every item is encoded before the first is put, so an
    /// item that cannot be encoded (unpicklable) puts nothing; if a put fails part-way (queue.Full after the
    /// timeout, ShutDown, MemoryError), the exception's `items_put` attribute says how many went in.
    #[pyo3(signature = (items, block=true, timeout=None))]
    fn put_many(&self, py: Python<'_>, items: &Bound<'_, PyAny>, block: bool, timeout: Option<f64>) -> PyResult<usize> {
        self.open()?;
        let mut encoded = Vec::new();
        let mut ends = Vec::new();
        with_scratch(|buf| {
            for item in items.try_iter()? {
                buf.clear();
                encode_into(&item?, buf)?;
                encoded.extend_from_slice(buf);
                ends.push(encoded.len());
            }
            Ok::<_, PyErr>(())
        })?;
        let mut start = 0;
        for (n, &end) in ends.iter().enumerate() {
            if let Err(e) = self.put_encoded(py, &encoded[start..end], block, timeout) {
                e.value(py).setattr("items_put", n)?;
                return Err(e);
            }
            start = end;
        }
        Ok(ends.len())
    }

    /// get_many(max_messages=1000000000, block=True, timeout=None): waits (like get) for at least one item,
    /// then takes every item available at once, up to `max_messages`. Returns a list.
    #[pyo3(signature = (max_messages=1_000_000_000, block=true, timeout=None))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        max_messages: usize,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let q = self.open()?;
        let ring = q.ring().py(py)?;
        let list = PyList::empty(py);
        if max_messages == 0 {
            return Ok(list);
        }
        with_scratch(|buf| {
            self.get_one(py, &ring, buf, block, timeout)?;
            list.append(decode_bytes(py, buf)?)?;
            let mut lens = Vec::new();
            let mut left = max_messages - 1;
            while left > 0 {
                buf.clear();
                lens.clear();
                // Batches of at most 256 items or 1 MiB, decoded before the next, so the scratch buffer stays
                // small enough to be kept (a fresh multi-megabyte buffer costs a page fault per 4 KiB).
                let n = ring.get_available(buf, &mut lens, left.min(256), 1 << 20).py(py)?;
                let mut at = 0;
                for len in &lens {
                    list.append(decode_bytes(py, &buf[at..at + len])?)?;
                    at += len;
                }
                if n == 0 {
                    break;
                }
                left -= n;
            }
            Ok(list)
        })
    }

    /// Waits until a get would find something (or the queue is shut down), without taking it; True then,
    /// False after `timeout` seconds (None: no limit). Lets several threads share the consuming side under a
    /// lock of their own.
    #[pyo3(signature = (timeout=None))]
    fn _wait_readable(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let q = self.open()?;
        let ring = q.ring().py(py)?;
        let policy = q.policy();
        let r = self.blocking(py, true, timeout, 0, &mut |d| ring.wait_readable(d, policy))?;
        Ok(r == Attempt::Done)
    }

    /// Approximate number of items.
    fn qsize(&self) -> PyResult<u64> {
        Ok(self.open()?.len())
    }

    /// Whether the queue looks empty.
    fn empty(&self) -> PyResult<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether every slot looks taken.
    fn full(&self) -> PyResult<bool> {
        let q = self.open()?;
        Ok(q.len() >= q.capacity())
    }

    /// The most items held at once (a bound: the queue's rings grow up to it as it fills).
    #[getter]
    fn capacity(&self) -> PyResult<u64> {
        Ok(self.open()?.capacity())
    }

    /// Largest encoded item, in bytes.
    #[getter]
    fn max_message(&self) -> PyResult<u64> {
        Ok(self.open()?.max_message())
    }

    /// shutdown(immediate=False): puts raise ShutDown from now on; gets drain what is left and then raise it
    /// (at once if `immediate`). Wakes blocked callers in every process.
    #[pyo3(signature = (immediate=false))]
    fn shutdown(&self, immediate: bool) -> PyResult<()> {
        self.open()?.shutdown(immediate);
        Ok(())
    }

    /// Whether shutdown() was called (by any process).
    #[getter]
    fn is_shutdown(&self) -> PyResult<bool> {
        Ok(self.open()?.shutdown_state() != 0)
    }

    /// task_done(): for joinable queues; ValueError if called more times than items were put.
    fn task_done(&self, py: Python<'_>) -> PyResult<()> {
        let q = self.open()?;
        if !q.is_joinable() {
            return Err(PyValueError::new_err("task_done() needs a joinable queue"));
        }
        q.task_done_n(1).py(py)
    }

    /// join(timeout=None) -> bool: waits until every item put has been marked done with task_done().
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let q = self.open()?;
        if !q.is_joinable() {
            return Err(PyValueError::new_err("join() needs a joinable queue"));
        }
        let d = Deadline::after(read_timeout(timeout, Negative::Zero)?);
        let q: &SharedQueue = &q;
        block_on(py, || q.join(d))?.py(py)
    }

    /// Items put and not yet marked done.
    #[getter]
    fn unfinished_tasks(&self) -> PyResult<u64> {
        Ok(self.open()?.unfinished())
    }

    /// Counters: dropped (half-written by a producer that died), redelivered (taken by a consumer that died),
    /// recovered (dead processes cleaned up after), and the heap.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let q = self.open()?;
        let (dropped, redelivered, recovered) = q.stats();
        let d = PyDict::new(py);
        d.set_item("dropped", dropped)?;
        d.set_item("redelivered", redelivered)?;
        d.set_item("recovered", recovered)?;
        d.set_item("qsize", q.len())?;
        // The ring producers use now: it grows from 1,024 slots (or maxsize) up to `capacity` as the queue fills.
        d.set_item("ring_slots", q.ring_capacity())?;
        Ok(d)
    }

    // The lifetime API (see `super::lifetime`).

    /// Makes this object unusable here (later calls raise ValueError, as multiprocessing.Queue's after close())
    /// and lets go of its shared memory once calls running in other threads return. Idempotent.
    fn close(&self) {
        self._close(false);
    }

    /// close() whose later calls raise OSError, as multiprocessing.SimpleQueue's do.
    #[pyo3(signature = (oserror=false))]
    fn _close(&self, oserror: bool) {
        if !self.q.is_closed() {
            self.closed_as.store(if oserror { 2 } else { 1 }, Ordering::Relaxed);
        }
        self.q.close();
    }

    /// Whether `close()` was called on this object.
    #[getter]
    fn closed(&self) -> bool {
        self.q.is_closed()
    }

    /// Removes the object's name now: holders keep working, new attaches fail with FileNotFoundError.
    fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        self.q.unlink(py)
    }

    /// The name of the shared-memory segment the object lives in.
    #[getter]
    fn segment_name(&self) -> PyResult<String> {
        self.q.segment_name()
    }

    /// What a pickle carries (see `pyconc._native._rebuild`).
    #[getter]
    fn _handle(&self) -> PyResult<Handle> {
        let q = self.open()?;
        Ok(Handle::new("Queue", q.segment(), q.segment().info().data_offset))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        // The timeout rules are the class's (StdConcurrentQueue's are queue.Queue's), set at construction.
        let kwargs = PyDict::new(slf.py());
        kwargs.set_item("strict_timeouts", slf.get().strict_timeouts)?;
        reduce_with(slf.as_any(), slf.get()._handle()?, kwargs)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyQueue>()?;
    shared_class::<PyQueue>(m)?;
    m.add("ShutDown", exc(py, &SHUTDOWN, "ShutDown")?)?;
    Ok(())
}

super::identity::identity_of!(PyQueue, q, |s| s.segment(), 0);
