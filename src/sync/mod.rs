//! Atomics and cross-process synchronisation.
//!
//! All code that touches shared memory takes its atomic types from [`atomic`], never from `core::sync::atomic`
//! directly, so that `cfg(loom)` can swap in loom's model-checked atomics for the lock-free algorithms.

pub mod atomic;
pub mod spin;
