//! Arenas: many small objects (atomics, locks, semaphores, events) in one segment, each in a fixed-size cell
//! with a lifetime of its own. Layout: `shm-layouts/arena.md`.
//!
//! A process creates arenas on demand (one segment of [`CELL_COUNT`] cells, its pages reserved a chunk at a time
//! as cells are handed out) and allocates new small objects in them, so a million objects take a handful of
//! segments and mappings instead of a million. An object is addressed by (arena name, offset): a handle's offset
//! is the cell's byte offset with the cell's generation in the high 32 bits (see [`handle_offset`]), so the
//! handle format and the pickling path are those of every other object.
//!
//! Lifetime, per cell, follows the segment rule: a cell lives while a live process holds it. Each cell's meta
//! word counts its holding processes (with its generation, state and object type, one CAS per change), and each
//! process that holds cells in an arena owns a slot of the arena's owner table (`segment::owners`) and a bitmap
//! of the cells it holds. A process takes a hold by counting itself and then setting its bit, and lets go by
//! clearing its bit and then uncounting itself; whoever uncounts the last holder frees the cell (zeroes it, bumps
//! nothing: the generation is bumped at the next allocation) and pushes it on the free list. A process that died
//! is reaped like any dead owner: its bitmap words are swapped to zero one at a time and each bit found is
//! uncounted, so a reaper that dies half-way leaks cells (they stay counted) but never uncounts one twice. The
//! same ordering means a process killed between its two steps leaks the one cell it was taking or releasing; the
//! arena itself is still removed when every process that mapped it is gone (the segment's user table).
//!
//! Inside a process, the handles of one cell share one hold: a local count per cell (`LOCAL`), so the shared
//! count is touched when the first handle appears and when the last one is dropped or closed, not per handle.
//! A forked child inherits its parent's handles, so it claims its own owner slot and counts itself as a holder
//! of every cell it inherited (`after_fork_child`).
//!
//! A stale handle (its cell freed, possibly reused by another object) is recognised by the generation it
//! carries: attaching fails with [`Error::NotFound`], as for a segment whose users all let go. Every offset read
//! from the arena (header fields, free-list links, cell indices) is bounds-checked; updates are lock-free CAS
//! loops that give up with [`Error::Corrupt`] after a bounded number of failures.

use super::header::{Kind, HEADER_PAGE};
use super::offset::ShmSafe;
use super::owners::{Owner, OwnerSlot, OwnerTable};
use super::shm::{Inspected, Reserve, Segment, WeakSegment};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::base::spin::SpinMutex;
use crate::error::corrupt;
use crate::platform::process;
use crate::shm_struct;
use crate::{Error, Result};
use std::collections::HashMap;

/// Payload layout version of [`Kind::Arena`] segments (`shm-layouts/arena.md`).
pub const ARENA_VERSION: u32 = 1;
/// Size of a small object's cell: one cache line, so two objects never share a line.
pub const CELL_SIZE: u32 = 64;
/// Size of a cell for a small `Value`/`Array` block (its 128-byte header with the embedded lock, and up to
/// [`BLOCK_CELL_ITEMS`] bytes of items).
pub const BLOCK_CELL_SIZE: u32 = 256;
/// Item bytes a block in an arena cell can hold.
pub const BLOCK_CELL_ITEMS: u32 = BLOCK_CELL_SIZE - 128;
/// Bytes of cells per arena (16 MiB).
pub const ARENA_CELL_BYTES: u64 = 16 << 20;
/// Cells per arena of [`CELL_SIZE`] cells (4 arenas hold a million objects).
pub const CELL_COUNT: u32 = (ARENA_CELL_BYTES / CELL_SIZE as u64) as u32;
/// Slots of an arena's owner table: processes that can hold cells of one arena at the same time.
pub const OWNER_COUNT: u32 = 1024;
/// Cells whose pages are reserved together when fresh cells are first handed out.
pub const CHUNK_CELLS: u32 = 1024;
/// Largest cell size an arena header may declare.
const MAX_CELL_SIZE: u32 = 4096;
/// Largest cell count an arena header may declare.
const MAX_CELL_COUNT: u32 = 1 << 21;
/// CAS attempts on one arena word before the arena is reported corrupt (another process would have to win
/// every one of them).
const MAX_RETRIES: u32 = 1 << 20;

/// Bits of [`CellMeta::word`] that count the holding processes.
const HOLDERS_MASK: u64 = (1 << 20) - 1;
const STATE_SHIFT: u32 = 20;
const STATE_MASK: u64 = 0xf << STATE_SHIFT;
const TYPE_SHIFT: u32 = 24;
const TYPE_MASK: u64 = 0xff << TYPE_SHIFT;
const GEN_SHIFT: u32 = 32;

/// Cell state: free (on the free list, or never handed out).
pub const CELL_FREE: u64 = 0;
/// Cell state: an object lives here.
pub const CELL_LIVE: u64 = 1;
/// Cell state: an object lives here, but no new process may attach (`unlink()`).
pub const CELL_UNLINKED: u64 = 2;

/// Object type stored in a cell's meta word: an atomic cell (`AtomicInt64`, `AtomicFlag`).
pub const TYPE_ATOMIC: u8 = 1;
/// Object type: a `Value`/`Array` block (`objects::block`), whose lock is embedded at the cell's start.
pub const TYPE_BLOCK: u8 = 2;
/// Object types of sync primitives: `TYPE_SYNC + SyncType as u8`.
pub const TYPE_SYNC: u8 = 0x10;

shm_struct! {
    /// The arena header, at the payload offset of the segment. Written once by the creator except the last four
    /// fields.
    pub struct ArenaHeader {
        /// Bytes per cell.
        pub cell_size: AtomicU32,
        /// Number of cells.
        pub cell_count: AtomicU32,
        /// Slots of the owner table.
        pub owner_count: AtomicU32,
        /// Bytes of one owner's bitmap (a multiple of the page size).
        pub bitmap_bytes: AtomicU32,
        /// Offset of the owner table (`OwnerSlot`s).
        pub owners_offset: AtomicU64,
        /// Offset of the `CellMeta` table.
        pub meta_offset: AtomicU64,
        /// Offset of cell 0.
        pub cells_offset: AtomicU64,
        /// Offset of owner 0's bitmap; owner `i`'s is `bitmap_bytes` further per slot.
        pub bitmaps_offset: AtomicU64,
        /// Cells handed out from fresh memory so far (cells `[0, bump)` have been used).
        pub bump: AtomicU32,
        /// Cells whose meta entries and cells are reserved in /dev/shm (`[0, reserved_cells)`).
        pub reserved_cells: AtomicU32,
        /// Free list: low 32 bits the first free cell + 1 (0: empty), high 32 bits a tag bumped by every change.
        pub free_head: AtomicU64,
        /// Cells holding a live object (for `pyconc ls`).
        pub live: AtomicU64,
        /// Unused; zero.
        pub reserved: [AtomicU64; 7],
    }
}

