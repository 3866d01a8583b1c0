//! Model checking of the ring protocol with loom: every interleaving of a few producers and consumers on a
//! tiny ring delivers every message exactly once, in order per producer, and leaves the ring reusable.
//!
//! Run with `make loom` (`RUSTFLAGS="--cfg loom" cargo test --release --lib queue::loom_tests`).

use super::layout::*;
use super::ring::{Attempt, Ring};
use loom::sync::Arc;
use loom::thread;

struct Model {
    hdr: QueueHeader,
    slots: Vec<Slot>,
    parts: Vec<Participant>,
}

impl Model {
    fn new(capacity: usize) -> Arc<Model> {
        Arc::new(Model {
            hdr: QueueHeader::new(capacity as u64),
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            parts: (0..4).map(|_| Participant::default()).collect(),
        })
    }

    fn ring(&self, me: usize) -> Ring<'_> {
        Ring { hdr: &self.hdr, slots: &self.slots, parts: &self.parts, heap: None, seg: None, me, in_flight: None }
    }
}

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    crate::base::loom_model(2, f);
}

fn put_until_done(ring: &Ring<'_>, msg: &[u8]) {
    loop {
        match ring.try_put(msg).unwrap() {
            Attempt::Done => return,
            _ => thread::yield_now(),
        }
    }
}

fn get_until_done(ring: &Ring<'_>) -> Vec<u8> {
    let mut out = vec![];
    loop {
        match ring.try_get(&mut out).unwrap() {
            Attempt::Done => return out,
            _ => thread::yield_now(),
        }
    }
}

#[test]
fn producer_and_consumer_wrap_a_one_slot_ring() {
    // One slot, two messages: the producer's second put must wait for the consumer to release the slot, so
    // claim, publish, take, release and the next lap's claim all interleave.
    model(|| {
        let m = Model::new(1);
        let m2 = m.clone();
        let producer = thread::spawn(move || {
            let r = m2.ring(0);
            put_until_done(&r, b"a");
            put_until_done(&r, b"b");
        });
        let r = m.ring(1);
        assert_eq!(get_until_done(&r), b"a".to_vec());
        assert_eq!(get_until_done(&r), b"b".to_vec());
        producer.join().unwrap();
        let mut out = vec![];
        assert_eq!(r.try_get(&mut out).unwrap(), Attempt::WouldBlock);
    });
}

#[test]
fn two_producers_race_for_slots() {
    // Concurrent claims of the same position and helping each other advance `tail`; then every message is
    // there exactly once, each producer's in order.
    model(|| {
        let m = Model::new(2);
        let m2 = m.clone();
        let other = thread::spawn(move || put_until_done(&m2.ring(1), &[1]));
        put_until_done(&m.ring(0), &[0]);
        other.join().unwrap();
        let r = m.ring(2);
        let mut got = vec![get_until_done(&r), get_until_done(&r)];
        got.sort();
        assert_eq!(got, vec![vec![0], vec![1]]);
        let mut out = vec![];
        assert_eq!(r.try_get(&mut out).unwrap(), Attempt::WouldBlock);
    });
}

#[test]
fn two_consumers_race_for_messages() {
    model(|| {
        let m = Model::new(2);
        let r = m.ring(0);
        put_until_done(&r, b"a");
        put_until_done(&r, b"b");
        let m2 = m.clone();
        let other = thread::spawn(move || get_until_done(&m2.ring(1)));
        let mine = get_until_done(&m.ring(2));
        let theirs = other.join().unwrap();
        let mut got = vec![mine, theirs];
        got.sort();
        assert_eq!(got, vec![b"a".to_vec(), b"b".to_vec()], "each message exactly once");
    });
}

#[test]
fn full_ring_reports_would_block_and_recovers() {
    model(|| {
        let m = Model::new(1);
        let r = m.ring(0);
        put_until_done(&r, b"x");
        assert_eq!(r.try_put(b"y").unwrap(), Attempt::WouldBlock);
        let m2 = m.clone();
        let c = thread::spawn(move || get_until_done(&m2.ring(1)));
        put_until_done(&r, b"y");
        assert_eq!(c.join().unwrap(), b"x".to_vec());
        assert_eq!(get_until_done(&r), b"y".to_vec());
    });
}
