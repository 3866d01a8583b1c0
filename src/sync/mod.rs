//! Atomics and cross-process synchronisation.
//!
//! All code that touches shared memory takes its atomic types from [`atomic`], never from `core::sync::atomic`
//! directly, so that `cfg(loom)` can swap in loom's model-checked atomics for the lock-free algorithms.
//!
//! The primitives (layouts in `shm-layouts/sync.md`) are `#[repr(C)]` atomics whose all-zero bytes are a valid
//! initial state, and block on shared futexes:
//!
//! * [`lock`]: [`lock::RawLock`], the small unsafe raw-lock interface with guards on top, and its
//!   implementations for `Lock` ([`lock::LockState`]) and `RLock` ([`lock::RLockState`]).
//! * [`semaphore`]: `Semaphore`/`BoundedSemaphore` and `Event`.
//! * [`condvar`]: the per-waiter queue of `Condition`.
//! * [`barrier`]: the `Barrier`.
//! * [`rwlock`]: the `RWLock`.
//! * [`shared`]: placing them in segments (own or embedded) and attaching to them by handle.
//! * [`owner`], [`wait`]: caller identity and the spin-then-sleep-in-slices policy.
//!
//! Owner died (one behaviour everywhere): when a process dies holding a `Lock`, `RLock` or an `RWLock` write
//! lock, the next acquirer notices within one sleep slice (20 ms), takes the lock over and its acquire returns
//! [`lock::Acquired::OwnerDied`]: the caller holds the lock. A waiter that dies inside `Barrier.wait` breaks the
//! barrier for the others.

pub mod atomic;
pub mod barrier;
pub mod condvar;
pub mod lock;
pub mod owner;
pub mod rwlock;
pub mod semaphore;
pub mod shared;
pub mod spin;
pub mod wait;

#[cfg(test)]
mod tests;

/// Yields the thread (loom's yield under `cfg(loom)`, so model-checked retry loops stay finite).
#[inline]
pub fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}

/// Runs a loom model with the bounds the models of this crate use: up to `preemptions` preemptions (most
/// concurrency bugs need few) and room for the retry loops of waiting threads.
#[cfg(all(test, loom))]
pub(crate) fn loom_model<F: Fn() + Sync + Send + 'static>(preemptions: usize, f: F) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = 100_000;
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(preemptions);
    }
    builder.check(f);
}

/// Nothing outside loom; loom's yield under `cfg(loom)`, for short retry loops that need no yield in real life
/// but must yield in a model (a loop that cannot see other threads progress would never end there).
#[inline]
pub fn yield_now_in_model() {
    #[cfg(loom)]
    loom::thread::yield_now();
}
