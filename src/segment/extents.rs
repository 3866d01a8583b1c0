//! Structures that outgrow their segment: a main segment plus extension segments added on demand, each holding
//! one heap, whose names the structure's header records. Shared by the dict and the deque.
//!
//! The header keeps, for the extents: a count (published last, with Release, so a process that sees it sees the
//! name), the size of the last heap added (each new one is twice as big) and a table of names, `NAME_WORDS`
//! words each. Other processes map an extension the first time a reference names it (or at attach, for the
//! ones that exist then), so every process keeps alive the segments it may touch. A process that adds an
//! extension registers every user of the main segment as its user, on their behalf: any of them may come to
//! need it after the adder exits. Dropping the set maps the extensions it never mapped, so that dropping them
//! ends those on-behalf registrations instead of leaving them until the process exits.

use super::alloc::{Heap, HeapHeader};
use super::header::Kind;
use super::offset::Offset;
use super::shm::{Reserve, Segment};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::error::corrupt;
use crate::{Error, Result};
use std::sync::OnceLock;

/// Words (of 8 bytes) that hold one segment name in a header.
pub const NAME_WORDS: usize = 6;

/// What a structure's header holds about its extents.
pub struct Names<'a> {
    /// How many segments the structure spans (the main one included).
    pub count: &'a AtomicU32,
    /// Heap size of the last segment added.
    pub last_size: &'a AtomicU64,
    /// The names, by segment index (entry 0, the main segment, unused).
    pub names: &'a [[AtomicU64; NAME_WORDS]],
}

/// A mapped segment of the set and the offset of its heap.
pub struct HeapSeg {
    /// The segment.
    pub seg: Segment,
    /// Offset of its heap header.
    pub heap_off: u64,
}

/// How a structure grows.
#[derive(Clone, Copy)]
pub struct Growth {
    /// Segment kind and payload version of the extensions (those of the structure).
    pub kind: Kind,
    /// Payload version.
    pub version: u32,
    /// The structure's name in messages ("dict", "deque").
    pub what: &'static str,
    /// Room added beyond the request that made a segment necessary.
    pub slack: u64,
    /// Largest heap of one segment (a larger single request still gets a segment of its own size).
    pub max_heap: u64,
}

/// The process-local view of a structure's segments.
pub struct Extents {
    growth: Growth,
    slots: Box<[OnceLock<HeapSeg>]>,
    open_lock: parking_lot::Mutex<()>,
}

impl Extents {
    /// The set of a structure whose main segment `main` has its heap at `heap_off`; `names.names.len()` is the
    /// most segments it may span.
    pub fn new(main: &Segment, heap_off: u64, growth: Growth, names: &Names<'_>) -> Self {
        let slots: Box<[OnceLock<HeapSeg>]> = (0..names.names.len()).map(|_| OnceLock::new()).collect();
        let _ = slots[0].set(HeapSeg { seg: main.clone(), heap_off });
        Extents { growth, slots, open_lock: parking_lot::Mutex::new(()) }
    }

    /// How many segments the structure spans now (checked against the name table).
    pub fn count(&self, names: &Names<'_>) -> Result<usize> {
        let n = names.count.load(Ordering::Acquire) as usize;
        if n == 0 || n > self.slots.len() {
            return Err(corrupt!("{} header counts {n} segments", self.growth.what));
        }
        Ok(n)
    }

    /// Segment `idx`, mapped on first use.
    pub fn get(&self, idx: usize, names: &Names<'_>) -> Result<&HeapSeg> {
        let what = self.growth.what;
        let cell = self.slots.get(idx).ok_or_else(|| corrupt!("{what} reference to segment #{idx}"))?;
        if let Some(s) = cell.get() {
            return Ok(s);
        }
        let _g = self.open_lock.lock();
        if let Some(s) = cell.get() {
            return Ok(s);
        }
        if idx >= names.count.load(Ordering::Acquire) as usize {
            return Err(corrupt!("{what} reference to segment #{idx}, which does not exist"));
        }
        let mut name = Vec::with_capacity(NAME_WORDS * 8);
        for w in &names.names[idx] {
            name.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = std::str::from_utf8(&name[..end]).map_err(|_| corrupt!("bad extension segment name"))?;
        let seg = Segment::open(name)?;
        seg.info().expect(seg.name_local(), self.growth.kind, self.growth.version)?;
        let heap_off = seg.info().data_offset;
        Heap::attach(&seg, Offset::new(heap_off))?;
        let _ = cell.set(HeapSeg { seg, heap_off });
        cell.get().ok_or_else(|| corrupt!("extension segment cell"))
    }

    /// The heap of segment `idx`.
    pub fn heap(&self, idx: usize, names: &Names<'_>) -> Result<Heap<'_>> {
        let s = self.get(idx, names)?;
        Heap::attach(&s.seg, Offset::new(s.heap_off))
    }

    /// Maps every extension that exists now (at attach: this process then keeps them alive while it holds the
    /// structure).
    pub fn map_existing(&self, names: &Names<'_>) -> Result<()> {
        for i in 1..self.count(names)? {
            self.get(i, names)?;
        }
        Ok(())
    }

    /// Maps, ignoring errors, the extensions this process has not mapped (before the set is dropped).
    pub fn map_unmapped(&self, names: &Names<'_>) {
        let n = (names.count.load(Ordering::Acquire) as usize).min(self.slots.len());
        for i in 1..n {
            if self.slots[i].get().is_none() {
                let _ = self.get(i, names);
            }
        }
    }

    /// Creates extension segment number `n` (the current count) with a heap of at least `need` bytes (twice the
    /// last one, within the growth bounds), registers the main segment's users as its users, and records its
    /// name. The caller holds the structure's growth lock and then publishes it with [`publish`](Self::publish).
    pub fn add(&self, n: usize, need: u64, main: &Segment, names: &Names<'_>) -> Result<()> {
        let g = self.growth;
        if n >= self.slots.len() {
            return Err(Error::Full(format!(
                "the {} spans {} segments and cannot grow further",
                g.what,
                self.slots.len()
            )));
        }
        let size = names
            .last_size
            .load(Ordering::Relaxed)
            .saturating_mul(2)
            .max(need.saturating_mul(2).saturating_add(g.slack))
            .min(g.max_heap.max(need.saturating_add(g.slack)));
        let footprint = Heap::footprint(size);
        // The heap header is reserved in /dev/shm now; the heap reserves what it hands out.
        let fixed = Reserve::Prefix(std::mem::size_of::<HeapHeader>() as u64);
        let seg = Segment::create_reserving(g.kind, g.version, footprint, &[], fixed)?;
        seg.register_on_behalf(&main.users()?)?;
        let heap_off = seg.info().data_offset;
        Heap::init(&seg, Offset::new(heap_off), footprint)?;
        let bytes = seg.name().as_bytes();
        if bytes.len() >= NAME_WORDS * 8 {
            return Err(Error::Invalid(format!("segment name too long for the {} header", g.what)));
        }
        for (i, w) in names.names[n].iter().enumerate() {
            let mut word = [0u8; 8];
            for (j, b) in word.iter_mut().enumerate() {
                *b = bytes.get(i * 8 + j).copied().unwrap_or(0);
            }
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        names.last_size.store(size, Ordering::Relaxed);
        let _ = self.slots[n].set(HeapSeg { seg, heap_off });
        Ok(())
    }

    /// Makes extension `n` (added by [`add`](Self::add)) visible to every process.
    pub fn publish(&self, n: usize, names: &Names<'_>) {
        // Release: a process that sees the new count sees the name.
        names.count.store(n as u32 + 1, Ordering::Release);
    }
}