shm_struct! {
    /// Per-cell bookkeeping, in a table beside the cells (so the objects keep whole cache lines).
    pub struct CellMeta {
        /// Holding processes (bits 0..20), state (20..24: free, live, unlinked), object type (24..32),
        /// generation (32..64, bumped at each allocation; a handle carries it).
        pub word: AtomicU64,
        /// Free-list link: the next free cell + 1 (0: end).
        pub next: AtomicU32,
        /// Unused; zero.
        pub reserved: AtomicU32,
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<ArenaHeader>() == 128);
    assert!(offset_of!(ArenaHeader, bump) == 48);
    assert!(offset_of!(ArenaHeader, free_head) == 56);
    assert!(size_of::<CellMeta>() == 16);
    assert!(super::header::DATA_OFFSET as usize + size_of::<ArenaHeader>() <= HEADER_PAGE as usize);
};

fn holders(w: u64) -> u64 {
    w & HOLDERS_MASK
}
fn state(w: u64) -> u64 {
    (w & STATE_MASK) >> STATE_SHIFT
}
fn cell_type(w: u64) -> u8 {
    ((w & TYPE_MASK) >> TYPE_SHIFT) as u8
}
fn generation(w: u64) -> u32 {
    (w >> GEN_SHIFT) as u32
}

/// The offset a handle carries for the cell at byte offset `byte_offset` in generation `gen`.
pub fn handle_offset(byte_offset: u64, gen: u32) -> u64 {
    ((gen as u64) << 32) | (byte_offset & 0xffff_ffff)
}

/// `(byte offset, generation)` of a handle's offset.
pub fn split_handle_offset(offset: u64) -> (u64, u32) {
    (offset & 0xffff_ffff, (offset >> 32) as u32)
}

/// Memory an arena's bytes can be read through: a segment in use, or one mapped for inspection (`gc`, `ls`).
pub trait Region {
    /// A pointer to `len` bytes at `off`, bounds-checked.
    fn bytes(&self, off: u64, len: u64) -> Result<*mut u8>;
    /// The name, for messages.
    fn label(&self) -> &str;
}

impl Region for Segment {
    fn bytes(&self, off: u64, len: u64) -> Result<*mut u8> {
        self.bytes_ptr(off, len)
    }
    fn label(&self) -> &str {
        self.name_local()
    }
}

impl Region for Inspected {
    fn bytes(&self, off: u64, len: u64) -> Result<*mut u8> {
        self.bytes_ptr(off, len)
    }
    fn label(&self) -> &str {
        self.name()
    }
}

/// `n` `T`s at `at` of `r`, bounds- and alignment-checked.
fn slice<'a, T: ShmSafe>(r: &'a impl Region, at: u64, n: u64, what: &str) -> Result<&'a [T]> {
    let size = std::mem::size_of::<T>() as u64;
    let bytes = n.checked_mul(size).ok_or_else(|| corrupt!("{}: arena {what} of {n} entries", r.label()))?;
    if at % std::mem::align_of::<T>() as u64 != 0 || at < HEADER_PAGE {
        return Err(corrupt!("{}: arena {what} at invalid offset {at:#x}", r.label()));
    }
    let ptr = r.bytes(at, bytes)?;
    // SAFETY: [at, at + bytes) lies inside the mapping (checked by `bytes`), is aligned for T (checked above) and
    // the mapping lives as long as `r`; T is ShmSafe, so any bytes are valid Ts and mutation goes through atomics.
    Ok(unsafe { std::slice::from_raw_parts(ptr as *const T, n as usize) })
}

/// A validated view of an arena's tables.
pub struct ArenaRef<'a> {
    name: &'a str,
    hdr: &'a ArenaHeader,
    meta: &'a [CellMeta],
    owners: &'a [OwnerSlot],
    /// Every owner's bitmap, back to back.
    bitmaps: &'a [AtomicU64],
    /// Bitmap words per owner.
    words: usize,
    cells_offset: u64,
    cell_size: u64,
    /// Cell 0 (the whole cells region was bounds-checked when the view was made).
    cells: *const AtomicU64,
    reserve: Option<&'a Segment>,
}

impl<'a> ArenaRef<'a> {
    /// Validates the arena in `seg` (kind, version, header) and returns a view.
    pub fn new(seg: &'a Segment) -> Result<Self> {
        seg.info().expect(seg.name_local(), Kind::Arena, ARENA_VERSION)?;
        let mut a = Self::of(seg, seg.info().data_offset)?;
        a.reserve = Some(seg);
        Ok(a)
    }

    /// The same over a segment mapped for inspection.
    pub fn inspect(seg: &'a Inspected) -> Result<Self> {
        let info = seg.info();
        if info.kind != Kind::Arena || info.kind_version != ARENA_VERSION {
            return Err(Error::Invalid(format!("{} is not an arena of version {ARENA_VERSION}", seg.name())));
        }
        Self::of(seg, info.data_offset)
    }

