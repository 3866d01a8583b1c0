//! A sharded hash map in shared memory: the core of `pyconc.ConcurrentDict`. Layout: `shm-layouts/dict.md`.
//!
//! Keys and values are byte strings (the Python layer stores canonical key encodings and value encodings of
//! the codec); this module knows nothing of Python.
//!
//! * **Shards.** A key's stable hash picks a shard (high 32 bits) and a home slot (low bits). Each shard is an
//!   open-addressing table (linear probing, tombstones) in a heap block, with its own robust lock and seqlock
//!   version. Shards grow one at a time: the writer builds a bigger table beside the old one and publishes it
//!   with one store, so other shards never pause.
//! * **Entries.** A slot holds the key's hash and a reference to an entry block (header, key bytes, as-inserted
//!   key bytes, two value buffers). The key part never changes once published. The value is double-buffered: an
//!   overwrite that fits writes the inactive buffer and flips the entry's `state` word (active buffer, version,
//!   lock owner), without the shard lock ([`SharedDict::try_overwrite`]), so processes writing different keys
//!   share no cache line but the read-mostly shard header. A value that does not fit is published as a new
//!   block under the shard lock and the old one freed (first into the shard's small spare cache, then to the
//!   allocator's free lists).
//! * **Reads** take no lock: they load the shard's version, probe, copy the active value buffer out, and re-check
//!   the entry's version and then the shard's (a seqlock at both levels). A reader never keeps a reference into
//!   the table past the copy; what it copied from a block that was changed, or freed and reused, meanwhile is
//!   thrown away because a version moved. Every reference read is bounds-checked, so a torn read can at worst
//!   produce an error that is then discarded and retried. After a bounded number of failed attempts (a writer is
//!   busy, or died mid-write) readers ask for the lock.
//! * **Writes** that change the table take the shard lock and lock the entry they replace or remove (waiting
//!   out an in-place writer); they build any new entry fully in a fresh block, then (version odd) publish it
//!   with one atomic store of the slot's `entry` (plus the `len`/`tombstones` counters), make the version even
//!   again, and retire replaced blocks last, still locked, so that a late in-place writer cannot take them.
//! * **Crash consistency.** A writer killed at any instant leaves every slot either as before or as after its
//!   single publishing store, and every value either as before or as after its flip; at worst a block leaks,
//!   the counters are off by one, or an entry stays locked by a dead pid (the next writer of that key takes it
//!   over). The next locker sees
//!   "owner died" (or an odd version) and [`repairs`](ShardGuard::repair) the shard: it validates every entry
//!   (bounds, lengths, hash of the key), turns invalid ones into tombstones, recounts, and makes the version
//!   even, which unblocks readers.
//! * **Growth beyond the first segment.** When the main segment's heap is full, a writer adds an extension
//!   segment (twice the size of the last one) under the dict's `grow_lock` and records its name in the header.
//!   References carry the segment index in their top bits; each process opens extension segments on first use.
//!   The creator registers every live user of the main segment as a user of the new one (on their behalf), so
//!   an extension outlives its creator while the dict is in use, and goes when they let go.

pub mod layout;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod tests;

use crate::base::atomic::{fence, AtomicU64, Ordering};
use crate::error::corrupt;
use crate::platform::futex::Deadline;
use crate::platform::limits;
use crate::segment::alloc::{Heap, HeapHeader};
use crate::segment::extents::{Extents, Growth, HeapSeg, Names};
use crate::segment::shm::Reserve;
use crate::segment::{Kind, Mapped, MappedSlice, Offset, Segment, ShmSafe};
use crate::sync::owner;
use crate::{Error, Result};
use layout::*;
use std::mem::size_of;
use std::time::Instant;

/// Default heap size of the main segment (pages are only backed once used).
pub const DEFAULT_HEAP_BYTES: u64 = 64 << 20;
/// Slots of a fresh shard table.
const MIN_CAPACITY: u64 = 8;
/// Automatic `reclaim` attempts after a repair (see `SharedDict::take_reclaim_pending`).
const RECLAIM_ATTEMPTS: u32 = 64;
/// Optimistic read attempts before a reader asks for the lock.
const OPTIMISTIC_TRIES: u32 = 256;
/// Largest extension segment heap.
const MAX_SEG_BYTES: u64 = 16 << 30;

/// The outcome of a lock-free read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The key is present; its bytes were copied out.
    Found,
    /// The key is absent.
    Missing,
    /// Writers kept the shard busy (or one died mid-write): retry under the lock ([`SharedDict::lock`]).
    Busy,
}

/// How a dict grows past its main segment.
const GROWTH: Growth =
    Growth { kind: Kind::Dict, version: DICT_VERSION, what: "dict", slack: 1 << 20, max_heap: MAX_SEG_BYTES };

/// A process-local handle to a shared dict. Clones are cheap through `Arc` in the callers.
pub struct SharedDict {
    main: Segment,
    hdr: Mapped<DictHeader>,
    shards: MappedSlice<Shard>,
    nshards: u32,
    ext: Extents,
    /// Set (in this process) when a lock acquisition repaired a shard: a dead writer may have leaked blocks,
    /// which [`reclaim`](SharedDict::reclaim) can free. Counts the attempts left to do so (see
    /// [`take_reclaim_pending`](SharedDict::take_reclaim_pending)); 0 once done.
    reclaim_pending: crate::base::atomic::local::AtomicU32,
}

/// An entry block, bounds-checked at the time it was read.
#[derive(Clone, Copy)]
struct Entry {
    base: *mut u8,
    key_len: usize,
    orig_len: usize,
    /// Capacity of each of the two value buffers.
    cap: usize,
    /// Offset of value buffer 0 from `base` (see [`values_at`]).
    vals: usize,
}

impl Entry {
    fn hdr<'a>(&self) -> &'a EntryHeader {
        // SAFETY: `base` starts a range-checked block of at least size_of::<EntryHeader>() bytes, 8-aligned
        // (heap blocks are 16-aligned); EntryHeader is ShmSafe; the mapping outlives every use (callers hold
        // `&SharedDict`).
        unsafe { &*(self.base as *const EntryHeader) }
    }
    fn key_ptr(&self) -> *const u8 {
        // SAFETY: the whole block (header + lengths) was range-checked in `SharedDict::entry`.
        unsafe { self.base.add(size_of::<EntryHeader>()) }
    }
    fn orig_ptr(&self) -> *const u8 {
        // SAFETY: as above.
        unsafe { self.key_ptr().add(self.key_len) }
    }
    /// Start of value buffer `b` (0 or 1).
    fn val_ptr(&self, b: u64) -> *mut u8 {
        // SAFETY: as above: both buffers lie inside the checked block.
        unsafe { self.base.add(self.vals + (b as usize & 1) * self.cap) }
    }
}

/// An entry's header and its two value buffers, as the in-place protocol sees them: raw shared memory for the
/// dict ([`Entry`]), atomic words in the loom model (`loom_tests.rs`), so the model checks this very code.
trait ValueBuffers {
    /// The entry header.
    fn header(&self) -> &EntryHeader;
    /// Capacity of each buffer.
    fn capacity(&self) -> usize;
    /// Appends the first `len <= capacity()` bytes of buffer `b` to `out`. A writer of that buffer may race
    /// with it; the caller then discards the copy.
    fn read_buffer(&self, b: u64, len: usize, out: &mut Vec<u8>);
    /// Writes `value` (at most `capacity()` bytes) at the start of buffer `b`. The caller holds the entry's lock
    /// and `b` is the inactive buffer.
    fn write_buffer(&self, b: u64, value: &[u8]);
}

