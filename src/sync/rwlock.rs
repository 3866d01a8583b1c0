//! `RWLock`: many readers or one writer, writer priority, robust to dead writers and dead readers.
//!
//! Layout: a 64-byte [`RwState`] followed by [`RW_SLOTS`] reader slots of 16 bytes (1024 bytes). Zero = free.
//!
//! * Writers serialise on `wlock`, a [`LockState`] (so a dead writer is taken over exactly like a dead `Lock`
//!   owner). Holding `wlock` also bars new readers: that is the writer priority. The writer then waits until
//!   every reader has left ([`RwState::drain_readers`]), keeping `wlock` across its sleep slices and while its
//!   caller runs signal handlers, so no reader gets in ahead of it.
//! * Readers count themselves in their process's slot (`count`), then look at `wlock.word`. If a writer holds
//!   or waits, they back out, and sleep on `rgen` until the writer leaves. The two sides form a Dekker
//!   handshake (reader: increment count, then load word; writer: CAS word, then load counts), all SeqCst, so at
//!   least one side sees the other: never a reader and a writer inside together.
//! * A reader leaving while a writer waits bumps `drain` and wakes it.
//! * Dead readers: a writer that sleeps a full slice checks the slots; a slot whose process died has its count
//!   dropped. Dead writers: readers sleeping on `rgen` check `wlock`'s owner every slice and, if it died, take
//!   it over and release it (that reader's `lock_read` reports OwnerDied).

use super::lock::{Acquired, LockState};
use super::owner::{self, Me, PID_MASK};
use super::wait::{self, Slept, WaitError};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::platform::process::{self, Start};
use crate::segment::owners::{HasOwner, Owner, OwnerTable};
use crate::shm_struct;

/// How many processes may hold read locks at the same time (threads of one process share a slot).
#[cfg(not(loom))]
pub const RW_SLOTS: usize = 1024;
/// Loom hook: the models use two slots (every slot is read on each writer check, and each read is a step loom
/// must interleave).
#[cfg(loom)]
pub const RW_SLOTS: usize = 2;

/// Bit of `RwState::writers`: a writer holds the lock (readers drained), set by `lock_write` on success and
/// cleared by every release of the write lock.
pub const WRITE_HELD: u32 = 1 << 31;

shm_struct! {
    /// The fixed part of an RWLock.
    pub struct RwState {
        /// The writers' mutex; nonzero word = a writer holds or is draining readers.
        pub wlock: LockState,
        /// Bumped when a writer leaves; blocked readers sleep on it.
        pub rgen: AtomicU32,
        /// Readers asleep on `rgen`.
        pub rsleepers: AtomicU32,
        /// Bumped by readers leaving while a writer waits; the writer sleeps on it.
        pub drain: AtomicU32,
        /// Writers inside `lock_write` (bits 0..30; a writer killed while waiting stays counted) and
        /// [`WRITE_HELD`]. For inspection only (`writers_waiting()`, `writer_locked()`): the protocol ignores it.
        pub writers: AtomicU32,
        /// Unused; zero.
        pub reserved: [AtomicU32; 4],
        /// The reader slots.
        pub slots: [ReaderSlot; RW_SLOTS],
    }
}

shm_struct! {
    /// Read locks held by one process: an entry of a [`segment::owners`](crate::segment::owners) table.
    pub struct ReaderSlot {
        /// [`Owner`] word of the process (pid and start time, one CAS to claim); 0 = free.
        pub owner: AtomicU64,
        /// Read locks it holds.
        pub count: AtomicU32,
        /// Unused; zero.
        pub reserved: AtomicU32,
    }
}

impl HasOwner for ReaderSlot {
    fn owner(&self) -> &AtomicU64 {
        &self.owner
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(RwState, rgen) == 32);
    assert!(offset_of!(RwState, rsleepers) == 36);
    assert!(offset_of!(RwState, drain) == 40);
    assert!(offset_of!(RwState, writers) == 44);
    assert!(offset_of!(RwState, slots) == 64);
    assert!(size_of::<RwState>() == 64 + 16 * RW_SLOTS);
    assert!(size_of::<ReaderSlot>() == 16);
};

