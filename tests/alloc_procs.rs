//! The block allocator used by several processes at once: no block is handed to two owners, and after every
//! process freed its blocks, all memory is accounted for (free lists + never-used space = the region).
//!
//! Child processes are this test binary re-run on `child_worker` (`pyconc::base::child`).

use pyconc::base::child;
use pyconc::segment::alloc::Heap;
use pyconc::segment::{Kind, Segment};
use std::time::Duration;

const REGION: u64 = 16 << 20;

fn work(seg: &Segment, id: u8, rounds: u64) {
    let heap = Heap::attach(seg, seg.data_offset()).unwrap();
    let mut live: Vec<(u64, u64)> = Vec::new();
    for i in 0..rounds {
        let size = 1 + (i.wrapping_mul(2654435761) ^ (id as u64 * 97)) % 2000;
        let off = heap.alloc(size).unwrap();
        let p = seg.bytes_ptr(off, size).unwrap();
        // SAFETY: the block is exclusively ours until freed; p is in bounds for `size` bytes.
        unsafe { std::ptr::write_bytes(p, id, size as usize) };
        live.push((off, size));
        if live.len() > 64 || (i % 7 == 0 && !live.is_empty()) {
            let (o, sz) = live.swap_remove((i as usize * 31) % live.len());
            let p = seg.bytes_ptr(o, sz).unwrap();
            for k in 0..sz as usize {
                // SAFETY: in bounds; nobody else may write a block we own.
                let b = unsafe { *p.add(k) };
                assert_eq!(b, id, "block {o:#x} was written by another owner");
            }
            heap.free(o).unwrap();
        }
    }
    for (o, _) in live {
        heap.free(o).unwrap();
    }
}

#[test]
fn child_worker() {
    let Some(spec) = child::spec() else {
        return;
    };
    let (name, id) = spec.split_once(':').unwrap();
    let seg = Segment::open(name).unwrap();
    work(&seg, id.parse().unwrap(), 30_000);
}

#[test]
fn processes_alloc_and_free_concurrently_without_overlap_or_leak() {
    if child::spec().is_some() {
        return;
    }
    let seg = Segment::create(Kind::Heap, 1, Heap::footprint(REGION)).unwrap();
    Heap::init(&seg, seg.data_offset(), Heap::footprint(REGION)).unwrap();
    let mut children: Vec<_> =
        (1..=4u8).map(|id| child::spawn("child_worker", &format!("{}:{id}", seg.name()))).collect();
    // The parent allocates too, while the children run.
    work(&seg, 9, 30_000);
    child::wait_all_ok(&mut children, Duration::from_secs(120));

    let attaches = seg.header().attach_count.load(pyconc::base::atomic::Ordering::Relaxed);
    assert_eq!(attaches, 5, "the creator and four children attached");
    let heap = Heap::attach(&seg, seg.data_offset()).unwrap();
    let stats = heap.stats();
    assert_eq!(stats.used_blocks, 0);
    assert_eq!(stats.used_bytes, 0);
    let free = heap.free_list_bytes().unwrap();
    assert_eq!(free + stats.fresh_bytes, stats.region_bytes, "every byte is either free-listed or never used");
    assert!(stats.fresh_bytes > 0 && free > 0);
}
