//! The native half of the asyncio bridge (`pyconc/aio.py` is the other): an inbox per event loop and the
//! "announce me as a waiter and watch the word" step of every awaitable primitive, over
//! [`crate::sync::waker`].
//!
//! `_aio_arm(obj, what, inbox, arg)` announces a waiter by the primitive's own protocol and registers the word
//! with the waker; it returns the registration's token, or `None` when the primitive looks available now (the
//! coroutine then tries again at once). The token comes back through the inbox when the word is woken or
//! changed; `_aio_cancel(token)` withdraws a registration that has not fired. Nothing here takes a primitive:
//! the coroutine does, on the loop thread, so a cancelled waiter never holds anything.

use super::errors::IntoPyResult;
use super::lifetime::Open;
use super::queue::PyQueue;
use super::sync::{
    barrier_err, check_slot, report, PyBarrier, PyCondQueue, PyEvent, PyLock, PyRLock, PyRwLock, PySemaphore,
};
use crate::base::atomic::{AtomicU32, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::segment::{Offset, Segment};
use crate::sync::barrier::Arrival;
use crate::sync::condvar::SLOT_WAITING;
use crate::sync::lock::{LockState, RLockState};
use crate::sync::owner;
use crate::sync::shared::SyncHandle;
use crate::sync::waker::{self, Inbox, Watched};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use std::sync::Arc;

/// An event loop's inbox: `fileno()` is an eventfd that is readable while fired tokens wait; `drain()` takes
/// them.
#[pyclass(module = "pyconc._native", name = "AioInbox", frozen)]
pub struct PyInbox {
    inbox: Arc<Inbox>,
}

#[pymethods]
impl PyInbox {
    #[new]
    fn new() -> PyResult<Self> {
        let inbox = Inbox::new().map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(PyInbox { inbox: Arc::new(inbox) })
    }

    /// The eventfd to watch (`loop.add_reader`).
    fn fileno(&self) -> i32 {
        self.inbox.fd()
    }

    /// The tokens fired since the last call.
    fn drain(&self) -> Vec<u64> {
        self.inbox.drain()
    }
}

/// A futex word in a segment, kept mapped by the segment handle; `undo` withdraws the announcement when the
/// registration ends (fired or cancelled).
struct WordWatch {
    seg: Segment,
    off: Offset<AtomicU32>,
    undo: Option<Box<dyn Fn() + Send + Sync>>,
}

/// Stands in for a word that cannot be resolved (impossible for an offset checked at creation): never woken.
static NO_WORD: AtomicU32 = AtomicU32::new(0);

impl Watched for WordWatch {
    fn word(&self) -> &AtomicU32 {
        self.seg.resolve(self.off).unwrap_or(&NO_WORD)
    }
}

impl Drop for WordWatch {
    fn drop(&mut self) {
        if let Some(undo) = &self.undo {
            undo();
        }
    }
}

/// Registers `word` (which lies in `seg`) with value `expected`.
fn watch(
    inbox: &PyInbox,
    seg: &Segment,
    word: &AtomicU32,
    expected: u32,
    undo: Option<Box<dyn Fn() + Send + Sync>>,
) -> PyResult<u64> {
    let off = (word as *const AtomicU32 as usize).wrapping_sub(seg.base_ptr() as usize) as u64;
    let off = Offset::new(off);
    // Checked now, so `word()` always resolves.
    if let Err(e) = seg.resolve(off) {
        if let Some(u) = undo {
            u();
        }
        return Err(PyValueError::new_err(e.to_string()));
    }
    let w = Arc::new(WordWatch { seg: seg.clone(), off, undo });
    waker::watch(&inbox.inbox, w, expected).map_err(|e| PyOSError::new_err(format!("cannot start the waker: {e}")))
}

/// A call's borrow of a Lock's or an RLock's state.
enum LockRef<'a> {
    Lock(Open<'a, SyncHandle<LockState>>),
    RLock(Open<'a, SyncHandle<RLockState>>),
}

impl LockRef<'_> {
    fn state(&self) -> &LockState {
        match self {
            LockRef::Lock(h) => h.get(),
            LockRef::RLock(h) => &h.get().0,
        }
    }

    fn segment(&self) -> &Segment {
        match self {
            LockRef::Lock(h) => h.segment(),
            LockRef::RLock(h) => h.segment(),
        }
    }
}

/// The lock state of a Lock or an RLock (None: another type; ValueError if closed).
fn lock_state<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Option<LockRef<'a>>> {
    if let Ok(l) = obj.cast::<PyLock>() {
        return Ok(Some(LockRef::Lock(l.get().h.open()?)));
    }
    if let Ok(l) = obj.cast::<PyRLock>() {
        return Ok(Some(LockRef::RLock(l.get().h.open()?)));
    }
    Ok(None)
}

