//! Model checking of the wait/wake protocols with loom: the real `Lock`, `RWLock`, `Semaphore`, `Event` and
//! `Condition` code over model atomics, sleeping on the futex model (`platform::futex::model`), which really blocks.
//!
//! * In [`Time::Frozen`] models no sleep ever ends on its own, so a wake-up the protocol forgets leaves a
//!   thread asleep for good and loom reports a deadlock (in real life it would cost a 20 ms slice per sleep).
//! * In [`Time::Passes`] models sleeps end (slice ends) wherever loom puts them: the models of a dead lock owner
//!   and of the RWLock writer's slice-end handling.
//!
//! Mutual exclusion is checked through a loom `UnsafeCell`: two holders inside at once, or a hand-over that is
//! not ordered by the lock's Release/Acquire, is a reported data race.
//!
//! Run with `make loom`.

use super::condvar::{CondSlot, CondState, COND_SLOTS, SLOT_FREE, SLOT_WAITING};
use super::lock::{Acquired, LockState};
use super::owner::Me;
use super::rwlock::{ReaderSlot, RwError, RwState, RW_SLOTS};
use super::semaphore::{EventState, SemState};
use super::wait::{self, WaitError};
use crate::base::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::platform::futex::model::Time;
use crate::platform::futex::Deadline;
use crate::platform::process::{self, ProcessId};
use crate::segment::owners::Owner;
use loom::sync::Arc;
use loom::thread;

fn model<F: Fn() + Sync + Send + 'static>(time: Time, preemptions: usize, f: F) {
    crate::platform::loom_model(time, preemptions, f);
}

fn forever() -> Deadline {
    Deadline::after(None)
}

/// A process identity for a model thread (models run in one process; lock words only need distinct pids).
fn me(pid: u32) -> Me {
    Me { pid, start: pid as u64, tid: pid }
}

/// Data a lock protects, watched by loom: unordered accesses from two threads fail the model.
struct Data(loom::cell::UnsafeCell<u32>);

// SAFETY: every access goes through loom's `with`/`with_mut`, which check at run time that accesses from
// different threads are ordered by happens-before; an unordered pair fails the model instead of racing.
unsafe impl Sync for Data {}

impl Data {
    fn new() -> Data {
        Data(loom::cell::UnsafeCell::new(0))
    }
    /// A writer's critical section.
    fn bump(&self) {
        // SAFETY: loom checks the exclusion (that is the property under test).
        self.0.with_mut(|p| unsafe { *p += 1 });
    }
    /// A reader's critical section.
    fn read(&self) -> u32 {
        // SAFETY: as above.
        self.0.with(|p| unsafe { *p })
    }
}

/// A model atomic holding `v`, written once more with SeqCst. Loom approximates SeqCst accesses (as AcqRel plus
/// "an SC load does not return an SC store older than another SC store"); a plain initial value falls outside
/// that rule, so an SC load could return it even after an SC read-modify-write, the store-buffering outcome SC
/// forbids. In C++ the initialisation happens before everything, so the SC load could not: the extra SC store
/// (before any model thread starts) restores exactly that.
fn u32_sc(v: u32) -> AtomicU32 {
    let a = AtomicU32::new(v);
    a.store(v, Ordering::SeqCst);
    a
}

fn u64_sc(v: u64) -> AtomicU64 {
    let a = AtomicU64::new(v);
    a.store(v, Ordering::SeqCst);
    a
}

fn lock_state() -> LockState {
    LockState {
        word: u32_sc(0),
        flags: u32_sc(0),
        owner_start: u64_sc(0),
        owner_tid: u32_sc(0),
        count: u32_sc(0),
        takeovers: u64_sc(0),
    }
}

struct Locked {
    lock: LockState,
    data: Data,
}

fn locked() -> Arc<Locked> {
    Arc::new(Locked { lock: lock_state(), data: Data::new() })
}

/// Lock as `pid`, enter, leave; returns how the lock was acquired.
fn critical(l: &Locked, pid: u32) -> Acquired {
    let a = l.lock.lock_as(me(pid), &forever()).unwrap();
    l.data.bump();
    assert!(l.lock.release());
    a
}

