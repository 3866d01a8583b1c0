//! A block allocator over a region of a segment, usable by many processes at once.
//!
//! Layout (`shm-layouts/heap.md`): a [`HeapHeader`] followed by the region `[start, end)`, carved into blocks.
//! Each block is a [`BlockHeader`] (16 bytes) followed by its payload; blocks come in size classes (16-byte steps
//! up to 128 bytes, then four classes per power of two, so at most 25% is lost to rounding).
//!
//! * Fresh memory comes from a bump offset (`bump`, advanced by CAS, never past `end`), and is reserved in
//!   /dev/shm (`Segment::reserve`, a chunk at a time, recorded in `reserved_to`) before it is handed out: a full
//!   /dev/shm is an [`Error::NoSpace`](crate::Error::NoSpace) from `alloc`, never a SIGBUS at a later write.
//! * Freed blocks go onto the free list of their class: a Treiber stack whose head packs
//!   `(tag << 32) | (offset / 16)`. The tag changes on every push and pop, so a stale head can never be
//!   swapped in (ABA).
//! * Every offset taken from shared memory (list heads, `next` links, offsets handed to [`Heap::free`]) is
//!   checked against the region before use; a corrupt heap yields [`Error::Corrupt`], never a wild access.
//! * Crash safety: a process killed inside `alloc` or `free` can leak the block it was handling, never corrupt
//!   a list (each list change is a single CAS) or hand one block out twice (the `state` word is flipped by CAS).

use super::offset::{check_range, Offset};
use super::shm::Segment;
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::error::corrupt;
use crate::shm_struct;
use crate::{Error, Result};

/// Number of size classes.
pub const NUM_CLASSES: usize = 120;
/// `magic` of an initialised heap (`b"HEAP"`).
pub const HEAP_MAGIC: u32 = u32::from_le_bytes(*b"HEAP");
/// Version of the heap layout.
pub const HEAP_VERSION: u32 = 2;
/// Fresh memory is reserved in /dev/shm in steps (and at least what the block needs): the first step is
/// [`RESERVE_FIRST`], each later one as large as what is reserved already (the reservation doubles), up to
/// [`RESERVE_CHUNK`] at a time. So an empty heap holds nothing, a heap with one small item 64 KiB.
pub const RESERVE_CHUNK: u64 = 1 << 20;
/// The first reservation step of a heap (see [`RESERVE_CHUNK`]).
pub const RESERVE_FIRST: u64 = 64 << 10;

/// How far a heap whose region starts at `start` and is reserved up to `reserved` reserves next (at least to
/// `need`, at most to `end`).
pub const fn reserve_target(start: u64, reserved: u64, need: u64, end: u64) -> u64 {
    let have = reserved.saturating_sub(start);
    let step = if have < RESERVE_FIRST {
        RESERVE_FIRST
    } else if have > RESERVE_CHUNK {
        RESERVE_CHUNK
    } else {
        have
    };
    let to = reserved.saturating_add(step);
    let to = if to > need { to } else { need };
    if to < end {
        to
    } else {
        end
    }
}
/// Block `state` while handed out.
pub const BLOCK_USED: u32 = 0x5553_4544; // "USED"
/// Block `state` while on a free list.
pub const BLOCK_FREE: u32 = 0x4652_4545; // "FREE"
/// Granularity of block offsets and sizes.
pub const GRAIN: u64 = 16;
/// Size of [`BlockHeader`].
pub const BLOCK_HEADER: u64 = 16;

shm_struct! {
    /// Heap bookkeeping, placed at the offset the owning structure chooses.
    pub struct HeapHeader {
        /// [`HEAP_MAGIC`] once initialised.
        pub magic: AtomicU32,
        /// [`HEAP_VERSION`].
        pub version: AtomicU32,
        /// First byte of the region (16-aligned).
        pub start: AtomicU64,
        /// One past the last byte of the region.
        pub end: AtomicU64,
        /// Next never-used offset; `start <= bump <= end`.
        pub bump: AtomicU64,
        /// The region's pages below this offset are reserved in /dev/shm (allocated, so writes cannot SIGBUS);
        /// `bump` never passes it. Advanced (`fetch_max`) by whoever bumps past it, in steps that double from
        /// [`RESERVE_FIRST`] to [`RESERVE_CHUNK`] ([`reserve_target`]).
        pub reserved_to: AtomicU64,
        /// Unused; zero. (No usage counters: every process would write them on every alloc and free, and that one
        /// cache line bouncing between CPUs cost more than the allocation itself. `Heap::stats` walks the blocks.)
        pub reserved: [AtomicU64; 3],
        /// Free-list heads, one per class: `(tag << 32) | (offset / 16)`, offset 0 meaning empty.
        pub free_heads: [AtomicU64; NUM_CLASSES],
    }
}