impl ValueBuffers for Entry {
    fn header(&self) -> &EntryHeader {
        self.hdr()
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn read_buffer(&self, b: u64, len: usize, out: &mut Vec<u8>) {
        debug_assert!(len <= self.cap);
        // SAFETY: buffer `b` holds `cap >= len` bytes inside the block range-checked by `SharedDict::entry`.
        unsafe { copy_out(self.val_ptr(b), len, out) };
    }
    fn write_buffer(&self, b: u64, value: &[u8]) {
        assert!(value.len() <= self.cap);
        // SAFETY: buffer `b` has `cap >= value.len()` bytes inside the checked block; the caller holds the entry's
        // lock and readers only read the active buffer (or discard what they read, see `read_value`).
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), self.val_ptr(b), value.len()) };
    }
}

/// Copies the current value of an entry into `out` (cleared first), re-checking the entry's version: false if
/// in-place writers kept moving it. Also exact when the caller holds the entry's lock.
fn read_value(e: &impl ValueBuffers, out: &mut Vec<u8>) -> Result<bool> {
    let h = e.header();
    for _ in 0..OPTIMISTIC_TRIES {
        // Acquire: the buffer and val_len written before the writer's publishing store are visible.
        let st = h.state.load(Ordering::Acquire);
        let b = st & 1;
        let len = h.val_len[b as usize].load(Ordering::Relaxed) as usize;
        let torn = len > e.capacity();
        if !torn {
            out.clear();
            e.read_buffer(b, len, out);
        }
        // Orders the copy before the re-check (pairs with the writer's Release fence after locking).
        fence(Ordering::Acquire);
        let again = h.state.load(Ordering::Relaxed);
        if (st ^ again) & !ENTRY_OWNER_MASK == 0 {
            if torn {
                return Err(corrupt!("dict entry value length {len} exceeds its capacity {}", e.capacity()));
            }
            return Ok(true);
        }
        crate::base::yield_now_in_model();
    }
    Ok(false)
}

/// Value buffer capacity for a value of `len` bytes: some room to grow in place.
fn value_cap(len: usize) -> usize {
    let want = len + len / 8;
    if want >= CACHE_LINE {
        want.div_ceil(CACHE_LINE / 2) * (CACHE_LINE / 2)
    } else {
        want.div_ceil(8).max(1) * 8
    }
}

/// Cache line size assumed by the entry layout.
const CACHE_LINE: usize = 64;

/// Offset of the first value buffer in the entry at address `base`. Buffers of a cache line or more start on a
/// line boundary (and, `cap` being a multiple of half a line, end on one), so the lines an in-place overwrite
/// writes hold nothing of any other entry: two processes overwriting different keys do not bounce a line.
/// Smaller values pack densely instead (padding would multiply their memory).
fn values_at(base: usize, key_len: usize, orig_len: usize, cap: usize) -> usize {
    let after_keys = size_of::<EntryHeader>() + key_len + orig_len;
    if cap >= CACHE_LINE {
        (base + after_keys).next_multiple_of(CACHE_LINE) - base
    } else {
        after_keys
    }
}

/// A table block, bounds-checked when read.
#[derive(Clone, Copy)]
struct Table {
    slots: *const TableSlot,
    cap: u64,
}

impl Table {
    fn slot<'a>(&self, i: u64) -> &'a TableSlot {
        // SAFETY: `cap` slots were range-checked in `SharedDict::table`; the index is masked to `cap - 1`; TableSlot
        // is ShmSafe. The mapping outlives every use (callers hold `&SharedDict`).
        unsafe { &*self.slots.add((i & (self.cap - 1)) as usize) }
    }
}

/// Appends `len` bytes at `ptr` to `out`.
///
/// # Safety
/// `ptr..ptr + len` must lie inside a live mapping. Other processes may write those bytes concurrently; the
/// copy is then garbage, which the seqlock callers detect and discard.
unsafe fn copy_out(ptr: *const u8, len: usize, out: &mut Vec<u8>) {
    out.reserve(len);
    // SAFETY: the destination has `len` spare bytes (reserved above); the source is readable (caller).
    unsafe {
        std::ptr::copy_nonoverlapping(ptr, out.as_mut_ptr().add(out.len()), len);
        out.set_len(out.len() + len);
    }
}

/// Whether `len` bytes at `ptr` equal `key`.
///
/// # Safety
/// `ptr..ptr + len` must lie inside a live mapping (possibly concurrently written: the result is then garbage).
unsafe fn bytes_eq(ptr: *const u8, len: usize, key: &[u8]) -> bool {
    // memcmp through FFI: compares the shared bytes without forming a Rust slice over memory that another
    // process may be writing.
    // SAFETY: both ranges are readable for `len` bytes (caller, and `key` is a slice of that length).
    len == key.len() && unsafe { libc::memcmp(ptr.cast(), key.as_ptr().cast(), len) } == 0
}

/// Writes `value` into the inactive buffer of `e`, whose lock the caller holds (its unlocked state was `st`),
/// then publishes it, bumps the version and unlocks with one store.
fn write_in_place(e: &impl ValueBuffers, st: u64, value: &[u8]) {
    // Orders the lock before the buffer writes for readers (pairs with their Acquire fence).
    fence(Ordering::Release);
    let b = (st & 1) ^ 1;
    crash_point(9);
    e.write_buffer(b, value);
    let h = e.header();
    h.val_len[b as usize].store(value.len() as u32, Ordering::Relaxed);
    crash_point(10);
    let next = ENTRY_MARK | ((st & ENTRY_VERSION_MASK).wrapping_add(2) & ENTRY_VERSION_MASK) | b;
    // Release: a reader that sees the new active buffer sees its bytes.
    h.state.store(next, Ordering::Release);
}

/// The lock-free half of [`SharedDict::try_overwrite`]: locks the entry `h` found while the shard's `seq` was
/// `s` (even), then checks that `seq` did not move. Returns the entry's unlocked state, or `None` (entry busy,
/// or possibly retired: the caller takes the shard lock instead).
fn lock_published(h: &EntryHeader, seq: &AtomicU64, s: u64, me: owner::Me) -> Option<u64> {
    let st = h.state.load(Ordering::Relaxed);
    if st & ENTRY_MARK == 0 || st & ENTRY_OWNER_MASK != 0 {
        return None;
    }
    let locked = st | entry_owner(me);
    h.state.compare_exchange(st, locked, Ordering::SeqCst, Ordering::Relaxed).ok()?;
    // The entry may have been retired (and its block reused) since the probe; retiring bumps `seq` before the
    // block is freed, and a block reused since then was re-initialised with a Release store that our CAS read
    // from, so an unchanged `seq` here proves the entry is still published.
    if seq.load(Ordering::SeqCst) != s {
        let _ = h.state.compare_exchange(locked, st, Ordering::Release, Ordering::Relaxed);
        return None;
    }
    Some(st)
}

fn make_ref(seg: usize, off: u64) -> u64 {
    ((seg as u64) << REF_SHIFT) | off
}