#[test]
fn lock_hand_overs_to_sleeping_waiters_never_lose_a_wake() {
    // Three lockers: while one holds, the others spin (one check in a model), set WAITERS and sleep. Each
    // release that sees WAITERS wakes one; a woken waiter that finds the lock free takes it with WAITERS set
    // (it may have consumed the wake meant for the other sleeper). Time is frozen, so a lost wake deadlocks.
    model(Time::Frozen, 2, || {
        let l = locked();
        let others: Vec<_> = [2, 3]
            .into_iter()
            .map(|pid| {
                let l = l.clone();
                thread::spawn(move || critical(&l, pid))
            })
            .collect();
        assert_eq!(critical(&l, 1), Acquired::Normal);
        for t in others {
            assert_eq!(t.join().unwrap(), Acquired::Normal);
        }
        assert_eq!(l.lock.word.load(Ordering::Relaxed), 0);
        assert_eq!(l.data.read(), 3);
    });
}

#[test]
fn a_dead_owner_is_taken_over_exactly_once() {
    // The main thread plays a process that takes the lock and dies holding it (it stops, then the model
    // declares its pid dead); two live processes want the lock, one already waiting when the owner dies, one
    // arriving after. Each notices at a slice end (time passes here), checks the owner's liveness (the loom
    // stand-in for /proc) and takes over by CAS from the word it saw: exactly one of them wins and reports
    // OwnerDied, the other loses the CAS and gets the lock normally after the winner's release.
    const DEAD: u32 = 9;
    model(Time::Passes, 2, || {
        let l = locked();
        assert_eq!(l.lock.try_lock_as(me(DEAD)), Some(Acquired::Normal));
        let spawn = |pid| {
            let l = l.clone();
            thread::spawn(move || critical(&l, pid))
        };
        // One waiter is already there when the owner dies, the other comes after.
        let first = spawn(1);
        process::model::kill(DEAD);
        let waiters = [first, spawn(2)];
        let outcomes: Vec<Acquired> = waiters.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|a| a.owner_died()).count(), 1, "{outcomes:?}");
        assert_eq!(l.lock.takeovers(), 1);
        assert_eq!(l.lock.word.load(Ordering::Relaxed), 0);
        assert!(!l.lock.owner_died(), "the flag is cleared by the release of the taken-over holding");
        assert_eq!(l.data.read(), 2);
    });
}

struct Rw {
    rw: RwState,
    data: Data,
    /// Set by the writer inside its critical section (writer-priority model).
    writer_done: AtomicBool,
}

fn rw() -> Arc<Rw> {
    let slot = || ReaderSlot { owner: u64_sc(0), count: u32_sc(0), reserved: u32_sc(0) };
    let rw = RwState {
        wlock: lock_state(),
        rgen: u32_sc(0),
        rsleepers: u32_sc(0),
        drain: u32_sc(0),
        writers: u32_sc(0),
        reserved: std::array::from_fn(|_| u32_sc(0)),
        slots: std::array::from_fn(|_| slot()),
    };
    Arc::new(Rw { rw, data: Data::new(), writer_done: AtomicBool::new(false) })
}