shm_struct! {
    /// The header in front of every block.
    pub struct BlockHeader {
        /// Size class index.
        pub class: AtomicU32,
        /// [`BLOCK_USED`] or [`BLOCK_FREE`].
        pub state: AtomicU32,
        /// While free: `offset / 16` of the next free block of the class (0: none). While used: 0.
        pub next: AtomicU64,
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<HeapHeader>() == 64 + 8 * NUM_CLASSES);
    assert!(offset_of!(HeapHeader, start) == 8);
    assert!(offset_of!(HeapHeader, end) == 16);
    assert!(offset_of!(HeapHeader, bump) == 24);
    assert!(offset_of!(HeapHeader, reserved_to) == 32);
    assert!(offset_of!(HeapHeader, reserved) == 40);
    assert!(offset_of!(HeapHeader, free_heads) == 64);
    assert!(size_of::<BlockHeader>() == BLOCK_HEADER as usize);
    assert!(offset_of!(BlockHeader, state) == 4);
    assert!(offset_of!(BlockHeader, next) == 8);
};

/// Total size (header included) of blocks of class `i`.
pub const fn class_size(i: usize) -> u64 {
    if i < 7 {
        (i as u64 + 2) * 16
    } else {
        let g = (i - 7) / 4;
        let sub = ((i - 7) % 4) as u64;
        let base = 128u64 << g;
        base + (sub + 1) * (base / 4)
    }
}

/// The smallest class whose blocks hold `total` bytes (header included), if any.
pub fn class_for(total: u64) -> Option<usize> {
    let i = if total <= 128 {
        (total.div_ceil(16).max(2) - 2) as usize
    } else {
        let g = (63 - (total - 1).leading_zeros()) as usize - 7; // 128 << g < total <= 256 << g
        let base = 128u64 << g;
        let step = base / 4;
        let sub = ((total - base).div_ceil(step) - 1) as usize;
        7 + 4 * g + sub
    };
    (i < NUM_CLASSES).then_some(i)
}

fn pack(tag: u32, offset: u64) -> u64 {
    ((tag as u64) << 32) | (offset / GRAIN)
}

fn unpack(word: u64) -> (u32, u64) {
    ((word >> 32) as u32, (word & 0xffff_ffff) * GRAIN)
}

/// Usage figures of a heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in blocks handed out, headers included.
    pub used_bytes: u64,
    /// Blocks handed out.
    pub used_blocks: u64,
    /// Bytes never handed out yet (`end - bump`).
    pub fresh_bytes: u64,
    /// Size of the region.
    pub region_bytes: u64,
}

/// Where a heap's block headers live: a [`Segment`] (offsets resolved and bounds-checked by
/// [`Segment::resolve`]), or in the loom models (`segment/alloc/loom_tests.rs`) a table of model atomics, so the models
/// run this very allocator.
pub trait BlockMemory {
    /// The block header at byte offset `at`; the heap has checked that the block lies inside its region.
    fn block_header(&self, at: u64) -> Result<&BlockHeader>;
    /// Makes `[off, off + len)` writable without a SIGBUS ([`Segment::reserve`]).
    fn reserve(&self, off: u64, len: u64) -> Result<()>;
}

impl BlockMemory for Segment {
    #[inline]
    fn block_header(&self, at: u64) -> Result<&BlockHeader> {
        self.resolve(Offset::new(at))
    }

    #[inline]
    fn reserve(&self, off: u64, len: u64) -> Result<()> {
        Segment::reserve(self, off, len)
    }
}

/// A validated heap's place in its segment (see [`Heap::place`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapPlace {
    at: u64,
    start: u64,
    end: u64,
}

/// A heap inside a segment. Borrowing the segment keeps the mapping alive.
pub struct Heap<'a, M: BlockMemory = Segment> {
    seg: &'a M,
    hdr: &'a HeapHeader,
    start: u64,
    end: u64,
}

impl<'a> Heap<'a> {
    /// Space needed for a heap whose region is `region` bytes.
    pub const fn footprint(region: u64) -> u64 {
        std::mem::size_of::<HeapHeader>() as u64 + region
    }

