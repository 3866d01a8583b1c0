//! Tests of the primitives: threads, and child processes (this test binary re-run: `base::child`).

use super::barrier::{BarrierCall, BarrierError};
use super::lock::{guard, Acquired, LockState, NotOwner, RLockState, RawLock};
use super::rwlock::RwState;
use super::semaphore::{EventState, SemState, TooManyReleases};
use super::shared::{BarrierHandle, CondHandle, SyncHandle, SyncType};
use super::wait::{deadline, WaitError};
use crate::base::atomic::{AtomicU64, Ordering};
use crate::base::child;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ms(n: u64) -> Option<Duration> {
    Some(Duration::from_millis(n))
}

/// A racy increment (load, then store): loses updates unless the caller excludes others.
fn racy_incr(c: &AtomicU64) {
    let v = c.load(Ordering::Relaxed);
    std::hint::spin_loop();
    c.store(v + 1, Ordering::Relaxed);
}

#[test]
fn lock_excludes_threads_and_times_out() {
    let l = Arc::new(SyncHandle::<LockState>::create(SyncType::Lock, 0, 8).unwrap());
    let counter = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (l, c) = (l.clone(), counter.clone());
            std::thread::spawn(move || {
                for _ in 0..20_000 {
                    let _g = guard(l.get(), &deadline(None)).unwrap();
                    racy_incr(&c);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(counter.load(Ordering::Relaxed), 80_000);

    let lk = l.get();
    assert_eq!(lk.try_lock(), Some(Acquired::Normal));
    assert!(lk.try_lock().is_none());
    let t0 = Instant::now();
    let l2 = l.clone();
    let r = std::thread::spawn(move || l2.get().lock(&deadline(ms(60)))).join().unwrap();
    let el = t0.elapsed();
    assert_eq!(r, Err(WaitError::TimedOut));
    assert!(el >= Duration::from_millis(60) && el < Duration::from_millis(1000), "{el:?}");
    assert!(lk.release());
    assert!(!lk.release(), "second release reports not held");
    assert!(!lk.is_locked());
}

#[test]
fn rlock_reenters_per_thread() {
    let l = Arc::new(SyncHandle::<RLockState>::create(SyncType::RLock, 0, 0).unwrap());
    let r = l.get();
    assert_eq!(r.acquire(&deadline(None)), Ok(Acquired::Normal));
    assert_eq!(r.acquire(&deadline(None)), Ok(Acquired::Normal));
    assert_eq!(r.count(), 2);
    let l2 = l.clone();
    let other = std::thread::spawn(move || {
        let r = l2.get();
        (r.release(), r.acquire(&deadline(ms(30))))
    })
    .join()
    .unwrap();
    assert_eq!(other, (Err(NotOwner), Err(WaitError::TimedOut)));
    assert_eq!(r.release(), Ok(1));
    assert_eq!(r.release_save(), Ok(1));
    assert!(!r.is_locked());
    assert_eq!(r.acquire_restore(3, &deadline(None)), Ok(Acquired::Normal));
    assert_eq!(r.count(), 3);
    for left in [2, 1, 0] {
        assert_eq!(r.release(), Ok(left));
    }
    assert_eq!(r.release(), Err(NotOwner));
}

#[test]
fn semaphore_counts_bounds_and_wakes() {
    let s = Arc::new(SyncHandle::<SemState>::create(SyncType::Semaphore, 0, 0).unwrap());
    s.get().init(2, Some(2));
    let sem = s.get();
    assert_eq!(sem.release(1), Err(TooManyReleases));
    sem.acquire(&deadline(None)).unwrap();
    sem.acquire(&deadline(None)).unwrap();
    assert_eq!(sem.acquire(&deadline(ms(20))), Err(WaitError::TimedOut));
    let s2 = s.clone();
    let t = std::thread::spawn(move || s2.get().acquire(&deadline(ms(5000))));
    std::thread::sleep(Duration::from_millis(30));
    sem.release(1).unwrap();
    assert_eq!(t.join().unwrap(), Ok(()));
    assert_eq!(sem.value(), 0);
}

#[test]
fn event_wakes_all_waiters() {
    let e = Arc::new(SyncHandle::<EventState>::create(SyncType::Event, 0, 0).unwrap());
    assert_eq!(e.get().wait(&deadline(ms(10))), Ok(false));
    let ts: Vec<_> = (0..3)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || e.get().wait(&deadline(ms(5000))))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(30));
    e.get().set();
    for t in ts {
        assert_eq!(t.join().unwrap(), Ok(true));
    }
    e.get().clear();
    assert!(!e.get().is_set());
}

#[test]
fn condvar_notify_wakes_exactly_n() {
    let c = Arc::new(CondHandle::create().unwrap());
    let woken = Arc::new(AtomicU64::new(0));
    let ts: Vec<_> = (0..3)
        .map(|_| {
            let (c, w) = (c.clone(), woken.clone());
            let slot = c.prepare().unwrap();
            std::thread::spawn(move || {
                let r = c.get().wait(slot, &deadline(ms(3000))).unwrap();
                if r {
                    w.fetch_add(1, Ordering::SeqCst);
                }
                r
            })
        })
        .collect();
    assert_eq!(c.waiting(), 3);
    assert_eq!(c.notify(1), 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    // A waiter arriving now must not take the next notify from the older ones.
    let late = c.prepare().unwrap();
    assert_eq!(c.notify(2), 2);
    for t in ts {
        assert!(t.join().unwrap());
    }
    assert_eq!(c.get().wait(late, &deadline(ms(20))), Ok(false));
    assert_eq!(c.waiting(), 0);
    assert_eq!(c.notify(5), 0);
}

#[test]
fn barrier_rounds_abort_and_timeout() {
    let b = BarrierHandle::create(3).unwrap();
    let sum = Arc::new(AtomicU64::new(0));
    let ts: Vec<_> = (0..3)
        .map(|_| {
            let (b, sum) = (b.clone(), sum.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    let br = b.get();
                    let call = BarrierCall::new(deadline(ms(10_000)));
                    let a = br.arrive(&call).unwrap();
                    sum.fetch_add(1 << (8 * a.index), Ordering::SeqCst);
                    if a.last {
                        br.finish_last(&a, true).unwrap();
                    } else {
                        br.wait_release(&a, &call).unwrap();
                    }
                }
            })
        })
        .collect();
    ts.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(sum.load(Ordering::SeqCst), 200 * (1 + (1 << 8) + (1 << 16)), "indices 0,1,2 each round");
    assert_eq!(b.get().rounds(), 200);

    // A timeout breaks the barrier for every waiter.
    let b2 = b.clone();
    let t = std::thread::spawn(move || {
        let call = BarrierCall::untimed();
        let a = b2.get().arrive(&call).unwrap();
        b2.get().wait_release(&a, &call)
    });
    let call = BarrierCall::new(deadline(ms(50)));
    let a = b.get().arrive(&call).unwrap();
    assert_eq!(b.get().wait_release(&a, &call), Err(BarrierError::Broken));
    assert_eq!(t.join().unwrap(), Err(BarrierError::Broken));
    assert!(b.get().broken());
    assert_eq!(b.get().arrive(&BarrierCall::untimed()), Err(BarrierError::Broken));
    b.get().reset().unwrap();
    assert!(!b.get().broken());
    assert_eq!(b.get().n_waiting(), 0);
}

