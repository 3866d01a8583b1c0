//! Cross-process synchronisation.
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
//! * [`waker`]: the asyncio bridge's waker thread, which sleeps on every awaited futex word at once.
//!
//! Owner died (one behaviour everywhere): when a process dies holding a `Lock`, `RLock` or an `RWLock` write
//! lock, the next acquirer notices within one sleep slice (20 ms), takes the lock over and its acquire returns
//! [`lock::Acquired::OwnerDied`]: the caller holds the lock. A waiter that dies inside `Barrier.wait` breaks the
//! barrier for the others.

pub mod barrier;
pub mod condvar;
pub mod lock;
pub mod owner;
pub mod rwlock;
pub mod semaphore;
pub mod shared;
pub mod wait;
#[cfg(not(loom))]
pub mod waker;

#[cfg(test)]
mod tests;
