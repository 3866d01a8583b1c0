//! Atomics and cross-process synchronisation.
//!
//! All code that touches shared memory takes its atomic types from [`atomic`], never from `core::sync::atomic`
//! directly, so that `cfg(loom)` can swap in loom's model-checked atomics for the lock-free algorithms.

pub mod atomic;
pub mod spin;

/// Yields the thread (loom's yield under `cfg(loom)`, so model-checked retry loops stay finite).
#[inline]
pub fn yield_now() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::thread::yield_now();
}