/// Where the header records the dict's segments.
fn names_of(hdr: &DictHeader) -> Names<'_> {
    Names { count: &hdr.nsegs, last_size: &hdr.last_seg_size, names: &hdr.seg_names }
}

impl SharedDict {
    /// Creates a dict with `nshards` shards and a main-segment heap of `heap_bytes`.
    pub fn create(nshards: u32, heap_bytes: u64) -> Result<SharedDict> {
        if nshards == 0 || nshards > MAX_SHARDS {
            return Err(Error::Invalid(format!("scaling must be between 1 and {MAX_SHARDS}, got {nshards}")));
        }
        let heap_bytes = heap_bytes.max(64 << 10);
        let data_off = crate::segment::header::DATA_OFFSET;
        let shards_off = (data_off + size_of::<DictHeader>() as u64).next_multiple_of(128);
        let heap_off = (shards_off + nshards as u64 * size_of::<Shard>() as u64).next_multiple_of(64);
        let footprint = Heap::footprint(heap_bytes);
        // The header and shards are reserved in /dev/shm now; the heap reserves what it hands out.
        let fixed = Reserve::Prefix(heap_off + size_of::<HeapHeader>() as u64 - data_off);
        let seg = Segment::create_reserving(Kind::Dict, DICT_VERSION, heap_off + footprint - data_off, &[], fixed)?;
        Heap::init(&seg, Offset::new(heap_off), footprint)?;
        let hdr = seg.resolve::<DictHeader>(seg.data_offset())?;
        hdr.version.store(DICT_VERSION, Ordering::Relaxed);
        hdr.nshards.store(nshards, Ordering::Relaxed);
        hdr.nsegs.store(1, Ordering::Relaxed);
        hdr.shards_off.store(shards_off, Ordering::Relaxed);
        hdr.heap_off.store(heap_off, Ordering::Relaxed);
        hdr.last_seg_size.store(heap_bytes, Ordering::Relaxed);
        let d = Self::attach(seg, false)?;
        for i in 0..nshards {
            let t = d.new_table(MIN_CAPACITY)?;
            d.shard(i).table.store(t, Ordering::Relaxed);
        }
        // Release: a process that sees the magic sees the initialised header, shards and tables.
        d.header().magic.store(DICT_MAGIC, Ordering::Release);
        Ok(d)
    }

    /// Opens the dict whose main segment is called `name`.
    pub fn open(name: &str) -> Result<SharedDict> {
        Self::attach(Segment::open(name)?, true)
    }

    fn attach(seg: Segment, check_magic: bool) -> Result<SharedDict> {
        seg.info().expect(seg.name_local(), Kind::Dict, DICT_VERSION)?;
        let hdr = seg.resolve::<DictHeader>(seg.data_offset())?;
        if check_magic && hdr.magic.load(Ordering::Acquire) != DICT_MAGIC {
            return Err(corrupt!("segment {} is not the main segment of a dict", seg.name_local()));
        }
        if hdr.version.load(Ordering::Relaxed) != DICT_VERSION {
            return Err(corrupt!("dict layout version mismatch in {}", seg.name_local()));
        }
        let nshards = hdr.nshards.load(Ordering::Relaxed);
        if nshards == 0 || nshards > MAX_SHARDS {
            return Err(corrupt!("dict {} has {nshards} shards", seg.name_local()));
        }
        let shards_off = hdr.shards_off.load(Ordering::Relaxed);
        let shards = MappedSlice::new(&seg, shards_off, nshards as usize)?;
        let heap_off = hdr.heap_off.load(Ordering::Relaxed);
        Heap::attach(&seg, Offset::new(heap_off))?;
        let hdr = Mapped::new(&seg, seg.data_offset())?;
        let ext = Extents::new(&seg, heap_off, GROWTH, &names_of(&hdr));
        let d = SharedDict {
            main: seg,
            hdr,
            shards,
            nshards,
            ext,
            reclaim_pending: crate::base::atomic::local::AtomicU32::new(0),
        };
        // Map the extension segments that exist now, so this process keeps them alive while it holds the dict.
        d.ext.map_existing(&d.names())?;
        Ok(d)
    }

    /// The main segment.
    pub fn segment(&self) -> &Segment {
        &self.main
    }

    /// Number of shards.
    pub fn nshards(&self) -> u32 {
        self.nshards
    }

    /// Number of segments the dict spans now.
    pub fn segments(&self) -> usize {
        self.header().nsegs.load(Ordering::Acquire) as usize
    }

    fn header(&self) -> &DictHeader {
        &self.hdr
    }

    /// Shard `i` (`i < nshards`).
    fn shard(&self, i: u32) -> &Shard {
        debug_assert!(i < self.nshards);
        &self.shards[(i % self.nshards) as usize]
    }

    /// The shard a key hash belongs to.
    #[inline]
    pub fn shard_index(&self, hash: u64) -> u32 {
        ((hash >> 32) % self.nshards as u64) as u32
    }

