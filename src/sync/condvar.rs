//! The waiting half of `Condition`: one futex word per waiter, so `notify(n)` wakes exactly the `n` longest
//! waiting ones and a waiter that arrives after a notify can never steal it.
//!
//! Layout: a 32-byte head, then [`COND_SLOTS`] slots of 16 bytes, a [`segment::owners`](crate::segment::owners)
//! table: a slot is taken while its owner word names the waiter's process (threads of one process each take
//! their own slot). A waiter claims a free slot while it still holds the condition's lock (`prepare`), so every
//! notify issued after the waiter released the lock sees its slot. `notify(n)` (called with the lock held)
//! picks the `n` waiting slots with the oldest tickets and moves each from WAITING to NOTIFIED with a CAS; a
//! waiter that times out moves its own slot from WAITING to FREE with a CAS. Whichever CAS wins decides, so a
//! notify is never lost to a timeout and never counted twice. The waiter then frees the slot: state first, then
//! the owner word, so a claimer (which takes the owner word first) always finds the state FREE.
//!
//! Slots of processes that died while waiting are skipped by notify (a cheap `kill(pid, 0)` probe, then the
//! owner table's reap) and reaped when the table is full. Claims take the lowest free slot and `used` records
//! how far the taken slots reach, so notify and a claim read only the slots in use: a condition with a few
//! waiters touches its first page only, however large the table. Every method that reads slots takes `room`,
//! how many slots from the start the caller knows to be backed by /dev/shm (`sync::shared::CondHandle`
//! reserves the table's pages as waiters arrive; touching an unreserved page of a full /dev/shm would be a
//! SIGBUS), and reads no slot beyond it.

use super::wait::{self, Slept, WaitError};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::platform::process;
use crate::segment::owners::{HasOwner, Owner, OwnerTable, Seen};
use crate::shm_struct;

/// How many threads (in all processes together) may wait on one condition at once.
#[cfg(not(loom))]
pub const COND_SLOTS: usize = 1024;
/// Loom hook: the models use two slots (every slot is read by each notify, each read a step loom interleaves).
#[cfg(loom)]
pub const COND_SLOTS: usize = 2;

/// `CondSlot::state`: free (or claimed, the state not yet written).
pub const SLOT_FREE: u32 = 0;
/// A waiter sleeps on it.
pub const SLOT_WAITING: u32 = 2;
/// Notified; the waiter has not yet noticed.
pub const SLOT_NOTIFIED: u32 = 3;

shm_struct! {
    /// One waiter: an entry of a [`segment::owners`](crate::segment::owners) table.
    pub struct CondSlot {
        /// [`Owner`] word of the waiter's process; 0 = free.
        pub owner: AtomicU64,
        /// `SLOT_*`; the waiter's futex word.
        pub state: AtomicU32,
        /// Arrival order: the low 32 bits of `CondState::next_ticket` when the waiter arrived.
        pub ticket: AtomicU32,
    }
}

impl HasOwner for CondSlot {
    fn owner(&self) -> &AtomicU64 {
        &self.owner
    }
}

shm_struct! {
    /// The state of a condition's wait queue. Zero = no waiters.
    pub struct CondState {
        /// Next ticket to hand out.
        pub next_ticket: AtomicU64,
        /// Slots `0..used` may be taken (raised by a claim, lowered by notify, both under the condition's lock).
        pub used: AtomicU32,
        /// Unused; zero.
        pub reserved0: AtomicU32,
        /// Unused; zero.
        pub reserved: [AtomicU64; 2],
        /// The waiter slots.
        pub slots: [CondSlot; COND_SLOTS],
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<CondSlot>() == 16);
    assert!(offset_of!(CondSlot, state) == 8);
    assert!(offset_of!(CondSlot, ticket) == 12);
    assert!(offset_of!(CondState, used) == 8);
    assert!(offset_of!(CondState, slots) == 32);
    assert!(size_of::<CondState>() == 32 + 16 * COND_SLOTS);
};

/// Error of [`CondState::prepare_as`]: every slot it may use is held by a live waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyWaiters;

/// The owner table's cleanup of a dead waiter's slot.
fn free_state(s: &CondSlot) -> bool {
    s.state.store(SLOT_FREE, Ordering::Release);
    true
}

