//! Model checking of the ring protocol with loom: every interleaving of a few producers and consumers on a
//! tiny ring delivers every message exactly once, in order per producer, and leaves the ring reusable; and
//! when a full ring grows, the hand-over to the next ring (a producer's claim racing the grower for the last
//! position, consumers draining the old ring first) keeps that true.
//!
//! Run with `make loom` (`RUSTFLAGS="--cfg loom" cargo test --lib queue::loom_tests`).

use super::layout::*;
use super::ring::{ring_areas, Attempt, Ring, RingArea};
use loom::sync::Arc;
use loom::thread;

struct Model {
    hdr: QueueHeader,
    slots: Vec<Slot>,
    areas: Vec<RingArea>,
    parts: Vec<Participant>,
}

impl Model {
    /// One ring of `capacity` slots.
    fn new(capacity: usize) -> Arc<Model> {
        Self::growing(capacity, capacity)
    }

    /// A first ring of `first` slots that grows (doubling) up to `capacity`.
    fn growing(first: usize, capacity: usize) -> Arc<Model> {
        let (areas, total) = ring_areas(first as u64, capacity as u64).unwrap();
        Arc::new(Model {
            hdr: QueueHeader::new(first as u64, capacity as u64),
            slots: (0..total).map(|_| Slot::default()).collect(),
            areas,
            parts: (0..4).map(|_| Participant::default()).collect(),
        })
    }

    fn ring(&self, me: usize) -> Ring<'_> {
        Ring {
            hdr: &self.hdr,
            slots: &self.slots,
            areas: &self.areas,
            parts: &self.parts,
            heap: None,
            seg: None,
            me,
            in_flight: None,
        }
    }
}

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    crate::platform::loom_model(crate::platform::futex::model::Time::Frozen, 2, f);
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

#[test]
fn growth_hands_over_to_the_next_ring_in_order() {
    // A one-slot first ring and a capacity of 2 (rings of 1 and 2 slots): the producer's second put finds the
    // first ring full and grows while the consumer drains it; the consumer must take "a" from ring 0 before
    // moving to ring 1, and find "b" and "c" there.
    model(|| {
        let m = Model::growing(1, 2);
        let m2 = m.clone();
        let producer = thread::spawn(move || {
            let r = m2.ring(0);
            put_until_done(&r, b"a");
            put_until_done(&r, b"b");
            put_until_done(&r, b"c");
        });
        let r = m.ring(1);
        assert_eq!(get_until_done(&r), b"a".to_vec());
        assert_eq!(get_until_done(&r), b"b".to_vec());
        assert_eq!(get_until_done(&r), b"c".to_vec());
        producer.join().unwrap();
        let mut out = vec![];
        assert_eq!(r.try_get(&mut out).unwrap(), Attempt::WouldBlock);
        assert_eq!(m.hdr.head_ring.load(crate::base::atomic::Ordering::Relaxed), 1);
    });
}

#[test]
fn a_claim_racing_the_grower_for_the_last_position_is_kept_or_given_back() {
    // Ring 0 (one slot) holds "a". The main thread takes it and puts "y" while another thread puts "x": that
    // one may find ring 0 full and close it at position 1 just as "y", seeing the slot freed, claims position 1
    // in ring 0. Exactly one CAS on `tail` decides; a claim that lost gives its slot back and retries in ring 1.
    // Every item arrives once and none is stranded past the end of ring 0.
    model(|| {
        let m = Model::growing(1, 4);
        put_until_done(&m.ring(0), b"a");
        let m1 = m.clone();
        let other = thread::spawn(move || put_until_done(&m1.ring(1), b"x"));
        let r = m.ring(2);
        assert_eq!(get_until_done(&r), b"a".to_vec());
        put_until_done(&r, b"y");
        other.join().unwrap();
        let mut got = vec![get_until_done(&r), get_until_done(&r)];
        got.sort();
        assert_eq!(got, vec![b"x".to_vec(), b"y".to_vec()], "each item exactly once");
        let mut out = vec![];
        assert_eq!(r.try_get(&mut out).unwrap(), Attempt::WouldBlock);
    });
}
