//! The block allocator used by several processes at once: no block is handed to two owners, and after every
//! process freed its blocks, all memory is accounted for (free lists + never-used space = the region).
//!
//! Child processes are this test binary re-run on `child_worker` with `PYCONC_ALLOC_CHILD` set.

use pyconc::segment::alloc::Heap;
use pyconc::segment::{Kind, Segment};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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
    let Ok(spec) = std::env::var("PYCONC_ALLOC_CHILD") else {
        return;
    };
    let (name, id) = spec.split_once(':').unwrap();
    let seg = Segment::open(name).unwrap();
    work(&seg, id.parse().unwrap(), 30_000);
}

fn wait_all(mut children: Vec<Child>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !children.is_empty() {
        children.retain_mut(|c| match c.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "child failed: {status}");
                false
            }
            None => true,
        });
        if Instant::now() > deadline {
            for c in &mut children {
                let _ = c.kill();
            }
            panic!("{} child process(es) hung", children.len());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn processes_alloc_and_free_concurrently_without_overlap_or_leak() {
    if std::env::var("PYCONC_ALLOC_CHILD").is_ok() {
        return;
    }
    let seg = Segment::create(Kind::Heap, 1, Heap::footprint(REGION)).unwrap();
    Heap::init(&seg, seg.data_offset(), Heap::footprint(REGION)).unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<Child> = (1..=4u8)
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "child_worker", "--quiet", "--test-threads=1"])
                .env("PYCONC_ALLOC_CHILD", format!("{}:{id}", seg.name()))
                .spawn()
                .unwrap()
        })
        .collect();
    // The parent allocates too, while the children run.
    work(&seg, 9, 30_000);
    wait_all(children, Duration::from_secs(120));

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
