//! A double-ended queue in shared memory: the core of `pyconc.ConcurrentDeque`. Layout: `shm-layouts/deque.md`.
//!
//! Items are byte strings (the Python layer stores codec encodings); this module knows nothing of Python.
//!
//! * **Ring.** The deque is a ring of `cap` item references (a power of two) in a heap block, and one word
//!   `span = head | len << 32` saying which slots are live. Each item is its own heap block (an id, a length,
//!   the bytes). The ring doubles when full and halves when under a quarter full, so memory follows the length.
//! * **One robust lock.** Every operation (reads included: they copy the item bytes out) holds the deque's
//!   [`LockState`](crate::sync::lock::LockState), and every allocation and free happens under it, so the heap
//!   blocks in use are exactly the ring and the items it references, plus whatever a dead holder leaked.
//! * **Crash consistency.** A push writes its item block and then the free ring slot next to the live range
//!   (invisible until published), and publishes with one store of `span`; a pop copies the item, publishes the
//!   shorter span, then frees the block. Operations that change more than one word first write an **intent
//!   record** (`DequeHeader::intent`): replacing the ring (growth, shrinking, `remove`, a repair) records the new
//!   ring, capacity and span before storing them; a rotation records its target head and moves one item per
//!   step, each step published by one span store. A holder killed at any instant therefore leaves the deque as
//!   before or after each published store. The next locker finds the lock's owner dead (or an intent still
//!   set) and [repairs](DequeGuard::repair): it completes the recorded operation (rolling it forward; the
//!   steps are idempotent), validates the ring and every item reference, and frees every block nothing
//!   references ([`reclaim`](DequeGuard::reclaim)): the item a dead pusher allocated but never published (that
//!   push is rolled back), the item a dead popper published as popped but never freed (that pop is complete).
//! * **Waiting.** Blocked pops sleep on the futex word `items` after setting its bit 0; a push that sees the
//!   bit bumps the word and wakes them, so pushes make no system call while nobody waits.
//! * **Growth.** The main segment starts with a small heap (64 KiB by default); when every heap is full, the
//!   lock holder adds an extension segment twice the size of the last one (at most [`MAX_SEGMENTS`] segments,
//!   each at most [`MAX_SEG_BYTES`]), registers the main segment's users as its users and names it in the
//!   header, as the dict does.

pub mod layout;
#[cfg(all(test, not(loom)))]
mod tests;

use crate::base::atomic::{AtomicU64, Ordering};
use crate::error::corrupt;
use crate::platform::futex::{self, Deadline};
use crate::segment::alloc::Heap;
use crate::segment::{Kind, Mapped, Offset, Segment, ShmSafe};
use crate::sync::owner;
use crate::sync::wait::{self, Slept, WaitError};
use crate::{Error, Result};
use layout::*;
use std::mem::size_of;
use std::sync::OnceLock;

/// Default heap size of the main segment.
pub const DEFAULT_HEAP_BYTES: u64 = 64 << 10;
/// Largest extension segment heap.
pub const MAX_SEG_BYTES: u64 = 4 << 30;

/// Test hook: when set, a lock holder calls `_exit` at the given point of a mutation (crash-consistency
/// tests). Process-local, so it uses the standard atomic even under loom.
#[doc(hidden)]
pub static CRASH_POINT: crate::base::atomic::local::AtomicU32 = crate::base::atomic::local::AtomicU32::new(0);

#[inline]
fn crash_point(n: u32) {
    if CRASH_POINT.load(crate::base::atomic::local::Ordering::Relaxed) == n {
        // SAFETY: `_exit` ends the process at once; used only by tests to simulate a kill at this point.
        unsafe { libc::_exit(9) }
    }
}

struct SegSlot {
    seg: Segment,
    heap_off: u64,
}

/// A process-local handle to a shared deque.
pub struct SharedDeque {
    main: Segment,
    hdr: Mapped<DequeHeader>,
    segs: Box<[OnceLock<SegSlot>]>,
    open_lock: parking_lot::Mutex<()>,
}

fn make_ref(seg: usize, off: u64) -> u64 {
    ((seg as u64) << REF_SHIFT) | off
}

/// Splits the records written by [`DequeGuard::dump`] into `(id, bytes)`.
pub fn records(buf: &[u8]) -> impl Iterator<Item = Result<(u64, &[u8])>> + '_ {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= buf.len() {
            return None;
        }
        let head = buf.get(at..at + 16)?;
        let id = u64::from_le_bytes(head[..8].try_into().ok()?);
        let len = u64::from_le_bytes(head[8..].try_into().ok()?) as usize;
        let Some(bytes) = buf.get(at + 16..at + 16 + len) else {
            at = buf.len();
            return Some(Err(corrupt!("deque record runs past its buffer")));
        };
        at += 16 + len;
        Some(Ok((id, bytes)))
    })
}

