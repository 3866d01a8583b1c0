//! `Barrier`: `threading.Barrier` semantics in shared memory, under a robust internal mutex, with a table of who
//! is inside so that a waiter whose process died breaks the barrier instead of hanging it.
//!
//! Layout: a 64-byte [`BarrierState`] followed by [`slots_for`]`(parties)` [`BarrierSlot`]s of 16 bytes. All
//! zero (with `parties` stored) = an empty barrier, filling, not broken.
//!
//! Each thread inside `wait` owns one slot from arrival until it has read its outcome. The thread that completes
//! a round (or breaks it: timeout, `abort`, a failing action, a dead waiter; or `reset`s it) writes the outcome
//! (TRIPPED or BROKEN) into the slot of every waiter of that round, starts the next round and bumps `seq`, the
//! futex word waiters sleep on. A released waiter only reads its own slot and frees it: unlike CPython's
//! algorithm there is no draining phase in which the next round must wait for the previous one to empty, so a
//! round of two processes costs two cross-process wake-ups, the minimum.
//!
//! While the last arriver runs the action (Python code, outside the internal mutex) the phase is ACTION and new
//! arrivals wait. Sleepers check the slots every slice: a slot whose process died while its round was pending
//! breaks the barrier (every other waiter gets BROKEN); if the process died after its round was decided, its
//! slot is just freed. If a process dies inside the internal mutex, the next locker gets OwnerDied, treats the
//! state as torn and breaks the barrier.

use super::lock::{Acquired, LockState};
use super::owner;
use super::wait::{self, Slept};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::shm_struct;

/// Filling: arrivals are counted.
pub const FILLING: u32 = 0;
/// The last arriver runs the action; new arrivals wait.
pub const ACTION: u32 = 2;
/// Broken (timeout, abort, action failure, dead waiter) until `reset()`.
pub const BROKEN: u32 = 4;

/// Slot outcome: the round is still pending.
pub const PENDING: u32 = 0;
/// Slot outcome: the round tripped.
pub const TRIPPED: u32 = 1;
/// Slot outcome: the barrier broke (or was reset) during the round.
pub const BROKE: u32 = 2;

/// Number of slots for `parties`: the current round's waiters plus released waiters of the previous round that
/// have not yet freed their slot.
pub const fn slots_for(parties: u32) -> u32 {
    parties.saturating_mul(2).saturating_add(2)
}

shm_struct! {
    /// The fixed part of a barrier.
    pub struct BarrierState {
        /// Internal mutex over the fields below and the slots' `pid`/`outcome` transitions.
        pub lock: LockState,
        /// Bumped on every round end and phase change; the futex word waiters sleep on.
        pub seq: AtomicU32,
        /// Threads asleep on `seq` (wakers skip the system call when 0).
        pub sleepers: AtomicU32,
        /// Number of parties (fixed at creation).
        pub parties: AtomicU32,
        /// FILLING, ACTION or BROKEN.
        pub phase: AtomicU32,
        /// Arrivals in the current round.
        pub count: AtomicU32,
        /// Round number (diagnostics; wraps).
        pub generation: AtomicU32,
        /// Rounds completed (diagnostics).
        pub rounds: AtomicU64,
    }
}

shm_struct! {
    /// A thread inside `wait`. `pid == 0`: free.
    pub struct BarrierSlot {
        /// pid of the waiter.
        pub pid: AtomicU32,
        /// PENDING, TRIPPED or BROKE.
        pub outcome: AtomicU32,
        /// Its process start time.
        pub start: AtomicU64,
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<BarrierState>() == 64);
    assert!(offset_of!(BarrierState, seq) == 32);
    assert!(offset_of!(BarrierState, sleepers) == 36);
    assert!(offset_of!(BarrierState, parties) == 40);
    assert!(offset_of!(BarrierState, phase) == 44);
    assert!(offset_of!(BarrierState, count) == 48);
    assert!(offset_of!(BarrierState, generation) == 52);
    assert!(offset_of!(BarrierState, rounds) == 56);
    assert!(size_of::<BarrierSlot>() == 16);
    assert!(offset_of!(BarrierSlot, outcome) == 4);
    assert!(offset_of!(BarrierSlot, start) == 8);
};

/// Why a barrier wait failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierError {
    /// The barrier is (or became) broken, or was reset: `threading.BrokenBarrierError`.
    Broken,
    /// EINTR or a polling slice ended: run signal handlers, then call the same step again (or `abandon`).
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
    parties: u32,
}

struct Locked<'a>(&'a LockState);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl<'a> BarrierRef<'a> {
    /// Wraps a state and its slots; `parties` is the party count used from here on.
    pub fn new(state: &'a BarrierState, slots: &'a [BarrierSlot], parties: u32) -> Self {
        BarrierRef { state, slots, parties }
    }

