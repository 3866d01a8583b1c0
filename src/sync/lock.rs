//! `Lock` and `RLock`: a futex mutex whose word names its owner, so a dead owner is detected and replaced.
//!
//! Layout (`shm-layouts/sync.md`, 32 bytes, all zero = unlocked):
//!
//! | offset | field         | meaning                                                                   |
//! |--------|---------------|---------------------------------------------------------------------------|
//! | 0      | `word`        | 0 = unlocked; else owner pid, plus [`WAITERS`] when someone may sleep     |
//! | 4      | `flags`       | [`FLAG_OWNER_DIED`]: the current holding was taken over from a dead owner |
//! | 8      | `owner_start` | start time of the owner process, 0 while unknown                          |
//! | 16     | `owner_tid`   | kernel thread id of the owner (RLock ownership, reprs), 0 while unknown   |
//! | 20     | `count`       | RLock recursion depth (0 for a Lock)                                      |
//! | 24     | `takeovers`   | how many times a dead owner's holding was taken over (diagnostics)        |
//!
//! Invariants: `word` is changed only by compare-and-swap (acquire, takeover) and swap (release). The owner
//! fields are written by the owner after its CAS and cleared by the releaser before its swap, so a reader that
//! sees `word = pid` sees in `owner_start` either 0 or the start time of the process that holds it now; a stale
//! start time of an earlier holder can only appear together with a word that has changed since, which the
//! takeover CAS then rejects.
//!
//! Owner died: a waiter that sleeps a full [`SLICE`](super::wait::SLICE) (or reaches its deadline) checks whether
//! the owner process is alive (pid + start time, zombies count as dead). If not, it takes the lock over with a CAS
//! from the word it observed (so exactly one waiter wins), sets [`FLAG_OWNER_DIED`] and its acquire returns
//! [`Acquired::OwnerDied`]. The flag is cleared when that holding is released.

use super::owner::{self, Me, PID_MASK, WAITERS};
use super::wait::{self, Slept, WaitError};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::platform::process::{self, Start};
use crate::segment::ShmSafe;
use crate::shm_struct;

/// `flags` bit: the current holding was taken over from an owner that died holding the lock.
pub const FLAG_OWNER_DIED: u32 = 1;

/// How an acquire succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Acquired {
    /// The lock was free (or released to us).
    Normal,
    /// The previous owner's process died holding the lock; the caller holds it now. Data it protects may be in
    /// a half-updated state.
    OwnerDied,
}

impl Acquired {
    /// Whether the previous owner died.
    pub fn owner_died(self) -> bool {
        self == Acquired::OwnerDied
    }
}

/// A raw cross-process lock: the small interface the safe guards build on.
///
/// # Safety
///
/// Implementations must provide mutual exclusion across every thread of every process that maps the state:
/// after `try_lock` or `lock` returned `Some(_)`/`Ok(_)`, no other call on the same state returns success until
/// `unlock` has been called, with one exception: when the holder's process has died, exactly one acquirer may
/// succeed and must then report [`Acquired::OwnerDied`]. Their state must be [`ShmSafe`], and all-zero bytes
/// must be a valid unlocked state. `lock` must return within a bounded time after its deadline (a few ms), and
/// must not sleep forever on a holder that died.
pub unsafe trait RawLock: ShmSafe {
    /// Takes the lock if it is free, without waiting.
    fn try_lock(&self) -> Option<Acquired>;

    /// Takes the lock, waiting until `deadline` (spinning briefly, then sleeping on a shared futex).
    fn lock(&self, deadline: &Deadline) -> Result<Acquired, WaitError>;

    /// Releases the lock.
    ///
    /// # Safety
    ///
    /// The lock must be held, and the caller must be its holder or act for it (a `Lock`, like
    /// `multiprocessing.Lock`, may be released by another thread or process on the holder's behalf). Releasing
    /// a lock that is not held would let two later acquirers in at once.
    unsafe fn unlock(&self);

    /// Whether the lock is held right now (by anyone).
    fn is_locked(&self) -> bool;
}

/// Holds a [`RawLock`] until dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RawGuard<'a, L: RawLock> {
    lock: &'a L,
    /// How the lock was acquired.
    pub acquired: Acquired,
}