#[test]
fn barrier_arrival_during_another_rounds_action_honours_its_timeout() {
    // Issue 11, hang 2: an arrival while the last arriver of a full round runs its action waited for the
    // action, whatever its timeout. It now times out, the running round still trips, and the barrier breaks
    // after it.
    let b = BarrierHandle::create(1).unwrap();
    let call = BarrierCall::untimed();
    let last = b.get().arrive(&call).unwrap();
    assert!(last.last, "one party: the first arrival runs the action");
    let b2 = b.clone();
    let t0 = Instant::now();
    let late = std::thread::spawn(move || b2.get().arrive(&BarrierCall::new(deadline(ms(200)))).map(|_| ()));
    assert_eq!(late.join().unwrap(), Err(BarrierError::Broken));
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(3), "{waited:?}");
    assert!(b.get().broken(), "breaks once the action returns");
    assert_eq!(b.get().finish_last(&last, true), Ok(()), "the running round trips");
    assert!(b.get().broken());
    assert_eq!(b.get().rounds(), 1);
    b.get().reset().unwrap();
    let a = b.get().arrive(&call).unwrap();
    assert_eq!(b.get().finish_last(&a, true), Ok(()));
}

#[test]
fn barrier_with_an_invalid_phase_or_a_stuck_lock_does_not_hang() {
    use super::barrier::BarrierState;
    let b = BarrierHandle::create(2).unwrap();
    // SAFETY: the handle's state, checked at open; only atomics are touched.
    let st: &BarrierState = unsafe { &*(b.segment().base_ptr().add(b.offset() as usize) as *const BarrierState) };
    for phase in [1, 5, 77, u32::MAX] {
        st.phase.store(phase, Ordering::Relaxed);
        let call = BarrierCall::new(deadline(ms(200)));
        assert_eq!(b.get().arrive(&call), Err(BarrierError::Broken), "phase {phase}");
        assert!(b.get().broken());
        b.get().reset().unwrap();
    }
    // An action phase with nobody running the action is corrupt too: a sleeper finds it at its next slice.
    st.phase.store(super::barrier::ACTION, Ordering::Relaxed);
    let t0 = Instant::now();
    assert_eq!(b.get().arrive(&BarrierCall::untimed()), Err(BarrierError::Broken));
    assert!(t0.elapsed() < Duration::from_secs(2));
    b.get().reset().unwrap();

    // The internal lock named by a live process (our parent) that never lets it go: a timed wait ends at its
    // deadline (plus the grace), an untimed call is bounded by the lock timeout.
    let parent = std::os::unix::process::parent_id();
    st.lock.word.store(parent, Ordering::Relaxed);
    let t0 = Instant::now();
    assert_eq!(b.get().arrive(&BarrierCall::new(deadline(ms(200)))), Err(BarrierError::Broken));
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(3), "{waited:?}");
    st.lock.word.store(0, Ordering::Relaxed);
    assert!(!b.get().broken());
}

