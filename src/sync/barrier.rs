//! `Barrier`: `threading.Barrier` semantics in shared memory, under a robust internal mutex, with a table of who
//! is inside so that a waiter whose process died breaks the barrier instead of hanging it.
//!
//! Layout: a 64-byte [`BarrierState`] followed by [`slots_for`]`(parties)` [`BarrierSlot`]s of 16 bytes. All
//! zero (with `parties` stored) = an empty barrier, filling, not broken.
//!
//! Each thread inside `wait` owns one slot from arrival until it has read its outcome: the slots are a
//! [`segment::owners`](crate::segment::owners) table whose owner word names the thread's process. The thread that completes
//! a round (or breaks it: timeout, `abort`, a failing action, a dead waiter; or `reset`s it) writes the outcome
//! (TRIPPED or BROKEN) into the slot of every waiter of that round, starts the next round and bumps `seq`, the
//! futex word waiters sleep on. A released waiter only reads its own slot and frees it: unlike CPython's
//! algorithm there is no draining phase in which the next round must wait for the previous one to empty, so a
//! round of two processes costs two cross-process wake-ups, the minimum.
//!
//! While the last arriver runs the action (Python code, outside the internal mutex) the phase is ACTION and new
//! arrivals wait, under their own timeout: one that times out switches the phase to ACTION_THEN_BREAK, so the
//! round still trips when the action returns and the barrier breaks after it (as in `threading`, where the
//! late arrival would have timed out in the next round). Sleepers check the slots every slice: a slot whose
//! process died while its round was pending breaks the barrier (every other waiter gets BROKEN); if the process
//! died after its round was decided, its slot is just freed. If a process dies inside the internal mutex, the
//! next locker gets OwnerDied, treats the state as torn and breaks the barrier; so does a locker that finds a
//! phase that is not one of the four, or an action phase with nobody running the action.
//!
//! Nothing waits without bound: the internal mutex is waited for until the caller's deadline (plus a short
//! grace, since its holders keep it for microseconds), and at most [`limits::lock_timeout`] for a live holder
//! that does not let go, which is reported as [`BarrierError::Stuck`].

use super::lock::{Acquired, LockState};
use super::owner;
use super::wait::{self, Slept, WaitError};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::platform::limits;
use crate::segment::owners::{HasOwner, Owner, OwnerTable};
use crate::shm_struct;
use std::time::Duration;

/// Filling: arrivals are counted.
pub const FILLING: u32 = 0;
/// The last arriver runs the action; new arrivals wait.
pub const ACTION: u32 = 2;
/// As ACTION, and an arrival timed out meanwhile: the round trips when the action returns, then the barrier
/// breaks.
pub const ACTION_THEN_BREAK: u32 = 3;
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
    /// A thread inside `wait`: an entry of a [`segment::owners`](crate::segment::owners) table. Owner 0: free.
    pub struct BarrierSlot {
        /// [`Owner`] word of the waiter's process; 0 = free.
        pub owner: AtomicU64,
        /// PENDING, TRIPPED or BROKE.
        pub outcome: AtomicU32,
        /// Unused; zero.
        pub reserved: AtomicU32,
    }
}

impl HasOwner for BarrierSlot {
    fn owner(&self) -> &AtomicU64 {
        &self.owner
    }
}

fn taken(s: &BarrierSlot) -> bool {
    s.owner.load(Ordering::Relaxed) != 0
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
    assert!(offset_of!(BarrierSlot, outcome) == 8);
    assert!(offset_of!(BarrierSlot, reserved) == 12);
};

/// How long a call whose own deadline is shorter (or has passed) still waits for the internal mutex: its holders
/// keep it for microseconds, so this only covers a holder that was descheduled.
const LOCK_GRACE: Duration = Duration::from_millis(100);

/// Why a barrier wait failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierError {
    /// The barrier is (or became) broken, or was reset, or the caller's timeout passed:
    /// `threading.BrokenBarrierError`.
    Broken,
    /// EINTR or a polling slice ended: run signal handlers, then call the same step again (or `abandon`).
    Interrupted,
    /// A live process keeps the internal mutex (or every slot) far longer than any critical section lasts: it is
    /// stopped, or the barrier is corrupt. The message names it.
    Stuck(String),
}