fn wrong(obj: &Bound<'_, PyAny>, what: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "cannot wait for {what:?} on a {}",
        obj.get_type().name().map(|n| n.to_string()).unwrap_or_default()
    ))
}

/// `_aio_arm(obj, what, inbox, arg=None) -> token | None`. `what`: "lock" (Lock, RLock), "sem", "event",
/// "cond" (CondQueue, `arg` = slot), "get"/"put" (QueueCore), "read"/"wlock"/"drain" (RWLock), "barrier"
/// (Barrier; `arg` = the AioArrival whose release is awaited, or None to await a filling round). None:
/// available now.
#[pyfunction]
#[pyo3(signature = (obj, what, inbox, arg=None))]
fn _aio_arm(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
    inbox: &PyInbox,
    arg: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<u64>> {
    match what {
        "lock" => {
            let l = lock_state(obj)?.ok_or_else(|| wrong(obj, what))?;
            let (st, seg) = (l.state(), l.segment());
            match st.announce_waiter() {
                Some(w) => watch(inbox, seg, &st.word, w, None).map(Some),
                None => Ok(None),
            }
        }
        "sem" => {
            let h = obj.cast::<PySemaphore>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            if !h.get().announce_waiter() {
                return Ok(None);
            }
            let h2 = h.clone();
            watch(inbox, h.segment(), &h.get().value, 0, Some(Box::new(move || h2.get().withdraw_waiter()))).map(Some)
        }
        "event" => {
            let h = obj.cast::<PyEvent>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            if !h.get().announce_waiter() {
                return Ok(None);
            }
            let h2 = h.clone();
            watch(inbox, h.segment(), &h.get().flag, 0, Some(Box::new(move || h2.get().withdraw_waiter()))).map(Some)
        }
        "cond" => {
            let h = obj.cast::<PyCondQueue>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            let slot: usize = arg.ok_or_else(|| PyValueError::new_err("a slot is needed"))?.extract()?;
            let s = check_slot(&h, slot)?;
            if s.state.load(Ordering::SeqCst) != SLOT_WAITING {
                return Ok(None);
            }
            watch(inbox, h.segment(), &s.state, SLOT_WAITING, None).map(Some)
        }
        "get" | "put" => {
            let q = obj.cast::<PyQueue>().map_err(|_| wrong(obj, what))?.get().q.open()?;
            let ring = q.ring().py(py)?;
            match ring.announce(what == "get") {
                Some((word, key)) => watch(inbox, q.segment(), word, key, None).map(Some),
                None => Ok(None),
            }
        }
        "read" | "wlock" | "drain" => {
            let h = obj.cast::<PyRwLock>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            let st = h.get();
            match what {
                "read" => {
                    if st.free_dead_writer() {
                        return Ok(None);
                    }
                    match st.announce_reader() {
                        Some(g) => {
                            let h2 = h.clone();
                            let undo: Box<dyn Fn() + Send + Sync> = Box::new(move || h2.get().withdraw_reader());
                            watch(inbox, h.segment(), &st.rgen, g, Some(undo)).map(Some)
                        }
                        None => Ok(None),
                    }
                }
                "wlock" => match st.wlock.announce_waiter() {
                    Some(w) => watch(inbox, h.segment(), &st.wlock.word, w, None).map(Some),
                    None => Ok(None),
                },
                _ => match st.drain_key() {
                    Some(d) => watch(inbox, h.segment(), &st.drain, d, None).map(Some),
                    None => Ok(None),
                },
            }
        }
        "barrier" => {
            let h = obj.cast::<PyBarrier>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            let arrival = match arg {
                Some(a) if !a.is_none() => Some(a.cast::<PyArrival>()?.get().a),
                _ => None,
            };
            let b = h.get();
            match b.announce(arrival.as_ref()) {
                Some(s) => {
                    let h2 = h.clone();
                    let undo: Box<dyn Fn() + Send + Sync> = Box::new(move || h2.get().withdraw());
                    watch(inbox, h.segment(), b.seq_word(), s, Some(undo)).map(Some)
                }
                None => Ok(None),
            }
        }
        _ => Err(PyValueError::new_err(format!("unknown wait {what:?}"))),
    }
}

/// A coroutine's arrival at a Barrier (from `_aio_barrier_arrive`).
#[pyclass(module = "pyconc._native", name = "AioArrival", frozen)]
pub struct PyArrival {
    a: Arrival,
}

#[pymethods]
impl PyArrival {
    /// This party's index in the round.
    #[getter]
    fn index(&self) -> u32 {
        self.a.index
    }

    /// Whether this party arrived last (it runs the action and releases the round).
    #[getter]
    fn last(&self) -> bool {
        self.a.last
    }
}

fn barrier_of<'a>(obj: &'a Bound<'_, PyBarrier>) -> PyResult<Open<'a, crate::sync::shared::BarrierHandle>> {
    obj.get().h.open()
}

/// `_aio_barrier_arrive(barrier) -> AioArrival | None`: arrives without waiting (None: the previous round is
/// still being released; wait on "barrier" with no arrival). BrokenBarrierError if broken.
#[pyfunction]
fn _aio_barrier_arrive(py: Python<'_>, obj: &Bound<'_, PyBarrier>) -> PyResult<Option<PyArrival>> {
    match barrier_of(obj)?.get().try_arrive() {
        Ok(a) => Ok(a.map(|a| PyArrival { a })),
        Err(e) => Err(barrier_err(py, e)),
    }
}

/// `_aio_barrier_finish(barrier, arrival, action_ok)`: the last arriver releases the round (after running the
/// action); BrokenBarrierError if the round broke meanwhile or the action failed.
#[pyfunction]
fn _aio_barrier_finish(
    py: Python<'_>,
    obj: &Bound<'_, PyBarrier>,
    arrival: &Bound<'_, PyArrival>,
    ok: bool,
) -> PyResult<()> {
    barrier_of(obj)?.get().finish_last(&arrival.get().a, ok).map_err(|e| barrier_err(py, e))
}

/// `_aio_barrier_poll(barrier, arrival) -> bool`: whether the round was decided: True (and returns) if it
/// tripped; raises BrokenBarrierError if it broke; False while pending.
#[pyfunction]
fn _aio_barrier_poll(py: Python<'_>, obj: &Bound<'_, PyBarrier>, arrival: &Bound<'_, PyArrival>) -> PyResult<bool> {
    match barrier_of(obj)?.get().poll_release(&arrival.get().a) {
        None => Ok(false),
        Some(Ok(())) => Ok(true),
        Some(Err(e)) => Err(barrier_err(py, e)),
    }
}

/// `_aio_barrier_timeout(barrier, arrival)`: the wait timed out: breaks the round (BrokenBarrierError) unless
/// it tripped just now (returns).
#[pyfunction]
fn _aio_barrier_timeout(py: Python<'_>, obj: &Bound<'_, PyBarrier>, arrival: &Bound<'_, PyArrival>) -> PyResult<()> {
    barrier_of(obj)?.get().time_out(&arrival.get().a).map_err(|e| barrier_err(py, e))
}

/// `_aio_barrier_abandon(barrier, arrival)`: a cancelled waiter leaves the round (as Ctrl-C in `wait` does).
#[pyfunction]
fn _aio_barrier_abandon(obj: &Bound<'_, PyBarrier>, arrival: &Bound<'_, PyArrival>) -> PyResult<()> {
    barrier_of(obj)?.get().abandon(&arrival.get().a);
    Ok(())
}

/// `_aio_check(obj, what) -> bool`: the liveness work a blocking waiter does at each slice end, for a waiting
/// coroutine's periodic re-check: recovers a queue's dead participants, frees an RWLock's dead writer or drops
/// its dead readers, reaps a Barrier's dead parties. True if that may have made progress possible. (A dead
/// lock owner is taken over by the retried acquire itself.)
#[pyfunction]
fn _aio_check(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<bool> {
    match what {
        "get" | "put" => {
            let q = obj.cast::<PyQueue>().map_err(|_| wrong(obj, what))?.get().q.open()?;
            Ok(q.recover_dead_participants() > 0)
        }
        "read" => Ok(obj.cast::<PyRwLock>().map_err(|_| wrong(obj, what))?.get().h.open()?.get().free_dead_writer()),
        "drain" => {
            Ok(obj.cast::<PyRwLock>().map_err(|_| wrong(obj, what))?.get().h.open()?.get().drain_key().is_none())
        }
        "barrier" => {
            let b = obj.cast::<PyBarrier>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            b.get().reap_dead().map_err(|e| barrier_err(py, e))?;
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// `_aio_cancel(token) -> bool`: withdraws a registration; False if it had fired already.
#[pyfunction]
fn _aio_cancel(token: u64) -> bool {
    waker::unwatch(token)
}

/// `_aio_pass_on(obj, what)`: a coroutine woken for a lock or semaphore that gives up without taking it (it was
/// cancelled) passes the wake-up on to the next sleeper of any process, as a woken thread would by taking it.
#[pyfunction]
fn _aio_pass_on(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<()> {
    match what {
        "lock" => {
            let l = lock_state(obj)?.ok_or_else(|| wrong(obj, what))?;
            futex::wake(&l.state().word, 1);
        }
        "sem" => {
            let h = obj.cast::<PySemaphore>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            futex::wake(&h.get().value, 1);
        }
        "wlock" => {
            let h = obj.cast::<PyRwLock>().map_err(|_| wrong(obj, what))?.get().h.open()?;
            futex::wake(&h.get().wlock.word, 1);
        }
        _ => {}
    }
    Ok(())
}

/// `_aio_try_lock(lock) -> bool`: the acquire of a coroutine that waited for a Lock or RLock (or an RWLock's
/// writer mutex): keeps the lock marked contended so its release wakes the next waiter; takes it over from a
/// dead owner (with an OwnerDiedWarning).
#[pyfunction]
fn _aio_try_lock(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let me = owner::me();
    let rw_open;
    let lock_open;
    let (st, rlock, what) = if let Ok(rw) = obj.cast::<PyRwLock>() {
        rw_open = rw.get().h.open()?;
        (&rw_open.get().wlock, false, "RWLock")
    } else {
        lock_open = lock_state(obj)?.ok_or_else(|| wrong(obj, "lock"))?;
        let rlock = obj.cast::<PyRLock>().is_ok();
        (lock_open.state(), rlock, if rlock { "RLock" } else { "Lock" })
    };
    if rlock && st.is_mine(me) {
        st.count.fetch_add(1, Ordering::Relaxed);
        return Ok(true);
    }
    let got = match st.try_lock_contended(me) {
        Some(a) => Some(a),
        // Free of a contended mark, or held by a dead owner: the zero-deadline acquire handles both.
        None => st.lock_as(me, &Deadline::passed()).ok(),
    };
    match got {
        Some(a) => {
            if rlock {
                st.count.store(1, Ordering::Relaxed);
            }
            report(py, a, what)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `_aio_cond_notified(cond_queue, slot) -> bool`: whether the waiter in `slot` is no longer waiting (notified).
#[pyfunction]
fn _aio_cond_notified(obj: &Bound<'_, PyCondQueue>, slot: usize) -> PyResult<bool> {
    let h = obj.get().h.open()?;
    Ok(check_slot(&h, slot)?.state.load(Ordering::SeqCst) != SLOT_WAITING)
}

/// `_aio_rw_drained(rwlock) -> bool`: for a coroutine holding the RWLock's writer mutex: no reader is left.
#[pyfunction]
fn _aio_rw_drained(obj: &Bound<'_, PyRwLock>) -> PyResult<bool> {
    let h = obj.get().h.open()?;
    let st = h.get();
    let drained = st.drained();
    if drained {
        st.mark_write_held();
    }
    Ok(drained)
}

/// `_aio_rw_abandon(rwlock)`: gives up the writer mutex a coroutine took (timeout or cancellation while readers
/// drained).
#[pyfunction]
fn _aio_rw_abandon(obj: &Bound<'_, PyRwLock>) -> PyResult<()> {
    let _ = obj.get().h.open()?.get().abandon_uncounted_write();
    Ok(())
}

/// `_aio_stats() -> (waker threads, registrations waiting)` of this process.
#[pyfunction]
fn _aio_stats() -> (usize, usize) {
    waker::stats()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyInbox>()?;
    m.add_function(wrap_pyfunction!(_aio_arm, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_cancel, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_check, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_pass_on, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_try_lock, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_cond_notified, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_rw_drained, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_rw_abandon, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_stats, m)?)?;
    m.add_class::<PyArrival>()?;
    m.add_function(wrap_pyfunction!(_aio_barrier_arrive, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_barrier_finish, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_barrier_poll, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_barrier_timeout, m)?)?;
    m.add_function(wrap_pyfunction!(_aio_barrier_abandon, m)?)?;
    Ok(())
}