    fn of<R: Region>(r: &'a R, data_offset: u64) -> Result<Self> {
        let name = r.label();
        let p = r.bytes(data_offset, std::mem::size_of::<ArenaHeader>() as u64)?;
        if p as usize % 8 != 0 {
            return Err(corrupt!("{name}: misaligned arena header"));
        }
        // SAFETY: in bounds (checked by `bytes`), 8-aligned (checked), ArenaHeader is ShmSafe, and the mapping
        // lives as long as `r`.
        let hdr: &ArenaHeader = unsafe { &*(p as *const ArenaHeader) };
        let cell_size = hdr.cell_size.load(Ordering::Relaxed);
        let cell_count = hdr.cell_count.load(Ordering::Relaxed);
        let owner_count = hdr.owner_count.load(Ordering::Relaxed);
        let bitmap_bytes = hdr.bitmap_bytes.load(Ordering::Relaxed);
        let ok = cell_size.is_power_of_two()
            && (64..=MAX_CELL_SIZE).contains(&cell_size)
            && (1..=MAX_CELL_COUNT).contains(&cell_count)
            && (1..=4 * OWNER_COUNT).contains(&owner_count)
            && bitmap_bytes % 8 == 0
            && bitmap_bytes as u64 * 8 >= cell_count as u64
            && bitmap_bytes as u64 <= 64 * HEADER_PAGE;
        if !ok {
            return Err(corrupt!(
                "{name}: inconsistent arena header ({cell_count} cells of {cell_size} bytes, {owner_count} owners, \
                 {bitmap_bytes}-byte bitmaps)"
            ));
        }
        let owners_offset = hdr.owners_offset.load(Ordering::Relaxed);
        let meta_offset = hdr.meta_offset.load(Ordering::Relaxed);
        let cells_offset = hdr.cells_offset.load(Ordering::Relaxed);
        let bitmaps_offset = hdr.bitmaps_offset.load(Ordering::Relaxed);
        let owners = slice::<OwnerSlot>(r, owners_offset, owner_count as u64, "owner table")?;
        let meta = slice::<CellMeta>(r, meta_offset, cell_count as u64, "cell table")?;
        let words = bitmap_bytes as u64 / 8;
        let bitmaps = slice::<AtomicU64>(r, bitmaps_offset, words * owner_count as u64, "bitmaps")?;
        let cells_len = cell_count as u64 * cell_size as u64;
        // The regions in order, without overlap (the cells are checked here: they are reached by offset).
        let ordered = owners_offset + owner_count as u64 * 16 <= meta_offset
            && meta_offset + cell_count as u64 * 16 <= cells_offset
            && cells_offset % 64 == 0
            && cells_offset.checked_add(cells_len).is_some_and(|e| e <= bitmaps_offset);
        if !ordered {
            return Err(corrupt!("{name}: arena regions overlap or are out of order"));
        }
        let cells = r.bytes(cells_offset, cells_len)? as *const AtomicU64;
        Ok(ArenaRef {
            name,
            hdr,
            meta,
            owners,
            bitmaps,
            words: words as usize,
            cells_offset,
            cell_size: cell_size as u64,
            cells,
            reserve: None,
        })
    }

    /// The header.
    pub fn header(&self) -> &ArenaHeader {
        self.hdr
    }

    /// Cells holding a live object.
    pub fn live(&self) -> u64 {
        self.hdr.live.load(Ordering::Relaxed)
    }

    /// Byte offset of cell `i`.
    pub fn cell_offset(&self, i: u32) -> u64 {
        self.cells_offset + i as u64 * self.cell_size
    }

    /// The cell index at byte offset `off`, which must be the start of a cell.
    pub fn index_of(&self, off: u64) -> Result<u32> {
        let rel = off.checked_sub(self.cells_offset).filter(|r| r % self.cell_size == 0);
        match rel.map(|r| r / self.cell_size) {
            Some(i) if i < self.meta.len() as u64 => Ok(i as u32),
            _ => Err(Error::Invalid(format!("offset {off:#x} of {} is not the start of an arena cell", self.name))),
        }
    }