impl<L: RawLock> Drop for RawGuard<'_, L> {
    fn drop(&mut self) {
        // SAFETY: the guard exists only while this caller holds the lock (made by `guard`/`try_guard` from a
        // successful acquire) and is dropped once.
        unsafe { self.lock.unlock() }
    }
}

/// Acquires `lock` until `deadline` and returns a guard that releases it.
pub fn guard<'a, L: RawLock>(lock: &'a L, deadline: &Deadline) -> Result<RawGuard<'a, L>, WaitError> {
    let acquired = lock.lock(deadline)?;
    Ok(RawGuard { lock, acquired })
}

/// Acquires `lock` if it is free and returns a guard that releases it.
pub fn try_guard<L: RawLock>(lock: &L) -> Option<RawGuard<'_, L>> {
    lock.try_lock().map(|acquired| RawGuard { lock, acquired })
}

shm_struct! {
    /// The state of a `Lock` (and, wrapped in [`RLockState`], of an `RLock`). See the module docs.
    pub struct LockState {
        /// 0, or owner pid | [`WAITERS`]. The futex word.
        pub word: AtomicU32,
        /// [`FLAG_OWNER_DIED`].
        pub flags: AtomicU32,
        /// Owner start time, 0 while unknown.
        pub owner_start: AtomicU64,
        /// Owner thread id, 0 while unknown.
        pub owner_tid: AtomicU32,
        /// RLock recursion depth.
        pub count: AtomicU32,
        /// Number of takeovers from dead owners.
        pub takeovers: AtomicU64,
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<LockState>() == 32);
    assert!(align_of::<LockState>() == 8);
    assert!(offset_of!(LockState, word) == 0);
    assert!(offset_of!(LockState, flags) == 4);
    assert!(offset_of!(LockState, owner_start) == 8);
    assert!(offset_of!(LockState, owner_tid) == 16);
    assert!(offset_of!(LockState, count) == 20);
    assert!(offset_of!(LockState, takeovers) == 24);
};

/// Who holds a lock, as far as the state tells (the lock word's pid and the recorded thread; not an owner-table
/// [`Owner`](crate::segment::owners::Owner) word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Owner pid.
    pub pid: u32,
    /// Owner thread id (0 while the owner is still recording it).
    pub tid: u32,
}

impl LockState {
    #[inline]
    fn cas(&self, from: u32, to: u32) -> bool {
        // SeqCst (not just Acquire): the RWLock pairs this word with its reader counts in a Dekker-style
        // handshake (see rwlock.rs). On x86-64 a locked cmpxchg is a full barrier either way.
        self.word.compare_exchange(from, to, Ordering::SeqCst, Ordering::Relaxed).is_ok()
    }

    #[inline]
    fn record(&self, me: Me, died: bool) {
        // Relaxed: advisory fields; see the module docs for why readers tolerate seeing them late.
        self.owner_start.store(me.start, Ordering::Relaxed);
        self.owner_tid.store(me.tid, Ordering::Relaxed);
        if died {
            self.flags.fetch_or(FLAG_OWNER_DIED, Ordering::Relaxed);
            self.takeovers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the lock if free.
    #[inline]
    pub fn try_lock_as(&self, me: Me) -> Option<Acquired> {
        if self.cas(0, me.pid) {
            self.record(me, false);
            Some(Acquired::Normal)
        } else {
            None
        }
    }

    /// If the owner named by `observed` is dead, takes the lock over (CAS from `observed`) and returns true.
    fn take_over_if_dead(&self, observed: u32, me: Me) -> bool {
        let pid = observed & PID_MASK;
        if pid == me.pid {
            // Held by a thread of this very process: alive by definition.
            return false;
        }
        let start = self.owner_start.load(Ordering::Acquire);
        if process::alive(pid, Start::or_any(start)) {
            return false;
        }
        // Keep WAITERS: other waiters may be asleep and must be woken by our release.
        if self.cas(observed, me.pid | WAITERS) {
            self.record(me, true);
            true
        } else {
            false
        }
    }

    /// The slow path of [`RawLock::lock`].
    #[cold]
    fn lock_slow(&self, me: Me, deadline: &Deadline) -> Result<Acquired, WaitError> {
        // Spin while the holder is likely to release soon, without announcing ourselves as a waiter (so the
        // release stays a plain swap with no wake-up system call).
        let mut got = false;
        wait::spin_backoff(deadline, || {
            let w = self.word.load(Ordering::Relaxed);
            got = w == 0 && self.cas(0, me.pid);
            got
        });
        if got {
            self.record(me, false);
            return Ok(Acquired::Normal);
        }
        loop {
            let mut w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                // We may have consumed the wake-up meant for another sleeper: take the lock with WAITERS set so
                // our release wakes the next one.
                if self.cas(0, me.pid | WAITERS) {
                    self.record(me, false);
                    return Ok(Acquired::Normal);
                }
                continue;
            }
            if w & WAITERS == 0 {
                if !self.cas(w, w | WAITERS) {
                    continue;
                }
                w |= WAITERS;
            }
            match wait::sleep(&self.word, w, deadline) {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    if self.take_over_if_dead(w, me) {
                        return Ok(Acquired::OwnerDied);
                    }
                    wait::slice_ended()?;
                }
                Slept::TimedOut => {
                    // One last look: the deadline must not hide a dead owner from a timed acquire.
                    if self.take_over_if_dead(self.word.load(Ordering::Relaxed), me) {
                        return Ok(Acquired::OwnerDied);
                    }
                    if self.try_lock_as(me).is_some() {
                        return Ok(Acquired::Normal);
                    }
                    return Err(WaitError::TimedOut);
                }
                Slept::Interrupted => return Err(WaitError::Interrupted),
            }
        }
    }