/// Appends `len` bytes at `ptr` to `out`.
///
/// # Safety
/// `ptr..ptr + len` must lie inside a live mapping.
unsafe fn copy_out(ptr: *const u8, len: usize, out: &mut Vec<u8>) {
    out.reserve(len);
    // SAFETY: the destination has `len` spare bytes (reserved above); the source is readable (caller).
    unsafe {
        std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr().add(out.len()), len);
        out.set_len(out.len() + len);
    }
}

/// A ring block, bounds-checked when read.
#[derive(Clone, Copy)]
struct Ring {
    slots: *const AtomicU64,
    cap: u64,
}

impl Ring {
    fn slot<'a>(&self, i: u64) -> &'a AtomicU64 {
        // SAFETY: `cap` slots were range-checked (8-aligned, inside the mapping) in `SharedDeque::ring_at`; the
        // index is masked to `cap - 1` (a power of two); AtomicU64 is ShmSafe. The mapping outlives every use
        // (callers hold `&SharedDeque`).
        unsafe { &*self.slots.add((i & (self.cap - 1)) as usize) }
    }
}

impl SharedDeque {
    /// Creates a deque holding at most `maxlen` items (`None`: unbounded) with a main-segment heap of
    /// `heap_bytes`.
    pub fn create(maxlen: Option<u64>, heap_bytes: u64) -> Result<SharedDeque> {
        let heap_bytes = heap_bytes.clamp(4 << 10, MAX_SEG_BYTES);
        let data_off = crate::segment::header::DATA_OFFSET;
        let heap_off = (data_off + size_of::<DequeHeader>() as u64).next_multiple_of(64);
        let footprint = Heap::footprint(heap_bytes);
        let seg = Segment::create(Kind::Deque, DEQUE_VERSION, heap_off + footprint - data_off)?;
        Heap::init(&seg, Offset::new(heap_off), footprint)?;
        let hdr = seg.resolve::<DequeHeader>(seg.data_offset())?;
        hdr.version.store(DEQUE_VERSION, Ordering::Relaxed);
        hdr.maxlen.store(maxlen.unwrap_or(MAXLEN_NONE), Ordering::Relaxed);
        hdr.nsegs.store(1, Ordering::Relaxed);
        hdr.last_seg_size.store(heap_bytes, Ordering::Relaxed);
        let d = Self::attach(seg, false)?;
        let ring = d.alloc(MIN_RING * 8)?;
        d.header().ring.store(ring, Ordering::Relaxed);
        d.header().cap.store(MIN_RING, Ordering::Relaxed);
        // Release: a process that sees the magic sees the initialised header and ring.
        d.header().magic.store(DEQUE_MAGIC, Ordering::Release);
        Ok(d)
    }

    /// Opens the deque whose main segment is called `name`.
    pub fn open(name: &str) -> Result<SharedDeque> {
        Self::attach(Segment::open(name)?, true)
    }

    fn attach(seg: Segment, check_magic: bool) -> Result<SharedDeque> {
        seg.info().expect(seg.name_local(), Kind::Deque, DEQUE_VERSION)?;
        let hdr = seg.resolve::<DequeHeader>(seg.data_offset())?;
        if check_magic && hdr.magic.load(Ordering::Acquire) != DEQUE_MAGIC {
            return Err(corrupt!("segment {} is not the main segment of a deque", seg.name_local()));
        }
        if hdr.version.load(Ordering::Relaxed) != DEQUE_VERSION {
            return Err(corrupt!("deque layout version mismatch in {}", seg.name_local()));
        }
        let heap_off = (seg.data_offset::<u8>().get() + size_of::<DequeHeader>() as u64).next_multiple_of(64);
        Heap::attach(&seg, Offset::new(heap_off))?;
        let hdr = Mapped::new(&seg, seg.data_offset())?;
        let segs: Box<[OnceLock<SegSlot>]> = (0..MAX_SEGMENTS).map(|_| OnceLock::new()).collect();
        let _ = segs[0].set(SegSlot { seg: seg.clone(), heap_off });
        let d = SharedDeque { main: seg, hdr, segs, open_lock: parking_lot::Mutex::new(()) };
        // Map the extension segments that exist now, so this process keeps them alive while it holds the deque.
        let n = d.header().nsegs.load(Ordering::Acquire) as usize;
        for i in 1..n.min(MAX_SEGMENTS) {
            d.seg(i)?;
        }
        Ok(d)
    }

