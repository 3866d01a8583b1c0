//! A tiny process-local spin mutex for rarely-taken, short critical sections whose lock must be handled
//! around `fork()` (the segment registry). It is never placed in shared memory.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// A process-local spin mutex.
pub struct SpinMutex<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked` (acquire on lock, release on unlock), as in any mutex.
unsafe impl<T: Send> Sync for SpinMutex<T> {}
// SAFETY: moving the mutex moves the value; T: Send suffices.
unsafe impl<T: Send> Send for SpinMutex<T> {}

/// Guard of a [`SpinMutex`]; unlocks on drop.
pub struct SpinGuard<'a, T> {
    mutex: &'a SpinMutex<T>,
}

impl<T> SpinMutex<T> {
    /// A new unlocked mutex.
    pub const fn new(value: T) -> Self {
        SpinMutex { locked: AtomicBool::new(false), value: UnsafeCell::new(value) }
    }

    /// Takes the lock, spinning then yielding.
    pub fn lock(&self) -> SpinGuard<'_, T> {
        self.raw_lock();
        SpinGuard { mutex: self }
    }

    /// Takes the lock without producing a guard (for fork handlers, which unlock in another function).
    pub fn raw_lock(&self) {
        let backoff = crossbeam_utils::Backoff::new();
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            if backoff.is_completed() {
                std::thread::yield_now();
            } else {
                backoff.snooze();
            }
        }
    }

    /// Releases a lock taken with [`raw_lock`](Self::raw_lock).
    ///
    /// # Safety
    ///
    /// The caller must hold the lock through `raw_lock` and must not use any guard afterwards.
    pub unsafe fn raw_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Access to the value while holding the lock through `raw_lock`.
    ///
    /// # Safety
    ///
    /// The caller must hold the lock through `raw_lock` for as long as the reference lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn raw_get(&self) -> &mut T {
        // SAFETY: the caller holds the lock, so no other reference to the value exists.
        unsafe { &mut *self.value.get() }
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, and &mut self makes this the only access.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.locked.store(false, Ordering::Release);
    }
}
