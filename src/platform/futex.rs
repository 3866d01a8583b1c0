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

/// What [`wait_any`] saw. Spurious returns are possible: callers re-check every word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyResult {
    /// The word at this index was woken.
    Woken(usize),
    /// Some word no longer held its expected value when the kernel looked (which one is not said), or the
    /// kernel refused a word (EFAULT, EINVAL): re-check them all.
    Changed,
    /// The timeout elapsed.
    TimedOut,
    /// A signal arrived (EINTR).
    Interrupted,
    /// This kernel has no `futex_waitv` (before Linux 5.16, or a seccomp filter denies it).
    Unsupported,
}

/// One word for [`wait_any`]: sleep while `*word == expected`. `shared` as for [`wait`] (a word in shared
/// memory); `false` for a process-local word (a private futex, keyed on the address).
pub struct AnyWord<'a> {
    /// The futex word.
    pub word: &'a AtomicU32,
    /// The value it must still hold for the sleep to begin.
    pub expected: u32,
    /// Shared (cross-process) or private.
    pub shared: bool,
}

/// Most words one [`wait_any`] call can sleep on (the kernel's `FUTEX_WAITV_MAX`).
pub const WAIT_ANY_MAX: usize = 128;

/// Sleeps until any of `words` is woken, or no longer holds its expected value, or `timeout` passes (forever
/// when `None`): `futex_waitv(2)`, Linux 5.16+. At most [`WAIT_ANY_MAX`] words (more is `Changed`).
#[cfg(not(loom))]
pub fn wait_any(words: &[AnyWord<'_>], timeout: Option<Duration>) -> AnyResult {
    use rustix::thread::futex::{Wait, WaitFlags, WaitPtr, WaitvFlags};
    if words.len() > WAIT_ANY_MAX {
        return AnyResult::Changed;
    }
    let mut v = [Wait::new(); WAIT_ANY_MAX];
    for (slot, w) in v.iter_mut().zip(words) {
        slot.val = w.expected as u64;
        slot.uaddr = WaitPtr::new(w.word.as_ptr().cast());
        slot.flags = if w.shared { WaitFlags::SIZE_U32 } else { WaitFlags::SIZE_U32 | WaitFlags::PRIVATE };
    }
    // The timeout of futex_waitv is an absolute time on the given clock.
    let ts = timeout.map(|d| {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let nsec = now.tv_nsec as u64 + d.subsec_nanos() as u64;
        rustix::time::Timespec {
            tv_sec: now
                .tv_sec
                .saturating_add(d.as_secs().min(i64::MAX as u64 / 2) as i64 + (nsec / 1_000_000_000) as i64),
            tv_nsec: (nsec % 1_000_000_000) as _,
        }
    });
    match rustix::thread::futex::waitv(
        &v[..words.len()],
        WaitvFlags::empty(),
        ts.as_ref(),
        rustix::time::ClockId::Monotonic,
    ) {
        Ok(i) => AnyResult::Woken(i),
        Err(rustix::io::Errno::TIMEDOUT) => AnyResult::TimedOut,
        Err(rustix::io::Errno::INTR) => AnyResult::Interrupted,
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => AnyResult::Unsupported,
        Err(_) => AnyResult::Changed,
    }
}

/// Under loom: a spurious return after a yield (the asyncio waker thread is not modelled; the futex model
/// serves [`wait`] and [`wake`] only).
#[cfg(loom)]
pub fn wait_any(_words: &[AnyWord<'_>], _timeout: Option<Duration>) -> AnyResult {
    loom::thread::yield_now();
    AnyResult::Changed
}

/// Wakes up to `n` waiters on a process-local word (a private futex, as [`wait_any`] sleeps on with
/// `shared: false`).
#[cfg(not(loom))]
pub fn wake_private(word: &crate::base::atomic::local::AtomicU32, n: u32) -> usize {
    futex::wake(word, futex::Flags::PRIVATE, n).unwrap_or(0)
}

/// [`wait`] on a process-local word (a private futex).
#[cfg(not(loom))]
pub fn wait_private(
    word: &crate::base::atomic::local::AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> WaitResult {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::PRIVATE, expected, ts.as_ref()) {
        Ok(()) | Err(rustix::io::Errno::AGAIN) => WaitResult::Woken,
        Err(rustix::io::Errno::TIMEDOUT) => WaitResult::TimedOut,
        Err(rustix::io::Errno::INTR) => WaitResult::Interrupted,
        Err(_) => WaitResult::Woken,
    }
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

/// A point in time as deadlines measure it: an `Instant`, or model time under loom.
#[cfg(not(loom))]
pub type Moment = Instant;
/// A point in time as deadlines measure it: an `Instant`, or model time under loom.
#[cfg(loom)]
pub type Moment = Duration;

/// Now, as deadlines measure it.
#[cfg(not(loom))]
pub fn now() -> Moment {
    Instant::now()
}
/// Now, as deadlines measure it.
#[cfg(loom)]
pub fn now() -> Moment {
    model::now()
}

/// Time passed since `t` (zero if `t` is in the future).
pub fn elapsed_since(t: Moment) -> Duration {
    now().saturating_duration_since(t)
}

impl Deadline {
    /// `None` waits forever.
    pub fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.map(|t| now().checked_add(t).unwrap_or_else(far_future)))
    }

    /// A deadline that has passed already: "try once, do not wait", as `after(Some(ZERO))` but without reading
    /// the clock (a `clock_gettime` per queue operation was a tenth of a put's cost).
    pub fn passed() -> Self {
        Deadline(Some(past()))
    }

    /// A deadline at `t`.
    pub fn at(t: Moment) -> Self {
        Deadline(Some(t))
    }

    /// The moment, `None` for no deadline.
    pub fn instant(&self) -> Option<Moment> {
        self.0
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

/// A moment in the past: this process's first use of it (model time zero under loom).
#[cfg(not(loom))]
fn past() -> Moment {
    static PAST: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *PAST.get_or_init(Instant::now)
}
/// A moment in the past: this process's first use of it (model time zero under loom).
#[cfg(loom)]
fn past() -> Moment {
    Duration::ZERO
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
