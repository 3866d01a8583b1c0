//! The waiting half of `Condition`: one futex word per waiter, so `notify(n)` wakes exactly the `n` longest
//! waiting ones and a waiter that arrives after a notify can never steal it.
//!
//! Layout (2048 bytes): a 32-byte head, then [`COND_SLOTS`] slots of 16 bytes. A waiter claims a free slot while
//! it still holds the condition's lock (`prepare`), so every notify issued after the waiter released the lock
//! sees its slot. `notify(n)` (called with the lock held) picks the `n` waiting slots with the lowest tickets
//! and moves each from WAITING to NOTIFIED with a CAS; a waiter that times out moves its own slot from WAITING
//! to FREE with a CAS. Whichever CAS wins decides, so a notify is never lost to a timeout and never counted
//! twice. Slots of processes that died while waiting are skipped by notify (`kill(pid, 0)` probe) and reclaimed
//! when the table is full.

use super::owner;
use super::wait::{self, Slept, WaitError};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::shm_struct;

/// How many threads (in all processes together) may wait on one condition at once.
pub const COND_SLOTS: usize = 126;

/// `CondSlot::state`: free.
pub const SLOT_FREE: u32 = 0;
/// Being claimed (pid and ticket not yet written).
pub const SLOT_CLAIMED: u32 = 1;
/// A waiter sleeps on it.
pub const SLOT_WAITING: u32 = 2;
/// Notified; the waiter has not yet noticed.
pub const SLOT_NOTIFIED: u32 = 3;

shm_struct! {
    /// One waiter.
    pub struct CondSlot {
        /// `SLOT_*`; the waiter's futex word.
        pub state: AtomicU32,
        /// pid of the waiter.
        pub pid: AtomicU32,
        /// Arrival order (from `CondState::next_ticket`).
        pub ticket: AtomicU64,
    }
}

shm_struct! {
    /// The state of a condition's wait queue. Zero = no waiters.
    pub struct CondState {
        /// Next ticket to hand out.
        pub next_ticket: AtomicU64,
        /// Unused; zero.
        pub reserved: [AtomicU64; 3],
        /// The waiter slots.
        pub slots: [CondSlot; COND_SLOTS],
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<CondSlot>() == 16);
    assert!(offset_of!(CondSlot, pid) == 4);
    assert!(offset_of!(CondSlot, ticket) == 8);
    assert!(size_of::<CondState>() == 2048);
    assert!(offset_of!(CondState, slots) == 32);
};

/// Errors of [`CondState::prepare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyWaiters;

impl CondState {
    fn claim(&self, pid: u32) -> Option<usize> {
        for (i, s) in self.slots.iter().enumerate() {
            if s.state.load(Ordering::Relaxed) == SLOT_FREE
                && s.state.compare_exchange(SLOT_FREE, SLOT_CLAIMED, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                s.pid.store(pid, Ordering::Relaxed);
                s.ticket.store(self.next_ticket.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                // Release: a notifier that sees WAITING sees the pid and ticket.
                s.state.store(SLOT_WAITING, Ordering::Release);
                return Some(i);
            }
        }
        None
    }

    /// Registers the caller as a waiter. Call while holding the condition's lock, before releasing it.
    pub fn prepare(&self) -> Result<usize, TooManyWaiters> {
        let me = owner::me();
        if let Some(i) = self.claim(me.pid) {
            return Ok(i);
        }
        // Full: reclaim the slots of waiters whose process died.
        for s in &self.slots {
            let pid = s.pid.load(Ordering::Relaxed);
            if s.state.load(Ordering::Acquire) != SLOT_FREE && !owner::alive(pid, 0) {
                s.state.store(SLOT_FREE, Ordering::Release);
            }
        }
        self.claim(me.pid).ok_or(TooManyWaiters)
    }

    fn slot(&self, i: usize) -> &CondSlot {
        &self.slots[i.min(COND_SLOTS - 1)]
    }

    /// Sleeps on slot `i` (from [`prepare`](Self::prepare)) until notified or `deadline`. Returns whether it
    /// was notified; the slot is free again either way. On `Interrupted` the slot stays registered: call again
    /// with the same slot, or [`cancel`](Self::cancel) it.
    pub fn wait(&self, i: usize, deadline: &Deadline) -> Result<bool, WaitError> {
        let s = self.slot(i);
        // Anything but WAITING ends the wait: NOTIFIED, or (a corrupt pid made another process reclaim the slot
        // as a dead waiter's) a state that would otherwise make every futex wait return at once, a busy loop.
        let done = || s.state.load(Ordering::Acquire) != SLOT_WAITING;
        if !wait::spin(deadline, done) {
            loop {
                if done() {
                    break;
                }
                match wait::sleep(&s.state, SLOT_WAITING, deadline) {
                    Slept::Woken => {}
                    Slept::SliceEnd => wait::slice_ended()?,
                    Slept::TimedOut => {
                        if s.state
                            .compare_exchange(SLOT_WAITING, SLOT_FREE, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok()
                        {
                            return Ok(false);
                        }
                        // A notify won the race: it counts.
                        break;
                    }
                    Slept::Interrupted => return Err(WaitError::Interrupted),
                }
            }
        }
        // Free the slot if it is still ours; a slot taken from us is left to whoever has it (for the caller a
        // spurious wakeup, which a condition wait allows).
        let _ = s.state.compare_exchange(SLOT_NOTIFIED, SLOT_FREE, Ordering::AcqRel, Ordering::Relaxed);
        Ok(true)
    }

    /// Withdraws a registered waiter (after an interrupted wait). Returns whether a notify had reached it.
    pub fn cancel(&self, i: usize) -> bool {
        let s = self.slot(i);
        let notified = s.state.compare_exchange(SLOT_WAITING, SLOT_FREE, Ordering::AcqRel, Ordering::Acquire).is_err();
        if notified {
            let _ = s.state.compare_exchange(SLOT_NOTIFIED, SLOT_FREE, Ordering::AcqRel, Ordering::Relaxed);
        }
        notified
    }

    /// Wakes up to `n` waiters, longest waiting first. Call with the condition's lock held. Returns how many.
    pub fn notify(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let me = owner::me().pid;
        let mut waiting: Vec<(u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state.load(Ordering::Acquire) == SLOT_WAITING)
            .map(|(i, s)| (s.ticket.load(Ordering::Relaxed), i))
            .collect();
        waiting.sort_unstable();
        let mut woken = 0;
        for (_, i) in waiting {
            if woken == n {
                break;
            }
            let s = &self.slots[i];
            let pid = s.pid.load(Ordering::Relaxed);
            if pid != me && !owner::probably_alive(pid) {
                // Died while waiting: free the slot instead of wasting the notify on it.
                let _ = s.state.compare_exchange(SLOT_WAITING, SLOT_FREE, Ordering::AcqRel, Ordering::Relaxed);
                continue;
            }
            if s.state.compare_exchange(SLOT_WAITING, SLOT_NOTIFIED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                futex::wake(&s.state, 1);
                woken += 1;
            }
        }
        woken
    }

    /// Number of registered waiters.
    pub fn waiting(&self) -> usize {
        self.slots.iter().filter(|s| s.state.load(Ordering::Relaxed) == SLOT_WAITING).count()
    }
}