    fn owner_bitmap(&self, slot: u32) -> &'a [AtomicU64] {
        let at = slot as usize * self.words;
        &self.bitmaps[at..at + self.words]
    }

    fn set_bit(&self, slot: u32, i: u32) {
        self.owner_bitmap(slot)[i as usize / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
    }

    /// Pages of owner `slot`'s bitmap known to be reserved (bit `p`: page `p`), recorded in its slot's `data`.
    fn bitmap_pages(&self, slot: u32) -> u64 {
        self.owners[slot as usize].data.load(Ordering::Acquire)
    }

    /// Reserves the bitmap page holding cell `i`'s bit for owner `slot` if it is not yet (bitmaps are reserved
    /// a page at a time, as their owner needs them: reading or writing a page of a tmpfs file that is not
    /// allocated allocates it, which on a full /dev/shm is a SIGBUS).
    fn ensure_bit_page(&self, slot: u32, i: u32) -> Result<()> {
        let page = (i as u64 / 8 / HEADER_PAGE) as u32;
        if page >= 64 || self.bitmap_pages(slot) & (1 << page) != 0 {
            return Ok(());
        }
        if let Some(seg) = self.reserve {
            let bm = self.owner_bitmap(slot);
            let off = bm.as_ptr() as u64 - seg.base_ptr() as u64 + page as u64 * HEADER_PAGE;
            let len = (bm.len() as u64 * 8 - page as u64 * HEADER_PAGE).min(HEADER_PAGE);
            seg.reserve(off, len)?;
        }
        self.owners[slot as usize].data.fetch_or(1 << page, Ordering::AcqRel);
        Ok(())
    }

    /// The words of owner `slot`'s bitmap on its reserved pages (only those may be read safely).
    fn reserved_words(&self, slot: u32) -> impl Iterator<Item = (usize, &'a AtomicU64)> + '_ {
        let pages = self.bitmap_pages(slot);
        let per_page = (HEADER_PAGE / 8) as usize;
        self.owner_bitmap(slot).iter().enumerate().filter(move |(k, _)| {
            let p = k / per_page;
            p < 64 && pages & (1 << p) != 0
        })
    }

    fn clear_bit(&self, slot: u32, i: u32) {
        self.owner_bitmap(slot)[i as usize / 64].fetch_and(!(1 << (i % 64)), Ordering::AcqRel);
    }

    /// The owner table.
    pub fn owner_table(&self) -> OwnerTable<'a, OwnerSlot> {
        OwnerTable::new(self.owners)
    }

    /// Claims an owner slot for this process (reaping dead owners if the table is full) and reserves its bitmap.
    pub fn claim_owner(&self) -> Result<u32> {
        let me = Owner::me();
        let table = self.owner_table();
        let slot = table
            .claim_or_reap(me, process::current().pid as usize, |i, _, _| self.release_all_of(i as u32))
            .ok_or_else(|| {
                Error::Full(format!(
                    "{} live processes already hold objects of arena {}, the most one arena tracks",
                    self.owners.len(),
                    self.name
                ))
            })? as u32;
        // The slot's bitmap pages stay reserved from one owner to the next (`data` says which), and its first
        // page is reserved now. A clean bitmap: anything left is counted holds nobody will release (leaked,
        // never released twice).
        if let Err(e) = self.ensure_bit_page(slot, 0) {
            table.release(slot as usize, me);
            return Err(e);
        }
        for (_, w) in self.reserved_words(slot) {
            if w.load(Ordering::Relaxed) != 0 {
                w.store(0, Ordering::Relaxed);
            }
        }
        Ok(slot)
    }

    /// Frees owner slot `slot` of this process (its bitmap must be clear: every hold released).
    pub fn release_owner(&self, slot: u32) {
        if (slot as usize) < self.owners.len() {
            self.owner_table().release(slot as usize, Owner::me());
        }
    }

    /// Releases every hold recorded in owner slot `slot`'s bitmap (a dead owner's, or this process's at exit):
    /// each word is swapped to zero before its bits are uncounted. Always true (the owner-table cleanup hook).
    pub fn release_all_of(&self, slot: u32) -> bool {
        if slot as usize >= self.owners.len() {
            return true;
        }
        for (k, w) in self.reserved_words(slot) {
            if w.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = w.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let i = k as u64 * 64 + b as u64;
                if i < self.meta.len() as u64 {
                    let _ = self.uncount(i as u32);
                }
            }
        }
        true
    }

    /// Reaps the owner slots of dead processes, releasing their holds; returns how many.
    pub fn reap_dead_owners(&self) -> usize {
        self.owner_table().reap(|i, _, _| self.release_all_of(i as u32))
    }

    /// Allocates a cell for an object of type `ty`, held by owner slot `slot`; returns `(index, generation)`.
    /// The cell's bytes are zero. [`Error::Full`] when every cell is taken; [`Error::NoSpace`] when /dev/shm
    /// cannot back fresh cells.
    pub fn alloc(&self, slot: u32, ty: u8) -> Result<(u32, u32)> {
        let i = match self.pop_free()? {
            Some(i) => i,
            None => self.bump()?,
        };
        if let Err(e) = self.ensure_bit_page(slot, i) {
            self.push_free(i)?;
            return Err(e);
        }
        let m = &self.meta[i as usize];
        let w = m.word.load(Ordering::Acquire);
        if state(w) != CELL_FREE || holders(w) != 0 {
            return Err(corrupt!("{}: cell {i} on the free list is in use", self.name));
        }
        let gen = generation(w).wrapping_add(1).max(1);
        let new = ((gen as u64) << GEN_SHIFT) | ((ty as u64) << TYPE_SHIFT) | (CELL_LIVE << STATE_SHIFT) | 1;
        if m.word.compare_exchange(w, new, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return Err(corrupt!("{}: cell {i} changed while it was being allocated", self.name));
        }
        self.set_bit(slot, i);
        self.hdr.live.fetch_add(1, Ordering::Relaxed);
        Ok((i, gen))
    }

    fn pop_free(&self) -> Result<Option<u32>> {
        let n = self.meta.len() as u64;
        for _ in 0..MAX_RETRIES {
            let h = self.hdr.free_head.load(Ordering::Acquire);
            let first = h & 0xffff_ffff;
            if first == 0 {
                return Ok(None);
            }
            if first > n {
                return Err(corrupt!("{}: free list starts at cell {first} of {n}", self.name));
            }
            let next = self.meta[first as usize - 1].next.load(Ordering::Acquire) as u64;
            if next > n {
                return Err(corrupt!("{}: free list links to cell {next} of {n}", self.name));
            }
            let tag = (h >> 32).wrapping_add(1) << 32;
            if self.hdr.free_head.compare_exchange(h, tag | next, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return Ok(Some(first as u32 - 1));
            }
        }
        Err(corrupt!("{}: the free list keeps changing", self.name))
    }

    fn push_free(&self, i: u32) -> Result<()> {
        for _ in 0..MAX_RETRIES {
            let h = self.hdr.free_head.load(Ordering::Acquire);
            self.meta[i as usize].next.store((h & 0xffff_ffff) as u32, Ordering::Relaxed);
            let tag = (h >> 32).wrapping_add(1) << 32;
            if self.hdr.free_head.compare_exchange(h, tag | (i as u64 + 1), Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                return Ok(());
            }
        }
        Err(corrupt!("{}: the free list keeps changing", self.name))
    }

    /// A fresh cell, reserving its chunk's pages first if nobody has.
    fn bump(&self) -> Result<u32> {
        let n = self.meta.len() as u32;
        for _ in 0..MAX_RETRIES {
            let b = self.hdr.bump.load(Ordering::Acquire);
            if b >= n {
                return Err(Error::Full(format!("arena {} is full", self.name)));
            }
            if b >= self.hdr.reserved_cells.load(Ordering::Acquire) {
                self.reserve_chunk(b)?;
            }
            if self.hdr.bump.compare_exchange(b, b + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return Ok(b);
            }
        }
        Err(corrupt!("{}: the arena's bump counter keeps changing", self.name))
    }

    /// Reserves the cells from `b` on (and their meta entries): a page of cells at first, doubling up to
    /// [`CHUNK_CELLS`] at a time, so a small arena costs a few pages.
    fn reserve_chunk(&self, b: u32) -> Result<()> {
        let n = self.meta.len() as u32;
        let per_page = (HEADER_PAGE / self.cell_size).max(1) as u32;
        let end = if b < CHUNK_CELLS {
            (b + 1).next_power_of_two().max(per_page).min(CHUNK_CELLS)
        } else {
            (b / CHUNK_CELLS + 1) * CHUNK_CELLS
        }
        .min(n);
        if let Some(seg) = self.reserve {
            let page = |x: u64| x - x % HEADER_PAGE;
            let meta_at = self.meta.as_ptr() as u64 - seg.base_ptr() as u64;
            let (m0, m1) = (page(meta_at + b as u64 * 16), meta_at + end as u64 * 16);
            seg.reserve(m0, m1 - m0)?;
            let (c0, c1) = (page(self.cell_offset(b)), self.cell_offset(end));
            seg.reserve(c0, c1 - c0)?;
        }
        self.hdr.reserved_cells.fetch_max(end, Ordering::AcqRel);
        Ok(())
    }

    /// Counts owner slot `slot` as a holder of cell `i` of generation `gen` and type `ty` (a handle from
    /// another process, or a forked child's inherited handles when `inherit`, which may also take an unlinked
    /// cell). [`Error::NotFound`] when the cell was freed (and maybe reused) or unlinked.
    pub fn attach(&self, slot: u32, i: u32, gen: u32, ty: u8, inherit: bool) -> Result<()> {
        if i >= self.hdr.reserved_cells.load(Ordering::Acquire) {
            // Never handed out (and its page may not be allocated: reading it could fault on a full /dev/shm).
            return Err(Error::NotFound(format!(
                "no pyconc object at {:#x} of arena {}: that cell was never used",
                self.cell_offset(i),
                self.name
            )));
        }
        if (slot as usize) < self.owners.len() {
            self.ensure_bit_page(slot, i)?;
        }
        let m = &self.meta[i as usize];
        for _ in 0..MAX_RETRIES {
            let w = m.word.load(Ordering::Acquire);
            let st = state(w);
            let gone = generation(w) != gen || holders(w) == 0 || st == CELL_FREE;
            if gone || (st == CELL_UNLINKED && !inherit) {
                let why = if gone {
                    "every process that held it has let go (its cell is freed with its last holder)"
                } else {
                    "it was unlinked"
                };
                return Err(Error::NotFound(format!(
                    "no pyconc object at {:#x} of arena {}: {why}. Keep a reference to the object in the sending \
                     process until the receiver has attached.",
                    self.cell_offset(i),
                    self.name
                )));
            }
            if st != CELL_LIVE && st != CELL_UNLINKED {
                return Err(corrupt!("{}: cell {i} in unknown state {st}", self.name));
            }
            if cell_type(w) != ty {
                return Err(Error::Invalid(format!(
                    "the cell at {:#x} of arena {} holds object type {}, not {ty}",
                    self.cell_offset(i),
                    self.name,
                    cell_type(w)
                )));
            }
            if holders(w) == HOLDERS_MASK {
                return Err(Error::Full(format!("cell {i} of arena {} has too many holders", self.name)));
            }
            if m.word.compare_exchange(w, w + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                self.set_bit(slot, i);
                return Ok(());
            }
        }
        Err(corrupt!("{}: cell {i} keeps changing", self.name))
    }

    /// Releases owner slot `slot`'s hold on cell `i` (bit first, then the count).
    pub fn release(&self, slot: u32, i: u32) -> Result<()> {
        if (slot as usize) < self.owners.len() {
            self.clear_bit(slot, i);
        }
        self.uncount(i)
    }

    /// Uncounts one holder of cell `i`; the last one frees it.
    fn uncount(&self, i: u32) -> Result<()> {
        let m = &self.meta[i as usize];
        for _ in 0..MAX_RETRIES {
            let w = m.word.load(Ordering::Acquire);
            let h = holders(w);
            if h == 0 || state(w) == CELL_FREE {
                return Err(corrupt!("{}: cell {i} released more often than held", self.name));
            }
            let last = h == 1;
            let new = if last { w & !(HOLDERS_MASK | STATE_MASK | TYPE_MASK) } else { w - 1 };
            if m.word.compare_exchange(w, new, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                if last {
                    self.free(i)?;
                }
                return Ok(());
            }
        }
        Err(corrupt!("{}: cell {i} keeps changing", self.name))
    }

    fn free(&self, i: u32) -> Result<()> {
        for w in self.cell_words(i) {
            w.store(0, Ordering::Relaxed);
        }
        self.hdr.live.fetch_sub(1, Ordering::Relaxed);
        self.push_free(i)
    }

    /// Marks cell `i` of generation `gen` unlinked: processes that hold it keep it, new attaches fail.
    pub fn unlink(&self, i: u32, gen: u32) {
        let m = &self.meta[i as usize];
        let mut w = m.word.load(Ordering::Acquire);
        for _ in 0..MAX_RETRIES {
            if generation(w) != gen || state(w) != CELL_LIVE {
                return;
            }
            let new = (w & !STATE_MASK) | (CELL_UNLINKED << STATE_SHIFT);
            match m.word.compare_exchange(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(cur) => w = cur,
            }
        }
    }

    /// Whether cell `i` of generation `gen` is marked unlinked (or gone).
    pub fn is_unlinked(&self, i: u32, gen: u32) -> bool {
        if i >= self.hdr.reserved_cells.load(Ordering::Acquire) {
            return true;
        }
        let w = self.meta[i as usize].word.load(Ordering::Acquire);
        generation(w) != gen || state(w) != CELL_LIVE
    }
}