    fn names(&self) -> Names<'_> {
        names_of(self.header())
    }

    fn seg(&self, idx: usize) -> Result<&HeapSeg> {
        self.ext.get(idx, &self.names())
    }

    fn heap(&self, idx: usize) -> Result<Heap<'_>> {
        self.ext.heap(idx, &self.names())
    }

    /// A bounds-checked pointer to `len` bytes at reference `r`.
    #[inline]
    fn ptr(&self, r: u64, len: u64) -> Result<*mut u8> {
        self.seg((r >> REF_SHIFT) as usize)?.seg.bytes_ptr(r & REF_OFFSET_MASK, len)
    }

    #[inline]
    fn res<T: ShmSafe>(&self, r: u64) -> Result<&T> {
        self.seg((r >> REF_SHIFT) as usize)?.seg.resolve(Offset::new(r & REF_OFFSET_MASK))
    }

    fn table(&self, r: u64) -> Result<Table> {
        let th = self.res::<TableHeader>(r)?;
        let cap = th.capacity.load(Ordering::Relaxed);
        if th.magic.load(Ordering::Relaxed) != TABLE_MAGIC || !cap.is_power_of_two() || cap > 1 << 40 {
            return Err(corrupt!("dict table at {r:#x} is invalid"));
        }
        let slots = self.ptr(r + size_of::<TableHeader>() as u64, cap * size_of::<TableSlot>() as u64)?;
        Ok(Table { slots: slots as *const TableSlot, cap })
    }

    fn entry(&self, r: u64) -> Result<Entry> {
        let h = self.res::<EntryHeader>(r)?;
        let key_len = h.key_len.load(Ordering::Relaxed) as usize;
        let orig_len = h.orig_len.load(Ordering::Relaxed) as usize;
        let cap = h.cap.load(Ordering::Relaxed) as usize;
        let vals = values_at(h as *const EntryHeader as usize, key_len, orig_len, cap);
        // u32 lengths: the sum cannot overflow u64.
        let total = vals as u64 + 2 * cap as u64;
        let base = self.ptr(r, total)?;
        Ok(Entry { base, key_len, orig_len, cap, vals })
    }

    fn alloc(&self, size: u64) -> Result<u64> {
        loop {
            let n = self.ext.count(&self.names())?;
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

    fn usable(&self, r: u64) -> Result<u64> {
        self.heap((r >> REF_SHIFT) as usize)?.usable_size(r & REF_OFFSET_MASK)
    }

    fn free(&self, r: u64) -> Result<()> {
        self.heap((r >> REF_SHIFT) as usize)?.free(r & REF_OFFSET_MASK)
    }

    /// Adds extension segment number `seen` unless another writer already did.
    #[cold]
    fn add_segment(&self, seen: usize, need: u64) -> Result<()> {
        let hdr = self.header();
        let lock = &hdr.grow_lock;
        // Short critical section without Python code (a dead holder is taken over, and nothing it did needs
        // repair: the segment count is only published last); a live holder is waited for within the lock timeout.
        let _ = lock_within_patience(lock, "grow lock")?;
        struct Release<'a>(&'a crate::sync::lock::LockState);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release();
            }
        }
        let _release = Release(lock);
        if hdr.nsegs.load(Ordering::Acquire) as usize != seen {
            return Ok(());
        }
        let names = self.names();
        self.ext.add(seen, need, &self.main, &names)?;
        self.ext.publish(seen, &names);
        Ok(())
    }

    fn new_table(&self, cap: u64) -> Result<u64> {
        let bytes = size_of::<TableHeader>() as u64 + cap * size_of::<TableSlot>() as u64;
        let r = self.alloc(bytes)?;
        let p = self.ptr(r, bytes)?;
        // SAFETY: the block is ours (fresh from the allocator) and `bytes` long (checked by `ptr`).
        unsafe { std::ptr::write_bytes(p, 0, bytes as usize) };
        let th = self.res::<TableHeader>(r)?;
        th.capacity.store(cap, Ordering::Relaxed);
        th.magic.store(TABLE_MAGIC, Ordering::Relaxed);
        Ok(r)
    }

    /// Runs `f` as a seqlock reader of shard `i`: returns its result if no writer interfered, `None` if writers
    /// kept interfering (retry under the lock). Errors from `f` count only if the version did not move.
    pub fn optimistic<R>(&self, i: u32, mut f: impl FnMut(&Self, u64) -> Result<R>) -> Result<Option<R>> {
        let sh = self.shard(i);
        for _ in 0..OPTIMISTIC_TRIES {
            // Acquire: everything the last writer published before making the version even is visible.
            let s1 = sh.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let r = f(self, sh.table.load(Ordering::Acquire));
            // The fence orders the reads done by `f` (atomics and raw copies) before the re-check, so a version
            // unchanged here means no writer published or freed anything the reads could have seen.
            fence(Ordering::Acquire);
            if sh.seq.load(Ordering::Relaxed) == s1 {
                return r.map(Some);
            }
        }
        Ok(None)
    }

    /// Looks `key` up (stable hash `hash`) in the table `t` and returns its slot index and entry reference.
    fn probe(&self, t: u64, key: &[u8], hash: u64) -> Result<Option<(u64, u64)>> {
        let t = self.table(t)?;
        let mut i = hash;
        for _ in 0..t.cap {
            let slot = t.slot(i);
            let e = slot.entry.load(Ordering::Acquire);
            if e == SLOT_EMPTY {
                return Ok(None);
            }
            if e != SLOT_TOMBSTONE && slot.hash.load(Ordering::Relaxed) == hash {
                let ent = self.entry(e)?;
                // SAFETY: the key range lies inside the entry block, range-checked by `entry`.
                if unsafe { bytes_eq(ent.key_ptr(), ent.key_len, key) } {
                    return Ok(Some((i & (t.cap - 1), e)));
                }
            }
            i = i.wrapping_add(1);
        }
        Ok(None)
    }

    /// Lock-free lookup: copies the value bytes of `key` into `out` (cleared first).
    #[inline]
    pub fn get_into(&self, key: &[u8], hash: u64, out: &mut Vec<u8>) -> Result<Read> {
        let r = self.optimistic(self.shard_index(hash), |d, t| {
            out.clear();
            Ok(match d.probe(t, key, hash)? {
                Some((_, e)) if read_value(&d.entry(e)?, out)? => Read::Found,
                Some(_) => Read::Busy,
                None => Read::Missing,
            })
        })?;
        Ok(r.unwrap_or(Read::Busy))
    }

    /// Lock-free membership test.
    #[inline]
    pub fn contains(&self, key: &[u8], hash: u64) -> Result<Read> {
        let r = self.optimistic(self.shard_index(hash), |d, t| Ok(d.probe(t, key, hash)?.is_some()))?;
        Ok(match r {
            Some(true) => Read::Found,
            Some(false) => Read::Missing,
            None => Read::Busy,
        })
    }

    /// Copies every entry of table `t` into `out` as records `(key_len u32, orig_len u32, val_len u32, bytes)`
    /// and returns how many; `None` if in-place writers kept moving a value.
    fn dump(&self, t: u64, out: &mut Vec<u8>) -> Result<Option<usize>> {
        out.clear();
        let t = self.table(t)?;
        let mut n = 0;
        let mut val = Vec::new();
        for i in 0..t.cap {
            let e = t.slot(i).entry.load(Ordering::Acquire);
            if e <= SLOT_TOMBSTONE {
                continue;
            }
            let ent = self.entry(e)?;
            if !self.append_record(&ent, out, &mut val)? {
                return Ok(None);
            }
            n += 1;
        }
        Ok(Some(n))
    }

    /// Appends the record `(key_len u32, orig_len u32, val_len u32, key, orig, value)` of `ent` to `out`; false
    /// if in-place writers kept moving the value. `val` is scratch space.
    fn append_record(&self, ent: &Entry, out: &mut Vec<u8>, val: &mut Vec<u8>) -> Result<bool> {
        if !read_value(ent, val)? {
            return Ok(false);
        }
        for l in [ent.key_len, ent.orig_len, val.len()] {
            out.extend_from_slice(&(l as u32).to_le_bytes());
        }
        // SAFETY: key and as-inserted key lie inside the block (checked by `entry`) and never change while the
        // entry is published.
        unsafe { copy_out(ent.key_ptr(), ent.key_len + ent.orig_len, out) };
        out.extend_from_slice(val);
        Ok(true)
    }

    /// Lock-free copy of shard `i` (see [`records`]); `None` when busy (use [`ShardGuard::dump`]).
    pub fn dump_shard(&self, i: u32, out: &mut Vec<u8>) -> Result<Option<usize>> {
        Ok(self.optimistic(i, |d, t| d.dump(t, out))?.flatten())
    }

    /// Sets an existing `key` to `value` in place, without the shard lock, when that is possible: the key is
    /// present, `value` fits its entry's buffers, and nobody else holds the entry. Returns false otherwise (the
    /// caller then takes the lock). See `shm-layouts/dict.md`, "Overwrite in place".
    pub fn try_overwrite(&self, key: &[u8], hash: u64, value: &[u8]) -> Result<bool> {
        let sh = self.shard(self.shard_index(hash));
        let s = sh.seq.load(Ordering::Acquire);
        if s & 1 == 1 {
            return Ok(false);
        }
        let found = self.probe(sh.table.load(Ordering::Acquire), key, hash);
        let ent = found.and_then(|f| f.map(|(_, e)| self.entry(e)).transpose());
        fence(Ordering::Acquire);
        if sh.seq.load(Ordering::Relaxed) != s {
            return Ok(false);
        }
        // Read while `seq` was unchanged: the entry was published and its header fields are its own.
        let Ok(Some(ent)) = ent else { return Ok(false) };
        if value.len() > ent.cap {
            return Ok(false);
        }
        let Some(st) = lock_published(ent.hdr(), &sh.seq, s, owner::me()) else { return Ok(false) };
        write_in_place(&ent, st, value);
        Ok(true)
    }

    /// Number of keys (the sum of the shard counters; not a snapshot while writers run). A counter larger than
    /// its shard's table can hold is corrupt: an error, not a number to allocate for.
    pub fn len(&self) -> Result<u64> {
        let mut total = 0u64;
        for i in 0..self.nshards {
            let sh = self.shard(i);
            // The counter and the table it counts, as of one version (writers change both inside one).
            let seen = self.optimistic(i, |d, t| Ok((sh.len.load(Ordering::Relaxed), d.table(t)?.cap)))?;
            let (len, cap) = match seen {
                Some(v) => v,
                // Writers kept the shard busy: the table is at most twice the size of any we could have missed.
                None => {
                    let cap = self.table(sh.table.load(Ordering::Acquire))?.cap;
                    (sh.len.load(Ordering::Relaxed).min(cap.saturating_mul(2)), cap.saturating_mul(2))
                }
            };
            if len > cap {
                return Err(corrupt!("dict shard {i} counts {len} keys in a table of {cap} slots"));
            }
            total += len;
        }
        Ok(total)
    }

    /// Whether the dict has no keys.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether the calling thread holds shard `i`'s lock (a re-entrant attempt would deadlock).
    pub fn held_by_me(&self, i: u32) -> bool {
        let me = owner::me();
        self.shard(i).lock.owner().is_some_and(|o| o.pid == me.pid && o.tid == me.tid)
    }

    /// Takes shard `i`'s lock without waiting. A shard left half-written by a dead writer is repaired first.
    pub fn try_lock(&self, i: u32) -> Result<Option<ShardGuard<'_>>> {
        let sh = self.shard(i);
        match sh.lock.try_lock_as(owner::me()) {
            Some(a) => self.guard(sh, a.owner_died()).map(Some),
            None => Ok(None),
        }
    }

    /// Takes shard `i`'s lock, waiting until `deadline`. Blocks: callers holding the GIL must release it.
    pub fn lock(&self, i: u32, deadline: &Deadline) -> Result<ShardGuard<'_>> {
        let sh = self.shard(i);
        let a = sh.lock.lock_as(owner::me(), deadline)?;
        self.guard(sh, a.owner_died())
    }

    /// Takes shard `i`'s lock, waiting until `patience` (made from [`limits::lock_timeout`] by the caller, once,
    /// so that retries after a signal keep the same bound) for a live holder, then failing with [`Error::Stuck`]
    /// naming it. Writers hold a shard lock for one change (or an `update_with` callback), so a holder that keeps
    /// it that long is stopped, or the lock word is corrupt. Blocks: release the GIL.
    pub fn lock_patiently(&self, i: u32, patience: &Deadline) -> Result<ShardGuard<'_>> {
        let sh = self.shard(i);
        let a = lock_until(&sh.lock, &format!("shard {i} lock"), patience)?;
        self.guard(sh, a.owner_died())
    }

    fn guard<'a>(&'a self, sh: &'a Shard, died: bool) -> Result<ShardGuard<'a>> {
        let g = ShardGuard { d: self, sh, repaired: false, held: None };
        // An odd version while we hold the lock can only be left by a holder that died mid-write.
        if died || sh.seq.load(Ordering::Relaxed) & 1 == 1 {
            let mut g = g;
            g.repair()?;
            self.reclaim_pending.store(RECLAIM_ATTEMPTS, crate::base::atomic::local::Ordering::Relaxed);
            return Ok(g);
        }
        Ok(g)
    }

    /// Whether a shard was repaired in this process (so blocks may have leaked) and no [`reclaim`](Self::reclaim)
    /// has succeeded since: callers then try `reclaim(None)` outside any shard lock. Gives up after
    /// `RECLAIM_ATTEMPTS` calls, so a dict whose shards are always busy does not pay for it on every write.
    pub fn take_reclaim_pending(&self) -> bool {
        use crate::base::atomic::local::Ordering::Relaxed;
        self.reclaim_pending.load(Relaxed) > 0
            && self.reclaim_pending.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// Frees the heap blocks nothing in the dict references: blocks leaked by writers killed between allocating
    /// and publishing, or between unpublishing and freeing, and a spare cache a repair forgot. Takes every shard
    /// lock meanwhile (every writer that allocates or frees holds one, so no block is in flight) and walks every
    /// heap, so it costs time linear in the blocks. With `deadline` `None` it only runs if every shard lock is
    /// free right now, returning `None` otherwise. Returns the bytes freed.
    pub fn reclaim(&self, deadline: Option<&Deadline>) -> Result<Option<u64>> {
        if (0..self.nshards).any(|i| self.held_by_me(i)) {
            return Err(Error::Invalid("reclaim needs every shard lock, and this thread holds one".into()));
        }
        let mut guards = Vec::with_capacity(self.nshards as usize);
        for i in 0..self.nshards {
            match deadline {
                Some(dl) if dl.is_forever() => {
                    guards.push(self.lock_patiently(i, &Deadline::after(Some(limits::lock_timeout())))?)
                }
                Some(dl) => guards.push(self.lock(i, dl)?),
                None => match self.try_lock(i)? {
                    Some(g) => guards.push(g),
                    None => return Ok(None),
                },
            }
        }
        let mut live = std::collections::HashSet::new();
        for g in &guards {
            let t = g.sh.table.load(Ordering::Relaxed);
            live.insert(t);
            let table = self.table(t)?;
            for i in 0..table.cap {
                let e = table.slot(i).entry.load(Ordering::Relaxed);
                if e > SLOT_TOMBSTONE {
                    live.insert(e);
                }
            }
            live.extend(g.sh.spare.iter().map(|r| r.load(Ordering::Relaxed)).filter(|&r| r != 0));
        }
        let mut freed = 0;
        for idx in 0..self.segments().min(MAX_SEGMENTS) {
            let heap = self.heap(idx)?;
            for (payload, size) in heap.used_payloads() {
                if !live.contains(&make_ref(idx, payload)) {
                    heap.free(payload)?;
                    freed += size;
                }
            }
        }
        // Repairs done while taking the locks above are covered by this walk.
        self.reclaim_pending.store(0, crate::base::atomic::local::Ordering::Relaxed);
        Ok(Some(freed))
    }
}

