//! The one lifetime API of every shared object: `segment_name`, `close()`, `closed` and `unlink()`.
//!
//! A shared object keeps its native state (the structure's handle, which holds its segments) in a [`Held`], and
//! every call borrows it through [`Held::open`] (a guard). What the four members mean, per *object* (so they
//! hold as well when several objects share one segment):
//!
//! - `close()` makes the object unusable in this process at once (later calls raise `ValueError: ... is
//!   closed`) and lets go of its state when the last call that borrowed it returns: a call blocked in another
//!   thread finishes first, and nothing is unmapped under it. Letting go is what garbage collection of the
//!   object would do: the process leaves a segment's user table when its last object there lets go, and the
//!   last process to leave removes the segment. Idempotent.
//! - `closed`: whether `close()` was called on this object.
//! - `unlink()` removes the object's name now: holders keep working, new attaches (unpickling a handle) fail
//!   with `FileNotFoundError`. What a name is belongs to the structure ([`Shared::unlink`]).
//! - `segment_name`: the segment a handle of the object names.
//!
//! Counting borrows: on an interpreter with a GIL, every guard is made and dropped by a thread holding the GIL
//! (the guard is neither `Send` nor `Sync`, so it cannot move into, or be used from, a `py.detach` closure; the
//! `&T` it lends can), so the count needs only a plain load and store, which costs next to nothing on the
//! hottest calls. A free-threaded interpreter (checked once at import) uses read-modify-writes instead.

use super::errors::{closed, IntoPyResult};
use crate::base::atomic::local::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::segment::Segment;
use pyo3::prelude::*;
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;

/// What the lifetime API needs of a structure's native state.
pub(crate) trait Shared {
    /// The segment that the object's handle names.
    fn home(&self) -> &Segment;

    /// Removes the object's name so that new attaches fail (a structure that fills its segment: the
    /// segment's name).
    fn unlink(&self) -> crate::Result<()> {
        self.home().unlink()
    }
}

/// `state`: closed.
const CLOSED: usize = 1;
/// `state`: the value was dropped (set once, by whoever saw the last borrow of a closed object go).
const DROPPED: usize = 2;
/// `state`: one running borrow.
const ONE: usize = 4;

/// Whether the interpreter runs without a GIL (set at import by [`init`]; false until then, and no object exists
/// before).
static FREE_THREADED: AtomicBool = AtomicBool::new(false);

/// Reads whether the GIL is off (`sys._is_gil_enabled()`, Python 3.13+; absent means there is a GIL). Called once
/// when the module is imported. A GIL that comes back later (an extension that needs it) keeps the atomic counts,
/// which stay correct.
pub(crate) fn init(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    if let Ok(f) = sys.getattr("_is_gil_enabled") {
        FREE_THREADED.store(!f.call0()?.is_truthy()?, Ordering::Relaxed);
    }
    Ok(())
}

/// The native state `T` of one shared object, which `close()` takes away (see the module documentation).
pub(crate) struct Held<T> {
    /// [`CLOSED`] | [`DROPPED`] | running borrows * [`ONE`].
    state: AtomicUsize,
    /// The object's identity hash, once computed (0: not yet), so that a closed object keeps the hash it had
    /// while it sat in a set or a dict.
    hash: AtomicU64,
    /// The class name, for the "closed" error.
    what: &'static str,
    value: UnsafeCell<ManuallyDrop<T>>,
}

// SAFETY: `value` is only reached through `&T` (guards) while the count says it is alive, and dropped once, by
// the one party that sets DROPPED; so sharing a `Held` shares `&T` (needs T: Sync) and may drop `T` on another
// thread (needs T: Send).
unsafe impl<T: Send + Sync> Sync for Held<T> {}

/// A running call's borrow of a [`Held`] value: the value stays alive while the guard does.
pub(crate) struct Open<'a, T> {
    held: &'a Held<T>,
    /// Neither Send nor Sync: made and dropped by one thread, which holds the GIL (see the module documentation).
    _here: PhantomData<*const ()>,
}

impl<T> std::ops::Deref for Open<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard is counted in `state`, so the value is not dropped before the guard is.
        unsafe { &*self.held.value.get() }
    }
}

impl<T> Drop for Open<'_, T> {
    fn drop(&mut self) {
        self.held.release();
    }
}

impl<T> Held<T> {
    /// `value`, open, for the class called `what`.
    pub(crate) fn new(what: &'static str, value: T) -> Self {
        Held {
            state: AtomicUsize::new(0),
            hash: AtomicU64::new(0),
            what,
            value: UnsafeCell::new(ManuallyDrop::new(value)),
        }
    }

