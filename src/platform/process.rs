//! Process identity and liveness: the one identity cache and the one liveness check of the crate.
//!
//! A pid alone is not an identity: pids are reused. Everything that records "which process holds this" stores
//! the pair (pid, start time), where start time is field 22 of `/proc/<pid>/stat` (clock ticks since boot), or
//! as much of the start time as fits beside the pid in its word (see [`Start`]). A process is alive when
//! `/proc/<pid>/stat` exists, is not a zombie, and shows a matching start time: [`alive`] is that check, and
//! every liveness question of the crate goes through it ([`exists`] is a cheaper hint for the few paths that run
//! often, where a wrong "alive" costs only a wasted wake-up).
//!
//! The caller's identity ([`current`], and with its thread id [`me`]) is cached: a static for the process, a
//! thread-local for the thread, invalidated in a forked child by a `pthread_atfork` handler, so it is right
//! after `fork()` and costs one thread-local read and one atomic load on the fast path (lock acquires use it).

use crate::base::atomic::local::{AtomicU32, AtomicU64, Ordering};
use std::cell::Cell;
use std::sync::Once;

/// (pid, start time) of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Start time in clock ticks since boot, as `/proc/<pid>/stat` reports it.
    pub start_time: u64,
}

/// The calling thread: its process's identity and its kernel thread id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Me {
    /// Process id.
    pub pid: u32,
    /// Process start time (clock ticks since boot, `/proc/<pid>/stat` field 22).
    pub start: u64,
    /// Kernel thread id (`gettid()`).
    pub tid: u32,
}

impl Me {
    /// The process part.
    pub fn process(self) -> ProcessId {
        ProcessId { pid: self.pid, start_time: self.start }
    }
}

/// Cached pid of this process; 0 = unknown (never computed yet, or reset in a fork child).
static PID: AtomicU32 = AtomicU32::new(0);
/// Cached start time; valid while [`PID`] is nonzero (stored before it, Release).
static START: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

thread_local! {
    /// The identity last computed on this thread (pid 0 = none yet). Valid while its pid equals [`PID`].
    static ME: Cell<Me> = const { Cell::new(Me { pid: 0, start: 0, tid: 0 }) };
}

extern "C" fn child_after_fork() {
    // Async-signal-safe: one atomic store. The next `current()`/`me()` recomputes everything.
    PID.store(0, Ordering::Relaxed);
}

#[cold]
fn refresh() -> ProcessId {
    ATFORK.call_once(|| {
        // SAFETY: registering a handler that only does an atomic store; the function pointer lives forever.
        unsafe {
            libc::pthread_atfork(None, None, Some(child_after_fork));
        }
    });
    let pid = std::process::id();
    let start_time = read_stat(pid).map(|s| s.start_time).unwrap_or(0);
    START.store(start_time, Ordering::Relaxed);
    // Release pairs with the Acquire in `current()`: a thread that sees the pid sees the start time before it.
    PID.store(pid, Ordering::Release);
    ProcessId { pid, start_time }
}

/// The calling process's identity (cached; right after `fork`).
#[inline]
pub fn current() -> ProcessId {
    match PID.load(Ordering::Acquire) {
        0 => refresh(),
        pid => ProcessId { pid, start_time: START.load(Ordering::Relaxed) },
    }
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
    let id = current();
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let me = Me { pid: id.pid, start: id.start_time, tid };
    ME.with(|c| c.set(me));
    me
}

/// What we read from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy)]
struct Stat {
    state: u8,
    start_time: u64,
}

fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or ')': split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.as_bytes().first().copied()?;
    // After the state (field 3) come fields 4..; start time is field 22, i.e. the 19th after the state.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// How much of a process's start time a record kept, to tell a reused pid from the process it recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Nothing (only a pid is known): any live process with that pid matches.
    Any,
    /// The whole start time.
    Is(u64),
    /// Its low `bits` bits (a word that packs the pid beside them: an owner word keeps 41, a dict entry 16).
    Low {
        /// The recorded low bits.
        value: u64,
        /// How many.
        bits: u32,
    },
}

impl Start {
    /// `Is(t)`, or `Any` for 0 (a record whose start time was never written).
    pub fn or_any(t: u64) -> Start {
        if t == 0 {
            Start::Any
        } else {
            Start::Is(t)
        }
    }

    #[cfg_attr(loom, allow(dead_code))] // the loom stand-in ignores start times
    fn matches(self, t: u64) -> bool {
        match self {
            Start::Any => true,
            Start::Is(s) => s == t,
            Start::Low { value, bits } => {
                let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
                t & mask == value & mask
            }
        }
    }
}

/// THE liveness check: whether process `pid` exists, is not a zombie, and its start time matches `start`. pid 0
/// (a free or corrupt word) is never alive. Reads `/proc`: call it on slow paths (after a sleep slice, when a
/// table is full, in a sweep), never per acquire.
#[cfg(not(loom))]
pub fn alive(pid: u32, start: Start) -> bool {
    pid != 0 && read_stat(pid).is_some_and(|st| !matches!(st.state, b'Z' | b'X' | b'x') && start.matches(st.start_time))
}