/// Splits the records written by [`SharedDict::dump_shard`] / [`ShardGuard::dump`] into
/// `(key, orig, value)` slices.
pub fn records(buf: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8], &[u8])>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= buf.len() {
            return None;
        }
        let rd = |p: usize| buf.get(p..p + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let (Some(k), Some(o), Some(v)) = (rd(pos), rd(pos + 4), rd(pos + 8)) else {
            pos = buf.len();
            return Some(Err(corrupt!("truncated dict record")));
        };
        let s = pos + 12;
        let Some(rec) = buf.get(s..s + k + o + v) else {
            pos = buf.len();
            return Some(Err(corrupt!("truncated dict record")));
        };
        pos = s + k + o + v;
        Some(Ok((&rec[..k], &rec[k..k + o], &rec[k + o..])))
    })
}

/// Holds a shard's write lock; every mutation goes through it. Released when dropped.
pub struct ShardGuard<'a> {
    d: &'a SharedDict,
    sh: &'a Shard,
    /// Whether acquiring it repaired the shard after a writer died.
    pub repaired: bool,
    /// The entry whose lock this guard holds (a read for update), with its state before locking.
    held: Option<(u64, u64)>,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.release_held();
        self.sh.lock.release();
    }
}

/// The owner bits of an entry `state` locked by `me`.
fn entry_owner(me: owner::Me) -> u64 {
    (u64::from(me.pid) << ENTRY_PID_SHIFT) & ENTRY_PID_MASK | (me.start & 0xffff) << ENTRY_START_SHIFT
}