impl<'a> ArenaRef<'a> {
    /// The words of cell `i` (below `cell_count`: callers index `meta` with it first).
    fn cell_words(&self, i: u32) -> &'a [AtomicU64] {
        let n = (self.cell_size / 8) as usize;
        assert!((i as usize) < self.meta.len());
        // SAFETY: the cells region [cells_offset, cells_offset + count * size) was checked to lie inside the
        // mapping when the view was made and `i < count` (asserted), so these `n` words are inside it; they are
        // 8-aligned (cells_offset is 64-aligned, sizes are powers of two >= 64), the mapping outlives 'a, and
        // AtomicU64 is ShmSafe.
        unsafe { std::slice::from_raw_parts(self.cells.add(i as usize * n), n) }
    }
}

/// Size of an arena segment's payload and the offsets of its regions, for cells of `cell_size` bytes: (data
/// size, owners, meta, cells, bitmaps, cell count, bitmap bytes).
fn geometry(data_offset: u64, cell_size: u32) -> (u64, u64, u64, u64, u64, u32, u32) {
    let page = HEADER_PAGE;
    let count = (ARENA_CELL_BYTES / cell_size as u64) as u32;
    let owners = HEADER_PAGE;
    let meta = (owners + OWNER_COUNT as u64 * 16).next_multiple_of(page);
    let cells = (meta + count as u64 * 16).next_multiple_of(page);
    let bitmaps = (cells + count as u64 * cell_size as u64).next_multiple_of(page);
    let bitmap_bytes = (count as u64 / 8).next_multiple_of(page);
    let end = bitmaps + OWNER_COUNT as u64 * bitmap_bytes;
    (end - data_offset, owners, meta, cells, bitmaps, count, bitmap_bytes as u32)
}

/// Creates an empty arena of `cell_size`-byte cells (the header page and owner table reserved; cells are
/// reserved as they are used).
fn create_arena(cell_size: u32) -> Result<Segment> {
    let data_offset = super::header::DATA_OFFSET;
    let (size, owners, meta, cells, bitmaps, count, bitmap_bytes) = geometry(data_offset, cell_size);
    let init = [0u64; 16];
    {
        // SAFETY: `init` is 8-aligned and exactly size_of::<ArenaHeader>() bytes; ArenaHeader is ShmSafe.
        let h = unsafe { &*(init.as_ptr() as *const ArenaHeader) };
        h.cell_size.store(cell_size, Ordering::Relaxed);
        h.cell_count.store(count, Ordering::Relaxed);
        h.owner_count.store(OWNER_COUNT, Ordering::Relaxed);
        h.bitmap_bytes.store(bitmap_bytes, Ordering::Relaxed);
        h.owners_offset.store(owners, Ordering::Relaxed);
        h.meta_offset.store(meta, Ordering::Relaxed);
        h.cells_offset.store(cells, Ordering::Relaxed);
        h.bitmaps_offset.store(bitmaps, Ordering::Relaxed);
    }
    // SAFETY: `init` is 128 initialised bytes.
    let bytes = unsafe { std::slice::from_raw_parts(init.as_ptr() as *const u8, 128) };
    let owners_end = owners + OWNER_COUNT as u64 * 16;
    Segment::create_reserving(Kind::Arena, ARENA_VERSION, size, bytes, Reserve::Prefix(owners_end - data_offset))
}

// ---- this process's holds -------------------------------------------------------------------------------------

/// This process's use of one arena.
struct ArenaUse {
    seg: WeakSegment,
    /// The arena's cell size.
    cell_size: u32,
    /// Our owner slot.
    slot: u32,
    /// Cell index -> (generation, handles in this process).
    cells: HashMap<u32, (u32, u64)>,
}