/// LOOM STAND-IN for the `/proc` read: every pid but 0 is alive, whatever the start time, until a model declares
/// it dead with [`model::kill`]. See [`model`].
#[cfg(loom)]
pub fn alive(pid: u32, _start: Start) -> bool {
    pid != 0 && !model::is_dead(pid)
}

/// A cheap hint (`kill(pid, 0)`, no `/proc` read) for paths that run often: false means the pid is gone; true
/// may still be a zombie or a reused pid. Use it only where a wrong "alive" costs a wasted wake-up, never where
/// it would keep something held; [`alive`] decides everything else.
#[cfg(not(loom))]
pub fn exists(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the pid exists and may be signalled.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// LOOM STAND-IN: as [`alive`].
#[cfg(loom)]
pub fn exists(pid: u32) -> bool {
    alive(pid, Start::Any)
}

/// The identity of the live process `pid`, if there is one (reads `/proc`; for recording another process's
/// identity, not for liveness checks).
pub fn identity_of(pid: u32) -> Option<ProcessId> {
    let st = read_stat(pid)?;
    (!matches!(st.state, b'Z' | b'X' | b'x')).then_some(ProcessId { pid, start_time: st.start_time })
}

/// LOOM STAND-IN for process death. Models run as threads of one process, so "process P died" is a model event:
/// a thread that played P (it took locks with pid P) stops, then calls [`kill`]`(P)`; from then on [`alive`]
/// (and [`exists`]) says P is dead, whatever its start time. The death is a loom atomic (SeqCst),
/// so loom explores liveness checks before and after it. One dead pid per execution is all the models need.
/// `identity_of` and `current` still read `/proc` (no modelled code needs them).
#[cfg(loom)]
pub mod model {
    use crate::base::atomic::{AtomicU32, Ordering};
    use std::cell::RefCell;
    use std::rc::Rc;

    thread_local! {
        static DEAD: RefCell<Option<Rc<AtomicU32>>> = const { RefCell::new(None) };
    }

    /// Starts a fresh execution in which every process is alive (called by `platform::loom_model`).
    pub fn reset() {
        DEAD.with(|d| *d.borrow_mut() = Some(Rc::new(AtomicU32::new(0))));
    }

    /// Declares process `pid` dead from now on.
    pub fn kill(pid: u32) {
        let dead = DEAD.with(|d| d.borrow().clone()).expect("process::model::kill outside platform::loom_model");
        dead.store(pid, Ordering::SeqCst);
    }

    pub(super) fn is_dead(pid: u32) -> bool {
        match DEAD.with(|d| d.borrow().clone()) {
            Some(dead) => dead.load(Ordering::SeqCst) == pid,
            None => false,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        let me = current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert!(alive(me.pid, Start::Is(me.start_time)) && alive(me.pid, Start::or_any(0)));
        assert!(!alive(me.pid, Start::Is(me.start_time + 1)), "another start time: a reused pid");
        assert!(alive(me.pid, Start::Any) && exists(me.pid));
        assert!(alive(me.pid, Start::Low { value: me.start_time & 0xffff, bits: 16 }));
        assert!(!alive(me.pid, Start::Low { value: (me.start_time + 1) & 0xffff, bits: 16 }));
        assert!(!alive(0, Start::Any) && !exists(0));
    }

    #[test]
    fn identity_is_cached_and_per_thread() {
        let a = me();
        assert_eq!(a.pid, std::process::id());
        assert_eq!(a.process(), current());
        assert_eq!(me(), a);
        let b = std::thread::spawn(me).join().unwrap();
        assert_eq!(b.pid, a.pid);
        assert_ne!(b.tid, a.tid);
    }

    #[test]
    fn the_cache_is_refreshed_in_a_fork_child() {
        let parent = me();
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only computes its identity, writes 24 bytes and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let c = me();
            let words = [c.pid as u64, c.start, (c.tid == c.pid) as u64];
            let bytes: Vec<u8> = words.iter().flat_map(|x| x.to_le_bytes()).collect();
            // SAFETY: writes `bytes` to the pipe's write end, then exits without running destructors.
            unsafe {
                libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        // SAFETY: closes our copy of the write end; reads into `buf` (24 bytes, a pipe write of 24 is atomic);
        // waits for the child forked above.
        let (n, buf) = unsafe {
            libc::close(fds[1]);
            let mut buf = [0u8; 24];
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            libc::close(fds[0]);
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            (n, buf)
        };
        assert_eq!(n, 24);
        let word = |i: usize| u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(word(0), pid as u64, "the child sees its own pid, not the parent's");
        assert!(word(1) >= parent.start, "and its own start time");
        assert_eq!(word(2), 1, "the forking thread is the child's main thread: tid == pid");
        assert_eq!(me(), parent, "the parent's cache is untouched");
    }

    #[test]
    fn exited_child_is_dead_even_as_zombie() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Give it time to exit; do not reap it so it stays a zombie.
        for _ in 0..200 {
            if !alive(pid, Start::Any) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!alive(pid, Start::Any), "a zombie must count as dead");
        drop(child);
    }
}
