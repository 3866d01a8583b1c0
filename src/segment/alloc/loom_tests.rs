//! Model checking of the block allocator with loom: the real `alloc`/`free` (bump, tagged Treiber free lists,
//! state flips) over a region of a few blocks whose headers are model atomics.
//!
//! What is checked: no block is handed out to two holders at once (each holder writes and re-reads the payload
//! through a loom `UnsafeCell`, so an overlap, or a hand-over that is not ordered by the free list's
//! Release/Acquire, is a reported data race; the `state` flip would also turn it into `Error::Corrupt`); a pop
//! whose head went A -> B -> A meanwhile fails its compare-and-swap (the tag); and once every thread is done,
//! every carved block is either in use or on exactly one free list, and the lists are well formed.
//!
//! Run with `make loom`.

use super::*;
use crate::platform::futex::model::Time;
use loom::sync::Arc;
use loom::thread;

/// Where the modelled region starts (any 16-aligned offset but 0, which means "empty list").
const START: u64 = 1024;
/// Every model allocates from class 0 (32-byte blocks: a 16-byte header and 16 payload bytes).
const PAYLOAD: u64 = 16;
const BLOCK: u64 = class_size(0);

/// A payload word that loom watches: concurrent or unordered accesses from two threads are reported.
struct Payload(loom::cell::UnsafeCell<u32>);

// SAFETY: every access goes through loom's `with`/`with_mut`, which check at run time that accesses from
// different threads are ordered by happens-before; an unordered pair fails the model instead of racing.
unsafe impl Sync for Payload {}

struct Model {
    hdr: HeapHeader,
    /// One header per grain of the region; the heap uses those at block starts.
    headers: Vec<BlockHeader>,
    /// One payload per block.
    payloads: Vec<Payload>,
}

impl Model {
    fn new(blocks: u64) -> Arc<Model> {
        let region = blocks * BLOCK;
        let hdr = HeapHeader {
            magic: AtomicU32::new(HEAP_MAGIC),
            version: AtomicU32::new(HEAP_VERSION),
            start: AtomicU64::new(START),
            end: AtomicU64::new(START + region),
            bump: AtomicU64::new(START),
            reserved_to: AtomicU64::new(START),
            reserved: std::array::from_fn(|_| AtomicU64::new(0)),
            free_heads: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        let headers = (0..region / GRAIN)
            .map(|_| BlockHeader { class: AtomicU32::new(0), state: AtomicU32::new(0), next: AtomicU64::new(0) })
            .collect();
        let payloads = (0..blocks).map(|_| Payload(loom::cell::UnsafeCell::new(0))).collect();
        Arc::new(Model { hdr, headers, payloads })
    }

    fn heap(&self) -> Heap<'_, Model> {
        let end = self.hdr.end.load(Ordering::Relaxed);
        Heap { seg: self, hdr: &self.hdr, start: START, end }
    }

    /// Takes the block whose payload is at `payload`: writes the holder's mark and reads it back.
    fn hold(&self, payload: u64, mark: u32) {
        let cell = &self.payloads[((payload - BLOCK_HEADER - START) / BLOCK) as usize].0;
        // SAFETY: loom checks that no other thread accesses the cell concurrently (that is the property).
        cell.with_mut(|p| unsafe { *p = mark });
        // SAFETY: as above.
        assert_eq!(cell.with(|p| unsafe { *p }), mark, "block {payload:#x} changed under its holder");
    }

    /// Every carved block is in use or on a free list (the lists are walked and checked), nothing twice.
    fn accounted(&self, in_use: u64) {
        let heap = self.heap();
        let stats = heap.stats();
        let carved = self.hdr.bump.load(Ordering::Relaxed) - START;
        assert_eq!(stats.used_blocks, in_use);
        assert_eq!(heap.free_list_bytes().unwrap() + stats.used_bytes, carved);
    }
}

impl BlockMemory for Model {
    fn block_header(&self, at: u64) -> Result<&BlockHeader> {
        // The heap checked `at` against the region; index the grain.
        Ok(&self.headers[((at - START) / GRAIN) as usize])
    }

    fn reserve(&self, _off: u64, _len: u64) -> Result<()> {
        Ok(()) // model memory needs no reserving; `reserved_to` still advances as in a segment
    }
}

/// Allocates a block, holds it, frees it. `Error::Full` is an accepted outcome: the others may hold every block.
/// (It can also come when a block of the class was freed between this allocator's look at its free list and its
/// look at fresh memory: `alloc` does not look at its own list again. The model does not tell the two apart.)
fn use_one(m: &Model, mark: u32) {
    let heap = m.heap();
    match heap.alloc(PAYLOAD) {
        Ok(b) => {
            m.hold(b, mark);
            heap.free(b).unwrap();
        }
        Err(Error::Full(_)) => {}
        Err(e) => panic!("{e}"),
    }
}

fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    crate::platform::loom_model(Time::Frozen, 2, f);
}

#[test]
fn three_allocators_on_two_blocks_never_share_one_and_lose_none() {
    // Bump races, a full heap (an allocator that finds both blocks held gets Error::Full), and reuse through
    // the free list by whoever comes after a free.
    model(|| {
        let m = Model::new(2);
        let workers: Vec<_> = (1..=2u32)
            .map(|mark| {
                let m = m.clone();
                thread::spawn(move || use_one(&m, mark))
            })
            .collect();
        use_one(&m, 3);
        for w in workers {
            w.join().unwrap();
        }
        m.accounted(0);
    });
}

#[test]
fn a_pop_that_saw_the_head_go_a_b_a_fails_its_swap() {
    // The free list is A -> B. One thread pops once; the other pops A and B and pushes A back, so the head is A
    // again but A's next is no longer B. A pop that read (A, next = B) before that must not install B: with the
    // tag its CAS fails and it retries.
    model(|| {
        let m = Model::new(3);
        {
            let heap = m.heap();
            let a = heap.alloc(PAYLOAD).unwrap();
            let b = heap.alloc(PAYLOAD).unwrap();
            heap.free(b).unwrap();
            heap.free(a).unwrap();
        }
        let m2 = m.clone();
        let other = thread::spawn(move || {
            let heap = m2.heap();
            let a = heap.alloc(PAYLOAD).unwrap();
            let b = heap.alloc(PAYLOAD).unwrap();
            m2.hold(a, 2);
            m2.hold(b, 2);
            heap.free(a).unwrap();
            b
        });
        let heap = m.heap();
        let mine = heap.alloc(PAYLOAD).unwrap();
        m.hold(mine, 1);
        let theirs = other.join().unwrap();
        assert_ne!(mine, theirs, "one block handed out twice");
        m.accounted(2);
        heap.free(mine).unwrap();
        heap.free(theirs).unwrap();
        m.accounted(0);
    });
}
