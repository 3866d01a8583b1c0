//! pyconc: a multiprocess shared-memory runtime.
//!
//! The crate is layered the way `ARCHITECTURE.md` describes:
//!
//! * [`base`]: the ground floor: the one atomics module (swapped for loom under `cfg(loom)`), a process-local
//!   spin mutex and the loom hooks. It uses nothing else of the crate.
//! * [`platform`]: the Linux pieces (shared futexes, process identity and liveness).
//! * [`segment`]: named POSIX shared-memory segments, their validated header, the lifetime scheme that
//!   unlinks a segment when its last live user lets go, typed [`segment::Offset`]s and the block allocator.
//! * [`codec`]: the byte format in which Python values are stored in segments, and the stable key hash.
//! * [`sync`]: the cross-process locks, semaphores, events, conditions, barriers and reader-writer locks.
//! * [`dict`]: the sharded hash map behind `ConcurrentDict`.
//! * [`deque`]: the double-ended queue behind `ConcurrentDeque`.
//! * [`objects`]: the structures that live in segments (atomic cells, Value/Array).
//! * `python` (feature `python`): the thin PyO3 layer that becomes `pyconc._native`.
//!
//! Everything below `python` is plain Rust and is tested with `cargo test` without an interpreter.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod base;
pub mod codec;
pub mod deque;
pub mod dict;
pub mod error;
pub mod objects;
pub mod platform;
pub mod queue;
pub mod segment;
pub mod sync;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
