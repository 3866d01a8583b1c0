//! `Barrier`: CPython's `threading.Barrier` state machine, kept in shared memory under a robust internal mutex,
//! with a table of who is inside so that a waiter whose process died breaks the barrier instead of hanging it.
//!
//! Layout: a 64-byte [`BarrierState`] followed by `parties` [`BarrierSlot`]s of 16 bytes. All zero = a broken-free
//! barrier in the filling phase (the creator stores `parties`).
//!
//! Phases (as in CPython: filling 0, draining 1, resetting -1, broken -2), plus ACTION: the last arriver runs
//! the user's action outside the internal mutex (it is Python code), and new arrivals wait as during draining.
//! Every phase change bumps `seq`, the futex word waiters sleep on. Each thread inside `wait` owns one slot
//! (pid + start time) from arrival to exit; sleepers check the slots every slice, and a dead one is removed
//! from the count and breaks the barrier (if the round was still filling), so every other waiter gets
//! `BrokenBarrierError`. If a process dies inside the internal mutex, the next locker gets OwnerDied, treats the
//! state as torn, breaks the barrier and sweeps dead slots.

use super::lock::{Acquired, LockState};
use super::owner;
use super::wait::{self, Slept};
use crate::platform::futex::{self, Deadline};
use crate::segment::ShmSafe;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Filling: arrivals are counted.
pub const FILLING: u32 = 0;
/// Draining: the round tripped; waiters are leaving.
pub const DRAINING: u32 = 1;
/// The last arriver runs the action.
pub const ACTION: u32 = 2;
/// `reset()` while waiters were inside: they leave with BrokenBarrierError.
pub const RESETTING: u32 = 3;
/// Broken (timeout, abort, action failure, dead waiter) until `reset()`.
pub const BROKEN: u32 = 4;

/// The fixed part of a barrier.
#[repr(C)]
pub struct BarrierState {
    /// Internal mutex over the fields below and the slots.
    pub lock: LockState,
    /// Bumped on every phase change; the futex word waiters sleep on.
    pub seq: AtomicU32,
    /// Threads asleep on `seq` (wakers skip the system call when 0).
    pub sleepers: AtomicU32,
    /// Number of parties (fixed at creation).
    pub parties: AtomicU32,
    /// One of the phase constants.
    pub phase: AtomicU32,
    /// Threads inside `wait` (CPython's `_count`).
    pub count: AtomicU32,
    /// Unused; zero.
    pub reserved: AtomicU32,
    /// Rounds completed (diagnostics).
    pub rounds: AtomicU64,
}

/// A thread inside `wait`. `pid == 0`: free.
#[repr(C)]
pub struct BarrierSlot {
    /// pid of the waiter.
    pub pid: AtomicU32,
    /// Unused; zero.
    pub reserved: AtomicU32,
    /// Its process start time.
    pub start: AtomicU64,
}

// SAFETY: repr(C), atomics only, no padding (asserted), zero is valid.
unsafe impl ShmSafe for BarrierState {}
// SAFETY: as above.
unsafe impl ShmSafe for BarrierSlot {}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<BarrierState>() == 64);
    assert!(offset_of!(BarrierState, seq) == 32);
    assert!(offset_of!(BarrierState, sleepers) == 36);
    assert!(offset_of!(BarrierState, parties) == 40);
    assert!(offset_of!(BarrierState, phase) == 44);
    assert!(offset_of!(BarrierState, count) == 48);
    assert!(offset_of!(BarrierState, rounds) == 56);
    assert!(size_of::<BarrierSlot>() == 16);
    assert!(offset_of!(BarrierSlot, start) == 8);
};

/// Why a barrier wait failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierError {
    /// The barrier is (or became) broken, or was reset: `threading.BrokenBarrierError`.
    Broken,
    /// EINTR while sleeping: run signal handlers, then call the same step again (or `abandon`).
    Interrupted,
}

/// A counted arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The value `wait()` returns (arrival order, 0-based).
    pub index: u32,
    /// Whether this arrival completed the round: run the action, then [`BarrierRef::finish_last`].
    pub last: bool,
    slot: usize,
}

/// A barrier: its state and slot table, resolved (bounds-checked) by the caller.
#[derive(Clone, Copy)]
pub struct BarrierRef<'a> {
    state: &'a BarrierState,
    slots: &'a [BarrierSlot],
}