    /// Acquire as `me` (the core of [`RawLock::lock`]).
    #[inline]
    pub fn lock_as(&self, me: Me, deadline: &Deadline) -> Result<Acquired, WaitError> {
        if let Some(a) = self.try_lock_as(me) {
            return Ok(a);
        }
        if deadline.expired() {
            // A zero timeout still checks for a dead owner (cheap relative to a caller that chose to block).
            let w = self.word.load(Ordering::Relaxed);
            if w != 0 && self.take_over_if_dead(w, me) {
                return Ok(Acquired::OwnerDied);
            }
            return Err(WaitError::TimedOut);
        }
        self.lock_slow(me, deadline)
    }

    /// Releases; returns false (changing nothing visible) if the lock was not held.
    #[inline]
    pub fn release(&self) -> bool {
        if self.word.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.owner_tid.store(0, Ordering::Relaxed);
        self.owner_start.store(0, Ordering::Relaxed);
        if self.flags.load(Ordering::Relaxed) != 0 {
            self.flags.fetch_and(!FLAG_OWNER_DIED, Ordering::Relaxed);
        }
        // Release (SeqCst, see `cas`): the protected data and the cleared owner fields are visible to the next
        // owner.
        let old = self.word.swap(0, Ordering::SeqCst);
        if old & WAITERS != 0 {
            futex::wake(&self.word, 1);
        }
        old != 0
    }

    /// For a waiter that sleeps elsewhere (the asyncio bridge's waker): marks the lock contended, so its release
    /// wakes the word, and returns the value to sleep on; `None` if the lock is free now (try again instead).
    pub fn announce_waiter(&self) -> Option<u32> {
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                return None;
            }
            if w & WAITERS != 0 || self.cas(w, w | WAITERS) {
                return Some(w | WAITERS);
            }
        }
    }

    /// Takes the lock if free, keeping it marked contended (as a woken sleeper does), so this holder's release
    /// wakes the next sleeper: for waiters that were announced with [`announce_waiter`](Self::announce_waiter).
    pub fn try_lock_contended(&self, me: Me) -> Option<Acquired> {
        if self.cas(0, me.pid | WAITERS) {
            self.record(me, false);
            Some(Acquired::Normal)
        } else {
            None
        }
    }

    /// The current owner, if locked.
    pub fn owner(&self) -> Option<Holder> {
        let w = self.word.load(Ordering::Acquire);
        (w != 0).then(|| Holder { pid: w & PID_MASK, tid: self.owner_tid.load(Ordering::Relaxed) })
    }

    /// Whether the caller's thread holds the lock.
    #[inline]
    pub fn is_mine(&self, me: Me) -> bool {
        // A stale owner_tid equal to ours is impossible: we clear it before every release we make, and our own
        // later loads see at least our own store.
        (self.word.load(Ordering::Relaxed) & PID_MASK) == me.pid
            && self.owner_tid.load(Ordering::Relaxed) == me.tid
            && self.owner_start.load(Ordering::Relaxed) == me.start
    }

    /// Whether the current holding was taken over from a dead owner.
    pub fn owner_died(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & FLAG_OWNER_DIED != 0
    }

    /// How many dead-owner takeovers this lock has seen.
    pub fn takeovers(&self) -> u64 {
        self.takeovers.load(Ordering::Relaxed)
    }
}