    /// Initialises a heap at `at` covering the rest of `[at, at + footprint)`. Call once, before the segment is
    /// shared (the creator initialises, everybody else [`attach`](Self::attach)es).
    pub fn init(seg: &'a Segment, at: Offset<HeapHeader>, footprint: u64) -> Result<Heap<'a>> {
        let hdr = seg.resolve(at)?;
        let start = (at.get() + std::mem::size_of::<HeapHeader>() as u64).next_multiple_of(GRAIN);
        let end = at.get().checked_add(footprint).ok_or_else(|| Error::Invalid("heap too large".into()))?;
        check_range(at.get(), footprint, GRAIN, seg.len(), "heap")?;
        if end / GRAIN > u32::MAX as u64 {
            return Err(Error::Invalid(format!("a heap must end below {} bytes", (u32::MAX as u64 + 1) * GRAIN)));
        }
        hdr.start.store(start, Ordering::Relaxed);
        hdr.end.store(end, Ordering::Relaxed);
        hdr.bump.store(start, Ordering::Relaxed);
        hdr.version.store(HEAP_VERSION, Ordering::Relaxed);
        hdr.magic.store(HEAP_MAGIC, Ordering::Release);
        Ok(Heap { seg, hdr, start, end })
    }

    /// Attaches to an initialised heap at `at`, validating its header against the segment.
    pub fn attach(seg: &'a Segment, at: Offset<HeapHeader>) -> Result<Heap<'a>> {
        let hdr = seg.resolve(at)?;
        if hdr.magic.load(Ordering::Acquire) != HEAP_MAGIC {
            return Err(corrupt!("no heap at offset {:#x} of {}", at.get(), seg.name_local()));
        }
        let version = hdr.version.load(Ordering::Relaxed);
        if version != HEAP_VERSION {
            return Err(corrupt!("heap layout version {version}, this build reads {HEAP_VERSION}"));
        }
        let start = hdr.start.load(Ordering::Relaxed);
        let end = hdr.end.load(Ordering::Relaxed);
        let header_end = at.get() + std::mem::size_of::<HeapHeader>() as u64;
        if start < header_end || start % GRAIN != 0 || end < start || end > seg.len() || end / GRAIN > u32::MAX as u64 {
            return Err(corrupt!("heap region [{start:#x}, {end:#x}) is invalid for {}", seg.name_local()));
        }
        Ok(Heap { seg, hdr, start, end })
    }

    /// Where this heap is and the region its header gave when it was attached: a process that keeps this need
    /// not read and validate the header again for every operation ([`Heap::reattach`]).
    pub fn place(&self) -> HeapPlace {
        HeapPlace {
            at: self.hdr as *const HeapHeader as u64 - self.seg.base_ptr() as u64,
            start: self.start,
            end: self.end,
        }
    }

    /// The heap at `place` (taken from [`place`](Self::place) of a heap of this segment), without re-reading its
    /// header's region (validated when `place` was taken; the region of a heap never changes).
    pub fn reattach(seg: &'a Segment, place: &HeapPlace) -> Result<Heap<'a>> {
        let hdr = seg.resolve(Offset::new(place.at))?;
        Ok(Heap { seg, hdr, start: place.start, end: place.end })
    }

    /// The segment the heap lives in.
    pub fn segment(&self) -> &'a Segment {
        self.seg
    }
}

impl<'a, M: BlockMemory> Heap<'a, M> {
    /// Checks that a block of class `class` at `block` lies inside the region and resolves its header.
    fn block(&self, block: u64, class: usize) -> Result<&'a BlockHeader> {
        let size = class_size(class);
        if block < self.start || block % GRAIN != 0 || block.checked_add(size).is_none_or(|e| e > self.end) {
            return Err(corrupt!("heap block at {block:#x} (class {class}) is outside the heap"));
        }
        self.seg.block_header(block)
    }

    /// Allocates a block with at least `size` payload bytes and returns the payload's offset (16-aligned).
    /// The payload's contents are unspecified (zero for fresh memory, old bytes for reused blocks).
    pub fn alloc(&self, size: u64) -> Result<u64> {
        let class = size
            .checked_add(BLOCK_HEADER)
            .and_then(class_for)
            .ok_or_else(|| Error::Full(format!("cannot allocate {size} bytes: larger than the largest block")))?;
        let block = match self.pop(class)? {
            Some(b) => b,
            None => match self.bump(class) {
                Ok(b) => b,
                // Fresh memory is exhausted (or /dev/shm cannot back more of it): a free block of a larger class
                // will do (it keeps its class, so it returns to its own list when freed).
                Err(full @ (Error::Full(_) | Error::NoSpace(_))) => self.pop_larger(class)?.ok_or(full)?,
                Err(e) => return Err(e),
            },
        };
        Ok(block + BLOCK_HEADER)
    }

    fn pop(&self, class: usize) -> Result<Option<u64>> {
        let head = &self.hdr.free_heads[class];
        let mut word = head.load(Ordering::Acquire);
        loop {
            let (tag, block) = unpack(word);
            if block == 0 {
                return Ok(None);
            }
            let bh = self.block(block, class)?;
            // The pusher wrote `next` before its Release CAS on the head, which our Acquire load synchronised
            // with. If the block was popped and reused meanwhile, `next` may be garbage, but then the tag has
            // moved on and the CAS below fails.
            let next = bh.next.load(Ordering::Relaxed) * GRAIN;
            match head.compare_exchange_weak(word, pack(tag.wrapping_add(1), next), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if bh.state.compare_exchange(BLOCK_FREE, BLOCK_USED, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                        return Err(corrupt!("heap block at {block:#x} was on a free list but not free"));
                    }
                    bh.next.store(0, Ordering::Relaxed);
                    return Ok(Some(block));
                }
                Err(current) => word = current,
            }
        }
    }