impl ArenaUse {
    /// Allocates a cell of type `ty` here; `None` if this arena cannot give one (full, unmapped, corrupt).
    fn alloc(&mut self, ty: u8, reap: bool) -> Result<Option<CellRef>> {
        let Some(seg) = self.seg.upgrade() else { return Ok(None) };
        let Ok(a) = ArenaRef::new(&seg) else { return Ok(None) };
        if reap {
            a.reap_dead_owners();
        }
        if self.cells.try_reserve(1).is_err() {
            return Err(super::shm::out_of_memory());
        }
        let got = match a.alloc(self.slot, ty) {
            Ok(got) => got,
            Err(Error::NoSpace(m)) => return Err(Error::NoSpace(m)),
            // Dead processes may hold cells nobody else does.
            Err(Error::Full(_)) if a.reap_dead_owners() > 0 => match a.alloc(self.slot, ty) {
                Ok(got) => got,
                Err(_) => return Ok(None),
            },
            Err(_) => return Ok(None),
        };
        let (i, gen) = got;
        self.cells.insert(i, (gen, 1));
        let byte_offset = a.cell_offset(i);
        Ok(Some(CellRef::new(seg, i, gen, byte_offset)))
    }
}

#[derive(Default)]
struct Local {
    arenas: HashMap<String, ArenaUse>,
    /// The arena new objects of each cell size go to.
    current: HashMap<u32, String>,
    /// Per cell size, the current arena kept mapped (and its owner slot claimed) when its last object went:
    /// at most one empty arena per cell size per process, removed by [`trim`] and at exit.
    spare: HashMap<u32, Segment>,
    /// Allocations since the last reaping of dead owners in a current arena.
    allocs: u32,
}

impl Local {
    fn forget(&mut self, name: &str) {
        self.arenas.remove(name);
        self.current.retain(|_, n| n != name);
    }

    /// Lets go of the spare arenas (see [`trim`]); returns their segments, to be dropped after the lock.
    fn take_spares(&mut self) -> Vec<Segment> {
        let spares: Vec<Segment> = self.spare.drain().map(|(_, seg)| seg).collect();
        for seg in &spares {
            let name = seg.name_local();
            if self.arenas.get(name).is_some_and(|au| au.cells.is_empty()) {
                if let (Ok(a), Some(au)) = (ArenaRef::new(seg), self.arenas.get(name)) {
                    a.release_owner(au.slot);
                }
                self.forget(name);
            }
        }
        spares
    }
}

/// Removes this process's spare arenas: the empty arena it kept per cell size for its next small objects
/// (removed like any segment if no other process uses it). At exit this happens anyway ([`release_all`]).
pub fn trim() {
    let spares = {
        let mut g = LOCAL.lock();
        g.as_mut().map(Local::take_spares).unwrap_or_default()
    };
    drop(spares);
}

static LOCAL: SpinMutex<Option<Local>> = SpinMutex::new(None);

/// Allocations between two reapings of dead owners in the arena a process allocates in.
const REAP_EVERY: u32 = 4096;

/// One handle's share of this process's hold on a cell. Dropping (or [`close`](Self::close)) gives it back; the
/// process lets go of the cell when its last share goes.
pub struct CellRef {
    seg: Segment,
    index: u32,
    gen: u32,
    byte_offset: u64,
    released: crate::base::atomic::local::AtomicBool,
}

impl CellRef {
    /// Allocates a cell of `cell_size` bytes ([`CELL_SIZE`] or [`BLOCK_CELL_SIZE`]) for an object of type `ty`
    /// in one of this process's arenas (creating one if needed).
    pub fn alloc(ty: u8, cell_size: u32) -> Result<CellRef> {
        // Now and then (every 2 s at most), what killed processes left behind: segments, and their holds on
        // arena cells. A time check otherwise; not under the local lock.
        super::gc::reap_if_due();
        let mut g = LOCAL.lock();
        let local = g.get_or_insert_with(Local::default);
        local.allocs += 1;
        let reap = local.allocs >= REAP_EVERY;
        if reap {
            local.allocs = 0;
        }
        // The current arena of that size, then any other this process uses, then a new one.
        if let Some(au) = local.current.get(&cell_size).and_then(|n| local.arenas.get_mut(n)) {
            if let Some(r) = au.alloc(ty, reap)? {
                return Ok(r);
            }
            local.current.remove(&cell_size);
        }
        let others: Vec<String> =
            local.arenas.iter().filter(|(_, au)| au.cell_size == cell_size).map(|(n, _)| n.clone()).collect();
        for name in others {
            if let Some(au) = local.arenas.get_mut(&name) {
                if let Some(r) = au.alloc(ty, false)? {
                    local.current.insert(cell_size, name);
                    return Ok(r);
                }
            }
        }
        if local.arenas.try_reserve(1).is_err() {
            return Err(super::shm::out_of_memory());
        }
        let seg = create_arena(cell_size)?;
        let a = ArenaRef::new(&seg)?;
        let slot = a.claim_owner()?;
        let (i, gen) = a.alloc(slot, ty)?;
        let byte_offset = a.cell_offset(i);
        let mut cells = HashMap::new();
        cells.insert(i, (gen, 1));
        let name = seg.name_local().to_string();
        local.arenas.insert(name.clone(), ArenaUse { seg: seg.downgrade(), cell_size, slot, cells });
        local.current.insert(cell_size, name);
        drop(g);
        Ok(CellRef::new(seg, i, gen, byte_offset))
    }

    /// Attaches to the cell a handle names: `offset` (a [`handle_offset`]) of the arena `seg`, holding type `ty`.
    pub fn attach(seg: Segment, offset: u64, ty: u8) -> Result<CellRef> {
        let (byte_offset, gen) = split_handle_offset(offset);
        let a = ArenaRef::new(&seg)?;
        let i = a.index_of(byte_offset)?;
        let mut g = LOCAL.lock();
        let local = g.get_or_insert_with(Local::default);
        let name = seg.name_local();
        if let Some(au) = local.arenas.get_mut(name) {
            if let Some(entry) = au.cells.get_mut(&i) {
                if entry.0 != gen {
                    // We hold a newer object in that cell: the handle's object is gone.
                    return Err(Error::NotFound(format!(
                        "no pyconc object at {byte_offset:#x} of arena {name}: every process that held it has let \
                         go, and its cell holds another object now"
                    )));
                }
                a.check_type(i, ty)?;
                entry.1 += 1;
                drop(g);
                return Ok(CellRef::new(seg, i, gen, byte_offset));
            }
            let slot = au.slot;
            if au.cells.try_reserve(1).is_err() {
                return Err(super::shm::out_of_memory());
            }
            a.attach(slot, i, gen, ty, false)?;
            au.cells.insert(i, (gen, 1));
        } else {
            if local.arenas.try_reserve(1).is_err() {
                return Err(super::shm::out_of_memory());
            }
            let slot = a.claim_owner()?;
            if let Err(e) = a.attach(slot, i, gen, ty, false) {
                a.release_owner(slot);
                return Err(e);
            }
            let mut cells = HashMap::new();
            cells.insert(i, (gen, 1));
            let cell_size = a.cell_size as u32;
            local.arenas.insert(name.to_string(), ArenaUse { seg: seg.downgrade(), cell_size, slot, cells });
        }
        drop(g);
        Ok(CellRef::new(seg, i, gen, byte_offset))
    }

