//! The waker behind the asyncio bridge: a thread that sleeps on every futex word some coroutine of this process
//! awaits, all at once (`futex_waitv`), and posts the tokens of the words that changed to their event loop's
//! [`Inbox`] (an eventfd the loop watches). Waiting costs no thread per waiter and no polling.
//!
//! How a coroutine waits (the Python side, `pyconc/aio.py`): it tries the operation on the loop thread; if
//! that would block, the PyO3 layer *announces* it as a waiter by the primitive's own protocol (sets a lock's
//! WAITERS bit, counts itself in a semaphore's `waiters`, sets bit 0 of a queue's wake word, ...), which yields
//! the word and the value it holds while nothing changed, and hands both to [`watch`] with a [`Watched`] that
//! keeps the mapping alive and whose `Drop` withdraws the announcement. When the word is woken (or no longer
//! holds that value) the token goes to the inbox, the loop resolves the coroutine's future and the coroutine
//! tries again on the loop thread. A registration is one-shot: it ends when fired or [`unwatch`]ed.
//!
//! Threads: one per 127 distinct (word, value) pairs waited on at once (a `futex_waitv` call takes 128 words;
//! one is the thread's own control word, bumped when its set changes), started on demand, never more than the
//! peak need. In a forked child none of them exists: the first [`watch`] there builds a fresh waker (the
//! parent's state, possibly locked at the fork, is left alone). Without `futex_waitv` (Linux < 5.16, or denied
//! by seccomp) the threads poll their words every [`FALLBACK_POLL`] instead.

use super::owner;
use crate::base::atomic::local::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use crate::base::atomic::AtomicU32 as ShmU32;
use crate::platform::futex::{self, AnyResult, AnyWord, WAIT_ANY_MAX};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Something a coroutine waits on: a futex word (kept mapped while the value lives). Dropping it withdraws the
/// waiter's announcement (e.g. decrements a `waiters` count); it is dropped when the registration fires or is
/// cancelled, on whichever thread that happens, possibly a little later than that.
pub trait Watched: Send + Sync + 'static {
    /// The word to sleep on. Must stay the same and valid while `self` lives.
    fn word(&self) -> &ShmU32;
}

/// How often the threads look at their words when the kernel has no `futex_waitv`.
pub const FALLBACK_POLL: Duration = Duration::from_millis(1);

/// Distinct (word, value) pairs one thread sleeps on (the rest of the kernel's limit is its control word).
const KEYS_PER_THREAD: usize = WAIT_ANY_MAX - 1;

/// Where fired tokens go: one per event loop. The loop watches [`fd`](Self::fd) (an eventfd, readable while
/// tokens wait) and calls [`drain`](Self::drain).
pub struct Inbox {
    fd: OwnedFd,
    fired: Mutex<Vec<u64>>,
}