/// Errors of the RWLock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RwError {
    /// Timed out or interrupted.
    Wait(WaitError),
    /// Every reader slot is used by a live process.
    TooManyReaders,
    /// Unlock of a lock the caller does not hold.
    NotHeld,
}

impl From<WaitError> for RwError {
    fn from(e: WaitError) -> Self {
        RwError::Wait(e)
    }
}

impl RwState {
    /// Finds (or claims) the calling process's reader slot.
    /// A process keeps its slot until it dies; slots are claimed lowest first, so the search is short.
    pub fn slot_of(&self, me: Me) -> Result<usize, RwError> {
        let who = Owner::of(me.process());
        let table = OwnerTable::new(&self.slots);
        if let Some(i) = table.find(who) {
            return Ok(i);
        }
        // Full: reap dead readers (their read locks are dropped; a writer may be waiting for them).
        table.claim_or_reap(who, 0, |_, s, _| self.drop_dead_reader(s)).ok_or(RwError::TooManyReaders)
    }

    /// The owner table's cleanup of a dead reader's slot: drops its read locks.
    fn drop_dead_reader(&self, s: &ReaderSlot) -> bool {
        if s.count.swap(0, Ordering::SeqCst) > 0 && self.writer_present() {
            self.drain.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(&self.drain);
        }
        true
    }

    fn writer_present(&self) -> bool {
        self.wlock.word.load(Ordering::SeqCst) != 0
    }

    fn leave_read(&self, slot: &ReaderSlot) {
        slot.count.fetch_sub(1, Ordering::SeqCst);
        if self.writer_present() {
            self.drain.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(&self.drain);
        }
    }