struct Locked<'a>(&'a LockState);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<'a> BarrierRef<'a> {
    /// Wraps a state and its slots (`slots.len()` is the party count used from here on).
    pub fn new(state: &'a BarrierState, slots: &'a [BarrierSlot]) -> Self {
        BarrierRef { state, slots }
    }

    /// Number of parties.
    pub fn parties(&self) -> u32 {
        self.slots.len() as u32
    }

    fn phase(&self) -> u32 {
        self.state.phase.load(Ordering::Relaxed)
    }

    fn set_phase(&self, p: u32) {
        self.state.phase.store(p, Ordering::Relaxed);
    }

    fn count(&self) -> u32 {
        self.state.count.load(Ordering::Relaxed)
    }

    /// Takes the internal mutex (its critical sections are short; a signal does not interrupt taking it).
    fn lock(&self) -> Locked<'a> {
        let me = owner::me();
        let forever = Deadline::after(None);
        loop {
            match self.state.lock.lock_as(me, &forever) {
                Ok(Acquired::Normal) => return Locked(&self.state.lock),
                Ok(Acquired::OwnerDied) => {
                    // A process died inside a critical section: the state may be half-updated.
                    let g = Locked(&self.state.lock);
                    if matches!(self.phase(), FILLING | ACTION) {
                        self.set_phase(BROKEN);
                    }
                    self.reap_locked();
                    self.notify_all();
                    return g;
                }
                Err(_) => continue,
            }
        }
    }

    fn notify_all(&self) {
        // SeqCst with `sleepers`: the handshake described in semaphore.rs.
        self.state.seq.fetch_add(1, Ordering::SeqCst);
        if self.state.sleepers.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&self.state.seq);
        }
    }

    /// Sleeps (without the mutex) until `seq` moves from `s0`, one slice at most.
    fn wait_change(&self, s0: u32, deadline: &Deadline) -> Slept {
        if wait::spin(deadline, || self.state.seq.load(Ordering::Acquire) != s0) {
            return Slept::Woken;
        }
        self.state.sleepers.fetch_add(1, Ordering::SeqCst);
        let r = if self.state.seq.load(Ordering::SeqCst) != s0 {
            Slept::Woken
        } else {
            wait::sleep(&self.state.seq, s0, deadline)
        };
        self.state.sleepers.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// CPython's `_exit`: once the last waiter left, draining/resetting ends.
    fn exit_locked(&self) {
        if self.count() == 0 && matches!(self.phase(), DRAINING | RESETTING) {
            self.set_phase(FILLING);
            self.notify_all();
        }
    }

    fn leave_locked(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.pid.store(0, Ordering::Relaxed);
            s.start.store(0, Ordering::Relaxed);
        }
        self.state
            .count
            .store(self.count().saturating_sub(1), Ordering::Relaxed);
        self.exit_locked();
    }

    /// Removes waiters whose process died; breaks a filling round. Returns whether any was found.
    fn reap_locked(&self) -> bool {
        let me = owner::me().pid;
        let mut found = false;
        for s in self.slots {
            let pid = s.pid.load(Ordering::Relaxed);
            if pid == 0 || pid == me {
                continue;
            }
            if !owner::alive(pid, s.start.load(Ordering::Relaxed)) {
                s.pid.store(0, Ordering::Relaxed);
                s.start.store(0, Ordering::Relaxed);
                self.state
                    .count
                    .store(self.count().saturating_sub(1), Ordering::Relaxed);
                found = true;
            }
        }
        if found {
            if matches!(self.phase(), FILLING | ACTION) {
                self.set_phase(BROKEN);
            }
            self.exit_locked();
            self.notify_all();
        }
        found
    }

    /// Arrives: waits while a previous round drains (CPython's `_enter`), then counts the caller in.
    pub fn arrive(&self) -> Result<Arrival, BarrierError> {
        let forever = Deadline::after(None);
        loop {
            let g = self.lock();
            match self.phase() {
                FILLING => {
                    let index = self.count();
                    let me = owner::me();
                    let Some(slot) = self
                        .slots
                        .iter()
                        .position(|s| s.pid.load(Ordering::Relaxed) == 0)
                    else {
                        // More threads inside than parties: only possible if the state is corrupt.
                        self.set_phase(BROKEN);
                        self.notify_all();
                        return Err(BarrierError::Broken);
                    };
                    self.slots[slot].start.store(me.start, Ordering::Relaxed);
                    self.slots[slot].pid.store(me.pid, Ordering::Relaxed);
                    self.state.count.store(index + 1, Ordering::Relaxed);
                    let last = index + 1 >= self.parties();
                    if last {
                        self.set_phase(ACTION);
                    }
                    drop(g);
                    return Ok(Arrival { index, last, slot });
                }
                BROKEN => return Err(BarrierError::Broken),
                _ => {
                    let s0 = self.state.seq.load(Ordering::Relaxed);
                    drop(g);
                    match self.wait_change(s0, &forever) {
                        Slept::Interrupted => return Err(BarrierError::Interrupted),
                        Slept::SliceEnd => {
                            let g = self.lock();
                            self.reap_locked();
                            drop(g);
                            if wait::slice_ended().is_err() {
                                return Err(BarrierError::Interrupted);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The last arriver reports whether its action succeeded; releases the round (or breaks it) and leaves.
    pub fn finish_last(&self, arrival: &Arrival, action_ok: bool) -> Result<(), BarrierError> {
        let _g = self.lock();
        let r = if self.phase() == ACTION && action_ok {
            self.set_phase(DRAINING);
            self.state.rounds.fetch_add(1, Ordering::Relaxed);
            self.notify_all();
            Ok(())
        } else {
            if matches!(self.phase(), ACTION | FILLING) {
                self.set_phase(BROKEN);
                self.notify_all();
            }
            Err(BarrierError::Broken)
        };
        self.leave_locked(arrival.slot);
        r
    }

    /// A non-last arriver waits for the round to trip (Ok), or for a break/reset/timeout (Broken). On
    /// `Interrupted` the caller is still inside: call again, or [`abandon`](Self::abandon).
    pub fn wait_release(&self, arrival: &Arrival, deadline: &Deadline) -> Result<(), BarrierError> {
        loop {
            let g = self.lock();
            match self.phase() {
                FILLING | ACTION => {}
                DRAINING => {
                    self.leave_locked(arrival.slot);
                    return Ok(());
                }
                _ => {
                    self.leave_locked(arrival.slot);
                    return Err(BarrierError::Broken);
                }
            }
            let s0 = self.state.seq.load(Ordering::Relaxed);
            drop(g);
            match self.wait_change(s0, deadline) {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    let g = self.lock();
                    self.reap_locked();
                    drop(g);
                    if wait::slice_ended().is_err() {
                        return Err(BarrierError::Interrupted);
                    }
                }
                Slept::TimedOut => {
                    let _g = self.lock();
                    match self.phase() {
                        FILLING | ACTION => {
                            // CPython: a timeout breaks the barrier for everyone.
                            self.set_phase(BROKEN);
                            self.notify_all();
                            self.leave_locked(arrival.slot);
                            return Err(BarrierError::Broken);
                        }
                        DRAINING => {
                            self.leave_locked(arrival.slot);
                            return Ok(());
                        }
                        _ => {
                            self.leave_locked(arrival.slot);
                            return Err(BarrierError::Broken);
                        }
                    }
                }
                Slept::Interrupted => return Err(BarrierError::Interrupted),
            }
        }
    }

    /// Leaves after an interrupted wait whose exception propagates (like CPython's `finally: _count -= 1`).
    pub fn abandon(&self, arrival: &Arrival) {
        let _g = self.lock();
        self.leave_locked(arrival.slot);
    }

    /// Breaks the barrier: every waiter, now and until `reset()`, gets BrokenBarrierError.
    pub fn abort(&self) {
        let _g = self.lock();
        self.set_phase(BROKEN);
        self.notify_all();
    }

    /// Returns the barrier to the empty filling state; current waiters get BrokenBarrierError.
    pub fn reset(&self) {
        let _g = self.lock();
        if self.count() > 0 {
            if matches!(self.phase(), FILLING | ACTION | BROKEN) {
                self.set_phase(RESETTING);
            }
        } else {
            self.set_phase(FILLING);
        }
        self.notify_all();
    }

    /// Threads waiting in the current round.
    pub fn n_waiting(&self) -> u32 {
        match self.phase() {
            FILLING | ACTION => self.count(),
            _ => 0,
        }
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.phase() == BROKEN
    }

    /// Rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.state.rounds.load(Ordering::Relaxed)
    }
}
