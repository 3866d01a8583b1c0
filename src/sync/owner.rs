//! What lock words record about their holder.
//!
//! A lock word stores the holder's pid (pids fit in 22 bits on Linux, `PID_MAX_LIMIT` = 2^22), so taking a lock
//! and recording its owner is one compare-and-swap: a process killed at any instant leaves either a free word or
//! a word naming it. Beside the word, the holder records its start time (to tell a reused pid from the original
//! process) and its thread id (for `RLock` ownership and reprs). The caller's identity comes from the one cache,
//! [`platform::process::me`](crate::platform::process::me) (re-exported here for the lock code), and liveness
//! from the one check, [`platform::process::alive`](crate::platform::process::alive).

pub use crate::platform::process::{me, Me};

/// Bits of a lock word that hold the owner pid.
pub const PID_MASK: u32 = 0x3fff_ffff;
/// Bit of a lock word set when some waiter may be sleeping on it (the unlocker must wake one).
pub const WAITERS: u32 = 1 << 31;