#[test]
fn rwlock_readers_share_writers_exclude() {
    let rw = Arc::new(SyncHandle::<RwState>::create(SyncType::RwLock, 0, 0).unwrap());
    let data = Arc::new(AtomicU64::new(0));
    let ts: Vec<_> = (0..4)
        .map(|k| {
            let (rw, data) = (rw.clone(), data.clone());
            std::thread::spawn(move || {
                let st = rw.get();
                let slot = st.slot_of(super::owner::me()).unwrap();
                for _ in 0..3000 {
                    if k == 0 {
                        let _ = st.lock_write(&deadline(None)).unwrap();
                        racy_incr(&data);
                        racy_incr(&data);
                        st.unlock_write().unwrap();
                    } else {
                        let _ = st.lock_read(slot, &deadline(None)).unwrap();
                        assert_eq!(data.load(Ordering::Relaxed) % 2, 0, "a reader saw a half-done write");
                        st.unlock_read(slot).unwrap();
                    }
                }
            })
        })
        .collect();
    ts.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(data.load(Ordering::Relaxed), 6000);
    let st = rw.get();
    let slot = st.slot_of(super::owner::me()).unwrap();
    let _ = st.lock_read(slot, &deadline(None)).unwrap();
    let rw2 = rw.clone();
    let r = std::thread::spawn(move || rw2.get().lock_write(&deadline(ms(40)))).join().unwrap();
    assert!(r.is_err(), "a writer waits for readers");
    st.unlock_read(slot).unwrap();
    assert!(st.unlock_read(slot).is_err());
    assert_eq!(st.lock_write(&deadline(ms(1000))), Ok(Acquired::Normal));
    st.unlock_write().unwrap();
}