    /// Number of parties.
    pub fn parties(&self) -> u32 {
        self.parties
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

    /// Takes the internal mutex (critical sections are short; signals do not interrupt taking it).
    fn lock(&self) -> Locked<'a> {
        let me = owner::me();
        let forever = Deadline::after(None);
        loop {
            match self.state.lock.lock_as(me, &forever) {
                Ok(Acquired::Normal) => return Locked(&self.state.lock),
                Ok(Acquired::OwnerDied) => {
                    // A process died inside a critical section: the state may be half-updated.
                    let g = Locked(&self.state.lock);
                    self.break_locked();
                    self.reap_locked();
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

    /// Sleeps (without the mutex) until `seq` moves from `s0` or `ready()`, one slice at most.
    fn wait_change(&self, s0: u32, deadline: &Deadline, ready: impl Fn() -> bool) -> Slept {
        let changed = || ready() || self.state.seq.load(Ordering::Acquire) != s0;
        if wait::spin(deadline, changed) {
            return Slept::Woken;
        }
        self.state.sleepers.fetch_add(1, Ordering::SeqCst);
        let r = if changed() { Slept::Woken } else { wait::sleep(&self.state.seq, s0, deadline) };
        self.state.sleepers.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Decides every pending slot with `outcome` and starts a new round.
    fn decide_locked(&self, outcome: u32) {
        for s in self.slots {
            if s.pid.load(Ordering::Relaxed) != 0 && s.outcome.load(Ordering::Relaxed) == PENDING {
                // Release: the waiter that reads its outcome (Acquire) sees everything before the trip.
                s.outcome.store(outcome, Ordering::Release);
            }
        }
        self.state.count.store(0, Ordering::Relaxed);
        self.state.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn break_locked(&self) {
        self.decide_locked(BROKE);
        self.set_phase(BROKEN);
        self.notify_all();
    }

    fn free(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.start.store(0, Ordering::Relaxed);
            s.pid.store(0, Ordering::Release);
        }
    }

    /// Frees the slots of dead processes; a dead waiter of the pending round breaks the barrier.
    fn reap_locked(&self) {
        let me = owner::me().pid;
        let mut broke = false;
        for s in self.slots {
            let pid = s.pid.load(Ordering::Relaxed);
            if pid == 0 || pid == me || owner::alive(pid, s.start.load(Ordering::Relaxed)) {
                continue;
            }
            if s.outcome.load(Ordering::Relaxed) == PENDING {
                broke = true;
            }
            s.start.store(0, Ordering::Relaxed);
            s.pid.store(0, Ordering::Release);
        }
        if broke {
            self.break_locked();
        }
    }

    /// Arrives: waits while the last arriver of the round runs its action, then counts the caller in.
    pub fn arrive(&self) -> Result<Arrival, BarrierError> {
        let forever = Deadline::after(None);
        loop {
            let g = self.lock();
            match self.phase() {
                BROKEN => return Err(BarrierError::Broken),
                FILLING => {
                    let me = owner::me();
                    if let Some(slot) = self.slots.iter().position(|s| s.pid.load(Ordering::Relaxed) == 0) {
                        let s = &self.slots[slot];
                        s.outcome.store(PENDING, Ordering::Relaxed);
                        s.start.store(me.start, Ordering::Relaxed);
                        s.pid.store(me.pid, Ordering::Relaxed);
                        let index = self.count();
                        self.state.count.store(index + 1, Ordering::Relaxed);
                        let last = index + 1 >= self.parties;
                        if last {
                            self.set_phase(ACTION);
                        }
                        return Ok(Arrival { index, last, slot });
                    }
                    // Every slot is held by released waiters that have not left yet (or by dead processes):
                    // free the dead ones, and let the others go first.
                    self.reap_locked();
                    drop(g);
                    std::thread::yield_now();
                }
                _ => {
                    let s0 = self.state.seq.load(Ordering::Relaxed);
                    drop(g);
                    match self.wait_change(s0, &forever, || false) {
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

    /// The last arriver reports whether its action succeeded; trips the round (or breaks it) and leaves.
    pub fn finish_last(&self, arrival: &Arrival, action_ok: bool) -> Result<(), BarrierError> {
        let _g = self.lock();
        let mine = self.slots.get(arrival.slot).map(|s| s.outcome.load(Ordering::Relaxed));
        let r = if self.phase() == ACTION && action_ok && mine == Some(PENDING) {
            self.decide_locked(TRIPPED);
            self.set_phase(FILLING);
            self.state.rounds.fetch_add(1, Ordering::Relaxed);
            self.notify_all();
            Ok(())
        } else {
            if mine == Some(PENDING) {
                self.break_locked();
            }
            Err(BarrierError::Broken)
        };
        self.free(arrival.slot);
        r
    }

    fn outcome(&self, arrival: &Arrival) -> u32 {
        self.slots.get(arrival.slot).map_or(BROKE, |s| s.outcome.load(Ordering::Acquire))
    }

    fn leave_with(&self, arrival: &Arrival, outcome: u32) -> Result<(), BarrierError> {
        self.free(arrival.slot);
        if outcome == TRIPPED {
            Ok(())
        } else {
            Err(BarrierError::Broken)
        }
    }

    /// A non-last arriver waits for its round to trip (Ok) or break (Broken). On `Interrupted` the caller is
    /// still inside: call again, or [`abandon`](Self::abandon).
    pub fn wait_release(&self, arrival: &Arrival, deadline: &Deadline) -> Result<(), BarrierError> {
        loop {
            let s0 = self.state.seq.load(Ordering::Acquire);
            let o = self.outcome(arrival);
            if o != PENDING {
                return self.leave_with(arrival, o);
            }
            match self.wait_change(s0, deadline, || self.outcome(arrival) != PENDING) {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    let g = self.lock();
                    self.reap_locked();
                    drop(g);
                    if self.outcome(arrival) == PENDING && wait::slice_ended().is_err() {
                        return Err(BarrierError::Interrupted);
                    }
                }
                Slept::TimedOut => {
                    let _g = self.lock();
                    if self.outcome(arrival) == PENDING {
                        // As CPython: a timeout breaks the barrier for everyone.
                        self.break_locked();
                    }
                    let o = self.outcome(arrival);
                    return self.leave_with(arrival, o);
                }
                Slept::Interrupted => return Err(BarrierError::Interrupted),
            }
        }
    }

    /// Leaves after an interrupted wait whose exception propagates (CPython: `finally: _count -= 1`).
    pub fn abandon(&self, arrival: &Arrival) {
        let _g = self.lock();
        if self.outcome(arrival) == PENDING && self.phase() == FILLING {
            self.state.count.store(self.count().saturating_sub(1), Ordering::Relaxed);
        }
        self.free(arrival.slot);
    }

    /// Breaks the barrier: every waiter, now and until `reset()`, gets BrokenBarrierError.
    pub fn abort(&self) {
        let _g = self.lock();
        self.break_locked();
    }

    /// Returns the barrier to the empty filling state; current waiters get BrokenBarrierError.
    pub fn reset(&self) {
        let _g = self.lock();
        self.decide_locked(BROKE);
        self.set_phase(FILLING);
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

/// For waiters that wait elsewhere (the asyncio bridge's waker sleeps on [`seq`](Self::seq_word) for them): the
/// steps of [`arrive`](BarrierRef::arrive) and [`wait_release`](BarrierRef::wait_release) that never sleep.
impl<'a> BarrierRef<'a> {
    /// Arrives if a round is filling: `Ok(Some(arrival))`; `Ok(None)` while the previous round is still being
    /// released (or no slot is free): wait for `seq` to change, then call again.
    pub fn try_arrive(&self) -> Result<Option<Arrival>, BarrierError> {
        let _g = self.lock();
        match self.phase() {
            BROKEN => Err(BarrierError::Broken),
            FILLING => {
                let me = owner::me();
                let Some(slot) = self.slots.iter().position(|s| s.pid.load(Ordering::Relaxed) == 0) else {
                    self.reap_locked();
                    return Ok(None);
                };
                let s = &self.slots[slot];
                s.outcome.store(PENDING, Ordering::Relaxed);
                s.start.store(me.start, Ordering::Relaxed);
                s.pid.store(me.pid, Ordering::Relaxed);
                let index = self.count();
                self.state.count.store(index + 1, Ordering::Relaxed);
                let last = index + 1 >= self.parties;
                if last {
                    self.set_phase(ACTION);
                }
                Ok(Some(Arrival { index, last, slot }))
            }
            _ => Ok(None),
        }
    }

    /// The round's outcome for `arrival` if decided (the slot is then freed: call once it returned `Some`).
    pub fn poll_release(&self, arrival: &Arrival) -> Option<Result<(), BarrierError>> {
        match self.outcome(arrival) {
            PENDING => None,
            o => Some(self.leave_with(arrival, o)),
        }
    }

    /// Gives up at the deadline as a timed-out [`wait_release`](Self::wait_release) does: breaks the round if
    /// still undecided, and leaves with its outcome.
    pub fn time_out(&self, arrival: &Arrival) -> Result<(), BarrierError> {
        let _g = self.lock();
        if self.outcome(arrival) == PENDING {
            self.break_locked();
        }
        let o = self.outcome(arrival);
        self.leave_with(arrival, o)
    }

    /// Counts a sleeper on `seq` and returns the value to sleep on, or `None` (counting nothing) if there is no
    /// need to: `arrival` given, its round is decided; else a round is filling or the barrier is broken.
    pub fn announce(&self, arrival: Option<&Arrival>) -> Option<u32> {
        self.state.sleepers.fetch_add(1, Ordering::SeqCst);
        let s = self.state.seq.load(Ordering::SeqCst);
        let ready = match arrival {
            Some(a) => self.outcome(a) != PENDING,
            None => matches!(self.phase(), FILLING | BROKEN),
        };
        if ready {
            self.state.sleepers.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(s)
    }

    /// Undoes an [`announce`](Self::announce) that returned a value.
    pub fn withdraw(&self) {
        self.state.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Drops the slots of parties whose process died (breaking their round), as a sleeper does every slice.
    pub fn reap_dead(&self) {
        let _g = self.lock();
        self.reap_locked();
    }

    /// The word sleepers wait on (bumped at every change of round or phase).
    pub fn seq_word(&self) -> &'a AtomicU32 {
        &self.state.seq
    }
}