    /// The main segment.
    pub fn segment(&self) -> &Segment {
        &self.main
    }

    fn header(&self) -> &DequeHeader {
        &self.hdr
    }

    /// The bound on the length, if any.
    pub fn maxlen(&self) -> Option<u64> {
        match self.header().maxlen.load(Ordering::Relaxed) {
            MAXLEN_NONE => None,
            n => Some(n),
        }
    }

    /// Number of items now (no lock: one load of the published span).
    pub fn len(&self) -> u64 {
        span_len(self.header().span.load(Ordering::SeqCst))
    }

    /// Whether the deque is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The change counter (bumped by every change).
    pub fn version(&self) -> u64 {
        self.header().version_counter.load(Ordering::Acquire)
    }

    /// Segments the deque spans now.
    pub fn segments(&self) -> usize {
        self.header().nsegs.load(Ordering::Acquire) as usize
    }

    /// Repairs done after lock holders died.
    pub fn repairs(&self) -> u64 {
        self.header().repairs.load(Ordering::Relaxed)
    }

    /// Whether the calling thread holds the lock.
    pub fn held_by_me(&self) -> bool {
        let me = owner::me();
        self.header().lock.owner().is_some_and(|o| o.pid == me.pid && o.tid == me.tid)
    }

    /// Takes the lock without waiting (`None` if it is held). A deque left half-changed by a dead holder is
    /// repaired first.
    pub fn try_lock(&self) -> Result<Option<DequeGuard<'_>>> {
        match self.header().lock.try_lock_as(owner::me()) {
            Some(a) => self.guard(a.owner_died()).map(Some),
            None => Ok(None),
        }
    }

    /// Takes the lock, waiting until `deadline` (a dead holder is taken over and its operation repaired).
    /// Blocks: callers holding the GIL must release it.
    pub fn lock(&self, deadline: &Deadline) -> Result<DequeGuard<'_>> {
        let a = self.header().lock.lock_as(owner::me(), deadline)?;
        self.guard(a.owner_died())
    }

    fn guard(&self, died: bool) -> Result<DequeGuard<'_>> {
        let mut g = DequeGuard { d: self, pushed: false };
        // An intent still set while we hold the lock can only be left by a holder that died.
        if died || self.header().intent.op.load(Ordering::Acquire) != OP_NONE {
            g.repair()?;
        }
        Ok(g)
    }

    /// Waits until the deque looks non-empty (without taking anything), at most until `deadline`. Returns
    /// whether it is non-empty.
    pub fn wait_nonempty(&self, deadline: &Deadline) -> std::result::Result<bool, WaitError> {
        let h = self.header();
        if wait::spin(deadline, || !self.is_empty()) {
            return Ok(true);
        }
        loop {
            if !self.is_empty() {
                return Ok(true);
            }
            let mut w = h.items.load(Ordering::SeqCst);
            if w & ITEMS_SLEEPERS == 0 {
                if h.items.compare_exchange(w, w | ITEMS_SLEEPERS, Ordering::SeqCst, Ordering::Relaxed).is_err() {
                    continue;
                }
                w |= ITEMS_SLEEPERS;
            }
            // SeqCst pairs with the pusher's span store before its load of `items` (Dekker): either it sees our
            // bit and wakes us, or we see its item here.
            if !self.is_empty() {
                return Ok(true);
            }
            match wait::sleep(&h.items, w, deadline) {
                Slept::Woken => {}
                Slept::SliceEnd => wait::slice_ended()?,
                Slept::TimedOut => return Ok(!self.is_empty()),
                Slept::Interrupted => return Err(WaitError::Interrupted),
            }
        }
    }

    /// Wakes blocked pops if any sleeps (after a push was published).
    fn wake_poppers(&self) {
        let h = self.header();
        let w = h.items.load(Ordering::SeqCst);
        if w & ITEMS_SLEEPERS != 0
            && h.items
                .compare_exchange(w, (w & !ITEMS_SLEEPERS).wrapping_add(2), Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            futex::wake_all(&h.items);
        }
    }

    fn seg(&self, idx: usize) -> Result<&SegSlot> {
        let cell = self.segs.get(idx).ok_or_else(|| corrupt!("deque reference to segment #{idx}"))?;
        if let Some(s) = cell.get() {
            return Ok(s);
        }
        let _g = self.open_lock.lock();
        if let Some(s) = cell.get() {
            return Ok(s);
        }
        if idx >= self.header().nsegs.load(Ordering::Acquire) as usize {
            return Err(corrupt!("deque reference to segment #{idx}, which does not exist"));
        }
        let mut name = Vec::with_capacity(NAME_WORDS * 8);
        for w in &self.header().seg_names[idx] {
            name.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let name = std::str::from_utf8(&name[..end]).map_err(|_| corrupt!("bad extension segment name"))?;
        let seg = Segment::open(name)?;
        seg.info().expect(seg.name_local(), Kind::Deque, DEQUE_VERSION)?;
        let heap_off = seg.info().data_offset;
        Heap::attach(&seg, Offset::new(heap_off))?;
        let _ = cell.set(SegSlot { seg, heap_off });
        cell.get().ok_or_else(|| corrupt!("extension segment cell"))
    }

    /// A bounds-checked pointer to `len` bytes at reference `r`.
    fn ptr(&self, r: u64, len: u64) -> Result<*mut u8> {
        self.seg((r >> REF_SHIFT) as usize)?.seg.bytes_ptr(r & REF_OFFSET_MASK, len)
    }

    fn res<T: ShmSafe>(&self, r: u64) -> Result<&T> {
        self.seg((r >> REF_SHIFT) as usize)?.seg.resolve(Offset::new(r & REF_OFFSET_MASK))
    }

    fn ring_at(&self, r: u64, cap: u64) -> Result<Ring> {
        if !cap.is_power_of_two() || !(MIN_RING..=MAX_RING).contains(&cap) {
            return Err(corrupt!("deque ring capacity {cap} is invalid"));
        }
        self.res::<AtomicU64>(r)?;
        let p = self.ptr(r, cap * 8)?;
        Ok(Ring { slots: p as *const AtomicU64, cap })
    }

    /// The item at reference `r`: its id and a pointer to its `len` bytes.
    fn item(&self, r: u64) -> Result<(u64, *const u8, usize)> {
        let h = self.res::<ItemHeader>(r)?;
        let len = h.len.load(Ordering::Relaxed);
        let body = r.checked_add(size_of::<ItemHeader>() as u64).ok_or_else(|| corrupt!("deque item reference"))?;
        let p = self.ptr(body, len)?;
        Ok((h.id.load(Ordering::Relaxed), p, len as usize))
    }

    fn heap(&self, idx: usize) -> Result<Heap<'_>> {
        let s = self.seg(idx)?;
        Heap::attach(&s.seg, Offset::new(s.heap_off))
    }

    /// Allocates `size` bytes in the newest heap with room, adding a segment when all are full. The caller
    /// holds the lock.
    fn alloc(&self, size: u64) -> Result<u64> {
        loop {
            let n = self.header().nsegs.load(Ordering::Acquire) as usize;
            if n == 0 || n > MAX_SEGMENTS {
                return Err(corrupt!("deque header counts {n} segments"));
            }
            for idx in (0..n).rev() {
                match self.heap(idx)?.alloc(size) {
                    Ok(off) => return Ok(make_ref(idx, off)),
                    Err(Error::Full(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            self.add_segment(n, size)?;
        }
    }

    fn free(&self, r: u64) -> Result<()> {
        self.heap((r >> REF_SHIFT) as usize)?.free(r & REF_OFFSET_MASK)
    }

    /// Adds extension segment number `n`. The caller holds the lock.
    #[cold]
    fn add_segment(&self, n: usize, need: u64) -> Result<()> {
        let hdr = self.header();
        if n >= MAX_SEGMENTS {
            return Err(Error::Full(format!("the deque spans {MAX_SEGMENTS} segments and cannot grow further")));
        }
        let size = hdr
            .last_seg_size
            .load(Ordering::Relaxed)
            .saturating_mul(2)
            .max(need.saturating_mul(2) + (64 << 10))
            .min(MAX_SEG_BYTES.max(need + (64 << 10)));
        let footprint = Heap::footprint(size);
        let seg = Segment::create(Kind::Deque, DEQUE_VERSION, footprint)?;
        // Every process using the deque may come to need this segment, even after we exit: make them users now.
        seg.register_on_behalf(&self.main.users()?)?;
        let heap_off = seg.info().data_offset;
        Heap::init(&seg, Offset::new(heap_off), footprint)?;
        let bytes = seg.name().as_bytes();
        if bytes.len() >= NAME_WORDS * 8 {
            return Err(Error::Invalid("segment name too long for the deque header".into()));
        }
        for (i, w) in hdr.seg_names[n].iter().enumerate() {
            let mut word = [0u8; 8];
            for (j, b) in word.iter_mut().enumerate() {
                *b = bytes.get(i * 8 + j).copied().unwrap_or(0);
            }
            w.store(u64::from_le_bytes(word), Ordering::Relaxed);
        }
        hdr.last_seg_size.store(size, Ordering::Relaxed);
        let _ = self.segs[n].set(SegSlot { seg, heap_off });
        crash_point(8);
        // Release: a process that sees the new count sees the name.
        hdr.nsegs.store(n as u32 + 1, Ordering::Release);
        Ok(())
    }
}

impl Drop for SharedDeque {
    fn drop(&mut self) {
        // Extension segments that other processes added (registering this one as a user on its behalf) and that
        // this process never mapped: map them now, so that dropping them ends that registration instead of it
        // lasting until this process exits.
        let n = self.segments().min(MAX_SEGMENTS);
        for i in 1..n {
            if self.segs[i].get().is_none() {
                let _ = self.seg(i);
            }
        }
    }
}

/// Holds the deque's lock; every operation on the items goes through it. Dropping it unlocks (and wakes
/// blocked pops if it pushed).
#[must_use = "the deque is unlocked when the guard is dropped"]
pub struct DequeGuard<'a> {
    d: &'a SharedDeque,
    pushed: bool,
}

impl Drop for DequeGuard<'_> {
    fn drop(&mut self) {
        self.d.header().lock.release();
        if self.pushed {
            self.d.wake_poppers();
        }
    }
}

/// Where a push goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `append`/`pop`.
    Back,
    /// `appendleft`/`popleft`.
    Front,
}

