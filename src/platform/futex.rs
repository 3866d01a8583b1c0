//! Shared (process-wide, not `FUTEX_PRIVATE_FLAG`) futex wait and wake.
//!
//! A private futex is keyed on the virtual address in one process; the same word mapped at different addresses
//! in two processes would never meet. Shared futexes are keyed on the backing page, so every wait and wake here
//! uses `Flags::empty()`.
//!
//! Under `cfg(loom)` the same interface is served by [`model`], a futex that really blocks loom threads, so the
//! wait/wake handshakes of every primitive run unchanged in the models and a missing wake-up is reported.

use crate::base::atomic::AtomicU32;
#[cfg(not(loom))]
use rustix::thread::futex;
use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

/// Why a [`wait`] returned. Spurious wakeups are possible: callers always re-check their condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitResult {
    /// Woken by [`wake`], or the word no longer held `expected` when the kernel looked.
    Woken,
    /// The timeout elapsed.
    TimedOut,
    /// A signal arrived (EINTR); the caller should run its signal check and retry.
    Interrupted,
}

/// Sleep while `*word == expected`, at most `timeout` (forever when `None`).
#[cfg(not(loom))]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => WaitResult::Woken,
        Err(rustix::io::Errno::AGAIN) => WaitResult::Woken,
        Err(rustix::io::Errno::TIMEDOUT) => WaitResult::TimedOut,
        Err(rustix::io::Errno::INTR) => WaitResult::Interrupted,
        // Any other errno (EFAULT, EINVAL) means a programming error; treat as a spurious wakeup so callers
        // re-check their condition instead of sleeping forever.
        Err(_) => WaitResult::Woken,
    }
}

/// Wake up to `n` waiters sleeping on `word`. Returns how many were woken.
#[cfg(not(loom))]
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
}

/// Under loom: the futex model ([`model`]), which really blocks.
#[cfg(loom)]
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    model::wait(word, expected, timeout)
}

/// Under loom: the futex model ([`model`]).
#[cfg(loom)]
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    model::wake(word, n)
}

/// Wake every waiter on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// A deadline helper: converts an optional relative timeout into what is left at each retry. Under loom it is
/// measured in model time ([`model`]), which passes only where a model lets it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Moment>);

#[cfg(not(loom))]
type Moment = Instant;
#[cfg(loom)]
type Moment = Duration;

#[cfg(not(loom))]
fn now() -> Moment {
    Instant::now()
}
#[cfg(loom)]
fn now() -> Moment {
    model::now()
}

impl Deadline {
    /// `None` waits forever.
    pub fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.map(|t| now().checked_add(t).unwrap_or_else(far_future)))
    }

    /// Time left, `Some(ZERO)` once expired, `None` for no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        matches!(self.remaining(), Some(d) if d.is_zero())
    }

    /// Whether there is a deadline at all.
    pub fn is_forever(&self) -> bool {
        self.0.is_none()
    }
}

fn far_future() -> Moment {
    now() + Duration::from_secs(86400 * 365 * 30)
}

#[cfg(loom)]
trait SinceModelTime {
    fn saturating_duration_since(self, earlier: Duration) -> Duration;
}

#[cfg(loom)]
impl SinceModelTime for Duration {
    fn saturating_duration_since(self, earlier: Duration) -> Duration {
        self.saturating_sub(earlier)
    }
}

#[cfg(loom)]
pub mod model;