#[test]
fn rwlock_waiting_writer_keeps_its_claim_across_slices_and_signal_checks() {
    // Regression: a writer that waited longer than one slice used to drop its claim at every slice end (to let
    // its caller check for signals), letting readers in ahead of it.
    let rw = Arc::new(SyncHandle::<RwState>::create(SyncType::RwLock, 0, 0).unwrap());
    let st = rw.get();
    let slot = st.slot_of(super::owner::me()).unwrap();
    let _ = st.lock_read(slot, &deadline(None)).unwrap();
    let rw2 = rw.clone();
    let writer = std::thread::spawn(move || {
        let st = rw2.get();
        let d = deadline(ms(10_000));
        let a = st.claim_write(&d).unwrap();
        // As the Python layer does: poll at every slice end, keep the claim, call again.
        let mut polls = 0;
        loop {
            let _poll = super::wait::poll_signals();
            match st.drain_readers(&d) {
                Ok(()) => return (a, polls),
                Err(super::rwlock::RwError::Wait(WaitError::Interrupted)) => polls += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
    });
    while !st.writer_claimed() {
        std::thread::yield_now();
    }
    // Let the writer reach several slice ends (and signal checks) before a reader tries.
    std::thread::sleep(Duration::from_millis(100));
    // Readers (another thread here; another process behaves the same) stay out for many slices.
    let rw3 = rw.clone();
    let late = std::thread::spawn(move || {
        let st = rw3.get();
        let slot = st.slot_of(super::owner::me()).unwrap();
        st.lock_read(slot, &deadline(ms(200)))
    });
    assert!(late.join().unwrap().is_err(), "a reader got in while a writer waited");
    st.unlock_read(slot).unwrap();
    let (a, polls) = writer.join().unwrap();
    assert_eq!(a, Acquired::Normal);
    assert!(polls >= 2, "the writer waited through slice ends ({polls})");
    assert_eq!(st.total_readers(), 0);
    st.unlock_write().unwrap();
    assert!(!st.writer_claimed());
}

// ---- child processes ------------------------------------------------------------------------------------

fn spawn_child(spec: &str) -> Child {
    child::spawn("sync::tests::child_entry", spec)
}

/// Not a test by itself: the body of a child process (`base::child`).
#[test]
fn child_entry() {
    let Some(spec) = child::spec() else {
        return;
    };
    let args: Vec<&str> = spec.split_whitespace().collect();
    let off = |i: usize| args[i].parse::<u64>().unwrap();
    let ready = |i: usize| SyncHandle::<EventState>::open(args[i], off(i + 1), SyncType::Event).unwrap();
    match args[0] {
        "count" => {
            let l = SyncHandle::<LockState>::open(args[1], off(2), SyncType::Lock).unwrap();
            let c = crate::objects::cell::SharedAtomic::open(args[3], Some(off(4))).unwrap();
            for _ in 0..20_000 {
                let _g = guard(l.get(), &deadline(None)).unwrap();
                let v = c.get();
                c.set(v + 1);
            }
        }
        "hold_lock" | "hold_rlock" => {
            if args[0] == "hold_lock" {
                let l = SyncHandle::<LockState>::open(args[1], off(2), SyncType::Lock).unwrap();
                let _ = l.get().lock(&deadline(None)).unwrap();
            } else {
                let l = SyncHandle::<RLockState>::open(args[1], off(2), SyncType::RLock).unwrap();
                let _ = l.get().acquire(&deadline(None)).unwrap();
                let _ = l.get().acquire(&deadline(None)).unwrap();
            }
            ready(3).get().set();
            std::thread::sleep(Duration::from_secs(60));
        }
        "hold_write" | "hold_read" => {
            let rw = SyncHandle::<RwState>::open(args[1], off(2), SyncType::RwLock).unwrap();
            if args[0] == "hold_write" {
                let _ = rw.get().lock_write(&deadline(None)).unwrap();
            } else {
                let slot = rw.get().slot_of(super::owner::me()).unwrap();
                let _ = rw.get().lock_read(slot, &deadline(None)).unwrap();
            }
            ready(3).get().set();
            std::thread::sleep(Duration::from_secs(60));
        }
        "barrier" => {
            let b = BarrierHandle::open(args[1], off(2)).unwrap();
            let _a = b.get().arrive(&BarrierCall::untimed()).unwrap();
            ready(3).get().set();
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown child role {other}"),
    }
}

fn ready_event() -> SyncHandle<EventState> {
    SyncHandle::<EventState>::create(SyncType::Event, 0, 0).unwrap()
}

fn spec(ev: &SyncHandle<EventState>) -> String {
    format!("{} {}", ev.segment().name(), ev.offset())
}

fn kill(mut c: Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

#[test]
fn lock_excludes_processes() {
    let l = SyncHandle::<LockState>::create(SyncType::Lock, 0, 0).unwrap();
    let c = crate::objects::cell::SharedAtomic::create(0).unwrap();
    let s = format!("count {} {} {} {}", l.segment().name(), l.offset(), c.segment().name(), c.offset());
    let mut kids: Vec<_> = (0..2).map(|_| spawn_child(&s)).collect();
    child::wait_all_ok(&mut kids, Duration::from_secs(120));
    assert_eq!(c.get(), 40_000);
}

#[test]
fn dead_lock_owner_is_taken_over() {
    for (role, ty) in [("hold_lock", SyncType::Lock), ("hold_rlock", SyncType::RLock)] {
        let h = SyncHandle::<RLockState>::create(ty, 0, 0).unwrap();
        let (r, l) = (h.get(), &h.get().0);
        let ev = ready_event();
        let child = spawn_child(&format!("{role} {} {} {}", h.segment().name(), h.offset(), spec(&ev)));
        assert_eq!(ev.get().wait(&deadline(ms(10_000))), Ok(true));
        assert!(l.try_lock().is_none());
        assert_eq!(l.lock(&deadline(ms(40))), Err(WaitError::TimedOut), "a live owner keeps it");
        kill(child);
        let t0 = Instant::now();
        let got = if ty == SyncType::Lock { l.lock(&deadline(ms(5000))) } else { r.acquire(&deadline(ms(5000))) };
        assert_eq!(got, Ok(Acquired::OwnerDied), "{role}");
        assert!(t0.elapsed() < Duration::from_millis(2000));
        assert!(l.owner_died());
        if ty == SyncType::RLock {
            assert_eq!(r.count(), 1, "the inherited holding starts at depth 1");
            assert_eq!(r.release(), Ok(0));
        } else {
            assert!(l.release());
        }
        assert!(!l.owner_died());
        assert_eq!(l.try_lock(), Some(Acquired::Normal));
        assert!(l.release());
    }
}

#[test]
fn dead_writer_and_dead_reader_do_not_block() {
    let rw = SyncHandle::<RwState>::create(SyncType::RwLock, 0, 0).unwrap();
    let ev = ready_event();
    let child = spawn_child(&format!("hold_write {} {} {}", rw.segment().name(), rw.offset(), spec(&ev)));
    assert_eq!(ev.get().wait(&deadline(ms(10_000))), Ok(true));
    kill(child);
    let slot = rw.get().slot_of(super::owner::me()).unwrap();
    assert_eq!(rw.get().lock_read(slot, &deadline(ms(5000))), Ok(Acquired::OwnerDied));
    rw.get().unlock_read(slot).unwrap();

    let ev = ready_event();
    let child = spawn_child(&format!("hold_read {} {} {}", rw.segment().name(), rw.offset(), spec(&ev)));
    assert_eq!(ev.get().wait(&deadline(ms(10_000))), Ok(true));
    assert!(rw.get().lock_write(&deadline(ms(30))).is_err());
    kill(child);
    assert_eq!(rw.get().lock_write(&deadline(ms(5000))), Ok(Acquired::Normal));
    rw.get().unlock_write().unwrap();
}

#[test]
fn dead_barrier_waiter_breaks_the_barrier() {
    let b = BarrierHandle::create(3).unwrap();
    let ev = ready_event();
    let child = spawn_child(&format!("barrier {} {} {}", b.segment().name(), b.offset(), spec(&ev)));
    assert_eq!(ev.get().wait(&deadline(ms(10_000))), Ok(true));
    let call = BarrierCall::new(deadline(ms(5000)));
    let a = b.get().arrive(&call).unwrap();
    assert_eq!(b.get().n_waiting(), 2);
    kill(child);
    let t0 = Instant::now();
    assert_eq!(b.get().wait_release(&a, &call), Err(BarrierError::Broken));
    assert!(t0.elapsed() < Duration::from_millis(2000));
    assert!(b.get().broken());
    b.get().reset().unwrap();
    assert_eq!(b.get().n_waiting(), 0);
}

#[test]
fn a_condition_slot_taken_from_its_waiter_ends_the_wait_without_spinning() {
    // A slot state that is neither waiting nor notified (another process reclaimed the slot because a corrupt
    // pid looked dead) made every futex wait return at once: a busy loop until the deadline, forever without one.
    let c = CondHandle::create().unwrap();
    let i = c.prepare().unwrap();
    c.get().slots[i].state.store(7, Ordering::Relaxed);
    let t0 = Instant::now();
    assert_eq!(c.get().wait(i, &deadline(None)), Ok(true), "a spurious wakeup");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(c.get().slots[i].state.load(Ordering::Relaxed), 7, "not ours any more: left alone");
}

#[test]
#[cfg(not(loom))] // loom models use two reader slots
fn rwlock_takes_1024_reader_processes_and_reaps_dead_ones_when_full() {
    // Issue 10: at most 64 processes could hold read locks. 1,100 simulated reader processes: the first 1,024
    // (a third of them dead, some still counting read locks) fill the table; newcomers reap the dead ones.
    use super::rwlock::RW_SLOTS;
    use crate::segment::owners::Owner;
    const { assert!(RW_SLOTS >= 1024) };
    let rw = SyncHandle::<RwState>::create(SyncType::RwLock, 0, 0).unwrap();
    let st = rw.get();
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = c.id();
    c.wait().unwrap();
    let dead = Owner::of(crate::platform::process::ProcessId { pid: dead_pid, start_time: 1 });
    let me = Owner::me();
    for (i, s) in st.slots.iter().enumerate() {
        // Live readers carry this process's word (a live identity).
        s.owner.store(if i % 3 == 0 { dead.0 } else { me.0 }, Ordering::Relaxed);
        s.count.store(if i % 3 == 0 { 1 } else { 0 }, Ordering::Relaxed);
    }
    // A writer waiting for the dead readers reaps them after a slice.
    assert_eq!(st.lock_write(&deadline(ms(5000))), Ok(Acquired::Normal));
    st.unlock_write().unwrap();
    let dead_slots = st.slots.iter().filter(|s| s.owner.load(Ordering::Relaxed) == dead.0).count();
    assert_eq!(dead_slots, 0, "dead readers' slots reaped");
    assert!(st.slots.iter().all(|s| s.count.load(Ordering::Relaxed) == 0));
    let freed = st.slots.iter().filter(|s| s.owner.load(Ordering::Relaxed) == 0).count();
    assert_eq!(freed, RW_SLOTS.div_ceil(3));
    for s in st.slots.iter().filter(|s| s.owner.load(Ordering::Relaxed) == 0) {
        s.owner.store(dead.0, Ordering::Relaxed);
    }
    // A table full of dead owners: a newcomer finds it full, reaps and gets a slot.
    for s in st.slots.iter().filter(|s| s.owner.load(Ordering::Relaxed) == me.0) {
        s.owner.store(dead.0, Ordering::Relaxed);
    }
    let slot = st.slot_of(super::owner::me()).unwrap();
    assert_eq!(st.lock_read(slot, &deadline(ms(1000))), Ok(Acquired::Normal));
    assert_eq!(st.total_readers(), 1);
    st.unlock_read(slot).unwrap();
}

/// The owner word of a process that has exited (its pid is gone).
#[cfg(not(loom))]
fn dead_owner() -> crate::segment::owners::Owner {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    crate::segment::owners::Owner::of(crate::platform::process::ProcessId { pid, start_time: 1 })
}

#[test]
#[cfg(not(loom))] // loom models use two condition slots
fn condition_takes_1024_waiters_notifies_the_oldest_and_reaps_dead_ones_when_full() {
    // Issue 10: at most 126 threads could wait on one Condition. The table is per waiter (threads of one
    // process each take a slot), so registrations from this process stand in for 1,024 waiting threads.
    use super::condvar::{COND_SLOTS, SLOT_FREE, SLOT_NOTIFIED, SLOT_WAITING};
    use std::os::unix::fs::MetadataExt;
    let c = CondHandle::create().unwrap();
    let allocated = || std::fs::metadata(format!("/dev/shm/{}", c.segment().name_local())).unwrap().blocks() * 512;
    // Only the header page is reserved at first (it holds the first slots); the table's other pages are
    // reserved as waiters need them.
    assert_eq!(allocated(), 4096);
    const { assert!(COND_SLOTS >= 1024) };
    let st = c.get();
    let state = |i: usize| st.slots[i].state.load(Ordering::Relaxed);
    // Tickets are 32 bits: start just before they wrap, so that the order has to survive the wrap.
    st.next_ticket.store(u64::from(u32::MAX) - 1, Ordering::Relaxed);
    let slots: Vec<usize> = (0..COND_SLOTS).map(|_| c.prepare().unwrap()).collect();
    assert_eq!(slots, (0..COND_SLOTS).collect::<Vec<_>>(), "lowest free slot first, each once");
    assert_eq!(allocated(), 4096 + 4 * 4096, "1,024 slots: the header page and four more");
    assert_eq!(c.waiting(), COND_SLOTS);
    // A table full of live waiters is an error, never a slot handed out twice.
    assert!(matches!(c.prepare(), Err(super::shared::PrepareError::TooManyWaiters)));
    // notify(n) wakes the n longest waiting (tickets 2^32-2, 2^32-1, then 0 after the wrap).
    assert_eq!(c.notify(3), 3);
    assert_eq!((0..4).map(state).collect::<Vec<_>>(), [SLOT_NOTIFIED, SLOT_NOTIFIED, SLOT_NOTIFIED, SLOT_WAITING]);
    for i in 0..3 {
        assert_eq!(st.wait(i, &deadline(ms(0))), Ok(true), "notified: returns at once");
        assert_eq!(st.slots[i].owner.load(Ordering::Relaxed), 0, "and frees the slot");
    }
    // A newcomer takes a freed low slot, but is the youngest: the next notify goes to slot 3.
    assert_eq!(c.prepare().ok(), Some(0));
    assert_eq!(c.notify(1), 1);
    assert_eq!((state(0), state(3)), (SLOT_WAITING, SLOT_NOTIFIED));
    assert!(st.cancel(3), "cancelling a notified waiter reports the notify");
    // A waiter whose process died does not absorb a notify: slot 4 (the oldest now) is dead; slot 5 is woken.
    let dead = dead_owner();
    st.slots[4].owner.store(dead.0, Ordering::Relaxed);
    assert_eq!(c.notify(1), 1);
    assert_eq!((state(4), state(5)), (SLOT_FREE, SLOT_NOTIFIED));
    assert_eq!(st.slots[4].owner.load(Ordering::Relaxed), 0, "the dead waiter's slot was reaped");
    assert!(st.cancel(5));
    // Fill the table again, a third of it dead: a full table reaps the dead before failing.
    while c.prepare().is_ok() {}
    for i in (0..COND_SLOTS).step_by(3) {
        st.slots[i].owner.store(dead.0, Ordering::Relaxed);
    }
    let i = c.prepare().unwrap();
    assert_eq!(i, 0);
    let free = (0..COND_SLOTS).filter(|&i| st.slots[i].owner.load(Ordering::Relaxed) == 0).count();
    assert_eq!(free, COND_SLOTS.div_ceil(3) - 1, "every other dead slot is free again");
    // Timed-out waiters free their slots; once nobody waits, notify finds nothing and `used` drops to 0.
    for i in 0..COND_SLOTS {
        if st.slots[i].owner.load(Ordering::Relaxed) != 0 {
            assert!(!st.cancel(i));
        }
    }
    assert_eq!(c.waiting(), 0);
    assert_eq!(c.notify(usize::MAX), 0);
    assert_eq!(st.used.load(Ordering::Relaxed), 0, "notify reads no slot from now on");
    assert_eq!(c.prepare().ok(), Some(0));
    assert_eq!(st.wait(0, &deadline(ms(1))), Ok(false), "a timeout frees the slot");
    assert_eq!(st.slots[0].owner.load(Ordering::Relaxed), 0);
}

#[test]
#[cfg(not(loom))]
fn barrier_slots_are_an_owner_table_a_dead_pending_party_breaks_the_round() {
    let b = BarrierHandle::create(2).unwrap();
    let call = BarrierCall::new(deadline(ms(5000)));
    let a = b.get().arrive(&call).unwrap();
    assert!(!a.last);
    // Another party arrives, then its process dies before the round trips: its slot names a dead owner.
    let dead = dead_owner();
    let at = b.offset() + std::mem::size_of::<super::barrier::BarrierState>() as u64;
    let mapped = crate::segment::MappedSlice::<super::barrier::BarrierSlot>::new(b.segment(), at, 6).unwrap();
    let table: &[super::barrier::BarrierSlot] = &mapped;
    let i = table.iter().position(|s| s.owner.load(Ordering::Relaxed) == 0).unwrap();
    table[i].owner.store(dead.0, Ordering::Relaxed);
    assert_eq!(b.get().reap_dead(), Ok(()));
    assert!(b.get().broken(), "a dead party of the pending round breaks it");
    assert_eq!(table[i].owner.load(Ordering::Relaxed), 0, "and its slot is reaped");
    assert_eq!(b.get().wait_release(&a, &call), Err(BarrierError::Broken));
    assert!(table.iter().all(|s| s.owner.load(Ordering::Relaxed) == 0), "the waiter freed its own slot");
    b.get().reset().unwrap();
}