impl<'a> DequeGuard<'a> {
    fn h(&self) -> &'a DequeHeader {
        self.d.header()
    }

    fn state(&self) -> (u64, u64) {
        let s = self.h().span.load(Ordering::Relaxed);
        (span_head(s), span_len(s))
    }

    fn ring(&self) -> Result<Ring> {
        self.d.ring_at(self.h().ring.load(Ordering::Relaxed), self.h().cap.load(Ordering::Relaxed))
    }

    /// Publishes a new span (the commit of a push or a pop).
    fn publish(&self, head: u64, len: u64) {
        // Release: the ring slot and the item written before are visible to the next holder; SeqCst orders it
        // before the pusher's look at the sleepers' bit (see `wait_nonempty`).
        self.h().span.store(span(head, len), Ordering::SeqCst);
        self.h().version_counter.fetch_add(1, Ordering::Release);
    }

    /// Number of items.
    pub fn len(&self) -> u64 {
        self.state().1
    }

    /// Whether the deque is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The change counter.
    pub fn version(&self) -> u64 {
        self.h().version_counter.load(Ordering::Relaxed)
    }

    fn new_item(&self, bytes: &[u8]) -> Result<u64> {
        let r = self.d.alloc(size_of::<ItemHeader>() as u64 + bytes.len() as u64)?;
        let ih = self.d.res::<ItemHeader>(r)?;
        let id = self.h().next_id.fetch_add(1, Ordering::Relaxed);
        ih.id.store(id, Ordering::Relaxed);
        ih.len.store(bytes.len() as u64, Ordering::Relaxed);
        let p = self.d.ptr(r + size_of::<ItemHeader>() as u64, bytes.len() as u64)?;
        // SAFETY: the block is ours (fresh from the allocator, under the lock) and holds the bytes (checked by
        // `ptr` against the segment; the block was allocated with room for them).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        Ok(r)
    }

    /// Copies the item at reference `r` into `out` (appending); returns its id.
    fn read_item(&self, r: u64, out: &mut Vec<u8>) -> Result<u64> {
        let (id, p, len) = self.d.item(r)?;
        // SAFETY: `item` range-checked the bytes; we hold the lock, so nobody writes them.
        unsafe { copy_out(p, len, out) };
        Ok(id)
    }

    /// Appends `bytes` at `end`. On a deque at its `maxlen`, the item at the other end is dropped (a `maxlen`
    /// of 0 drops the new item itself).
    pub fn push(&mut self, end: End, bytes: &[u8]) -> Result<()> {
        let maxlen = self.h().maxlen.load(Ordering::Relaxed);
        if maxlen == 0 {
            return Ok(());
        }
        let (_, len) = self.state();
        if len >= self.h().cap.load(Ordering::Relaxed) {
            self.resize(self.h().cap.load(Ordering::Relaxed).saturating_mul(2))?;
        }
        let r = self.new_item(bytes)?;
        crash_point(1);
        let ring = self.ring()?;
        let (head, len) = self.state();
        if len >= ring.cap {
            return Err(corrupt!("deque ring is full after growing"));
        }
        let m = ring.cap - 1;
        let full = len >= maxlen;
        let dropped;
        match end {
            End::Back => {
                ring.slot(head + len).store(r, Ordering::Relaxed);
                dropped = full.then(|| ring.slot(head).load(Ordering::Relaxed));
                if full {
                    self.publish((head + 1) & m, len);
                } else {
                    self.publish(head, len + 1);
                }
            }
            End::Front => {
                let nh = head.wrapping_sub(1) & m;
                ring.slot(nh).store(r, Ordering::Relaxed);
                dropped = full.then(|| ring.slot(head + len - 1).load(Ordering::Relaxed));
                self.publish(nh, if full { len } else { len + 1 });
            }
        }
        self.pushed = true;
        crash_point(2);
        if let Some(old) = dropped {
            self.d.free(old)?;
        }
        Ok(())
    }

    /// Pushes every record of `items` (codec encodings laid out as `[len u64 LE][bytes]`) at `end`, in order.
    pub fn push_many(&mut self, end: End, items: &[u8]) -> Result<usize> {
        let mut at = 0usize;
        let mut n = 0;
        while at < items.len() {
            let len = items
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| Error::Invalid("truncated item batch".into()))? as usize;
            let bytes = items.get(at + 8..at + 8 + len).ok_or_else(|| Error::Invalid("truncated item batch".into()))?;
            self.push(end, bytes)?;
            at += 8 + len;
            n += 1;
        }
        Ok(n)
    }

    /// Removes the item at `end` into `out` (appended); false if the deque is empty.
    pub fn pop(&mut self, end: End, out: &mut Vec<u8>) -> Result<bool> {
        let (head, len) = self.state();
        if len == 0 {
            return Ok(false);
        }
        let ring = self.ring()?;
        let m = ring.cap - 1;
        let r = match end {
            End::Back => ring.slot(head + len - 1).load(Ordering::Relaxed),
            End::Front => ring.slot(head).load(Ordering::Relaxed),
        };
        self.read_item(r, out)?;
        match end {
            End::Back => self.publish(head, len - 1),
            End::Front => self.publish((head + 1) & m, len - 1),
        }
        crash_point(3);
        self.d.free(r)?;
        self.maybe_shrink()?;
        Ok(true)
    }

    /// Copies item `i` (0 = front) into `out` (appended); false if out of range.
    pub fn get(&self, i: u64, out: &mut Vec<u8>) -> Result<bool> {
        let (head, len) = self.state();
        if i >= len {
            return Ok(false);
        }
        let r = self.ring()?.slot(head + i).load(Ordering::Relaxed);
        self.read_item(r, out)?;
        Ok(true)
    }

    /// Copies every item, front to back, into `out` (cleared first) as records `[id u64][len u64][bytes]`
    /// (read them with [`records`]). Returns the number of items.
    pub fn dump(&self, out: &mut Vec<u8>) -> Result<usize> {
        out.clear();
        let (head, len) = self.state();
        let ring = self.ring()?;
        for i in 0..len {
            let (id, p, n) = self.d.item(ring.slot(head + i).load(Ordering::Relaxed))?;
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
            // SAFETY: range-checked by `item`; we hold the lock.
            unsafe { copy_out(p, n, out) };
        }
        Ok(len as usize)
    }

    /// Removes the item whose id is `id`, if it is still there; returns whether it was.
    pub fn remove_id(&mut self, id: u64) -> Result<bool> {
        let (head, len) = self.state();
        let ring = self.ring()?;
        for i in 0..len {
            if self.d.item(ring.slot(head + i).load(Ordering::Relaxed))?.0 == id {
                self.remove_at(i)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes item `i` (0 = front); false if out of range.
    pub fn remove_at(&mut self, i: u64) -> Result<bool> {
        let (head, len) = self.state();
        if i >= len {
            return Ok(false);
        }
        let mut scratch = Vec::new();
        if i == 0 {
            return self.pop(End::Front, &mut scratch);
        }
        if i == len - 1 {
            return self.pop(End::Back, &mut scratch);
        }
        let ring = self.ring()?;
        let victim = ring.slot(head + i).load(Ordering::Relaxed);
        let cap = ring.cap;
        let new_cap = if cap > MIN_RING && len - 1 < cap / 4 { cap / 2 } else { cap };
        let nr = self.d.alloc(new_cap * 8)?;
        let new = self.d.ring_at(nr, new_cap)?;
        let mut j = 0;
        for k in 0..len {
            if k != i {
                new.slot(j).store(ring.slot(head + k).load(Ordering::Relaxed), Ordering::Relaxed);
                j += 1;
            }
        }
        let old = self.h().ring.load(Ordering::Relaxed);
        self.swap_ring(nr, new_cap, span(0, len - 1));
        self.d.free(victim)?;
        self.d.free(old)?;
        Ok(true)
    }

    /// Records, then performs, the replacement of the ring by `ring` with `cap` slots and span `sp` (the new
    /// ring is fully written). A holder that dies anywhere in here leaves the intent for the next one.
    fn swap_ring(&self, ring: u64, cap: u64, sp: u64) {
        let it = &self.h().intent;
        it.a.store(ring, Ordering::Relaxed);
        it.b.store(cap, Ordering::Relaxed);
        it.c.store(sp, Ordering::Relaxed);
        it.op.store(OP_SWAP_RING, Ordering::Release);
        crash_point(4);
        self.apply_swap(ring, cap, sp);
        crash_point(5);
        it.op.store(OP_NONE, Ordering::Release);
    }

    fn apply_swap(&self, ring: u64, cap: u64, sp: u64) {
        let h = self.h();
        h.ring.store(ring, Ordering::Relaxed);
        h.cap.store(cap, Ordering::Relaxed);
        h.span.store(sp, Ordering::SeqCst);
        h.version_counter.fetch_add(1, Ordering::Release);
    }

    /// Moves the items into a new ring of `new_cap` slots (a power of two, at least the length).
    fn resize(&mut self, new_cap: u64) -> Result<()> {
        let (head, len) = self.state();
        if new_cap > MAX_RING {
            return Err(Error::Full(format!("a deque holds at most {MAX_RING} items")));
        }
        let old_ref = self.h().ring.load(Ordering::Relaxed);
        let old = self.ring()?;
        let nr = self.d.alloc(new_cap * 8)?;
        let new = self.d.ring_at(nr, new_cap)?;
        for k in 0..len {
            new.slot(k).store(old.slot(head + k).load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.swap_ring(nr, new_cap, span(0, len));
        crash_point(6);
        self.d.free(old_ref)
    }

    fn maybe_shrink(&mut self) -> Result<()> {
        let cap = self.h().cap.load(Ordering::Relaxed);
        if cap > MIN_RING && self.len() < cap / 4 {
            match self.resize(cap / 2) {
                // No room for the smaller ring right now: keep the bigger one.
                Err(Error::Full(_)) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Rotates `n` steps to the right (`n < 0`: to the left), as `collections.deque.rotate`.
    pub fn rotate(&mut self, n: i64) -> Result<()> {
        let (head, len) = self.state();
        if len <= 1 {
            return Ok(());
        }
        let k = n.rem_euclid(len as i64) as u64;
        if k == 0 {
            return Ok(());
        }
        let ring = self.ring()?;
        let m = ring.cap - 1;
        // Fewer moves in the other direction?
        let (right, steps) = if k <= len - k { (true, k) } else { (false, len - k) };
        if len == ring.cap {
            // Full ring: rotating is moving the head.
            let nh = if right { head.wrapping_sub(steps) } else { head + steps } & m;
            self.publish(nh, len);
            return Ok(());
        }
        let target = if right { head.wrapping_sub(steps) } else { head + steps } & m;
        let it = &self.h().intent;
        it.a.store(target, Ordering::Relaxed);
        it.b.store(if right { 0 } else { 1 }, Ordering::Relaxed);
        it.op.store(OP_ROTATE, Ordering::Release);
        for s in 0..steps {
            if s == 1 {
                crash_point(7);
            }
            self.rotate_step(&ring, right);
        }
        it.op.store(OP_NONE, Ordering::Release);
        Ok(())
    }

    /// Moves one item from the back to the front (`right`) or from the front to the back; one span store
    /// publishes it, and redoing a step whose store did not happen writes the same slot again.
    fn rotate_step(&self, ring: &Ring, right: bool) {
        let (head, len) = self.state();
        let m = ring.cap - 1;
        if right {
            let dst = head.wrapping_sub(1) & m;
            ring.slot(dst).store(ring.slot(head + len - 1).load(Ordering::Relaxed), Ordering::Relaxed);
            self.publish(dst, len);
        } else {
            ring.slot(head + len).store(ring.slot(head).load(Ordering::Relaxed), Ordering::Relaxed);
            self.publish((head + 1) & m, len);
        }
    }

    /// Removes every item.
    pub fn clear(&mut self) -> Result<()> {
        let (head, len) = self.state();
        if len == 0 {
            return Ok(());
        }
        let ring = self.ring()?;
        let items: Vec<u64> = (0..len).map(|i| ring.slot(head + i).load(Ordering::Relaxed)).collect();
        self.publish(head, 0);
        for (i, r) in items.into_iter().enumerate() {
            if i == 1 {
                crash_point(9);
            }
            self.d.free(r)?;
        }
        self.maybe_shrink_to(MIN_RING)
    }

    fn maybe_shrink_to(&mut self, cap: u64) -> Result<()> {
        if self.h().cap.load(Ordering::Relaxed) > cap {
            match self.resize(cap) {
                Err(Error::Full(_)) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// Completes the operation a dead holder left (see the module docs), validates the ring and every item,
    /// then frees the blocks nothing references. Runs by itself when the lock is taken over from a dead
    /// holder; callable any time (it is idempotent).
    pub fn repair(&mut self) -> Result<()> {
        let h = self.h();
        let it = &h.intent;
        match it.op.load(Ordering::Acquire) {
            OP_SWAP_RING => {
                let (r, cap, sp) =
                    (it.a.load(Ordering::Relaxed), it.b.load(Ordering::Relaxed), it.c.load(Ordering::Relaxed));
                // The new ring was fully written before the intent; the old one is still intact too (it is
                // freed only after the intent is cleared). Roll forward if the new one is valid.
                if self.d.ring_at(r, cap).is_ok() && span_len(sp) <= cap && span_head(sp) < cap {
                    self.apply_swap(r, cap, sp);
                }
            }
            OP_ROTATE => {
                let (target, right) = (it.a.load(Ordering::Relaxed), it.b.load(Ordering::Relaxed) == 0);
                if let Ok(ring) = self.ring() {
                    let (_, len) = self.state();
                    if len < ring.cap && target < ring.cap {
                        for _ in 0..ring.cap {
                            if self.state().0 == target {
                                break;
                            }
                            self.rotate_step(&ring, right);
                        }
                    }
                }
            }
            _ => {}
        }
        it.op.store(OP_NONE, Ordering::Release);
        self.validate()?;
        h.repairs.fetch_add(1, Ordering::Relaxed);
        h.version_counter.fetch_add(1, Ordering::Release);
        self.reclaim()?;
        Ok(())
    }

    /// Checks the ring and every item reference; drops invalid items, and replaces an invalid ring with an
    /// empty one (corrupt shared memory loses data, never crashes a reader).
    fn validate(&mut self) -> Result<()> {
        let (head, len) = self.state();
        let ring = match self.ring() {
            Ok(r) if len <= r.cap && head < r.cap => r,
            _ => {
                let nr = self.d.alloc(MIN_RING * 8)?;
                self.swap_ring(nr, MIN_RING, span(0, 0));
                return Ok(());
            }
        };
        let ring_ref = self.h().ring.load(Ordering::Relaxed);
        let mut seen = std::collections::HashSet::with_capacity(len as usize + 1);
        seen.insert(ring_ref);
        let good: Vec<u64> = (0..len)
            .map(|i| ring.slot(head + i).load(Ordering::Relaxed))
            .filter(|&r| self.d.item(r).is_ok() && seen.insert(r))
            .collect();
        if good.len() as u64 != len {
            let cap = (good.len() as u64 + 1).next_power_of_two().max(MIN_RING);
            let nr = self.d.alloc(cap * 8)?;
            let new = self.d.ring_at(nr, cap)?;
            for (j, r) in good.iter().enumerate() {
                new.slot(j as u64).store(*r, Ordering::Relaxed);
            }
            self.swap_ring(nr, cap, span(0, good.len() as u64));
        }
        Ok(())
    }

    /// Frees every heap block that neither the ring nor an item in it is: what holders killed between
    /// allocating and publishing, or between publishing and freeing, leaked. Linear in the blocks of every
    /// heap. Returns the bytes freed.
    pub fn reclaim(&mut self) -> Result<u64> {
        let (head, len) = self.state();
        let ring_ref = self.h().ring.load(Ordering::Relaxed);
        let ring = self.ring()?;
        let mut live = std::collections::HashSet::with_capacity(len as usize + 1);
        live.insert(ring_ref);
        for i in 0..len {
            live.insert(ring.slot(head + i).load(Ordering::Relaxed));
        }
        let mut freed = 0;
        for idx in 0..self.d.segments().min(MAX_SEGMENTS) {
            let heap = self.d.heap(idx)?;
            for (payload, size) in heap.used_payloads() {
                if !live.contains(&make_ref(idx, payload)) {
                    heap.free(payload)?;
                    freed += size;
                }
            }
        }
        Ok(freed)
    }

    /// Heap blocks in use, over every segment (tests: after a reclaim it is the length plus one).
    pub fn used_blocks(&self) -> Result<u64> {
        let mut n = 0;
        for idx in 0..self.d.segments().min(MAX_SEGMENTS) {
            n += self.d.heap(idx)?.stats().used_blocks;
        }
        Ok(n)
    }
}