/// Whether the owner recorded in entry state `st` may still be running: a thread of this process, or a live
/// process with that pid whose start time matches in the recorded bits (an unrelated process that got a dead
/// owner's pid almost never does: 1 in 65,536).
fn entry_owner_alive(st: u64, me: owner::Me) -> bool {
    let pid = ((st & ENTRY_PID_MASK) >> ENTRY_PID_SHIFT) as u32;
    let start = (st & ENTRY_START_MASK) >> ENTRY_START_SHIFT;
    use crate::platform::process::{alive, Start};
    pid == me.pid || alive(pid, Start::Low { value: start, bits: 16 })
}

/// Takes a lock of the dict's (a shard's, the grow lock), waiting at most [`limits::lock_timeout`] for a live
/// holder; [`Error::Stuck`] naming it after that. A dead holder is taken over (`Acquired::OwnerDied`).
fn lock_within_patience(lock: &crate::sync::lock::LockState, what: &str) -> Result<crate::sync::lock::Acquired> {
    lock_within(lock, what, limits::lock_timeout())
}

fn lock_within(
    lock: &crate::sync::lock::LockState,
    what: &str,
    patience: std::time::Duration,
) -> Result<crate::sync::lock::Acquired> {
    lock_until(lock, what, &Deadline::after(Some(patience)))
}

fn lock_until(
    lock: &crate::sync::lock::LockState,
    what: &str,
    deadline: &Deadline,
) -> Result<crate::sync::lock::Acquired> {
    match lock.lock_as(owner::me(), deadline) {
        Err(crate::sync::wait::WaitError::TimedOut) => {
            let holder = lock.owner().map_or(0, |o| o.pid);
            Err(stuck(what, holder, limits::lock_timeout()))
        }
        r => Ok(r?),
    }
}

fn stuck(what: &str, holder: u32, patience: std::time::Duration) -> Error {
    Error::Stuck(format!(
        "ConcurrentDict: the {what} has been held by live process {holder} for more than {:.1} s (a stopped \
         process, a very long update_with callback, or a corrupt segment); set {} to wait longer",
        patience.as_secs_f64(),
        limits::LOCK_TIMEOUT_ENV
    ))
}

/// Takes the lock of entry `ent`, waiting for an in-place writer that holds it and taking it over from one that
/// died. Returns the entry's unlocked state. Lock holders only copy bytes, so the wait is short; a live holder
/// that keeps it past [`limits::lock_timeout`] is reported ([`Error::Stuck`]).
fn acquire_entry(h: &EntryHeader) -> Result<u64> {
    let me = owner::me();
    let mine = entry_owner(me);
    let backoff = crossbeam_utils::Backoff::new();
    let mut spins = 0u32;
    let mut since: Option<Instant> = None;
    loop {
        let st = h.state.load(Ordering::Relaxed);
        if st & ENTRY_MARK == 0 {
            return Err(corrupt!("dict entry has an invalid state word {st:#x}"));
        }
        let free = st & !ENTRY_OWNER_MASK;
        // Free, or held by a process that died mid-overwrite (it only wrote the inactive buffer).
        let take = st & ENTRY_OWNER_MASK == 0 || {
            spins += 1;
            spins % 1024 == 0 && !entry_owner_alive(st, me)
        };
        if take {
            if h.state.compare_exchange(st, free | mine, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                // Orders the lock before our writes to the buffers (see `write_in_place`).
                fence(Ordering::Release);
                return Ok(free);
            }
            continue;
        }
        if !cfg!(loom) && spins % 1024 == 0 {
            let start = *since.get_or_insert_with(Instant::now);
            let patience = limits::lock_timeout();
            if start.elapsed() > patience {
                let pid = ((st & ENTRY_PID_MASK) >> ENTRY_PID_SHIFT) as u32;
                return Err(stuck("lock of an entry", pid, patience));
            }
        }
        if cfg!(loom) || backoff.is_completed() {
            crate::base::yield_now();
        } else {
            backoff.snooze();
        }
    }
}

/// Test hook: when set, a writer calls `_exit` at the given point of a mutation (crash-consistency tests).
/// Process-local (never in shared memory), so it uses the standard atomic even under loom.
#[doc(hidden)]
pub static CRASH_POINT: crate::base::atomic::local::AtomicU32 = crate::base::atomic::local::AtomicU32::new(0);

#[inline]
fn crash_point(n: u32) {
    if CRASH_POINT.load(crate::base::atomic::local::Ordering::Relaxed) == n {
        // SAFETY: `_exit` ends the process at once; used only by tests to simulate a kill at this point.
        unsafe { libc::_exit(9) }
    }
}