/// One call into the barrier (`wait`, `abort`, `reset`): the caller's deadline, and since when it has been
/// waiting for something that is only ever held briefly (the internal mutex, a free slot), kept across the
/// steps into which signal checks split one wait.
pub struct BarrierCall {
    deadline: Deadline,
    lock_since: parking_lot::Mutex<Option<futex::Moment>>,
    slots_since: parking_lot::Mutex<Option<futex::Moment>>,
}

impl BarrierCall {
    /// A call that gives up at `deadline`.
    pub fn new(deadline: Deadline) -> Self {
        BarrierCall { deadline, lock_since: parking_lot::Mutex::new(None), slots_since: parking_lot::Mutex::new(None) }
    }

    /// A call without a deadline of its own (still bounded by [`limits::lock_timeout`] on the internal mutex).
    pub fn untimed() -> Self {
        Self::new(Deadline::after(None))
    }

    /// The caller's deadline.
    pub fn deadline(&self) -> &Deadline {
        &self.deadline
    }
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

    /// Takes the internal mutex. Waits until the call's deadline (at least [`LOCK_GRACE`]), then gives up with
    /// `Broken`; and at most [`limits::lock_timeout`] in all, then gives up with `Stuck`. An `interruptible` call
    /// returns `Interrupted` at signals and slice ends (the time waited so far counts on when it is called again
    /// with the same `call`); the others wait through them.
    fn lock(&self, call: &BarrierCall, interruptible: bool) -> Result<Locked<'a>, BarrierError> {
        let me = owner::me();
        let since = *call.lock_since.lock().get_or_insert_with(futex::now);
        let patience = limits::lock_timeout();
        let patience_end = since.checked_add(patience).unwrap_or(since);
        let end = match call.deadline.instant() {
            Some(c) => c.max(since + LOCK_GRACE).min(patience_end),
            None => patience_end,
        };
        let d = Deadline::at(end);
        loop {
            match self.state.lock.lock_as(me, &d) {
                Ok(a) => {
                    *call.lock_since.lock() = None;
                    let g = Locked(&self.state.lock);
                    if a == Acquired::OwnerDied {
                        // A process died inside a critical section: the state may be half-updated.
                        self.break_locked();
                        self.reap_locked();
                    }
                    return Ok(g);
                }
                Err(WaitError::Interrupted) if interruptible => return Err(BarrierError::Interrupted),
                Err(WaitError::Interrupted) => continue,
                Err(WaitError::TimedOut) => {
                    *call.lock_since.lock() = None;
                    if end < patience_end {
                        return Err(BarrierError::Broken);
                    }
                    let holder = self.state.lock.owner().map_or(0, |o| o.pid);
                    return Err(BarrierError::Stuck(format!(
                        "the barrier's internal lock has been held by live process {holder} for more than {:.1} s \
                         (a stopped process, or a corrupt barrier); set {} to wait longer",
                        patience.as_secs_f64(),
                        limits::LOCK_TIMEOUT_ENV
                    )));
                }
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
            if taken(s) && s.outcome.load(Ordering::Relaxed) == PENDING {
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

    /// Frees the caller's slot (if it is still the caller's: a slot reaped because of a corrupt word and taken
    /// by another waiter is left alone).
    fn free(&self, slot: usize) {
        if slot < self.slots.len() {
            OwnerTable::new(self.slots).release(slot, Owner::me());
        }
    }

    /// Frees the slots of dead processes; a dead waiter of the pending round breaks the barrier, and so does a
    /// state that no sequence of operations leaves (an unknown phase, an action phase with no pending waiter).
    fn reap_locked(&self) {
        let phase = self.phase();
        let valid = match phase {
            FILLING | BROKEN => true,
            // The last arriver's slot stays pending until it finishes the round under this mutex.
            ACTION | ACTION_THEN_BREAK => {
                self.slots.iter().any(|s| taken(s) && s.outcome.load(Ordering::Relaxed) == PENDING)
            }
            _ => false,
        };
        if !valid {
            self.break_locked();
        }
        let mut broke = false;
        OwnerTable::new(self.slots).reap(|_, s, _| {
            broke |= s.outcome.load(Ordering::Relaxed) == PENDING;
            true
        });
        if broke {
            self.break_locked();
        }
    }

    /// In a filling round (internal lock held): takes a free slot for the caller and counts its arrival, making
    /// the round's last arriver move it to the action phase; `None` if no slot is free.
    fn take_slot_locked(&self) -> Option<Arrival> {
        // Under the internal lock: no other arrival or reap runs meanwhile, and the outcome is read only by this
        // waiter, after it arrived.
        let slot = OwnerTable::new(self.slots).claim(Owner::me(), 0)?;
        self.slots[slot].outcome.store(PENDING, Ordering::Relaxed);
        let index = self.count();
        self.state.count.store(index.saturating_add(1), Ordering::Relaxed);
        let last = index.saturating_add(1) >= self.parties;
        if last {
            self.set_phase(ACTION);
        }
        Some(Arrival { index, last, slot })
    }

    /// Arrives: waits while the last arriver of the round runs its action (until the call's deadline, which then
    /// breaks the barrier once that round is over), then counts the caller in.
    pub fn arrive(&self, call: &BarrierCall) -> Result<Arrival, BarrierError> {
        loop {
            let g = self.lock(call, true)?;
            match self.phase() {
                BROKEN => return Err(BarrierError::Broken),
                FILLING => {
                    if let Some(arrival) = self.take_slot_locked() {
                        *call.slots_since.lock() = None;
                        return Ok(arrival);
                    }
                    // Every slot is held by released waiters that have not left yet (or by dead processes):
                    // free the dead ones, and let the others go first.
                    self.reap_locked();
                    if call.deadline.expired() {
                        self.break_locked();
                        return Err(BarrierError::Broken);
                    }
                    drop(g);
                    let since = *call.slots_since.lock().get_or_insert_with(futex::now);
                    let waited = futex::elapsed_since(since);
                    if waited > limits::lock_timeout() {
                        *call.slots_since.lock() = None;
                        let holders: Vec<u32> =
                            self.slots.iter().map(|s| Owner(s.owner.load(Ordering::Relaxed)).pid()).collect();
                        return Err(BarrierError::Stuck(format!(
                            "every slot of the barrier has been held by live processes for more than {:.1} s (a \
                             corrupt barrier?): {holders:?}",
                            waited.as_secs_f64()
                        )));
                    }
                    if waited < Duration::from_millis(1) {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(200));
                        if waited > wait::SLICE && wait::slice_ended().is_err() {
                            return Err(BarrierError::Interrupted);
                        }
                    }
                }
                ACTION | ACTION_THEN_BREAK => {
                    let s0 = self.state.seq.load(Ordering::Relaxed);
                    drop(g);
                    match self.wait_change(s0, &call.deadline, || false) {
                        Slept::Interrupted => return Err(BarrierError::Interrupted),
                        Slept::SliceEnd => {
                            let g = self.lock(call, true)?;
                            self.reap_locked();
                            drop(g);
                            if wait::slice_ended().is_err() {
                                return Err(BarrierError::Interrupted);
                            }
                        }
                        Slept::TimedOut => {
                            let _g = self.lock(call, true)?;
                            // As a timeout inside a round: the barrier breaks, here once the running round is over.
                            match self.phase() {
                                ACTION => self.set_phase(ACTION_THEN_BREAK),
                                ACTION_THEN_BREAK | BROKEN => {}
                                _ => self.break_locked(),
                            }
                            return Err(BarrierError::Broken);
                        }
                        Slept::Woken => {}
                    }
                }
                _ => {
                    // Not a phase this code ever writes: the barrier is corrupt. Broken until reset().
                    self.break_locked();
                    return Err(BarrierError::Broken);
                }
            }
        }
    }

    /// The last arriver reports whether its action succeeded; trips the round (or breaks it) and leaves.
    pub fn finish_last(&self, arrival: &Arrival, action_ok: bool) -> Result<(), BarrierError> {
        let g = match self.lock(&BarrierCall::untimed(), false) {
            Ok(g) => g,
            Err(e) => {
                self.free(arrival.slot);
                return Err(e);
            }
        };
        let mine = self.slots.get(arrival.slot).map(|s| s.outcome.load(Ordering::Relaxed));
        let phase = self.phase();
        let r = if matches!(phase, ACTION | ACTION_THEN_BREAK) && action_ok && mine == Some(PENDING) {
            self.decide_locked(TRIPPED);
            self.set_phase(if phase == ACTION { FILLING } else { BROKEN });
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
        drop(g);
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

    /// A non-last arriver waits for its round to trip (Ok) or break (Broken), until the call's deadline. On
    /// `Interrupted` the caller is still inside: call again, or [`abandon`](Self::abandon).
    pub fn wait_release(&self, arrival: &Arrival, call: &BarrierCall) -> Result<(), BarrierError> {
        loop {
            let s0 = self.state.seq.load(Ordering::Acquire);
            let o = self.outcome(arrival);
            if o != PENDING {
                return self.leave_with(arrival, o);
            }
            match self.wait_change(s0, &call.deadline, || self.outcome(arrival) != PENDING) {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    match self.lock(call, true) {
                        Ok(g) => {
                            self.reap_locked();
                            drop(g);
                        }
                        // The deadline passed while waiting for the mutex: the next round handles the timeout.
                        Err(BarrierError::Broken) => continue,
                        Err(BarrierError::Interrupted) => return Err(BarrierError::Interrupted),
                        Err(e) => {
                            self.free(arrival.slot);
                            return Err(e);
                        }
                    }
                    if self.outcome(arrival) == PENDING && wait::slice_ended().is_err() {
                        return Err(BarrierError::Interrupted);
                    }
                }
                Slept::TimedOut => {
                    match self.lock(call, true) {
                        Ok(_g) => {
                            if self.outcome(arrival) == PENDING {
                                // As CPython: a timeout breaks the barrier for everyone.
                                self.break_locked();
                            }
                            let o = self.outcome(arrival);
                            return self.leave_with(arrival, o);
                        }
                        Err(BarrierError::Interrupted) => return Err(BarrierError::Interrupted),
                        Err(e) => {
                            // The mutex stayed held past the grace: leave without breaking the round (which may
                            // then trip without us), rather than overstay the timeout.
                            self.free(arrival.slot);
                            return Err(e);
                        }
                    }
                }
                Slept::Interrupted => return Err(BarrierError::Interrupted),
            }
        }
    }

    /// Leaves after an interrupted wait whose exception propagates (CPython: `finally: _count -= 1`).
    pub fn abandon(&self, arrival: &Arrival) {
        if let Ok(_g) = self.lock(&BarrierCall::untimed(), false) {
            if self.outcome(arrival) == PENDING && self.phase() == FILLING {
                self.state.count.store(self.count().saturating_sub(1), Ordering::Relaxed);
            }
        }
        self.free(arrival.slot);
    }

    /// Breaks the barrier: every waiter, now and until `reset()`, gets BrokenBarrierError.
    pub fn abort(&self) -> Result<(), BarrierError> {
        let _g = self.lock(&BarrierCall::untimed(), false)?;
        self.break_locked();
        Ok(())
    }

    /// Returns the barrier to the empty filling state; current waiters get BrokenBarrierError.
    pub fn reset(&self) -> Result<(), BarrierError> {
        let _g = self.lock(&BarrierCall::untimed(), false)?;
        self.decide_locked(BROKE);
        self.set_phase(FILLING);
        self.notify_all();
        Ok(())
    }

    /// Threads waiting in the current round.
    pub fn n_waiting(&self) -> u32 {
        match self.phase() {
            FILLING | ACTION | ACTION_THEN_BREAK => self.count(),
            _ => 0,
        }
    }

    /// Whether the barrier is broken (or breaks as soon as the running action returns).
    pub fn broken(&self) -> bool {
        matches!(self.phase(), BROKEN | ACTION_THEN_BREAK)
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
        let _g = self.lock(&BarrierCall::untimed(), false)?;
        match self.phase() {
            BROKEN => Err(BarrierError::Broken),
            ACTION | ACTION_THEN_BREAK => Ok(None),
            FILLING => {
                let arrival = self.take_slot_locked();
                if arrival.is_none() {
                    self.reap_locked();
                }
                Ok(arrival)
            }
            _ => {
                // Not a phase this code ever writes: the barrier is corrupt (as `arrive`). Broken until reset().
                self.break_locked();
                Err(BarrierError::Broken)
            }
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
        let _g = self.lock(&BarrierCall::untimed(), false)?;
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
    pub fn reap_dead(&self) -> Result<(), BarrierError> {
        let _g = self.lock(&BarrierCall::untimed(), false)?;
        self.reap_locked();
        Ok(())
    }

    /// The word sleepers wait on (bumped at every change of round or phase).
    pub fn seq_word(&self) -> &'a AtomicU32 {
        &self.state.seq
    }
}
