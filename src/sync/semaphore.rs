//! `Semaphore`/`BoundedSemaphore` and `Event`: a counter (or flag) that is itself the futex word.
//!
//! Both use the same wake-up handshake: a sleeper increments `waiters` and then re-reads the word before the
//! futex call (which compares it atomically); the waker changes the word and then reads `waiters`. All four
//! accesses are SeqCst, so either the sleeper sees the new word or the waker sees the sleeper and calls
//! `futex_wake`. Wakers skip the system call when nobody sleeps.

use super::wait::{self, Slept, WaitError};
use crate::base::atomic::{AtomicU32, Ordering};
use crate::platform::futex::{self, Deadline};
use crate::shm_struct;

/// Largest semaphore value (as `SEM_VALUE_MAX` on Linux).
pub const SEM_VALUE_MAX: u32 = i32::MAX as u32;

shm_struct! {
    /// The state of a semaphore (16 bytes; zero = an unbounded semaphore with value 0).
    pub struct SemState {
        /// The value; the futex word.
        pub value: AtomicU32,
        /// Number of threads that may be asleep on `value`.
        pub waiters: AtomicU32,
        /// Maximum value for a bounded semaphore; 0 = unbounded ([`SEM_VALUE_MAX`]).
        pub maxvalue: AtomicU32,
        /// Unused; zero.
        pub reserved: AtomicU32,
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<SemState>() == 16);
    assert!(offset_of!(SemState, value) == 0);
    assert!(offset_of!(SemState, waiters) == 4);
    assert!(offset_of!(SemState, maxvalue) == 8);
};

/// Errors of [`SemState::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyReleases;

impl SemState {
    /// Initialises a fresh (zeroed, unshared) state.
    pub fn init(&self, value: u32, maxvalue: Option<u32>) {
        self.maxvalue.store(maxvalue.unwrap_or(0), Ordering::Relaxed);
        self.value.store(value, Ordering::Release);
    }

    /// Decrements if positive.
    #[inline]
    pub fn try_acquire(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            // Acquire: what the releaser wrote before its release is visible to us.
            match self.value.compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(cur) => v = cur,
            }
        }
        false
    }

    /// Decrements, waiting until `deadline` for the value to become positive.
    pub fn acquire(&self, deadline: &Deadline) -> Result<(), WaitError> {
        if self.try_acquire() {
            return Ok(());
        }
        if deadline.expired() {
            return Err(WaitError::TimedOut);
        }
        if wait::spin(deadline, || self.try_acquire()) {
            return Ok(());
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            if self.try_acquire() {
                break Ok(());
            }
            match wait::sleep(&self.value, 0, deadline) {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    if let Err(e) = wait::slice_ended() {
                        break Err(e);
                    }
                }
                Slept::TimedOut => break if self.try_acquire() { Ok(()) } else { Err(WaitError::TimedOut) },
                Slept::Interrupted => break Err(WaitError::Interrupted),
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// For a waiter that sleeps elsewhere (the asyncio bridge's waker) on `value` while it is 0: counts it in
    /// `waiters` (so releases wake the word) and returns true, or returns false (counting nothing) if the value
    /// is positive now. A counted waiter calls [`withdraw_waiter`](Self::withdraw_waiter) once.
    pub fn announce_waiter(&self) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        if self.value.load(Ordering::SeqCst) > 0 {
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Undoes one [`announce_waiter`](Self::announce_waiter) that returned true.
    pub fn withdraw_waiter(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Adds `n`, failing (and changing nothing) if that would exceed the maximum.
    pub fn release(&self, n: u32) -> Result<(), TooManyReleases> {
        let max = match self.maxvalue.load(Ordering::Relaxed) {
            0 => SEM_VALUE_MAX,
            m => m,
        };
        let mut v = self.value.load(Ordering::Relaxed);
        loop {
            let new = v.checked_add(n).filter(|&x| x <= max).ok_or(TooManyReleases)?;
            match self.value.compare_exchange_weak(v, new, Ordering::SeqCst, Ordering::Relaxed) {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake(&self.value, n);
        }
        Ok(())
    }

    /// The current value.
    pub fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }

    /// The maximum (None when unbounded).
    pub fn maxvalue(&self) -> Option<u32> {
        match self.maxvalue.load(Ordering::Relaxed) {
            0 => None,
            m => Some(m),
        }
    }
}

shm_struct! {
    /// The state of an event (16 bytes; zero = not set).
    pub struct EventState {
        /// 0 or 1; the futex word.
        pub flag: AtomicU32,
        /// Number of threads that may be asleep on `flag`.
        pub waiters: AtomicU32,
        /// Unused; zero.
        pub reserved: [AtomicU32; 2],
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<EventState>() == 16);
    assert!(offset_of!(EventState, flag) == 0);
    assert!(offset_of!(EventState, waiters) == 4);
};

impl EventState {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        // SeqCst: the handshake with `waiters` (module docs); it also publishes writes made before set().
        self.flag.swap(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            futex::wake_all(&self.flag);
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.flag.store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire) != 0
    }

    /// As [`SemState::announce_waiter`], for a waiter on `flag` while it is 0.
    pub fn announce_waiter(&self) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        if self.flag.load(Ordering::SeqCst) != 0 {
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Undoes one [`announce_waiter`](Self::announce_waiter) that returned true.
    pub fn withdraw_waiter(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits until the flag is set; returns whether it is (false on timeout).
    pub fn wait(&self, deadline: &Deadline) -> Result<bool, WaitError> {
        if self.is_set() {
            return Ok(true);
        }
        if deadline.expired() {
            return Ok(false);
        }
        if wait::spin(deadline, || self.is_set()) {
            return Ok(true);
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let r = loop {
            if self.flag.load(Ordering::SeqCst) != 0 {
                break Ok(true);
            }
            match wait::sleep(&self.flag, 0, deadline) {
                Slept::Woken => {}
                Slept::SliceEnd => {
                    if let Err(e) = wait::slice_ended() {
                        break Err(e);
                    }
                }
                Slept::TimedOut => break Ok(self.is_set()),
                Slept::Interrupted => break Err(WaitError::Interrupted),
            }
        };
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }
}