impl ShardGuard<'_> {
    /// Locks entry `e` for this guard (releasing any other entry it held) and returns it with its unlocked state.
    fn lock_entry(&mut self, e: u64) -> Result<(Entry, u64)> {
        let ent = self.d.entry(e)?;
        match self.held {
            Some((he, st)) if he == e => return Ok((ent, st)),
            Some(_) => self.release_held(),
            None => {}
        }
        let st = acquire_entry(ent.hdr())?;
        self.held = Some((e, st));
        Ok((ent, st))
    }

    /// Unlocks the held entry, unchanged.
    fn release_held(&mut self) {
        if let Some((e, st)) = self.held.take() {
            if let Ok(ent) = self.d.entry(e) {
                ent.hdr().state.store(st, Ordering::Release);
            }
        }
    }

    fn table(&self) -> Result<Table> {
        self.d.table(self.sh.table.load(Ordering::Relaxed))
    }

    /// Makes the version odd: readers that overlap what follows will retry.
    fn begin(&self) -> u64 {
        let s = self.sh.seq.load(Ordering::Relaxed);
        self.sh.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // Release fence: the odd version is ordered before every store that follows (a reader that sees any of
        // them then sees a changed version on its re-check).
        fence(Ordering::Release);
        s
    }

    fn end(&self, s: u64) {
        // Release: readers that load the new even version see the whole change.
        self.sh.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// Finds `key`; returns `(slot index, entry ref)`.
    pub fn find(&self, key: &[u8], hash: u64) -> Result<Option<(u64, u64)>> {
        self.d.probe(self.sh.table.load(Ordering::Relaxed), key, hash)
    }

    /// Copies the value of `key` into `out` (cleared first); whether it was present. The entry stays locked
    /// until the guard is dropped or moves on to another key, so a following [`set`](Self::set) or
    /// [`remove`](Self::remove) of the same key is atomic with this read.
    pub fn get_into(&mut self, key: &[u8], hash: u64, out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        match self.find(key, hash)? {
            Some((_, e)) => {
                let (ent, _) = self.lock_entry(e)?;
                // With the entry locked nobody moves the value: the first attempt succeeds.
                if !read_value(&ent, out)? {
                    return Err(corrupt!("dict entry changed while locked"));
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Copies every entry (see [`records`]).
    pub fn dump(&self, out: &mut Vec<u8>) -> Result<usize> {
        let start = Instant::now();
        loop {
            // Only in-place writers can interfere now, and each finishes within a copy.
            if let Some(n) = self.d.dump(self.sh.table.load(Ordering::Relaxed), out)? {
                return Ok(n);
            }
            if start.elapsed() > limits::lock_timeout() {
                return Err(corrupt!("dict entries kept changing under the shard lock (a corrupt entry state?)"));
            }
        }
    }

    /// Allocates `size` bytes, preferring a fitting block from the shard's spare cache.
    fn alloc_entry(&self, size: u64) -> Result<u64> {
        for spare in &self.sh.spare {
            let r = spare.load(Ordering::Relaxed);
            if r == 0 {
                continue;
            }
            match self.d.usable(r) {
                Ok(cap) if cap >= size && cap <= size * 2 + 64 => {
                    // Cleared before the block is written: a writer killed after this leaks the block, never
                    // leaves it both cached and in use.
                    spare.store(0, Ordering::Relaxed);
                    return Ok(r);
                }
                Ok(_) => {}
                Err(_) => spare.store(0, Ordering::Relaxed),
            }
        }
        self.d.alloc(size)
    }

    /// Gives up a block that is no longer published: keeps it in the spare cache if there is room, else frees it.
    fn retire(&self, r: u64) -> Result<()> {
        for spare in &self.sh.spare {
            if spare.load(Ordering::Relaxed) == 0 {
                spare.store(r, Ordering::Relaxed);
                return Ok(());
            }
        }
        // Cache full: swap the new block in for a random-ish victim so sizes adapt, free the victim.
        let victim = &self.sh.spare[(r >> 4) as usize % self.sh.spare.len()];
        let old = victim.swap(r, Ordering::Relaxed);
        self.d.free(old)
    }

    fn build_entry(&self, key: &[u8], orig: &[u8], value: &[u8]) -> Result<u64> {
        let cap = value_cap(value.len());
        if [key.len(), orig.len(), cap].iter().any(|&l| l > u32::MAX as usize / 4) {
            return Err(Error::Invalid("key or value too large for a shared dict".into()));
        }
        // Room for the worst-case alignment of the buffers (see `values_at`).
        let pad = if cap >= CACHE_LINE { CACHE_LINE - 1 } else { 0 };
        let total = size_of::<EntryHeader>() + key.len() + orig.len() + pad + 2 * cap;
        let r = self.alloc_entry(total as u64)?;
        let h = self.d.res::<EntryHeader>(r)?;
        h.key_len.store(key.len() as u32, Ordering::Relaxed);
        h.orig_len.store(orig.len() as u32, Ordering::Relaxed);
        h.cap.store(cap as u32, Ordering::Relaxed);
        h.val_len[0].store(value.len() as u32, Ordering::Relaxed);
        h.val_len[1].store(0, Ordering::Relaxed);
        h.reserved.store(0, Ordering::Relaxed);
        let p = self.d.ptr(r, total as u64)?;
        let key_at = size_of::<EntryHeader>();
        let vals = values_at(p as usize, key.len(), orig.len(), cap);
        for (part, at) in [(key, key_at), (orig, key_at + key.len()), (value, vals)] {
            // SAFETY: the block is ours (fresh from the allocator or the spare cache, not published) and `total`
            // bytes long, which covers `vals + 2 * cap` (see `values_at`).
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), p.add(at), part.len()) };
        }
        // Version 0, buffer 0, unlocked. Release: an in-place writer whose stale compare-and-swap reads this
        // (the block's previous entry was retired meanwhile) also sees the version bump of that retirement.
        h.state.store(ENTRY_MARK, Ordering::Release);
        Ok(r)
    }

    /// Sets `key` (canonical bytes, stable hash `hash`) to `value`. `orig` is the as-inserted key encoding when
    /// it differs from the canonical one (kept from the first insert, as a dict keeps its first key object).
    /// Returns whether the key is new.
    pub fn set(&mut self, key: &[u8], hash: u64, orig: &[u8], value: &[u8]) -> Result<bool> {
        if let Some((idx, old)) = self.find(key, hash)? {
            let (ent, st) = self.lock_entry(old)?;
            if value.len() <= ent.cap {
                self.held = None;
                write_in_place(&ent, st, value);
                return Ok(false);
            }
            let mut kept = Vec::new();
            // SAFETY: in-bounds range of a published block, stable while we hold the lock.
            unsafe { copy_out(ent.orig_ptr(), ent.orig_len, &mut kept) };
            let new = self.build_entry(key, &kept, value)?;
            crash_point(1);
            let t = self.table()?;
            let s = self.begin();
            t.slot(idx).entry.store(new, Ordering::Release);
            self.end(s);
            crash_point(2);
            // A retired entry stays locked: an in-place writer that found it before cannot take it.
            self.held = None;
            self.retire(old)?;
            return Ok(false);
        }
        self.reserve_one()?;
        let new = self.build_entry(key, orig, value)?;
        crash_point(3);
        for attempt in 0..2 {
            let t = self.table()?;
            let mut i = hash;
            for _ in 0..t.cap {
                let slot = t.slot(i);
                let e = slot.entry.load(Ordering::Relaxed);
                if e == SLOT_EMPTY || e == SLOT_TOMBSTONE {
                    let s = self.begin();
                    slot.hash.store(hash, Ordering::Relaxed);
                    crash_point(4);
                    // The single publishing store: before it the slot is free, after it the entry is live.
                    slot.entry.store(new, Ordering::Release);
                    crash_point(5);
                    self.sh.len.fetch_add(1, Ordering::Relaxed);
                    if e == SLOT_TOMBSTONE {
                        self.sh.tombstones.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.end(s);
                    return Ok(true);
                }
                i = i.wrapping_add(1);
            }
            // Full although the counters said there was room (they are off, e.g. corrupt): grow from what the
            // table really holds, which also fixes the counters, and try once more.
            if attempt == 0 {
                if let Err(e) = self.grow() {
                    let _ = self.retire(new);
                    return Err(e);
                }
            }
        }
        let _ = self.retire(new);
        Err(corrupt!("dict shard table has no free slot"))
    }

    /// Removes `key`; copies its value into `out` if given. Returns whether it was present.
    pub fn remove(&mut self, key: &[u8], hash: u64, out: Option<&mut Vec<u8>>) -> Result<bool> {
        let Some((idx, e)) = self.find(key, hash)? else {
            return Ok(false);
        };
        self.remove_at(idx, e, out)?;
        Ok(true)
    }

    fn remove_at(&mut self, idx: u64, e: u64, out: Option<&mut Vec<u8>>) -> Result<()> {
        let (ent, _) = self.lock_entry(e)?;
        if let Some(out) = out {
            if !read_value(&ent, out)? {
                return Err(corrupt!("dict entry changed while locked"));
            }
        }
        let t = self.table()?;
        let s = self.begin();
        t.slot(idx).entry.store(SLOT_TOMBSTONE, Ordering::Release);
        crash_point(6);
        self.sh.len.fetch_sub(1, Ordering::Relaxed);
        self.sh.tombstones.fetch_add(1, Ordering::Relaxed);
        self.end(s);
        crash_point(7);
        // Retired entries stay locked (see `set`).
        self.held = None;
        self.retire(e)
    }

    /// Removes some entry; copies its key, as-inserted key and value bytes (a [`records`] record) into `out`.
    pub fn pop_any(&mut self, out: &mut Vec<u8>) -> Result<bool> {
        let t = self.table()?;
        for i in 0..t.cap {
            let e = t.slot(i).entry.load(Ordering::Relaxed);
            if e > SLOT_TOMBSTONE {
                let (ent, _) = self.lock_entry(e)?;
                out.clear();
                if !self.d.append_record(&ent, out, &mut Vec::new())? {
                    return Err(corrupt!("dict entry changed while locked"));
                }
                self.remove_at(i, e, None)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes every entry of this shard.
    pub fn clear(&mut self) -> Result<()> {
        self.release_held();
        let old = self.sh.table.load(Ordering::Relaxed);
        let t = self.d.table(old)?;
        let fresh = self.d.new_table(MIN_CAPACITY)?;
        let s = self.begin();
        self.sh.table.store(fresh, Ordering::Release);
        self.sh.len.store(0, Ordering::Relaxed);
        self.sh.tombstones.store(0, Ordering::Relaxed);
        self.end(s);
        for i in 0..t.cap {
            let e = t.slot(i).entry.load(Ordering::Relaxed);
            if e > SLOT_TOMBSTONE {
                // Wait out an in-place writer that found the entry before the new table was published.
                acquire_entry(self.d.entry(e)?.hdr())?;
                self.d.free(e)?;
            }
        }
        for spare in &self.sh.spare {
            let r = spare.swap(0, Ordering::Relaxed);
            if r != 0 {
                self.d.free(r)?;
            }
        }
        self.d.free(old)
    }

    /// Makes room for one more key: grows (or rehashes away tombstones) at 3/4 occupancy.
    fn reserve_one(&mut self) -> Result<()> {
        let t = self.table()?;
        let len = self.sh.len.load(Ordering::Relaxed);
        let used = len.saturating_add(self.sh.tombstones.load(Ordering::Relaxed)).saturating_add(1);
        if used.saturating_mul(4) <= t.cap * 3 {
            return Ok(());
        }
        self.grow()
    }

    /// Rehashes into a table sized from the entries the current one really holds (not from the counters, which
    /// a writer that died or a corrupt segment can leave at any value): at least twice as many slots, never
    /// fewer than now. The table's own capacity is bounded by its block, which is inside the segment.
    fn grow(&mut self) -> Result<()> {
        let t = self.table()?;
        let live = (0..t.cap).filter(|&i| t.slot(i).entry.load(Ordering::Relaxed) > SLOT_TOMBSTONE).count() as u64;
        let mut cap = t.cap.max(MIN_CAPACITY);
        while (live + 1) * 2 > cap {
            cap *= 2;
        }
        self.rehash(cap)
    }

    /// Moves every live slot into a new table of `cap` slots and publishes it with one store.
    fn rehash(&mut self, cap: u64) -> Result<()> {
        let old = self.sh.table.load(Ordering::Relaxed);
        let t = self.d.table(old)?;
        let fresh = self.d.new_table(cap)?;
        let nt = self.d.table(fresh)?;
        let mut live = 0;
        for i in 0..t.cap {
            let slot = t.slot(i);
            let e = slot.entry.load(Ordering::Relaxed);
            if e <= SLOT_TOMBSTONE {
                continue;
            }
            let h = slot.hash.load(Ordering::Relaxed);
            let mut j = h;
            let mut placed = false;
            for _ in 0..nt.cap {
                let ns = nt.slot(j);
                if ns.entry.load(Ordering::Relaxed) == SLOT_EMPTY {
                    ns.hash.store(h, Ordering::Relaxed);
                    ns.entry.store(e, Ordering::Relaxed);
                    placed = true;
                    break;
                }
                j = j.wrapping_add(1);
            }
            if !placed {
                // More entries than were counted: the old table changed under the lock (a corrupt segment).
                let _ = self.d.free(fresh);
                return Err(corrupt!("dict shard grew while it was being rehashed"));
            }
            live += 1;
        }
        crash_point(8);
        let s = self.begin();
        // Release: readers that load the new table reference see its slots filled in.
        self.sh.table.store(fresh, Ordering::Release);
        self.sh.len.store(live, Ordering::Relaxed);
        self.sh.tombstones.store(0, Ordering::Relaxed);
        self.end(s);
        self.d.free(old)
    }

    /// Validates the shard after a writer died holding its lock: entries that are out of bounds or whose key
    /// does not hash to their slot's hash become tombstones (their blocks leak), the counters are recounted and
    /// the version made even. A table that is itself invalid is replaced by an empty one (its keys are lost).
    pub fn repair(&mut self) -> Result<()> {
        self.repaired = true;
        let s = self.sh.seq.load(Ordering::Relaxed);
        let s = s & !1;
        self.sh.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        // A dead writer may have been between taking a spare and using it: forget the cache (blocks leak).
        for spare in &self.sh.spare {
            spare.store(0, Ordering::Relaxed);
        }
        let (mut live, mut tombs) = (0, 0);
        match self.table() {
            Ok(t) => {
                let mut key = Vec::new();
                for i in 0..t.cap {
                    let slot = t.slot(i);
                    let e = slot.entry.load(Ordering::Relaxed);
                    if e == SLOT_EMPTY {
                        continue;
                    }
                    if e == SLOT_TOMBSTONE {
                        tombs += 1;
                        continue;
                    }
                    let ok = self.d.entry(e).is_ok_and(|ent| {
                        key.clear();
                        // SAFETY: in-bounds range (checked by `entry`); we hold the lock.
                        unsafe { copy_out(ent.key_ptr(), ent.key_len, &mut key) };
                        let h = ent.hdr();
                        let st = h.state.load(Ordering::Relaxed);
                        if st & ENTRY_OWNER_MASK != 0 && !entry_owner_alive(st, owner::me()) {
                            // Died mid-overwrite (in place, or as the dead shard holder): the active buffer is
                            // intact, release the lock.
                            let _ = h.state.compare_exchange(
                                st,
                                st & !ENTRY_OWNER_MASK,
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            );
                        }
                        let b = st & 1;
                        st & ENTRY_MARK != 0
                            && h.val_len[b as usize].load(Ordering::Relaxed) as usize <= ent.cap
                            && ent.key_len > 0
                            && crate::codec::stable_hash(&key) == slot.hash.load(Ordering::Relaxed)
                    });
                    if ok {
                        live += 1;
                    } else {
                        slot.entry.store(SLOT_TOMBSTONE, Ordering::Relaxed);
                        tombs += 1;
                    }
                }
            }
            Err(_) => {
                let fresh = self.d.new_table(MIN_CAPACITY)?;
                self.sh.table.store(fresh, Ordering::Release);
            }
        }
        self.sh.len.store(live, Ordering::Relaxed);
        self.sh.tombstones.store(tombs, Ordering::Relaxed);
        self.end(s);
        Ok(())
    }
}

impl Drop for SharedDict {
    fn drop(&mut self) {
        // Map every extension segment before letting go: another process may have registered this one as a
        // user of segments it never mapped (see `segment::extents`), and only our own detach clears those entries.
        self.ext.map_unmapped(&self.names());
    }
}
