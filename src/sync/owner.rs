//! Who is calling: the identity that lock words record, cheap enough for an uncontended acquire.
//!
//! A lock word stores the holder's pid (pids fit in 22 bits on Linux, `PID_MAX_LIMIT` = 2^22), so taking a lock
//! and recording its owner is one compare-and-swap: a process killed at any instant leaves either a free word or
//! a word naming it. Beside the word, the holder records its start time (to tell a reused pid from the original
//! process) and its thread id (for `RLock` ownership and reprs).
//!
//! `getpid()`/`gettid()` are system calls; the fast paths use values cached in a static and a thread-local,
//! invalidated in the child by a `pthread_atfork` handler, so they stay right after `fork()`.

use crate::base::atomic::local::{AtomicU32, AtomicU64, Ordering};
use crate::platform::process;
use std::cell::Cell;
use std::sync::Once;

/// Bits of a lock word that hold the owner pid.
pub const PID_MASK: u32 = 0x3fff_ffff;
/// Bit of a lock word set when some waiter may be sleeping on it (the unlocker must wake one).
pub const WAITERS: u32 = 1 << 31;

/// The caller's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    /// Process id.
    pub pid: u32,
    /// Process start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
    pub start: u64,
    /// Kernel thread id (`gettid()`).
    pub tid: u32,
}

/// Cached pid of this process; 0 = unknown (never set yet, or reset in a fork child).
static PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

thread_local! {
    /// The identity last computed on this thread (pid 0 = none yet). Valid while its pid equals [`PID`].
    static ME: Cell<Me> = const { Cell::new(Me { pid: 0, start: 0, tid: 0 }) };
}

extern "C" fn child_after_fork() {
    // Async-signal-safe: one atomic store. The next `me()` recomputes everything.
    PID.store(0, Ordering::Relaxed);
}

#[cold]
fn refresh() -> (u32, u64) {
    ATFORK.call_once(|| {
        // SAFETY: registering a handler that only does an atomic store; the function pointer lives forever.
        unsafe {
            libc::pthread_atfork(None, None, Some(child_after_fork));
        }
    });
    let id = process::current();
    START.store(id.start_time, Ordering::Relaxed);
    // Release pairs with the Acquire in `me()`: a thread that sees the pid sees the start time stored before it.
    PID.store(id.pid, Ordering::Release);
    (id.pid, id.start_time)
}

/// The calling process and thread: one thread-local read and one atomic load on the fast path.
#[inline]
pub fn me() -> Me {
    let cached = ME.with(Cell::get);
    if cached.pid != 0 && cached.pid == PID.load(Ordering::Relaxed) {
        return cached;
    }
    me_slow()
}

#[cold]
fn me_slow() -> Me {
    let (pid, start) = match PID.load(Ordering::Acquire) {
        0 => refresh(),
        pid => (pid, START.load(Ordering::Relaxed)),
    };
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let me = Me { pid, start, tid };
    ME.with(|c| c.set(me));
    me
}

/// Whether the process `pid` (with start time `start`, 0 = unknown) is still alive. Reads `/proc`: call it only
/// on slow paths (after a sleep slice), never per acquire. pid 0 is never alive (a corrupt word).
pub fn alive(pid: u32, start: u64) -> bool {
    pid != 0 && process::is_alive(process::ProcessId { pid, start_time: start })
}

/// A cheap liveness probe (`kill(pid, 0)`, no `/proc` read) for paths that run often. A zombie counts as alive
/// here; use [`alive`] where that matters.
pub fn probably_alive(pid: u32) -> bool {
    if pid == 0 || pid > PID_MASK {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the pid exists and may be signalled.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_cached_and_per_thread() {
        let a = me();
        assert_eq!(a.pid, std::process::id());
        assert!(a.start > 0);
        assert_eq!(me(), a);
        let b = std::thread::spawn(me).join().unwrap();
        assert_eq!(b.pid, a.pid);
        assert_ne!(b.tid, a.tid);
        assert!(alive(a.pid, a.start));
        assert!(!alive(a.pid, a.start + 1));
        assert!(probably_alive(a.pid));
        assert!(!alive(0, 0));
    }
}