// SAFETY: exclusion: the word goes 0 -> pid only by CAS, and back to 0 only by `unlock`; a second acquirer can
// only succeed through `take_over_if_dead`, which requires the recorded owner to be dead and reports OwnerDied.
// The state is ShmSafe and zero = unlocked. Sleeps are bounded by SLICE and the deadline.
unsafe impl RawLock for LockState {
    #[inline]
    fn try_lock(&self) -> Option<Acquired> {
        self.try_lock_as(owner::me())
    }

    #[inline]
    fn lock(&self, deadline: &Deadline) -> Result<Acquired, WaitError> {
        self.lock_as(owner::me(), deadline)
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.release();
    }

    fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) != 0
    }
}

/// Errors of [`RLockState::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotOwner;

/// A recursive lock: the [`LockState`] layout, owned by one (process, thread), re-entered with `count`.
#[repr(transparent)]
pub struct RLockState(pub LockState);

// SAFETY: a transparent wrapper of a ShmSafe type.
unsafe impl ShmSafe for RLockState {}

impl RLockState {
    /// Acquires (or re-enters) as the calling thread.
    #[inline]
    pub fn acquire(&self, deadline: &Deadline) -> Result<Acquired, WaitError> {
        let me = owner::me();
        if self.0.is_mine(me) {
            // Only the owner thread touches `count` while it holds the lock.
            self.0.count.fetch_add(1, Ordering::Relaxed);
            return Ok(Acquired::Normal);
        }
        let a = self.0.lock_as(me, deadline)?;
        self.0.count.store(1, Ordering::Relaxed);
        Ok(a)
    }

    /// Releases one level; returns the remaining depth.
    #[inline]
    pub fn release(&self) -> Result<u32, NotOwner> {
        let me = owner::me();
        if !self.0.is_mine(me) {
            return Err(NotOwner);
        }
        let c = self.0.count.load(Ordering::Relaxed);
        if c > 1 {
            self.0.count.store(c - 1, Ordering::Relaxed);
            return Ok(c - 1);
        }
        self.0.count.store(0, Ordering::Relaxed);
        self.0.release();
        Ok(0)
    }

    /// Releases every level at once (for `Condition.wait`); returns the depth to restore.
    pub fn release_save(&self) -> Result<u32, NotOwner> {
        let me = owner::me();
        if !self.0.is_mine(me) {
            return Err(NotOwner);
        }
        let c = self.0.count.swap(0, Ordering::Relaxed).max(1);
        self.0.release();
        Ok(c)
    }

    /// Re-acquires and restores the depth saved by [`release_save`](Self::release_save).
    pub fn acquire_restore(&self, count: u32, deadline: &Deadline) -> Result<Acquired, WaitError> {
        let a = self.0.lock_as(owner::me(), deadline)?;
        self.0.count.store(count.max(1), Ordering::Relaxed);
        Ok(a)
    }

    /// Recursion depth (meaningful to the owner).
    pub fn count(&self) -> u32 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Whether the calling thread owns it.
    pub fn is_mine(&self) -> bool {
        self.0.is_mine(owner::me())
    }
}

// SAFETY: as for LockState: the only path from one owner to another is `release` (count reaching 0) or a
// takeover from a dead owner, reported as OwnerDied.
unsafe impl RawLock for RLockState {
    fn try_lock(&self) -> Option<Acquired> {
        let me = owner::me();
        if self.0.is_mine(me) {
            self.0.count.fetch_add(1, Ordering::Relaxed);
            return Some(Acquired::Normal);
        }
        let a = self.0.try_lock_as(me)?;
        self.0.count.store(1, Ordering::Relaxed);
        Some(a)
    }

    fn lock(&self, deadline: &Deadline) -> Result<Acquired, WaitError> {
        self.acquire(deadline)
    }

    unsafe fn unlock(&self) {
        let _ = self.release();
    }

    fn is_locked(&self) -> bool {
        self.0.is_locked()
    }
}
