//! Model checking of the in-place overwrite protocol with loom: the same `read_value`, `write_in_place`,
//! `lock_published` and `acquire_entry` the dict runs, on an entry whose two buffers are atomic words.
//!
//! Run with `make loom` (`RUSTFLAGS="--cfg loom" cargo test --lib dict::loom_tests`).

use super::*;
use crate::base::atomic::AtomicU32;
use loom::sync::Arc;
use loom::thread;

/// Values are 16 bytes: two words, each the same byte repeated, so a mixed (torn) value is detectable.
const WORDS: usize = 2;

struct ModelEntry {
    hdr: EntryHeader,
    bufs: [[AtomicU64; WORDS]; 2],
    /// The shard's seqlock version.
    seq: AtomicU64,
}

impl ModelEntry {
    fn new(initial: u8) -> Arc<ModelEntry> {
        let word = u64::from_le_bytes([initial; 8]);
        let e = ModelEntry {
            hdr: EntryHeader {
                key_len: AtomicU32::new(0),
                orig_len: AtomicU32::new(0),
                cap: AtomicU32::new((WORDS * 8) as u32),
                val_len: [AtomicU32::new((WORDS * 8) as u32), AtomicU32::new(0)],
                reserved: AtomicU32::new(0),
                state: AtomicU64::new(ENTRY_MARK),
            },
            bufs: [[AtomicU64::new(word), AtomicU64::new(word)], [AtomicU64::new(0), AtomicU64::new(0)]],
            seq: AtomicU64::new(0),
        };
        Arc::new(e)
    }
}

impl ValueBuffers for ModelEntry {
    fn header(&self) -> &EntryHeader {
        &self.hdr
    }
    fn capacity(&self) -> usize {
        WORDS * 8
    }
    fn read_buffer(&self, b: u64, len: usize, out: &mut Vec<u8>) {
        for w in &self.bufs[b as usize][..len / 8] {
            out.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }
    fn write_buffer(&self, b: u64, value: &[u8]) {
        for (w, chunk) in self.bufs[b as usize].iter().zip(value.chunks(8)) {
            w.store(u64::from_le_bytes(chunk.try_into().unwrap()), Ordering::Relaxed);
        }
    }
}

fn value(byte: u8) -> Vec<u8> {
    vec![byte; WORDS * 8]
}

/// The byte a value consists of; panics on a torn value.
fn whole(v: &[u8]) -> u8 {
    assert_eq!(v.len(), WORDS * 8);
    assert!(v.iter().all(|&b| b == v[0]), "torn value {v:?}");
    v[0]
}

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    crate::platform::loom_model(crate::platform::futex::model::Time::Frozen, 3, f);
}

/// An in-place writer as `try_overwrite` runs it: lock the published entry, write, publish.
fn overwrite(e: &ModelEntry, byte: u8) -> bool {
    let s = e.seq.load(Ordering::Acquire);
    if s & 1 == 1 {
        return false;
    }
    match lock_published(&e.hdr, &e.seq, s, owner::me()) {
        Some(st) => {
            write_in_place(e, st, &value(byte));
            true
        }
        None => false,
    }
}

#[test]
fn readers_never_see_a_torn_value_and_writers_exclude_each_other() {
    model(|| {
        let e = ModelEntry::new(1);
        let writers: Vec<_> = [2u8, 3]
            .into_iter()
            .map(|byte| {
                let e = e.clone();
                thread::spawn(move || overwrite(&e, byte))
            })
            .collect();
        let mut out = Vec::new();
        if read_value(&*e, &mut out).unwrap() {
            assert!([1, 2, 3].contains(&whole(&out)));
        }
        let done: Vec<bool> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        assert!(read_value(&*e, &mut out).unwrap());
        let last = whole(&out);
        let st = e.hdr.state.load(Ordering::Relaxed);
        assert_eq!(st & ENTRY_OWNER_MASK, 0, "unlocked at the end");
        let wins = done.iter().filter(|&&d| d).count() as u64;
        assert_eq!((st & ENTRY_VERSION_MASK) >> 1, wins, "one version per successful overwrite");
        if wins == 0 {
            assert_eq!(last, 1);
        } else {
            assert!(done[(last - 2) as usize], "the value is one that a successful writer wrote");
        }
    });
}

#[test]
fn an_overwrite_either_lands_before_the_entry_is_retired_or_backs_off() {
    // A shard-lock holder retiring the entry (as `remove_at` does): version odd, take the entry's lock, read the
    // final value, version even again, and never unlock. An in-place writer that reports success must have
    // written before the retirer read.
    model(|| {
        let e = ModelEntry::new(1);
        let writer = {
            let e = e.clone();
            thread::spawn(move || overwrite(&e, 2))
        };
        let s = e.seq.load(Ordering::Relaxed);
        e.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        acquire_entry(&e.hdr).unwrap();
        let mut out = Vec::new();
        assert!(read_value(&*e, &mut out).unwrap());
        let seen = whole(&out);
        e.seq.store(s + 2, Ordering::Release);
        let wrote = writer.join().unwrap();
        assert_eq!(seen == 2, wrote, "a successful overwrite is seen by the retirer, a failed one is not");
    });
}