    /// Borrows the value for a call; `None` if the object is closed.
    #[inline]
    pub(crate) fn try_open(&self) -> Option<Open<'_, T>> {
        if !self.acquire() {
            return None;
        }
        Some(Open { held: self, _here: PhantomData })
    }

    /// Borrows the value for a call; `ValueError: <what> is closed` if the object is closed.
    #[inline]
    pub(crate) fn open(&self) -> PyResult<Open<'_, T>> {
        self.try_open().ok_or_else(|| closed(self.what))
    }

    /// Counts a borrow that is not a guard's (a buffer export): the value stays alive until [`unpin`](Self::unpin).
    /// False (nothing counted) if the object is closed.
    pub(crate) fn pin(&self) -> bool {
        self.acquire()
    }

    /// Ends a borrow counted by [`pin`](Self::pin).
    ///
    /// # Safety
    /// A successful `pin` must be matched by exactly one `unpin`, from a thread holding the GIL (or attached, on
    /// a free-threaded interpreter), and nothing may use a `&T` it obtained through the pin afterwards.
    pub(crate) unsafe fn unpin(&self) {
        self.release();
    }

    /// Closes the object: new borrows fail; the value is dropped now if no call borrows it, else when the last
    /// borrow ends. Returns whether this call closed it (false if it was closed already).
    pub(crate) fn close(&self) -> bool {
        self.debug_check_attached();
        let prev = if FREE_THREADED.load(Ordering::Relaxed) {
            self.state.fetch_or(CLOSED, Ordering::AcqRel)
        } else {
            let s = self.state.load(Ordering::Relaxed);
            self.state.store(s | CLOSED, Ordering::Relaxed);
            s
        };
        if prev & CLOSED != 0 {
            return false;
        }
        if prev < ONE {
            self.drop_value();
        }
        true
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// The identity hash, computed by `f` the first time (with the object open) and remembered, so a closed
    /// object keeps it; a closed object that was never hashed raises the closed error.
    pub(crate) fn memo_hash(&self, f: impl FnOnce(&T) -> u64) -> PyResult<u64> {
        let h = self.hash.load(Ordering::Relaxed);
        if h != 0 {
            return Ok(h);
        }
        let h = f(&*self.open()?).max(1);
        self.hash.store(h, Ordering::Relaxed);
        Ok(h)
    }

    fn acquire(&self) -> bool {
        self.debug_check_attached();
        if FREE_THREADED.load(Ordering::Relaxed) {
            if self.state.fetch_add(ONE, Ordering::Acquire) & CLOSED != 0 {
                self.release();
                return false;
            }
            return true;
        }
        // With the GIL held every access to `state` is made by the thread holding it.
        let s = self.state.load(Ordering::Relaxed);
        if s & CLOSED != 0 {
            return false;
        }
        self.state.store(s + ONE, Ordering::Relaxed);
        true
    }

    fn release(&self) {
        let now = if FREE_THREADED.load(Ordering::Relaxed) {
            self.state.fetch_sub(ONE, Ordering::AcqRel) - ONE
        } else {
            let s = self.state.load(Ordering::Relaxed) - ONE;
            self.state.store(s, Ordering::Relaxed);
            s
        };
        if now == CLOSED {
            self.drop_value();
        }
    }

    /// Drops the value if nobody did: called when the object is closed and no borrow is left.
    fn drop_value(&self) {
        if self.state.compare_exchange(CLOSED, CLOSED | DROPPED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            // SAFETY: the object is closed (no borrow can start) and no borrow runs; only the party that set
            // DROPPED gets here, once.
            unsafe { ManuallyDrop::drop(&mut *self.value.get()) }
        }
    }

    #[inline]
    fn debug_check_attached(&self) {
        // SAFETY: PyGILState_Check may be called from any thread, with or without the GIL.
        debug_assert!(unsafe { pyo3::ffi::PyGILState_Check() } == 1, "{}: borrowed without the GIL", self.what);
    }
}

impl<T: Shared + Sync> Held<T> {
    /// `segment_name`: the segment a handle of the object names.
    pub(crate) fn segment_name(&self) -> PyResult<String> {
        Ok(self.open()?.home().name().to_string())
    }

    /// `unlink()`: removes the object's name now (see [`Shared::unlink`]).
    pub(crate) fn unlink(&self, py: Python<'_>) -> PyResult<()> {
        let v = self.open()?;
        let t: &T = &v;
        py.detach(|| t.unlink()).py(py)
    }
}

impl<T> Drop for Held<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() & DROPPED == 0 {
            // SAFETY: `&mut self`: no borrow exists, and nobody dropped the value.
            unsafe { ManuallyDrop::drop(self.value.get_mut()) }
        }
    }
}

// What each structure's name is. Every structure here fills its segment (or, for an embedded lock, lives in a
// block whose segment is its name), so unlinking the object unlinks its segment.

impl Shared for crate::objects::cell::SharedAtomic {
    fn home(&self) -> &Segment {
        self.segment()
    }

    /// In an arena the object's name is its cell: marked unlinked (the arena's other objects keep theirs).
    fn unlink(&self) -> crate::Result<()> {
        crate::objects::cell::SharedAtomic::unlink(self)
    }
}

impl Shared for crate::objects::block::SharedBlock {
    fn home(&self) -> &Segment {
        self.segment()
    }

    /// In an arena the object's name is its cell: marked unlinked (the arena's other objects keep theirs).
    fn unlink(&self) -> crate::Result<()> {
        crate::objects::block::SharedBlock::unlink(self)
    }
}

impl<S: crate::segment::ShmSafe> Shared for crate::sync::shared::SyncHandle<S> {
    fn home(&self) -> &Segment {
        self.segment()
    }

    /// In an arena the primitive's name is its cell: marked unlinked (the arena's other objects keep theirs).
    fn unlink(&self) -> crate::Result<()> {
        crate::sync::shared::SyncHandle::unlink(self)
    }
}

impl Shared for crate::queue::SharedQueue {
    fn home(&self) -> &Segment {
        self.segment()
    }
}

impl Shared for crate::dict::SharedDict {
    fn home(&self) -> &Segment {
        self.segment()
    }
}

impl Shared for crate::sync::shared::BarrierHandle {
    fn home(&self) -> &Segment {
        self.segment()
    }
}

impl Shared for crate::deque::SharedDeque {
    fn home(&self) -> &Segment {
        self.segment()
    }
}

impl Shared for crate::sync::shared::CondHandle {
    fn home(&self) -> &Segment {
        self.segment()
    }
}