    fn pop_larger(&self, class: usize) -> Result<Option<u64>> {
        for c in class + 1..NUM_CLASSES {
            if unpack(self.hdr.free_heads[c].load(Ordering::Relaxed)).1 != 0 {
                if let Some(b) = self.pop(c)? {
                    return Ok(Some(b));
                }
            }
        }
        Ok(None)
    }

    fn bump(&self, class: usize) -> Result<u64> {
        let size = class_size(class);
        let mut cur = self.hdr.bump.load(Ordering::Relaxed);
        loop {
            if cur < self.start || cur % GRAIN != 0 {
                return Err(corrupt!("heap bump offset {cur:#x} is invalid"));
            }
            let new = cur.checked_add(size).filter(|&n| n <= self.end).ok_or_else(|| {
                Error::Full(format!(
                    "shared heap is full: all {} bytes are carved into blocks, a block of {size} bytes does not \
                     fit and no free block is that large",
                    self.end - self.start
                ))
            })?;
            // Reserve before carving, so a full /dev/shm leaves the heap as it was and no block is ever handed
            // out over pages that a write could fail to get (a SIGBUS).
            let reserved = self.hdr.reserved_to.load(Ordering::Acquire);
            if new > reserved {
                let from = reserved.clamp(self.start, self.end);
                let to = reserve_target(self.start, from, new, self.end);
                self.seg.reserve(from, to - from)?;
                self.hdr.reserved_to.fetch_max(to, Ordering::AcqRel);
            }
            match self.hdr.bump.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        let bh = self.block(cur, class)?;
        bh.class.store(class as u32, Ordering::Relaxed);
        bh.next.store(0, Ordering::Relaxed);
        bh.state.store(BLOCK_USED, Ordering::Relaxed);
        Ok(cur)
    }

    /// Returns the block whose payload starts at `payload` to its free list. Fails with [`Error::Corrupt`] if
    /// `payload` is not the payload of a block handed out by this heap (including double frees).
    pub fn free(&self, payload: u64) -> Result<()> {
        let block = payload
            .checked_sub(BLOCK_HEADER)
            .filter(|b| *b >= self.start)
            .ok_or_else(|| corrupt!("offset {payload:#x} is not a heap block"))?;
        // Resolve with the smallest class first to read the class, then re-check with the real size.
        let class = self.block(block, 0)?.class.load(Ordering::Relaxed) as usize;
        if class >= NUM_CLASSES {
            return Err(corrupt!("heap block at {block:#x} has invalid class {class}"));
        }
        let bh = self.block(block, class)?;
        if bh.state.compare_exchange(BLOCK_USED, BLOCK_FREE, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Err(corrupt!("heap block at {block:#x} is not in use (double free?)"));
        }
        let head = &self.hdr.free_heads[class];
        let mut word = head.load(Ordering::Relaxed);
        loop {
            let (tag, first) = unpack(word);
            bh.next.store(first / GRAIN, Ordering::Relaxed);
            match head.compare_exchange_weak(
                word,
                pack(tag.wrapping_add(1), block),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(current) => word = current,
            }
        }
    }

    /// Payload capacity of the block whose payload starts at `payload`.
    pub fn usable_size(&self, payload: u64) -> Result<u64> {
        let block = payload.checked_sub(BLOCK_HEADER).ok_or_else(|| corrupt!("not a heap block"))?;
        let class = self.block(block, 0)?.class.load(Ordering::Relaxed) as usize;
        if class >= NUM_CLASSES {
            return Err(corrupt!("heap block at {block:#x} has invalid class {class}"));
        }
        self.block(block, class)?;
        Ok(class_size(class) - BLOCK_HEADER)
    }

    /// Calls `f(block offset, class, in use)` for every block carved so far, in address order. Stops early at a
    /// corrupt header (or one a process killed inside `alloc` never wrote). Exact only while no process
    /// allocates or frees.
    fn walk(&self, mut f: impl FnMut(u64, usize, bool)) {
        let bump = self.hdr.bump.load(Ordering::Acquire).clamp(self.start, self.end);
        let mut at = self.start;
        while at < bump {
            let Ok(first) = self.block(at, 0) else { break };
            let class = first.class.load(Ordering::Relaxed) as usize;
            if class >= NUM_CLASSES || self.block(at, class).is_err() {
                break;
            }
            f(at, class, first.state.load(Ordering::Relaxed) == BLOCK_USED);
            at += class_size(class);
        }
    }

    /// Current usage, found by walking the blocks carved so far (linear in their number; exact only while no
    /// process allocates or frees, which is when tests and tools call it). Stops early at a corrupt header.
    pub fn stats(&self) -> HeapStats {
        let bump = self.hdr.bump.load(Ordering::Acquire).clamp(self.start, self.end);
        let (mut used_bytes, mut used_blocks) = (0, 0);
        self.walk(|_, class, used| {
            if used {
                used_bytes += class_size(class);
                used_blocks += 1;
            }
        });
        HeapStats { used_bytes, used_blocks, fresh_bytes: self.end - bump, region_bytes: self.end - self.start }
    }

    /// Payload offsets of the blocks in use, with their sizes (the structure owning the heap frees the ones it
    /// no longer references: see `SharedDict::reclaim`). Exact only while no process allocates or frees.
    pub fn used_payloads(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        self.walk(|at, class, used| {
            if used {
                out.push((at + BLOCK_HEADER, class_size(class)));
            }
        });
        out
    }

    /// Walks every free list and returns the bytes on them. Fails on a corrupt list (a link outside the heap, a
    /// block on the wrong list or not marked free, a cycle). For tests and `stats`; not for hot paths: it is
    /// linear in the number of free blocks, and only exact while nobody allocates or frees.
    pub fn free_list_bytes(&self) -> Result<u64> {
        let max_blocks = (self.end - self.start) / class_size(0);
        let mut total = 0u64;
        for class in 0..NUM_CLASSES {
            let (_, mut block) = unpack(self.hdr.free_heads[class].load(Ordering::Acquire));
            let mut seen = 0u64;
            while block != 0 {
                let bh = self.block(block, class)?;
                if bh.state.load(Ordering::Relaxed) != BLOCK_FREE || bh.class.load(Ordering::Relaxed) as usize != class
                {
                    return Err(corrupt!("block {block:#x} on free list {class} is not a free block of that class"));
                }
                seen += 1;
                if seen > max_blocks {
                    return Err(corrupt!("free list {class} has a cycle"));
                }
                total += class_size(class);
                block = bh.next.load(Ordering::Relaxed) * GRAIN;
            }
        }
        Ok(total)
    }
}

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Kind;

