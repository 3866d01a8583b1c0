//! The futex under loom: a wait that really blocks the loom thread until a wake on the same word.
//!
//! The kernel's contract, which this model keeps:
//!
//! * `wait(word, expected)` queues the caller, then (after a full barrier) reads the word; if it differs from
//!   `expected` it returns at once, else it sleeps until a `wake` on the same word dequeues it. A `wake` issues a
//!   full barrier, then dequeues up to `n` queued waiters. So a waker that changes the word and then wakes can
//!   never miss a waiter that read the old value: that waiter was queued before the read.
//! * A waiter dequeued by a wake returns `Woken` even if its timeout expired at the same time (the wake is not
//!   lost).
//! * A wake synchronises with the waiter it wakes (the kernel's hash-bucket lock); a wake that finds nobody
//!   synchronises with nobody.
//!
//! **Time.** Real waits are timed: `sync::wait::sleep` sleeps at most a 20 ms slice, then the caller re-checks
//! its condition and whether the process it waits for is alive, so in real life a lost wake-up costs a slice per
//! sleep, and only a dead peer is ever *meant* to be noticed that way. A model runs under one of two regimes,
//! chosen per model ([`Time`], set by `platform::loom_model`):
//!
//! * [`Time::Frozen`] (the default): time never passes. A timed wait is an untimed one: it returns only when
//!   woken (or when the word already differs). A wake-up the protocol forgot therefore leaves the waiter asleep
//!   for good and loom reports a deadlock, although in real life the slice would have hidden it. This is the
//!   regime of every "no lost wake-up" model: nobody in them is dead, so nobody may need a slice end.
//! * [`Time::Passes`]: a timed wait that is not woken times out, after the other threads have had at least one
//!   step (the waiter yields, and the timeout is taken when it runs again; loom explores where that happens).
//!   Model time then advances to the end of that wait, so deadlines (`futex::Deadline`) expire. Untimed waits
//!   still need a wake. This is the regime of models that need slice ends: a dead owner never wakes anyone,
//!   and slice-end handling is itself a protocol step (the RWLock writer's). Lost wake-ups are invisible here.
//!
//! The state (queued waiters, model time) is kept per test thread: loom runs all threads of a model on the
//! test's OS thread, switching only at loom operations, so each step below is atomic with respect to the other
//! model threads. `reset` starts every execution afresh. Each step that touches the queue also touches a
//! loom atomic of the word's bucket (relaxed: it orders nothing), so loom's DPOR sees waits and wakes of one word as
//! conflicting and explores both of their orders.
//!
//! Models must run through `platform::loom_model`, which calls [`reset`] first in every execution.

use super::WaitResult;
use crate::base::atomic::{fence, AtomicU32, Ordering};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Whether time passes in a model (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    /// Timed waits never time out: every sleeper must be woken.
    Frozen,
    /// A timed wait nobody wakes times out after the others took a step; model time advances.
    Passes,
}

struct Waiter {
    id: u64,
    addr: usize,
    thread: loom::thread::Thread,
}

struct State {
    time: Time,
    now: Duration,
    next_id: u64,
    waiters: Vec<Waiter>,
    /// Loom atomics touched by every queue step, one per hash bucket of word addresses (see the module docs).
    /// Created at the start of the execution: an atomic created later by one model thread and used by another
    /// would be an unpublished write in loom's eyes.
    buckets: Vec<Rc<AtomicU32>>,
}

/// Buckets of word addresses (consecutive `u32` words fall into different ones; a collision only makes loom
/// explore more orders).
const BUCKETS: usize = 4;

impl State {
    fn new(time: Time, buckets: Vec<Rc<AtomicU32>>) -> State {
        State { time, now: Duration::ZERO, next_id: 0, waiters: Vec::new(), buckets }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::new(Time::Frozen, Vec::new()));
}

/// Starts a fresh execution: no waiters, model time zero, the given time regime. Called by
/// `platform::loom_model` at the start of every execution.
pub fn reset(time: Time) {
    let buckets = (0..BUCKETS).map(|_| Rc::new(AtomicU32::new(0))).collect();
    STATE.with(|s| *s.borrow_mut() = State::new(time, buckets));
}