/// What the Python layer does (`blocking_rw`): poll for signals at slice ends, and call again after a
/// returned `Interrupted` (a signal handler that returned).
fn retrying(mut f: impl FnMut() -> Result<Acquired, RwError>) -> Acquired {
    loop {
        let _poll = wait::poll_signals();
        match f() {
            Ok(a) => return a,
            Err(RwError::Wait(WaitError::Interrupted)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// What `PyRwLock.lock_write` (`src/python/sync.rs`) does with the core: claim, then drain the readers, each
/// through `block_on` (polling for signals, called again after each Interrupted); the claim is kept meanwhile.
fn python_lock_write(rw: &RwState) -> Acquired {
    let a = retrying(|| rw.claim_write(&forever()));
    let _ = retrying(|| rw.drain_readers(&forever()).map(|()| Acquired::Normal));
    a
}

#[test]
fn rwlock_readers_and_a_writer_exclude_each_other_and_no_wake_is_lost() {
    // Two readers (two processes: two slots) and a writer. The Dekker handshake (reader: count, then look at the
    // write lock; writer: take the write lock, then look at the counts) keeps them apart; readers that back off
    // sleep on `rgen` until the writer leaves, the writer sleeps on `drain` until the last reader leaves.
    assert_eq!(RW_SLOTS, 2);
    model(Time::Frozen, 2, || {
        let r = rw();
        let readers: Vec<_> = (0..2)
            .map(|slot| {
                let r = r.clone();
                thread::spawn(move || {
                    assert_eq!(r.rw.lock_read(slot, &forever()).unwrap(), Acquired::Normal);
                    let seen = r.data.read();
                    r.rw.unlock_read(slot).unwrap();
                    seen
                })
            })
            .collect();
        assert_eq!(r.rw.lock_write(&forever()).unwrap(), Acquired::Normal);
        r.data.bump();
        r.rw.unlock_write().unwrap();
        for t in readers {
            assert!(t.join().unwrap() <= 1);
        }
        assert_eq!(r.rw.total_readers(), 0);
        assert_eq!(r.rw.wlock.word.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn rwlock_a_waiting_writer_keeps_later_readers_out_across_slice_ends() {
    // Writer priority: a reader that arrives while a writer waits for the current readers gets in after that
    // writer. The main thread holds a read lock; the writer claims the write lock and waits for it to drain;
    // then the main thread lets its read lock go and, now a reader that arrived after the claim, asks again.
    // Time passes, and the writer runs as `PyRwLock.lock_write` runs it (`python_lock_write`): at every slice
    // end it returns Interrupted to its caller, which calls again. Before the writer-priority fix (`lock_write`
    // then gave its claim up at each slice end and the Python layer called `lock_write` again) this model
    // failed: the reader got in within that window.
    model(Time::Passes, 2, || {
        let r = rw();
        assert_eq!(r.rw.lock_read(0, &forever()).unwrap(), Acquired::Normal);
        let writer = {
            let r = r.clone();
            thread::spawn(move || {
                let _ = python_lock_write(&r.rw);
                r.data.bump();
                r.writer_done.store(true, Ordering::SeqCst);
                r.rw.unlock_write().unwrap();
            })
        };
        while r.rw.wlock.word.load(Ordering::SeqCst) == 0 {
            thread::yield_now();
        }
        r.rw.unlock_read(0).unwrap();
        assert_eq!(r.rw.lock_read(1, &forever()).unwrap(), Acquired::Normal);
        assert!(r.writer_done.load(Ordering::SeqCst), "a reader that came after a waiting writer got in first");
        assert_eq!(r.data.read(), 1);
        r.rw.unlock_read(1).unwrap();
        writer.join().unwrap();
    });
}

#[test]
fn semaphore_releases_wake_sleeping_acquirers() {
    // Value 0, two acquirers go to sleep (count themselves in `waiters`, re-check, sleep on the value), two
    // releases of one. The handshake (waiter: waiters += 1, then read the value; releaser: add, then read
    // `waiters`) must never let both sides miss each other.
    model(Time::Frozen, 2, || {
        let s = Arc::new(SemState { value: u32_sc(0), waiters: u32_sc(0), maxvalue: u32_sc(0), reserved: u32_sc(0) });
        let acquirers: Vec<_> = (0..2)
            .map(|_| {
                let s = s.clone();
                thread::spawn(move || s.acquire(&forever()).unwrap())
            })
            .collect();
        s.release(1).unwrap();
        s.release(1).unwrap();
        for t in acquirers {
            t.join().unwrap();
        }
        assert_eq!(s.value(), 0);
        assert_eq!(s.waiters.load(Ordering::Relaxed), 0);
    });
}

#[test]
fn event_set_wakes_every_waiter() {
    model(Time::Frozen, 2, || {
        let e =
            Arc::new(EventState { flag: u32_sc(0), waiters: u32_sc(0), reserved: std::array::from_fn(|_| u32_sc(0)) });
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let e = e.clone();
                thread::spawn(move || e.wait(&forever()).unwrap())
            })
            .collect();
        e.set();
        for t in waiters {
            assert!(t.join().unwrap());
        }
        assert_eq!(e.waiters.load(Ordering::Relaxed), 0);
    });
}

fn cond() -> Arc<CondState> {
    let slot = || CondSlot { owner: u64_sc(0), state: u32_sc(0), ticket: u32_sc(0) };
    Arc::new(CondState {
        next_ticket: u64_sc(0),
        used: u32_sc(0),
        reserved0: u32_sc(0),
        reserved: std::array::from_fn(|_| u64_sc(0)),
        slots: std::array::from_fn(|_| slot()),
    })
}

/// The owner word of model process `pid`.
fn owner(pid: u32) -> Owner {
    Owner::of(ProcessId { pid, start_time: u64::from(pid) })
}

fn all_free(c: &CondState) -> bool {
    c.slots.iter().all(|s| s.owner.load(Ordering::SeqCst) == 0 && s.state.load(Ordering::SeqCst) == SLOT_FREE)
}

#[test]
fn condition_notify_wakes_the_oldest_waiter_and_no_wake_is_lost() {
    // Two waiters (two processes) registered in arrival order, then asleep; two notify(1) calls. `prepare` and
    // `notify` run under the condition's lock, which this model stands in for by running both on the main
    // thread; the waiters' sleeps and slot releases race them. The first notify must pick the older waiter
    // (the younger is still waiting right after it), and neither sleep may be left unwoken (frozen time).
    assert_eq!(COND_SLOTS, 2);
    model(Time::Frozen, 2, || {
        let c = cond();
        let slots = [c.prepare_as(owner(1), COND_SLOTS).unwrap(), c.prepare_as(owner(2), COND_SLOTS).unwrap()];
        assert_eq!(slots, [0, 1]);
        let waiters: Vec<_> = slots
            .into_iter()
            .map(|i| {
                let c = c.clone();
                thread::spawn(move || c.wait(i, &forever()).unwrap())
            })
            .collect();
        assert_eq!(c.notify(1, COND_SLOTS), 1);
        assert_eq!(c.slots[1].state.load(Ordering::SeqCst), SLOT_WAITING, "the younger waiter was notified first");
        assert_eq!(c.notify(1, COND_SLOTS), 1);
        for t in waiters {
            assert!(t.join().unwrap());
        }
        assert!(all_free(&c));
    });
}

#[test]
fn condition_a_timeout_and_a_notify_agree_on_who_won() {
    // A waiter with a deadline (shorter than a slice) races one notify(1) (time passes, so the wait can time
    // out). Exactly one CAS on the slot's state wins: notified (the waiter returns true and notify counted it)
    // or timed out (false, and notify woke nobody); never a notify that counts a waiter that reports a timeout,
    // or the reverse. Either way the slot is free afterwards, and the next waiter gets it. (A timeout that
    // stores FREE instead of its CAS fails this model.)
    model(Time::Passes, 2, || {
        let c = cond();
        let i = c.prepare_as(owner(1), COND_SLOTS).unwrap();
        let waiter = {
            let c = c.clone();
            thread::spawn(move || c.wait(i, &Deadline::after(Some(std::time::Duration::from_millis(10)))).unwrap())
        };
        let n = c.notify(1, COND_SLOTS);
        let notified = waiter.join().unwrap();
        assert_eq!(notified, n == 1, "notify woke {n}, the waiter says notified={notified}");
        assert!(all_free(&c));
        assert_eq!(c.prepare_as(owner(2), COND_SLOTS), Ok(0));
    });
}

#[test]
fn condition_a_dead_waiter_does_not_absorb_a_notify() {
    // The older waiter's process died while registered; notify(1) must reap its slot and wake the live one
    // (frozen time: a notify spent on the dead slot would leave the live waiter asleep for good).
    const DEAD: u32 = 9;
    model(Time::Frozen, 2, || {
        let c = cond();
        assert_eq!(c.prepare_as(owner(DEAD), COND_SLOTS), Ok(0));
        let i = c.prepare_as(owner(1), COND_SLOTS).unwrap();
        let waiter = {
            let c = c.clone();
            thread::spawn(move || c.wait(i, &forever()).unwrap())
        };
        process::model::kill(DEAD);
        assert_eq!(c.notify(1, COND_SLOTS), 1);
        assert!(waiter.join().unwrap());
        assert!(all_free(&c));
    });
}
