//! Process identity and liveness.
//!
//! A pid alone is not an identity: pids are reused. Everything that records "which process holds this" stores
//! the pair (pid, start time), where start time is field 22 of `/proc/<pid>/stat` (clock ticks since boot). A
//! process is alive when `/proc/<pid>/stat` exists, shows the same start time, and is not a zombie.

use crate::base::atomic::local::{AtomicU32, AtomicU64, Ordering};

/// (pid, start time) of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The pid.
    pub pid: u32,
    /// Start time in clock ticks since boot, as `/proc/<pid>/stat` reports it.
    pub start_time: u64,
}

static CACHED_PID: AtomicU32 = AtomicU32::new(0);
static CACHED_START: AtomicU64 = AtomicU64::new(0);

/// The calling process's identity. Cached; the cache is keyed on `getpid()` so it is right after `fork`.
pub fn current() -> ProcessId {
    let pid = std::process::id();
    if CACHED_PID.load(Ordering::Acquire) == pid {
        return ProcessId { pid, start_time: CACHED_START.load(Ordering::Acquire) };
    }
    let start_time = read_stat(pid).map(|s| s.start_time).unwrap_or(0);
    CACHED_START.store(start_time, Ordering::Release);
    CACHED_PID.store(pid, Ordering::Release);
    ProcessId { pid, start_time }
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

/// Whether the process is alive: it exists, is the same process (start time) and is not a zombie or dead.
/// A `start_time` of 0 matches any start time (used where only a pid is known).
#[cfg(not(loom))]
pub fn is_alive(id: ProcessId) -> bool {
    match read_stat(id.pid) {
        Some(st) => !matches!(st.state, b'Z' | b'X' | b'x') && (id.start_time == 0 || st.start_time == id.start_time),
        None => false,
    }
}

/// LOOM STAND-IN for the `/proc` read: every pid but 0 is alive until a model declares it dead with
/// [`model::kill`]. See [`model`].
#[cfg(loom)]
pub fn is_alive(id: ProcessId) -> bool {
    id.pid != 0 && !model::is_dead(id.pid)
}

/// The identity of the live process `pid`, if there is one.
pub fn identity_of(pid: u32) -> Option<ProcessId> {
    let st = read_stat(pid)?;
    (!matches!(st.state, b'Z' | b'X' | b'x')).then_some(ProcessId { pid, start_time: st.start_time })
}

/// Whether a process with this pid is alive, whatever its start time.
pub fn pid_alive(pid: u32) -> bool {
    pid != 0 && is_alive(ProcessId { pid, start_time: 0 })
}

/// LOOM STAND-IN for process death. Models run as threads of one process, so "process P died" is a model event:
/// a thread that played P (it took locks with pid P) stops, then calls [`kill`]`(P)`; from then on
/// [`is_alive`] says P is dead, whatever its start time. The death is a loom atomic (SeqCst), so loom explores
/// liveness checks before and after it. One dead pid per execution is all the models need. [`is_alive`] (and
/// so `pid_alive`) consults it; `identity_of` and `current` still read `/proc` (no modelled code needs them).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        let me = current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert!(is_alive(me));
        assert!(!is_alive(ProcessId { pid: me.pid, start_time: me.start_time + 1 }));
    }

    #[test]
    fn exited_child_is_dead_even_as_zombie() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Give it time to exit; do not reap it so it stays a zombie.
        for _ in 0..200 {
            if !pid_alive(pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!pid_alive(pid), "a zombie must count as dead");
        drop(child);
    }
}