    #[test]
    fn classes_are_tight_and_monotonic() {
        for i in 1..NUM_CLASSES {
            assert!(class_size(i) > class_size(i - 1), "class {i}");
            assert_eq!(class_size(i) % GRAIN, 0);
        }
        for total in 1..100_000u64 {
            let c = class_for(total).unwrap();
            assert!(class_size(c) >= total, "{total} -> class {c}");
            assert!(c == 0 || class_size(c - 1) < total, "{total} -> class {c} is not the smallest");
        }
        for shift in 17..35 {
            let total = (1u64 << shift) + 1;
            let c = class_for(total).unwrap();
            assert!(class_size(c) >= total && class_size(c - 1) < total);
            assert!(class_size(c) * 4 <= total * 5 + 64, "at most 25% rounding");
        }
    }

    fn heap_segment(region: u64) -> Segment {
        let seg = Segment::create(Kind::Heap, 1, Heap::footprint(region)).unwrap();
        Heap::init(&seg, seg.data_offset(), Heap::footprint(region)).unwrap();
        seg
    }

    #[test]
    fn alloc_free_reuses_memory() {
        let seg = heap_segment(1 << 20);
        let heap = Heap::attach(&seg, seg.data_offset()).unwrap();
        let a = heap.alloc(100).unwrap();
        let b = heap.alloc(100).unwrap();
        assert_ne!(a, b);
        assert_eq!(a % 16, 0);
        assert!(heap.usable_size(a).unwrap() >= 100);
        heap.free(a).unwrap();
        assert!(matches!(heap.free(a), Err(Error::Corrupt(_))), "double free is detected");
        let c = heap.alloc(97).unwrap();
        assert_eq!(a, c, "freed block of the same class is reused");
        heap.free(b).unwrap();
        heap.free(c).unwrap();
        assert_eq!(heap.stats().used_blocks, 0);
        assert_eq!(heap.stats().used_bytes, 0);
    }

