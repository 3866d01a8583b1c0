//! The futex model itself: waits block until woken, a missing wake is a deadlock loom reports, and a timed wait
//! times out only where time passes.

use super::futex::model::{self, Time};
use super::futex::{self, Deadline, WaitResult};
use crate::base::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

const SLICE: Duration = Duration::from_millis(20);

/// A flag set by one thread and awaited by another, with or without the wake after the store.
fn handshake(time: Time, wake: bool, timeout: Option<Duration>) {
    super::loom_model(time, 3, move || {
        let flag = Arc::new(AtomicU32::new(0));
        let f = flag.clone();
        let setter = thread::spawn(move || {
            f.store(1, Ordering::Release);
            if wake {
                futex::wake_all(&f);
            }
        });
        while flag.load(Ordering::Acquire) == 0 {
            futex::wait(&flag, 0, timeout);
        }
        setter.join().unwrap();
        assert_eq!(model::queued(&flag), 0);
    });
}

#[test]
fn a_wake_after_the_store_always_reaches_the_waiter() {
    handshake(Time::Frozen, true, None);
    handshake(Time::Frozen, true, Some(SLICE));
}

#[test]
#[should_panic(expected = "deadlock")]
fn a_missing_wake_is_a_deadlock() {
    handshake(Time::Frozen, false, None);
}

#[test]
#[should_panic(expected = "deadlock")]
fn in_frozen_time_a_timed_wait_must_be_woken_too() {
    handshake(Time::Frozen, false, Some(SLICE));
}

#[test]
fn where_time_passes_a_timed_wait_nobody_wakes_times_out() {
    // Without the wake the waiter still gets out, one slice at a time; an untimed one would not.
    handshake(Time::Passes, false, Some(SLICE));
    super::loom_model(Time::Passes, 3, || {
        let word = AtomicU32::new(0);
        let d = Deadline::after(Some(Duration::from_millis(50)));
        let mut slices = 0;
        while !d.expired() {
            assert_eq!(futex::wait(&word, 0, Some(d.remaining().unwrap().min(SLICE))), WaitResult::TimedOut);
            slices += 1;
        }
        assert_eq!(slices, 3, "20 + 20 + 10 ms of model time");
        assert_eq!(model::now(), Duration::from_millis(50));
    });
}

#[test]
fn a_wait_on_a_changed_word_returns_at_once_and_a_wake_wakes_at_most_n() {
    super::loom_model(Time::Frozen, 3, || {
        let word = Arc::new(AtomicU32::new(1));
        assert_eq!(futex::wait(&word, 0, None), WaitResult::Woken);
        word.store(0, Ordering::Relaxed);
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let w = word.clone();
                thread::spawn(move || while futex::wait(&w, 0, None) != WaitResult::Woken {})
            })
            .collect();
        // Wake one at a time until both are out (a wake may find nobody queued yet).
        let mut woken = 0;
        while woken < 2 {
            woken += futex::wake(&word, 1);
            thread::yield_now();
        }
        for s in sleepers {
            s.join().unwrap();
        }
    });
}
