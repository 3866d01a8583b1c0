//! The waiting policy shared by every primitive: spin briefly, then sleep on a shared futex in bounded slices.
//!
//! Slices exist for robustness, not for wakeups: a waiter whose lock holder was SIGKILLed is never woken, so it
//! wakes itself every [`SLICE`] to check whether the holder is still alive. Timeouts are honoured exactly (the
//! last slice is cut to the deadline), and a signal (EINTR) is reported so the caller can run its handlers.

use crate::base::atomic::AtomicU32;
use crate::platform::futex::{self, Deadline, WaitResult};
use std::cell::Cell;
use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

#[cfg(not(loom))]
thread_local! {
    static POLL: Cell<bool> = const { Cell::new(false) };
}

// Loom hook: loom runs a model's threads on one OS thread, so the polling mode must be a loom thread-local.
#[cfg(loom)]
loom::thread_local! {
    static POLL: Cell<bool> = Cell::new(false);
}

/// While the returned guard lives, blocking calls on this thread return [`WaitError::Interrupted`] at the end of
/// every sleep slice (after their liveness checks), not only on EINTR. The Python layer uses it so a signal that
/// arrived while the thread was spinning (not in the futex call) is still handled within a slice; it then calls
/// again with the same deadline.
pub fn poll_signals() -> PollGuard {
    PollGuard(POLL.with(|p| p.replace(true)))
}

/// Restores the previous polling mode when dropped.
pub struct PollGuard(bool);

impl Drop for PollGuard {
    fn drop(&mut self) {
        POLL.with(|p| p.set(self.0));
    }
}

/// Whether [`poll_signals`] is on for this thread.
#[inline]
pub fn polling() -> bool {
    POLL.with(|p| p.get())
}

/// Called by wait loops after handling a [`Slept::SliceEnd`]: `Err(Interrupted)` when polling is on.
#[inline]
pub fn slice_ended() -> Result<(), WaitError> {
    if POLL.with(|p| p.get()) {
        Err(WaitError::Interrupted)
    } else {
        Ok(())
    }
}

/// Longest single futex sleep; also the delay after which a dead owner is noticed.
pub const SLICE: Duration = Duration::from_millis(20);

/// How long to spin before sleeping. Waking a process on the other CPU costs tens of microseconds on this kind
/// of VM, so a holder that releases within this window is cheaper to wait for by spinning.
pub const SPIN: Duration = Duration::from_micros(40);

/// Why a blocking operation gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed.
    TimedOut,
    /// A signal interrupted the sleep (EINTR): run signal handlers, then retry with the same deadline.
    Interrupted,
}

impl From<WaitError> for crate::Error {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::TimedOut => crate::Error::Timeout,
            WaitError::Interrupted => crate::Error::Interrupted,
        }
    }
}

/// Outcome of one [`sleep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slept {
    /// Woken, or the word had already changed: re-check the condition.
    Woken,
    /// A slice ended without news: re-check the condition and the liveness of whoever is waited for.
    SliceEnd,
    /// The deadline passed.
    TimedOut,
    /// EINTR.
    Interrupted,
}

/// Sleeps while `*word == expected`, for at most one slice and never past `deadline`.
pub fn sleep(word: &AtomicU32, expected: u32, deadline: &Deadline) -> Slept {
    let mut t = SLICE;
    if let Some(rem) = deadline.remaining() {
        if rem.is_zero() {
            return Slept::TimedOut;
        }
        t = t.min(rem);
    }
    match futex::wait(word, expected, Some(t)) {
        WaitResult::Woken => Slept::Woken,
        WaitResult::Interrupted => Slept::Interrupted,
        WaitResult::TimedOut if deadline.expired() => Slept::TimedOut,
        WaitResult::TimedOut => Slept::SliceEnd,
    }
}

/// Busy-waits (pause instructions) this long before yielding the CPU between checks.
#[cfg(not(loom))]
const PURE_SPIN: Duration = Duration::from_micros(1);

/// Spins for at most [`SPIN`] (less if the deadline is sooner) until `ready()` holds. Returns whether it did.
///
/// The first microsecond is a pure busy-wait (a partner on the other CPU answers within it); after
/// that each check is followed by `sched_yield`, which hands the CPU over if the partner is runnable on this
/// same CPU (then busy-waiting would only delay it) and returns at once otherwise.
#[inline]
pub fn spin(deadline: &Deadline, ready: impl FnMut() -> bool) -> bool {
    spin_up_to(SPIN, deadline, ready)
}

/// [`spin`] with another budget than [`SPIN`] (the queues spin longer in `lock_free` mode).
#[inline]
pub fn spin_up_to(budget: Duration, deadline: &Deadline, ready: impl FnMut() -> bool) -> bool {
    let limit = match deadline.remaining() {
        Some(r) => r.min(budget),
        None => budget,
    };
    if limit.is_zero() {
        return false;
    }
    spin_loop(limit, ready)
}

/// Loom hook: a model checks once (a spin is a loop bounded by real time, which a model cannot run).
#[cfg(loom)]
fn spin_loop(_limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    ready()
}

#[cfg(not(loom))]
#[inline]
fn spin_loop(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..16 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let el = start.elapsed();
        if el >= limit {
            return false;
        }
        if el >= PURE_SPIN {
            std::thread::yield_now();
        }
    }
}

/// Like [`spin`], with exponentially growing pauses between polls (1, 2, 4 ... 64 pause instructions). For
/// locks: a waiter that polls in a tight loop grabs the lock at every release, so each acquisition moves the
/// cache line between CPUs; backing off lets a running owner re-take it cheaply, which raises total throughput.
#[inline]
pub fn spin_backoff(deadline: &Deadline, ready: impl FnMut() -> bool) -> bool {
    let limit = match deadline.remaining() {
        Some(r) => r.min(SPIN),
        None => SPIN,
    };
    if limit.is_zero() {
        return false;
    }
    backoff_loop(limit, ready)
}

/// Loom hook: as for `spin_loop`.
#[cfg(loom)]
fn backoff_loop(_limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    ready()
}

#[cfg(not(loom))]
#[inline]
fn backoff_loop(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pauses = 1u32;
    loop {
        for _ in 0..4 {
            if ready() {
                return true;
            }
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
            pauses = (pauses * 2).min(64);
        }
        let el = start.elapsed();
        if el >= limit {
            return false;
        }
        if el >= PURE_SPIN {
            std::thread::yield_now();
        }
    }
}

/// A deadline `timeout` from now (`None`: forever).
pub fn deadline(timeout: Option<Duration>) -> Deadline {
    Deadline::after(timeout)
}