    #[test]
    fn full_heap_reports_full_and_recovers() {
        let seg = heap_segment(4096);
        let heap = Heap::attach(&seg, seg.data_offset()).unwrap();
        let mut blocks = vec![];
        loop {
            match heap.alloc(48) {
                Ok(b) => blocks.push(b),
                Err(Error::Full(msg)) => {
                    assert!(msg.contains("full"), "{msg}");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(blocks.len(), 4096 / 64);
        heap.free(blocks.pop().unwrap()).unwrap();
        assert!(heap.alloc(40).is_ok());
        // Once fresh memory is gone, a smaller request is served from a larger free block.
        heap.free(blocks.pop().unwrap()).unwrap();
        let small = heap.alloc(8).unwrap();
        assert_eq!(heap.usable_size(small).unwrap(), 48);
        assert!(matches!(heap.alloc(1 << 40), Err(Error::Full(_))));
    }

    #[test]
    fn bogus_offsets_are_errors_not_crashes() {
        let seg = heap_segment(1 << 16);
        let heap = Heap::attach(&seg, seg.data_offset()).unwrap();
        for off in [0u64, 8, 17, 1 << 40, u64::MAX, seg.len(), seg.len() - 8] {
            assert!(heap.free(off).is_err(), "free({off:#x})");
            assert!(heap.usable_size(off).is_err());
        }
        // A corrupt free-list head is reported when used.
        let hdr: &HeapHeader = seg.resolve(seg.data_offset()).unwrap();
        hdr.free_heads[3].store(pack(0, 1 << 30), Ordering::Relaxed);
        assert!(matches!(heap.alloc(class_size(3) - 16), Err(Error::Corrupt(_))));
    }

    #[test]
    fn threads_alloc_free_without_overlap() {
        let seg = heap_segment(8 << 20);
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let seg = &seg;
                s.spawn(move || {
                    let heap = Heap::attach(seg, seg.data_offset()).unwrap();
                    let mut live: Vec<(u64, u64)> = vec![];
                    for i in 0..20_000u64 {
                        let size = 1 + (i * 7919 + t as u64 * 31) % 700;
                        let off = heap.alloc(size).unwrap();
                        let p = seg.bytes_ptr(off, size).unwrap();
                        // SAFETY: the block is ours until freed; p is in bounds for `size` bytes.
                        unsafe { std::ptr::write_bytes(p, t, size as usize) };
                        live.push((off, size));
                        if live.len() > 50 {
                            let (o, sz) = live.swap_remove((i as usize * 13) % live.len());
                            let p = seg.bytes_ptr(o, sz).unwrap();
                            for k in 0..sz as usize {
                                // SAFETY: in bounds, block still owned by this thread.
                                let byte = unsafe { *p.add(k) };
                                assert_eq!(byte, t, "block overwritten by another thread");
                            }
                            heap.free(o).unwrap();
                        }
                    }
                    for (o, _) in live {
                        heap.free(o).unwrap();
                    }
                });
            }
        });
        let heap = Heap::attach(&seg, seg.data_offset()).unwrap();
        assert_eq!(heap.stats().used_blocks, 0);
    }
}