impl Inbox {
    /// A new inbox with its eventfd (non-blocking, close-on-exec).
    pub fn new() -> std::io::Result<Self> {
        use rustix::event::{eventfd, EventfdFlags};
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Inbox { fd, fired: Mutex::new(Vec::new()) })
    }

    /// The eventfd to watch for readability.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The tokens fired since the last call (clears the eventfd first, so a token posted meanwhile makes it
    /// readable again).
    pub fn drain(&self) -> Vec<u64> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(self.fd.as_fd(), &mut buf);
        std::mem::take(&mut *lock(&self.fired))
    }

    fn post(&self, tokens: &[u64]) {
        let was_empty = {
            let mut f = lock(&self.fired);
            let e = f.is_empty();
            f.extend_from_slice(tokens);
            e
        };
        if was_empty {
            // The loop drains everything at once: one write per batch.
            let _ = rustix::io::write(self.fd.as_fd(), &1u64.to_ne_bytes());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A word and the value it held when the waiter announced itself.
type Key = (usize, u32);

struct Reg {
    token: u64,
    inbox: Arc<Inbox>,
    watch: Arc<dyn Watched>,
    key: Key,
    thread: usize,
}

struct ThreadKeys {
    ctl: Arc<AtomicU32>,
    keys: HashMap<Key, Vec<u64>>,
}

struct State {
    regs: HashMap<u64, Reg>,
    threads: Vec<ThreadKeys>,
    /// `futex_waitv` is missing: poll.
    fallback: bool,
}

struct Waker {
    pid: u32,
    next: AtomicU64,
    state: Mutex<State>,
}

/// This process's waker (built on first use, and again in a forked child).
static WAKER: AtomicPtr<Waker> = AtomicPtr::new(std::ptr::null_mut());

fn waker() -> &'static Waker {
    let me = owner::me().pid;
    let p = WAKER.load(Ordering::Acquire);
    // SAFETY: a non-null WAKER comes from Box::into_raw below and is never freed (a replaced one is leaked on
    // purpose: in a fork child its threads are gone, but nothing else is).
    if let Some(w) = unsafe { p.as_ref() } {
        if w.pid == me {
            return w;
        }
    }
    let fresh = Box::into_raw(Box::new(Waker {
        pid: me,
        next: AtomicU64::new(1),
        state: Mutex::new(State {
            regs: HashMap::new(),
            threads: Vec::new(),
            fallback: std::env::var_os("PYCONC_NO_FUTEX_WAITV").is_some_and(|v| !v.is_empty() && v != "0"),
        }),
    }));
    match WAKER.compare_exchange(p, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just stored; never freed (see above).
        Ok(_) => unsafe { &*fresh },
        Err(_) => {
            // SAFETY: `fresh` was never published; we still own it.
            drop(unsafe { Box::from_raw(fresh) });
            waker()
        }
    }
}

/// Registers a waiter: when `watch.word()` is woken or no longer holds `expected`, `token` (returned) is posted
/// to `inbox`, once. Fails only if a waker thread cannot be started.
pub fn watch(inbox: &Arc<Inbox>, watch: Arc<dyn Watched>, expected: u32) -> std::io::Result<u64> {
    let w = waker();
    let token = w.next.fetch_add(1, Ordering::Relaxed);
    let key = (watch.word() as *const ShmU32 as usize, expected);
    let mut st = lock(&w.state);
    let thread = match st.threads.iter().position(|t| t.keys.contains_key(&key)) {
        // Its thread already sleeps on this (word, value): nothing to tell it.
        Some(i) => {
            if let Some(v) = st.threads[i].keys.get_mut(&key) {
                v.push(token);
            }
            i
        }
        None => {
            let i = match st.threads.iter().position(|t| t.keys.len() < KEYS_PER_THREAD) {
                Some(i) => i,
                None => {
                    let ctl = Arc::new(AtomicU32::new(0));
                    let i = st.threads.len();
                    std::thread::Builder::new().name(format!("pyconc-waker-{i}")).spawn(move || run(w, i))?;
                    st.threads.push(ThreadKeys { ctl, keys: HashMap::new() });
                    i
                }
            };
            st.threads[i].keys.insert(key, vec![token]);
            poke(&st.threads[i].ctl);
            i
        }
    };
    st.regs.insert(token, Reg { token, inbox: inbox.clone(), watch, key, thread });
    Ok(token)
}

/// Cancels a registration. Returns whether it was still waiting (false: it fired already, or never existed).
pub fn unwatch(token: u64) -> bool {
    let w = waker();
    let removed = {
        let mut st = lock(&w.state);
        let Some(reg) = st.regs.remove(&token) else {
            return false;
        };
        let t = &mut st.threads[reg.thread];
        if let Some(tokens) = t.keys.get_mut(&reg.key) {
            tokens.retain(|&x| x != token);
            if tokens.is_empty() {
                // Stop sleeping on a word nobody waits for (its mapping may go away).
                t.keys.remove(&reg.key);
                poke(&t.ctl);
            }
        }
        reg
    };
    // The announcement is withdrawn outside the lock.
    drop(removed);
    true
}

/// How many waker threads this process runs, and how many registrations wait.
pub fn stats() -> (usize, usize) {
    // SAFETY: as in `waker`.
    match unsafe { WAKER.load(Ordering::Acquire).as_ref() } {
        Some(w) if w.pid == owner::me().pid => {
            let st = lock(&w.state);
            (st.threads.len(), st.regs.len())
        }
        _ => (0, 0),
    }
}

fn poke(ctl: &AtomicU32) {
    ctl.fetch_add(1, Ordering::SeqCst);
    futex::wake_private(ctl, 1);
}

/// Fires every registration of thread `i` whose word no longer holds its value, and `woken` (if any). Returns
/// what to deliver and drop outside the lock.
fn collect(st: &mut State, i: usize, woken: Option<Key>) -> Vec<Reg> {
    let stale: Vec<Key> = st.threads[i]
        .keys
        .iter()
        .filter(|(k, tokens)| {
            Some(**k) == woken
                || tokens
                    .first()
                    .and_then(|t| st.regs.get(t))
                    .is_some_and(|r| r.watch.word().load(Ordering::SeqCst) != k.1)
        })
        .map(|(k, _)| *k)
        .collect();
    let mut out = Vec::new();
    for k in stale {
        for t in st.threads[i].keys.remove(&k).unwrap_or_default() {
            if let Some(r) = st.regs.remove(&t) {
                out.push(r);
            }
        }
    }
    out
}

fn deliver(regs: Vec<Reg>) {
    // Group by inbox so each loop is woken once per batch.
    let mut by: Vec<(Arc<Inbox>, Vec<u64>)> = Vec::new();
    for r in &regs {
        match by.iter_mut().find(|(i, _)| Arc::ptr_eq(i, &r.inbox)) {
            Some((_, v)) => v.push(r.token),
            None => by.push((r.inbox.clone(), vec![r.token])),
        }
    }
    // Withdraw the announcements first: the woken coroutine then retries against a settled count.
    drop(regs);
    for (inbox, tokens) in by {
        inbox.post(&tokens);
    }
}

/// The loop of waker thread `i`.
fn run(w: &'static Waker, i: usize) {
    let mut woken: Option<Key> = None;
    loop {
        // Under the lock: fire what changed, then take what to sleep on (with clones that keep it mapped).
        let (ctl, ctl_val, sleep_on, fallback, fired) = {
            let mut st = lock(&w.state);
            let fired = collect(&mut st, i, woken.take());
            let t = &st.threads[i];
            let ctl = t.ctl.clone();
            let ctl_val = ctl.load(Ordering::SeqCst);
            let sleep_on: Vec<(Key, Arc<dyn Watched>)> = t
                .keys
                .iter()
                .filter_map(|(k, tokens)| tokens.first().and_then(|x| st.regs.get(x)).map(|r| (*k, r.watch.clone())))
                .collect();
            (ctl, ctl_val, sleep_on, st.fallback, fired)
        };
        if !fired.is_empty() {
            deliver(fired);
        }
        if fallback {
            // Sleep on the control word only, coming back every FALLBACK_POLL while anything is awaited.
            let poll = (!sleep_on.is_empty()).then_some(FALLBACK_POLL);
            futex::wait_private(&ctl, ctl_val, poll);
            continue;
        }
        let mut words = Vec::with_capacity(sleep_on.len() + 1);
        words.push(AnyWord { word: &ctl, expected: ctl_val, shared: false });
        for ((_, v), watch) in &sleep_on {
            words.push(AnyWord { word: watch.word(), expected: *v, shared: true });
        }
        match futex::wait_any(&words, None) {
            AnyResult::Woken(0) => {}
            AnyResult::Woken(j) => woken = sleep_on.get(j - 1).map(|(k, _)| *k),
            AnyResult::Unsupported => lock(&w.state).fallback = true,
            AnyResult::Changed | AnyResult::TimedOut | AnyResult::Interrupted => {}
        }
        // The clones in `sleep_on` drop here, outside the lock.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Word(ShmU32, Arc<AtomicU32>);

    impl Watched for Word {
        fn word(&self) -> &ShmU32 {
            &self.0
        }
    }

    impl Drop for Word {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn drain_within(inbox: &Inbox, t: Duration) -> Vec<u64> {
        let end = Instant::now() + t;
        loop {
            let got = inbox.drain();
            if !got.is_empty() || Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn fires_on_wake_and_on_a_changed_value_once() {
        let inbox = Arc::new(Inbox::new().unwrap());
        let dropped = Arc::new(AtomicU32::new(0));
        let a = Arc::new(Word(ShmU32::new(5), dropped.clone()));
        let b = Arc::new(Word(ShmU32::new(7), dropped.clone()));
        let ta = watch(&inbox, a.clone(), 5).unwrap();
        // Registered with a value the word no longer holds: fires without any wake.
        let tb = watch(&inbox, b.clone(), 6).unwrap();
        assert_eq!(drain_within(&inbox, Duration::from_secs(5)), vec![tb]);
        std::thread::sleep(Duration::from_millis(20));
        assert!(inbox.drain().is_empty(), "a registration fires once");
        a.0.store(6, Ordering::SeqCst);
        futex::wake_all(&a.0);
        assert_eq!(drain_within(&inbox, Duration::from_secs(5)), vec![ta]);
        assert!(!unwatch(ta), "fired registrations are gone");
        // Both announcements were withdrawn (the waker's clones dropped) once fired.
        let end = Instant::now() + Duration::from_secs(5);
        while (Arc::strong_count(&a) > 1 || Arc::strong_count(&b) > 1) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        drop((a, b));
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn unwatch_cancels_and_many_words_use_few_threads() {
        let inbox = Arc::new(Inbox::new().unwrap());
        let dropped = Arc::new(AtomicU32::new(0));
        let words: Vec<_> = (0..300).map(|_| Arc::new(Word(ShmU32::new(0), dropped.clone()))).collect();
        let tokens: Vec<u64> = words.iter().map(|w| watch(&inbox, w.clone(), 0).unwrap()).collect();
        let (threads, _) = stats();
        assert!(threads <= 300_usize.div_ceil(KEYS_PER_THREAD) + 3, "{threads} waker threads");
        for t in &tokens[..299] {
            assert!(unwatch(*t));
        }
        words[299].0.store(1, Ordering::SeqCst);
        futex::wake_all(&words[299].0);
        assert_eq!(drain_within(&inbox, Duration::from_secs(5)), vec![tokens[299]]);
    }
}
