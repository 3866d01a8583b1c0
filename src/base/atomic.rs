//! The one place atomics come from.
//!
//! * The root of this module holds the atomics for **shared memory** and the lock-free algorithms: under
//!   `cfg(loom)` they are loom's types so those algorithms can be model-checked; otherwise the standard ones
//!   (which have the size and alignment of the plain integers the shared-memory layouts rely on).
//! * [`local`] holds the standard atomics, never swapped, for **process-local** state: statics (loom types
//!   cannot be statics), caches and flags that no other process sees and no model checks.
//!
//! No other module names `std::sync::atomic` or `core::sync::atomic`; `tests/layers.rs` fails if one does.

#[cfg(not(loom))]
pub use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Process-local atomics: the standard types under every configuration.
pub mod local {
    pub use std::sync::atomic::{
        AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
    };
}
