//! The one place atomics come from. Under `cfg(loom)` these are loom's types so that the lock-free algorithms
//! can be model-checked; otherwise they are the standard ones (which are `#[repr(C)]`-compatible: an
//! `AtomicU64` has the size and alignment of a `u64`, which the shared-memory layouts rely on).

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