    fn new(seg: Segment, index: u32, gen: u32, byte_offset: u64) -> CellRef {
        CellRef { seg, index, gen, byte_offset, released: crate::base::atomic::local::AtomicBool::new(false) }
    }

    /// The arena.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// Byte offset of the cell in the arena.
    pub fn byte_offset(&self) -> u64 {
        self.byte_offset
    }

    /// The offset a handle carries (generation in the high bits).
    pub fn handle_offset(&self) -> u64 {
        handle_offset(self.byte_offset, self.gen)
    }

    /// Gives this handle's share back now (idempotent): the object must not be used through it any more.
    pub fn close(&self) {
        if self.released.swap(true, crate::base::atomic::local::Ordering::AcqRel) {
            return;
        }
        let mut g = LOCAL.lock();
        let Some(local) = g.as_mut() else { return };
        let name = self.seg.name_local();
        let Some(au) = local.arenas.get_mut(name) else { return };
        let Some(entry) = au.cells.get_mut(&self.index) else { return };
        if entry.0 != self.gen {
            return;
        }
        entry.1 -= 1;
        if entry.1 > 0 {
            return;
        }
        au.cells.remove(&self.index);
        let slot = au.slot;
        let empty = au.cells.is_empty();
        let cell_size = au.cell_size;
        // The arena new objects of this size go to is kept, empty, as this process's spare (see `trim`), so
        // that creating and dropping objects one at a time does not create and remove an arena each time.
        let keep = empty
            && local.current.get(&cell_size).is_some_and(|n| n == name)
            && local.spare.get(&cell_size).is_none_or(|s| s.same_mapping(&self.seg));
        if let Ok(a) = ArenaRef::new(&self.seg) {
            let _ = a.release(slot, self.index);
            if empty && !keep {
                a.release_owner(slot);
            }
        }
        if keep {
            local.spare.entry(cell_size).or_insert_with(|| self.seg.clone());
        } else if empty {
            local.forget(name);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.released.load(crate::base::atomic::local::Ordering::Relaxed)
    }

    /// Marks the object unlinked: processes holding it keep it, new attaches fail with [`Error::NotFound`].
    pub fn unlink(&self) -> Result<()> {
        ArenaRef::new(&self.seg)?.unlink(self.index, self.gen);
        Ok(())
    }

    /// Whether the object is marked unlinked.
    pub fn is_unlinked(&self) -> bool {
        ArenaRef::new(&self.seg).map(|a| a.is_unlinked(self.index, self.gen)).unwrap_or(true)
    }
}

impl ArenaRef<'_> {
    fn check_type(&self, i: u32, ty: u8) -> Result<()> {
        let w = self.meta[i as usize].word.load(Ordering::Acquire);
        if cell_type(w) != ty {
            return Err(Error::Invalid(format!(
                "the cell at {:#x} of arena {} holds object type {}, not {ty}",
                self.cell_offset(i),
                self.name,
                cell_type(w)
            )));
        }
        Ok(())
    }
}

impl Clone for CellRef {
    fn clone(&self) -> Self {
        let mut g = LOCAL.lock();
        if let Some(entry) = g
            .as_mut()
            .and_then(|l| l.arenas.get_mut(self.seg.name_local()))
            .and_then(|au| au.cells.get_mut(&self.index))
            .filter(|e| e.0 == self.gen && !self.is_closed())
        {
            entry.1 += 1;
            return CellRef::new(self.seg.clone(), self.index, self.gen, self.byte_offset);
        }
        drop(g);
        // A closed (or no longer counted) ref clones into a closed one.
        let r = CellRef::new(self.seg.clone(), self.index, self.gen, self.byte_offset);
        r.released.store(true, crate::base::atomic::local::Ordering::Relaxed);
        r
    }
}

impl Drop for CellRef {
    fn drop(&mut self) {
        self.close();
    }
}

/// The object type held by the cell a handle's `offset` names in arena `seg` (0 for a free cell).
pub fn cell_type_of(seg: &Segment, offset: u64) -> Result<u8> {
    let a = ArenaRef::new(seg)?;
    let i = a.index_of(split_handle_offset(offset).0)?;
    if i >= a.hdr.reserved_cells.load(Ordering::Acquire) {
        return Ok(0);
    }
    Ok(cell_type(a.meta[i as usize].word.load(Ordering::Acquire)))
}

/// Live objects of the arena `seg` inspects, after reaping its dead owners (for `ls`/`gc`).
pub fn inspect_live(seg: &Inspected) -> Result<u64> {
    let a = ArenaRef::inspect(seg)?;
    a.reap_dead_owners();
    Ok(a.live())
}

// ---- fork and exit --------------------------------------------------------------------------------------------

/// Before `fork()` (with `shm::before_fork`): the child must inherit a consistent local table.
pub fn before_fork() {
    LOCAL.raw_lock();
}

/// After `fork()`, in the parent.
pub fn after_fork_parent() {
    // SAFETY: before_fork took the lock in this thread.
    unsafe { LOCAL.raw_unlock() };
}

/// After `fork()`, in the child: the child holds every cell it inherited a handle of, so it claims an owner slot
/// in each arena and counts itself as a holder (an unlinked cell too: the handle is inherited, not new). Cells
/// it cannot hold (the arena's owner table is full) are dropped from its table, so its handles still work but do
/// not keep the objects alive.
pub fn after_fork_child() {
    let mut keep = Vec::new();
    {
        // SAFETY: before_fork took the lock in the parent's forking thread, which is this thread in the child.
        let local = unsafe { LOCAL.raw_get() };
        if let Some(local) = local.as_mut() {
            local.arenas.retain(|_, au| {
                if au.cells.is_empty() {
                    return false; // a spare of the parent's
                }
                let Some(seg) = au.seg.upgrade() else { return false };
                let held = (|| {
                    let a = ArenaRef::new(&seg).ok()?;
                    let slot = a.claim_owner().ok()?;
                    au.slot = slot;
                    au.cells.retain(|&i, e| {
                        let w = a.meta[i as usize].word.load(Ordering::Acquire);
                        a.attach(slot, i, e.0, cell_type(w), true).is_ok()
                    });
                    if au.cells.is_empty() {
                        a.release_owner(slot);
                    }
                    Some(())
                })();
                // Dropped after the lock is released: a last reference's drop must not run under it.
                keep.push(seg);
                held.is_some() && !au.cells.is_empty()
            });
            // The parent's spares are its own: the child does not keep them.
            keep.extend(local.spare.drain().map(|(_, seg)| seg));
            let arenas = &local.arenas;
            local.current.retain(|_, n| arenas.contains_key(n));
        }
        // SAFETY: we hold the lock (inherited from before_fork).
        unsafe { LOCAL.raw_unlock() };
    }
    drop(keep);
}