/// Model time: zero at the start of an execution; advanced only by timed waits that time out.
pub fn now() -> Duration {
    STATE.with(|s| s.borrow().now)
}

/// Waiters currently queued on `word` (for model assertions).
pub fn queued(word: &AtomicU32) -> usize {
    let addr = word as *const AtomicU32 as usize;
    STATE.with(|s| s.borrow().waiters.iter().filter(|w| w.addr == addr).count())
}

fn bucket(addr: usize) -> Rc<AtomicU32> {
    STATE
        .with(|s| s.borrow().buckets.get((addr >> 2) % BUCKETS).cloned())
        .expect("the futex model is used outside platform::loom_model")
}

/// Removes waiter `id` from the queue; false if a wake already dequeued it.
fn dequeue(id: u64) -> bool {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        match s.waiters.iter().position(|w| w.id == id) {
            Some(i) => {
                s.waiters.remove(i);
                true
            }
            None => false,
        }
    })
}

fn is_queued(id: u64) -> bool {
    STATE.with(|s| s.borrow().waiters.iter().any(|w| w.id == id))
}

pub(super) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitResult {
    let addr = word as *const AtomicU32 as usize;
    let bucket = bucket(addr);
    // Step 1: queue. (loom may switch threads before a loom operation, never between one and the plain code
    // after it: the bucket access and the queue change form one step.)
    bucket.fetch_add(1, Ordering::Relaxed);
    let (id, start, time) = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let id = s.next_id;
        s.next_id += 1;
        s.waiters.push(Waiter { id, addr, thread: loom::thread::current() });
        (id, s.now, s.time)
    });
    // Step 2: the kernel's full barrier after queueing, then the read of the word. The read is SeqCst: loom
    // orders its SeqCst fences only among themselves, not against SeqCst accesses, so after a plain fence and
    // load it would let the read miss an SC store that C++ (and the kernel's barrier) guarantees it sees, and
    // report store-buffering outcomes that cannot happen. An SC load in loom returns the latest SC store.
    fence(Ordering::SeqCst);
    if word.load(Ordering::SeqCst) != expected {
        bucket.fetch_add(1, Ordering::Relaxed);
        dequeue(id);
        return WaitResult::Woken;
    }
    match timeout {
        Some(t) if t.is_zero() => {
            bucket.fetch_add(1, Ordering::Relaxed);
            if dequeue(id) {
                WaitResult::TimedOut
            } else {
                WaitResult::Woken
            }
        }
        Some(t) if time == Time::Passes => {
            // Let the others run, then time out unless a wake dequeued us meanwhile.
            loom::thread::yield_now();
            bucket.fetch_add(1, Ordering::Relaxed);
            if !dequeue(id) {
                return WaitResult::Woken;
            }
            STATE.with(|s| {
                let mut s = s.borrow_mut();
                s.now = s.now.max(start.saturating_add(t));
            });
            WaitResult::TimedOut
        }
        // Untimed, or time is frozen: sleep until a wake dequeues us. (loom::thread::park may also return for
        // an unpark left over from an earlier wait, hence the loop.)
        _ => {
            while is_queued(id) {
                loom::thread::park();
            }
            WaitResult::Woken
        }
    }
}

pub(super) fn wake(word: &AtomicU32, n: u32) -> usize {
    let addr = word as *const AtomicU32 as usize;
    let bucket = bucket(addr);
    // The kernel's full barrier before it looks at the queue.
    fence(Ordering::SeqCst);
    // Dequeue, as one step with the bucket access.
    bucket.fetch_add(1, Ordering::Relaxed);
    let woken: Vec<loom::thread::Thread> = STATE.with(|s| {
        let mut s = s.borrow_mut();
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.waiters.len() && out.len() < n as usize {
            if s.waiters[i].addr == addr {
                out.push(s.waiters.remove(i).thread);
            } else {
                i += 1;
            }
        }
        out
    });
    // Unparking synchronises the waker with each woken thread (loom joins their clocks), as the bucket lock does.
    for t in &woken {
        t.unpark();
    }
    woken.len()
}