impl CondState {
    fn table(&self) -> OwnerTable<'_, CondSlot> {
        OwnerTable::new(&self.slots)
    }

    /// Slots `0..used()` are all that may be taken (a corrupt value is clamped).
    pub fn used(&self) -> usize {
        (self.used.load(Ordering::Acquire) as usize).min(COND_SLOTS)
    }

    fn claim(&self, who: Owner, room: usize) -> Option<usize> {
        let table = OwnerTable::new(&self.slots[..room.min(COND_SLOTS)]);
        let i = table.claim_or_reap(who, 0, |_, s, _| free_state(s))?;
        let s = &self.slots[i];
        s.ticket.store(self.next_ticket.fetch_add(1, Ordering::Relaxed) as u32, Ordering::Relaxed);
        self.used.fetch_max(i as u32 + 1, Ordering::AcqRel);
        // Release: a notifier that sees WAITING sees the ticket.
        s.state.store(SLOT_WAITING, Ordering::Release);
        Some(i)
    }

    /// Registers process `who` (the caller: `Owner::me()`; loom models play several processes) as a waiter,
    /// in one of the first `room` slots (at least `used() + 1` of them, or all, for the claim to find the lowest
    /// free one). Call while holding the condition's lock, before releasing it. When those slots are all taken,
    /// the slots of dead waiters are reaped first; if every one holds a live waiter it is an error.
    pub fn prepare_as(&self, who: Owner, room: usize) -> Result<usize, TooManyWaiters> {
        self.claim(who, room).ok_or(TooManyWaiters)
    }

    fn slot(&self, i: usize) -> &CondSlot {
        &self.slots[i.min(COND_SLOTS - 1)]
    }

    /// Frees slot `i` after its wait ended (if it still holds `state`: a slot taken from us is left to whoever
    /// has it).
    fn leave(&self, i: usize, state: u32) {
        let s = self.slot(i);
        let who = Owner(s.owner.load(Ordering::Relaxed));
        if s.state.compare_exchange(state, SLOT_FREE, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            self.table().release(i.min(COND_SLOTS - 1), who);
        }
    }

    /// Sleeps on slot `i` (from [`prepare_as`](Self::prepare_as)) until notified or `deadline`. Returns whether it
    /// was notified; the slot is free again either way. On `Interrupted` the slot stays registered: call again
    /// with the same slot, or [`cancel`](Self::cancel) it.
    pub fn wait(&self, i: usize, deadline: &Deadline) -> Result<bool, WaitError> {
        let s = self.slot(i);
        // Anything but WAITING ends the wait: NOTIFIED, or (a corrupt word made another process reap the slot
        // as a dead waiter's) a state that would otherwise make every futex wait return at once, a busy loop.
        let done = || s.state.load(Ordering::Acquire) != SLOT_WAITING;
        if !wait::spin(deadline, done) {
            loop {
                if done() {
                    break;
                }
                match wait::sleep(&s.state, SLOT_WAITING, deadline) {
                    Slept::Woken => {}
                    Slept::SliceEnd => {
                        // Keep our slot inside `used` even if a `prepare` made without the lock raced a notify
                        // that lowered it (with the lock held, as documented, that cannot happen).
                        self.used.fetch_max(i.min(COND_SLOTS - 1) as u32 + 1, Ordering::AcqRel);
                        wait::slice_ended()?
                    }
                    Slept::TimedOut => {
                        let who = Owner(s.owner.load(Ordering::Relaxed));
                        if s.state
                            .compare_exchange(SLOT_WAITING, SLOT_FREE, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                        {
                            self.table().release(i.min(COND_SLOTS - 1), who);
                            return Ok(false);
                        }
                        // A notify won the race: it counts.
                        break;
                    }
                    Slept::Interrupted => return Err(WaitError::Interrupted),
                }
            }
        }
        // For the caller a slot taken from us is a spurious wakeup, which a condition wait allows.
        self.leave(i, SLOT_NOTIFIED);
        Ok(true)
    }

    /// Withdraws a registered waiter (after an interrupted wait). Returns whether a notify had reached it.
    pub fn cancel(&self, i: usize) -> bool {
        let s = self.slot(i);
        let who = Owner(s.owner.load(Ordering::Relaxed));
        let withdrawn = s.state.compare_exchange(SLOT_WAITING, SLOT_FREE, Ordering::AcqRel, Ordering::Acquire).is_ok();
        if withdrawn {
            self.table().release(i.min(COND_SLOTS - 1), who);
        } else {
            self.leave(i, SLOT_NOTIFIED);
        }
        !withdrawn
    }

    /// Wakes up to `n` waiters, longest waiting first, reading slots `0..min(used(), room)`. Call with the
    /// condition's lock held. Returns how many.
    pub fn notify(&self, n: usize, room: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let me = process::current().pid;
        let used = self.used().min(room);
        let next = self.next_ticket.load(Ordering::Relaxed) as u32;
        let mut last_taken = 0;
        // (age, slot): tickets are 32 bits, so order by the distance back from the next ticket.
        let mut waiting: Vec<(u32, usize)> = Vec::new();
        for (i, s) in self.slots[..used].iter().enumerate() {
            if s.owner.load(Ordering::Acquire) != 0 {
                last_taken = i + 1;
                if s.state.load(Ordering::Acquire) == SLOT_WAITING {
                    waiting.push((next.wrapping_sub(s.ticket.load(Ordering::Relaxed)), i));
                }
            }
        }
        // Claims happen under the lock this caller holds, so no slot past the last taken one is being claimed.
        if last_taken < used {
            // A CAS, not a store: a claim that raced us (only possible without the lock) keeps its raise.
            let _ = self.used.compare_exchange(used as u32, last_taken as u32, Ordering::AcqRel, Ordering::Relaxed);
        }
        waiting.sort_unstable_by(|a, b| b.cmp(a));
        let table = self.table();
        let mut woken = 0;
        for (_, i) in waiting {
            if woken == n {
                break;
            }
            let s = &self.slots[i];
            let pid = Owner(s.owner.load(Ordering::Relaxed)).pid();
            if pid != me && !process::exists(pid) {
                // Died while waiting: reap the slot instead of wasting the notify on it.
                if table.reap_slot(i, &mut |_, s, _| free_state(s)) != Seen::Fine {
                    continue;
                }
            }
            if s.state.compare_exchange(SLOT_WAITING, SLOT_NOTIFIED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                futex::wake(&s.state, 1);
                woken += 1;
            }
        }
        woken
    }

    /// Number of registered waiters (among slots `0..min(used(), room)`).
    pub fn waiting(&self, room: usize) -> usize {
        let n = self.used().min(room);
        self.slots[..n].iter().filter(|s| s.state.load(Ordering::Relaxed) == SLOT_WAITING).count()
    }
}