/// Releases every hold of this process (at exit; see `shm::release_all`). Handles used afterwards still work but
/// no longer keep their objects alive.
pub fn release_all() {
    let mut keep = Vec::new();
    {
        let mut g = LOCAL.lock();
        if let Some(local) = g.as_mut() {
            for (_, au) in local.arenas.drain() {
                if let Some(seg) = au.seg.upgrade() {
                    if let Ok(a) = ArenaRef::new(&seg) {
                        for &i in au.cells.keys() {
                            let _ = a.release(au.slot, i);
                        }
                        a.release_owner(au.slot);
                    }
                    keep.push(seg);
                }
            }
            local.current.clear();
            keep.extend(local.spare.drain().map(|(_, seg)| seg));
        }
    }
    drop(keep);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn meta_word(r: &CellRef) -> u64 {
        let a = ArenaRef::new(r.segment()).unwrap();
        a.meta[r.index as usize].word.load(Ordering::Relaxed)
    }

    #[test]
    fn cells_are_shared_counted_and_freed_with_their_last_handle() {
        let a = CellRef::alloc(TYPE_ATOMIC, CELL_SIZE).unwrap();
        let b = CellRef::alloc(TYPE_ATOMIC, CELL_SIZE).unwrap();
        assert!(a.segment().same_mapping(b.segment()), "one arena for both");
        assert_ne!(a.byte_offset(), b.byte_offset());
        assert_eq!(holders(meta_word(&a)), 1);
        let a2 = CellRef::attach(a.segment().clone(), a.handle_offset(), TYPE_ATOMIC).unwrap();
        assert_eq!(holders(meta_word(&a)), 1, "a second handle in the same process shares the hold");
        let wrong = CellRef::attach(a.segment().clone(), a.handle_offset(), TYPE_SYNC + 1);
        assert!(matches!(wrong, Err(Error::Invalid(_))), "type checked");
        let (seg, off, gen) = (a.segment().clone(), a.handle_offset(), a.gen);
        drop(a);
        assert_eq!(state(meta_word(&a2)), CELL_LIVE);
        drop(a2);
        let ar = ArenaRef::new(&seg).unwrap();
        let i = ar.index_of(split_handle_offset(off).0).unwrap();
        assert_eq!(state(ar.meta[i as usize].word.load(Ordering::Relaxed)), CELL_FREE);
        // The freed cell is reused, with a new generation: the old handle is stale.
        // (Other tests allocate in this process's arena at the same time: take cells until we get it back.)
        let mut taken: Vec<CellRef> = (0..64).map(|_| CellRef::alloc(TYPE_ATOMIC, CELL_SIZE).unwrap()).collect();
        let at = taken.iter().position(|c| c.byte_offset() == split_handle_offset(off).0).expect("reused");
        let c = taken.swap_remove(at);
        assert_ne!(c.gen, gen);
        let stale = CellRef::attach(seg.clone(), off, TYPE_ATOMIC);
        assert!(matches!(stale, Err(Error::NotFound(_))), "stale handle");
        drop((b, c, taken, seg));
    }

    #[test]
    fn unlink_blocks_new_attaches_only() {
        let a = CellRef::alloc(TYPE_ATOMIC, CELL_SIZE).unwrap();
        let keep = CellRef::alloc(TYPE_ATOMIC, CELL_SIZE).unwrap();
        a.unlink().unwrap();
        assert!(a.is_unlinked());
        // Another owner (as another process would be) cannot attach; this process's own new handles share its hold.
        let ar = ArenaRef::new(a.segment()).unwrap();
        let i = ar.index_of(a.byte_offset()).unwrap();
        assert!(matches!(ar.attach(0, i, a.gen, TYPE_ATOMIC, false), Err(Error::NotFound(_))));
        drop((a, keep));
    }

    #[test]
    fn dead_owners_are_reaped() {
        let a = CellRef::alloc(TYPE_ATOMIC, CELL_SIZE).unwrap();
        let ar = ArenaRef::new(a.segment()).unwrap();
        let i = ar.index_of(a.byte_offset()).unwrap();
        // A dead process holding the cell: its owner slot and bit, counted in the meta word.
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let id = process::identity_of(c.id()).unwrap_or(process::ProcessId { pid: c.id(), start_time: 1 });
        c.wait().unwrap();
        let dead = OWNER_COUNT - 1;
        ar.owners[dead as usize].owner.store(Owner::of(id).0, Ordering::Relaxed);
        ar.attach(dead, i, a.gen, TYPE_ATOMIC, false).unwrap();
        assert_eq!(holders(meta_word(&a)), 2);
        assert_eq!(ar.reap_dead_owners(), 1);
        assert_eq!(holders(meta_word(&a)), 1);
        drop(a);
    }

    #[test]
    fn corrupt_headers_and_offsets_are_errors() {
        let a = CellRef::alloc(TYPE_ATOMIC, CELL_SIZE).unwrap();
        let seg = a.segment().clone();
        let ar = ArenaRef::new(&seg).unwrap();
        for off in [0, 64, ar.cells_offset - 64, ar.cells_offset + 8, ar.cell_offset(CELL_COUNT)] {
            assert!(ar.index_of(off).is_err(), "{off}");
        }
        let h = ar.header();
        let save = h.cells_offset.load(Ordering::Relaxed);
        for bad in [0, 1 << 40, save + 8, h.meta_offset.load(Ordering::Relaxed)] {
            h.cells_offset.store(bad, Ordering::Relaxed);
            assert!(ArenaRef::new(&seg).is_err(), "{bad}");
        }
        h.cells_offset.store(save, Ordering::Relaxed);
        let head = h.free_head.load(Ordering::Relaxed);
        h.free_head.store(CELL_COUNT as u64 + 5, Ordering::Relaxed);
        assert!(matches!(ar.alloc(0, TYPE_ATOMIC), Err(Error::Corrupt(_))));
        h.free_head.store(head, Ordering::Relaxed);
        drop((a, seg));
    }
}