    /// Takes a read lock, slot `i` being the caller's (from [`slot_of`](Self::slot_of)).
    pub fn lock_read(&self, i: usize, deadline: &Deadline) -> Result<Acquired, RwError> {
        let me = owner::me();
        let slot = &self.slots[i.min(RW_SLOTS - 1)];
        let mut outcome = Acquired::Normal;
        loop {
            slot.count.fetch_add(1, Ordering::SeqCst);
            if !self.writer_present() {
                return Ok(outcome);
            }
            self.leave_read(slot);
            if wait::spin(deadline, || !self.writer_present()) {
                continue;
            }
            self.rsleepers.fetch_add(1, Ordering::SeqCst);
            let g = self.rgen.load(Ordering::SeqCst);
            let w = self.wlock.word.load(Ordering::SeqCst);
            let slept = if w == 0 { Slept::Woken } else { wait::sleep(&self.rgen, g, deadline) };
            self.rsleepers.fetch_sub(1, Ordering::SeqCst);
            match slept {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    let pid = w & PID_MASK;
                    if w != 0
                        && pid != me.pid
                        && !process::alive(pid, Start::or_any(self.wlock.owner_start.load(Ordering::Acquire)))
                        && self.wlock.try_take_over(w, me)
                    {
                        // The writer died: free the write lock, and report it to this reader.
                        self.unlock_write_inner();
                        outcome = Acquired::OwnerDied;
                        continue;
                    }
                    wait::slice_ended()?;
                }
                Slept::TimedOut => {
                    if !self.writer_present() {
                        continue;
                    }
                    return Err(RwError::Wait(WaitError::TimedOut));
                }
                Slept::Interrupted => return Err(RwError::Wait(WaitError::Interrupted)),
            }
        }
    }

    /// Releases a read lock held through slot `i`.
    pub fn unlock_read(&self, i: usize) -> Result<(), RwError> {
        let slot = &self.slots[i.min(RW_SLOTS - 1)];
        let mut c = slot.count.load(Ordering::Relaxed);
        loop {
            if c == 0 {
                return Err(RwError::NotHeld);
            }
            match slot.count.compare_exchange_weak(c, c - 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(cur) => c = cur,
            }
        }
        if self.writer_present() {
            self.drain.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(&self.drain);
        }
        Ok(())
    }

    fn readers(&self) -> u32 {
        self.slots.iter().map(|s| s.count.load(Ordering::SeqCst)).fold(0u32, u32::saturating_add)
    }

    /// Reaps the slots of dead processes that still count read locks (one `/proc` read per such slot).
    fn reap_dead_readers(&self) {
        let table = OwnerTable::new(&self.slots);
        for (i, s) in self.slots.iter().enumerate() {
            if s.count.load(Ordering::SeqCst) > 0 {
                table.reap_slot(i, &mut |_, s, _| self.drop_dead_reader(s));
            }
        }
    }

    /// Takes the write lock: [`claim_write`](Self::claim_write), then [`drain_readers`](Self::drain_readers)
    /// until no reader is left. On any error the claim is given up.
    pub fn lock_write(&self, deadline: &Deadline) -> Result<Acquired, RwError> {
        let a = self.claim_write(deadline)?;
        loop {
            match self.drain_readers(deadline) {
                Ok(()) => return Ok(a),
                // Polling (see `wait::poll_signals`) stops at slice ends; without a caller to run signal
                // handlers, just go on draining.
                Err(RwError::Wait(WaitError::Interrupted)) if !wait::polling() => {}
                Err(e) => {
                    if !matches!(e, RwError::Wait(WaitError::TimedOut)) {
                        self.abandon_write(); // a timeout gave the claim up already
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Writers waiting in `lock_write` (for the write mutex or for readers to leave).
    pub fn writers_waiting(&self) -> u32 {
        self.writers.load(Ordering::SeqCst) & !WRITE_HELD
    }

    /// Whether some thread of some process holds the write lock (a dead writer's holding counts until it is
    /// taken over).
    pub fn writer_locked(&self) -> bool {
        self.writers.load(Ordering::SeqCst) & WRITE_HELD != 0 && self.wlock.word.load(Ordering::SeqCst) != 0
    }

    /// First half of taking the write lock: takes `wlock`, which bars new readers (the writer priority), counted
    /// in `writers` as waiting. The caller must then call [`drain_readers`](Self::drain_readers) until it
    /// succeeds, or give the claim up with [`abandon_write`](Self::abandon_write).
    pub fn claim_write(&self, deadline: &Deadline) -> Result<Acquired, RwError> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        let r = self.wlock.lock_as(owner::me(), deadline);
        if r.is_err() {
            self.writers.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(r?)
    }

    /// Second half of taking the write lock (the caller holds the claim): waits until every reader has left.
    /// On a timeout the claim is given up. On [`WaitError::Interrupted`] (a signal, or a slice end while polling)
    /// the claim is *kept*, so readers stay out while the caller runs signal handlers; it then calls again with
    /// the same deadline, or [`abandon_write`](Self::abandon_write)s if a handler raised.
    pub fn drain_readers(&self, deadline: &Deadline) -> Result<(), RwError> {
        let r = self.drain_readers_uncounted(deadline);
        if r.is_ok() {
            // No longer waiting: holding.
            self.writers.fetch_sub(1, Ordering::SeqCst);
            self.writers.fetch_or(WRITE_HELD, Ordering::SeqCst);
        }
        r
    }

    fn drain_readers_uncounted(&self, deadline: &Deadline) -> Result<(), RwError> {
        loop {
            let d = self.drain.load(Ordering::SeqCst);
            if self.readers() == 0 {
                return Ok(());
            }
            if wait::spin(deadline, || self.readers() == 0) {
                return Ok(());
            }
            match wait::sleep(&self.drain, d, deadline) {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    self.reap_dead_readers();
                    if self.readers() == 0 {
                        return Ok(());
                    }
                    wait::slice_ended()?;
                }
                Slept::TimedOut | Slept::Interrupted if self.readers() == 0 => return Ok(()),
                Slept::TimedOut => {
                    self.abandon_write();
                    return Err(RwError::Wait(WaitError::TimedOut));
                }
                Slept::Interrupted => return Err(RwError::Wait(WaitError::Interrupted)),
            }
        }
    }

    /// Gives up a claim taken by [`claim_write`](Self::claim_write) before the readers drained.
    pub fn abandon_write(&self) {
        self.writers.fetch_sub(1, Ordering::SeqCst);
        self.unlock_write_inner();
    }

    /// Whether a writer holds the lock or waits for readers to leave (readers then wait).
    pub fn writer_claimed(&self) -> bool {
        self.writer_present()
    }

    fn unlock_write_inner(&self) {
        self.writers.fetch_and(!WRITE_HELD, Ordering::SeqCst);
        self.wlock.release();
        // SeqCst: pairs with the reader's rsleepers increment before it re-reads the word (no lost wake-up).
        if self.rsleepers.load(Ordering::SeqCst) > 0 {
            self.rgen.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(&self.rgen);
        }
    }

    /// Releases the write lock; the caller's process must hold it.
    pub fn unlock_write(&self) -> Result<(), RwError> {
        let me = owner::me();
        if self.wlock.word.load(Ordering::Relaxed) & PID_MASK != me.pid {
            return Err(RwError::NotHeld);
        }
        self.unlock_write_inner();
        Ok(())
    }

    /// Whether the caller's process holds the write lock.
    pub fn write_held_by_me(&self) -> bool {
        self.wlock.word.load(Ordering::Relaxed) & PID_MASK == owner::me().pid
    }

    /// Read locks held in slot `i`.
    pub fn read_count(&self, i: usize) -> u32 {
        self.slots[i.min(RW_SLOTS - 1)].count.load(Ordering::Relaxed)
    }

    /// Read locks held by all processes.
    pub fn total_readers(&self) -> u32 {
        self.readers()
    }
}

/// For waiters that sleep elsewhere (the asyncio bridge's waker). A writer there takes `wlock` like a `Lock`
/// (so it bars new readers while it waits), then waits on [`drain`](RwState::drain) until
/// [`drained`](RwState::drained); a reader waits on `rgen` while a writer is present.
impl RwState {
    /// Counts a reader as asleep on `rgen` and returns the value to sleep on, or returns `None` (counting
    /// nothing) if no writer is present now. A counted reader calls [`withdraw_reader`](Self::withdraw_reader).
    pub fn announce_reader(&self) -> Option<u32> {
        self.rsleepers.fetch_add(1, Ordering::SeqCst);
        let g = self.rgen.load(Ordering::SeqCst);
        if !self.writer_present() {
            self.rsleepers.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(g)
    }

    /// Undoes one [`announce_reader`](Self::announce_reader) that returned a value.
    pub fn withdraw_reader(&self) {
        self.rsleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// If the write lock's holder (as the word `observed` names it) is a dead process, frees the write lock and
    /// returns true, as a sleeping reader does.
    pub fn free_dead_writer(&self) -> bool {
        let me = owner::me();
        let w = self.wlock.word.load(Ordering::SeqCst);
        let pid = w & PID_MASK;
        if w != 0
            && pid != me.pid
            && !process::alive(pid, Start::or_any(self.wlock.owner_start.load(Ordering::Acquire)))
            && self.wlock.try_take_over(w, me)
        {
            self.unlock_write_inner();
            return true;
        }
        false
    }

    /// For a writer that holds `wlock`: the drain word's value to sleep on, or `None` if no reader is left
    /// (after dropping the counts of dead readers).
    pub fn drain_key(&self) -> Option<u32> {
        let d = self.drain.load(Ordering::SeqCst);
        if self.readers() == 0 {
            return None;
        }
        self.reap_dead_readers();
        (self.readers() != 0).then_some(d)
    }

    /// Whether no reader holds the lock (for a writer holding `wlock`).
    pub fn drained(&self) -> bool {
        self.readers() == 0
    }

    /// For a writer that took `wlock` itself (the asyncio path, not [`claim_write`](Self::claim_write), so it
    /// is not counted in `writers_waiting()` while readers drain): records that it now holds the write lock.
    pub fn mark_write_held(&self) {
        self.writers.fetch_or(WRITE_HELD, Ordering::SeqCst);
    }

    /// Gives up a write lock this process took (its `wlock`, asyncio path) without finishing: wakes the blocked
    /// readers.
    pub fn abandon_uncounted_write(&self) -> Result<(), RwError> {
        self.unlock_write()
    }
}

impl LockState {
    /// Takes the lock over from the (dead) owner named by `observed`; true if this caller won.
    pub(crate) fn try_take_over(&self, observed: u32, me: Me) -> bool {
        if self.word.compare_exchange(observed, me.pid | owner::WAITERS, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
            self.owner_start.store(me.start, Ordering::Relaxed);
            self.owner_tid.store(me.tid, Ordering::Relaxed);
            self.takeovers.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}
