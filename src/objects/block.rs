//! A fixed-size byte block with a lock word in front: the storage of `Value`, `Array`, `RawValue` and
//! `RawArray`. Layout: `shm-layouts/block.md`. A block whose items fit [`BLOCK_CELL_ITEMS`] bytes may live in a
//! 256-byte cell of an arena (`segment::arena`; `create_small`): its header at the cell's start (so the
//! embedded lock is at the cell's offset), its items 128 bytes further.

use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::error::corrupt;
use crate::segment::arena::{self, CellRef, BLOCK_CELL_ITEMS, BLOCK_CELL_SIZE, TYPE_BLOCK};
use crate::segment::header::DATA_OFFSET;
use crate::segment::shm::Reserve;
use crate::segment::{Kind, Mapped, MappedBytes, Offset, Segment, ShmSafe};
use crate::shm_struct;
use crate::sync::shared::{SyncHandle, SyncType};
use crate::{Error, Result};

/// Payload layout version of [`Kind::Block`] segments.
pub const BLOCK_VERSION: u32 = 1;
/// Size of [`ArrayHeader`].
pub const BLOCK_HEADER_SIZE: u64 = 128;
/// Offset of the items from the block header (64-aligned). The payload starts 256 bytes before the end of the
/// header page (see `segment::header::DATA_OFFSET`), so the first 128 bytes of items share that page, which
/// creation writes anyway: a small Value costs one page, and the first write to an array faults no new page.
pub const ITEMS_AT: u64 = BLOCK_HEADER_SIZE;

shm_struct! {
    /// The block header, at the payload offset of the segment.
    pub struct ArrayHeader {
        /// Storage for the block's lock (`get_lock()` of a synchronized `Value`/`Array`). Its layout is the sync
        /// module's; 64 bytes are reserved here.
        pub lock: [AtomicU64; 8],
        /// The `array`-module typecode as an ASCII code, or 0 for a ctypes type.
        pub typecode: AtomicU32,
        /// Size of one item.
        pub itemsize: AtomicU32,
        /// Number of items (1 for a Value).
        pub length: AtomicU64,
        /// Offset of the items in the segment.
        pub items_offset: AtomicU64,
        /// Unused; zero.
        pub reserved: [AtomicU64; 5],
    }
}

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<ArrayHeader>() == BLOCK_HEADER_SIZE as usize);
    assert!(offset_of!(ArrayHeader, lock) == 0);
    assert!(offset_of!(ArrayHeader, typecode) == 64);
    assert!(offset_of!(ArrayHeader, itemsize) == 68);
    assert!(offset_of!(ArrayHeader, length) == 72);
    assert!(offset_of!(ArrayHeader, items_offset) == 80);
};

/// A process-local handle to a block.
#[derive(Clone)]
pub struct SharedBlock {
    header: Mapped<ArrayHeader>,
    items: MappedBytes,
    /// Copies of the header's immutable fields, validated once: reading them again would fault in the header
    /// page, which creating a block avoids (see `Segment::create_with`).
    typecode: u32,
    itemsize: u32,
    length: u64,
    /// This handle's share of the process's hold on its arena cell (`None`: the block has its own segment).
    hold: Option<CellRef>,
}

impl SharedBlock {
    /// Creates a zero-filled block in an arena cell if its items fit one ([`BLOCK_CELL_ITEMS`] bytes), else in a
    /// segment of its own (as [`create_reserving`](Self::create_reserving)).
    pub fn create_small(typecode: u32, itemsize: u32, length: u64, reserve: bool) -> Result<SharedBlock> {
        let fits = (itemsize as u64).checked_mul(length).is_some_and(|n| n <= BLOCK_CELL_ITEMS as u64);
        if !fits {
            return Self::create_reserving(typecode, itemsize, length, reserve);
        }
        let hold = CellRef::alloc(TYPE_BLOCK, BLOCK_CELL_SIZE)?;
        let at = hold.byte_offset();
        let seg = hold.segment().clone();
        let header: Mapped<ArrayHeader> = Mapped::new(&seg, Offset::new(at))?;
        header.typecode.store(typecode, Ordering::Relaxed);
        header.itemsize.store(itemsize, Ordering::Relaxed);
        header.length.store(length, Ordering::Relaxed);
        header.items_offset.store(at + ITEMS_AT, Ordering::Release);
        let items = MappedBytes::new(&seg, at + ITEMS_AT, itemsize as u64 * length)?;
        Ok(SharedBlock { header, items, typecode, itemsize, length, hold: Some(hold) })
    }

    /// Attaches to the block in the arena cell a handle names (`offset`: a handle offset, with the generation).
    pub fn from_arena(seg: Segment, offset: u64) -> Result<SharedBlock> {
        let hold = CellRef::attach(seg, offset, TYPE_BLOCK)?;
        let at = hold.byte_offset();
        let seg = hold.segment().clone();
        let header: Mapped<ArrayHeader> = Mapped::new(&seg, Offset::new(at))?;
        let typecode = header.typecode.load(Ordering::Relaxed);
        let itemsize = header.itemsize.load(Ordering::Relaxed);
        let length = header.length.load(Ordering::Relaxed);
        let items_offset = header.items_offset.load(Ordering::Acquire);
        let nbytes = (itemsize as u64).checked_mul(length).filter(|&n| n <= BLOCK_CELL_ITEMS as u64);
        let Some(nbytes) = nbytes.filter(|_| items_offset == at + ITEMS_AT) else {
            return Err(corrupt!(
                "{}: block in the cell at {at:#x} has {length} items of {itemsize} bytes at {items_offset:#x}",
                seg.name_local()
            ));
        };
        let items = MappedBytes::new(&seg, items_offset, nbytes)?;
        Ok(SharedBlock { header, items, typecode, itemsize, length, hold: Some(hold) })
    }

    /// Attaches to the block a handle names: `offset` of the segment `name` (an arena cell or a block's own
    /// segment, whose handles point at its payload).
    pub fn open_handle(name: &str, offset: u64) -> Result<SharedBlock> {
        let seg = Segment::open(name)?;
        if seg.info().kind == Kind::Arena {
            return Self::from_arena(seg, offset);
        }
        let b = Self::from_segment(seg)?;
        if offset != b.segment().info().data_offset {
            return Err(Error::Invalid(format!(
                "offset {offset:#x} of {}: a block lives at the start of its segment",
                b.segment().name_local()
            )));
        }
        Ok(b)
    }

    /// The offset a handle carries: the payload offset of a block's own segment, or the arena cell's handle
    /// offset (with its generation).
    pub fn handle_offset(&self) -> u64 {
        match &self.hold {
            Some(h) => h.handle_offset(),
            None => self.header.segment().info().data_offset,
        }
    }

    /// In an arena: gives this handle's share of the process's hold back (the block must not be used through
    /// this handle afterwards). Nothing for a block's own segment.
    pub fn close(&self) {
        if let Some(h) = &self.hold {
            h.close();
        }
    }

    /// Stops new processes from attaching (the arena cell is marked unlinked, or the segment's name removed).
    pub fn unlink(&self) -> Result<()> {
        match &self.hold {
            Some(h) => h.unlink(),
            None => self.segment().unlink(),
        }
    }
    /// Creates a zero-filled block of `length` items of `itemsize` bytes, recording `typecode` (0 for none),
    /// with all its pages reserved in /dev/shm.
    pub fn create(typecode: u32, itemsize: u32, length: u64) -> Result<SharedBlock> {
        Self::create_reserving(typecode, itemsize, length, true)
    }

    /// [`create`](Self::create); with `reserve` false only the header page is allocated now (as fast as
    /// `SharedMemory`, and like it a write to an item whose page a full /dev/shm cannot back is a SIGBUS).
    pub fn create_reserving(typecode: u32, itemsize: u32, length: u64, reserve: bool) -> Result<SharedBlock> {
        let nbytes = (itemsize as u64)
            .checked_mul(length)
            .ok_or_else(|| Error::Invalid(format!("{length} items of {itemsize} bytes overflow")))?;
        // Built locally and written with the segment header (see Segment::create_with).
        let init = [0u64; BLOCK_HEADER_SIZE as usize / 8];
        {
            // SAFETY: `init` is 8-aligned and exactly size_of::<ArrayHeader>() bytes; ArrayHeader is ShmSafe.
            let hdr = unsafe { &*(init.as_ptr() as *const ArrayHeader) };
            hdr.typecode.store(typecode, Ordering::Relaxed);
            hdr.itemsize.store(itemsize, Ordering::Relaxed);
            hdr.length.store(length, Ordering::Relaxed);
            hdr.items_offset.store(DATA_OFFSET + ITEMS_AT, Ordering::Relaxed);
        }
        // SAFETY: `init` is BLOCK_HEADER_SIZE initialised bytes.
        let bytes = unsafe { std::slice::from_raw_parts(init.as_ptr() as *const u8, BLOCK_HEADER_SIZE as usize) };
        let reserve = if reserve { Reserve::All } else { Reserve::HeaderOnly };
        let seg = Segment::create_reserving(Kind::Block, BLOCK_VERSION, ITEMS_AT + nbytes, bytes, reserve)?;
        // Not from_segment: that reads the header back through the mapping, a page fault creation can skip.
        let header = Mapped::new(&seg, seg.data_offset())?;
        let items = MappedBytes::new(&seg, DATA_OFFSET + ITEMS_AT, nbytes)?;
        Ok(SharedBlock { header, items, typecode, itemsize, length, hold: None })
    }

    /// Attaches to the block in `seg`, validating kind, version and the item range.
    pub fn from_segment(seg: Segment) -> Result<SharedBlock> {
        seg.info().expect(seg.name_local(), Kind::Block, BLOCK_VERSION)?;
        let off: Offset<ArrayHeader> = seg.data_offset();
        let hdr = seg.resolve(off)?;
        let typecode = hdr.typecode.load(Ordering::Relaxed);
        let itemsize = hdr.itemsize.load(Ordering::Relaxed);
        let length = hdr.length.load(Ordering::Relaxed);
        let items_offset = hdr.items_offset.load(Ordering::Acquire);
        let nbytes = (itemsize as u64)
            .checked_mul(length)
            .ok_or_else(|| corrupt!("{}: block size overflows", seg.name_local()))?;
        if items_offset < off.get() + BLOCK_HEADER_SIZE || items_offset % 64 != 0 {
            return Err(corrupt!("{}: block items at invalid offset {items_offset:#x}", seg.name_local()));
        }
        let items = MappedBytes::new(&seg, items_offset, nbytes)?;
        Ok(SharedBlock { header: Mapped::new(&seg, off)?, items, typecode, itemsize, length, hold: None })
    }

    /// Opens the block in the segment called `name`.
    pub fn open(name: &str) -> Result<SharedBlock> {
        Self::from_segment(Segment::open(name)?)
    }

    /// The header.
    pub fn header(&self) -> &ArrayHeader {
        &self.header
    }

    /// Recorded typecode (0 for a ctypes type).
    pub fn typecode(&self) -> u32 {
        self.typecode
    }

    /// Item size.
    pub fn itemsize(&self) -> u32 {
        self.itemsize
    }

    /// Item count.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Pointer to the items (valid for [`nbytes`](Self::nbytes) bytes while `self` lives).
    pub fn items_ptr(&self) -> *mut u8 {
        self.items.as_ptr()
    }

    /// Size of the items in bytes.
    pub fn nbytes(&self) -> usize {
        self.items.len()
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        self.header.segment()
    }

    /// Offset of the lock storage in the segment, as a lock's handle carries it (in an arena, the cell's handle
    /// offset: the lock is at the cell's start).
    pub fn lock_offset(&self) -> u64 {
        self.handle_offset()
    }

    /// The `Lock` or `RLock` embedded in this block, which a handle says lives at `offset`.
    pub fn lock<T: ShmSafe>(&self, offset: u64, ty: SyncType) -> Result<SyncHandle<T>> {
        if offset != self.lock_offset() {
            return Err(Error::Invalid(format!(
                "offset {offset:#x} of {} is not where its embedded lock lives",
                self.header.segment().name_local()
            )));
        }
        match &self.hold {
            Some(h) => SyncHandle::attach_embedded_in_cell(h.clone(), ty),
            None => SyncHandle::attach_embedded(self.header.segment().clone(), offset, ty),
        }
    }
}

/// Attaches to the primitive `ty` that a handle says lives at `offset` of `seg`: a primitive's own segment, or a
/// lock embedded in a `Value`/`Array` block (validated by the block).
pub fn attach_sync<T: ShmSafe>(seg: Segment, offset: u64, ty: SyncType) -> Result<SyncHandle<T>> {
    match seg.info().kind {
        Kind::Block => SharedBlock::from_segment(seg)?.lock(offset, ty),
        Kind::Arena if arena::cell_type_of(&seg, offset)? == TYPE_BLOCK => {
            SharedBlock::from_arena(seg, offset)?.lock(offset, ty)
        }
        // An arena cell or a primitive's own segment.
        _ => SyncHandle::attach(seg, offset, ty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_lock_in_a_block() {
        use crate::sync::lock::{Acquired, LockState, RLockState, RawLock};
        use crate::sync::semaphore::{EventState, SemState};
        let open = |name: &str, off: u64, ty| attach_sync::<LockState>(Segment::open(name)?, off, ty);
        let blk = SharedBlock::create(b'i' as u32, 4, 4).unwrap();
        let name = blk.segment().name().to_string();
        let l = open(&name, blk.lock_offset(), SyncType::Lock).unwrap();
        let r = attach_sync::<RLockState>(Segment::open(&name).unwrap(), blk.lock_offset(), SyncType::RLock).unwrap();
        assert_eq!(l.get().try_lock(), Some(Acquired::Normal));
        assert!(r.get().0.is_locked());
        assert!(l.get().release());
        assert!(open(&name, blk.lock_offset() + 8, SyncType::Lock).is_err());
        assert!(open(&name, blk.segment().len() - 8, SyncType::Lock).is_err());
        assert!(open(&name, 0, SyncType::Lock).is_err(), "header");
        let ev_in_block = attach_sync::<EventState>(Segment::open(&name).unwrap(), blk.lock_offset(), SyncType::Event);
        assert!(ev_in_block.is_err(), "only locks are embedded");
        let ev = SyncHandle::<EventState>::create(SyncType::Event, 0, 0).unwrap();
        let sem = attach_sync::<SemState>(ev.segment().clone(), ev.offset(), SyncType::Semaphore);
        assert!(sem.is_err(), "type recorded in the sync header is checked");
        let moved = attach_sync::<EventState>(ev.segment().clone(), ev.offset() + 8, SyncType::Event);
        assert!(moved.is_err(), "a primitive's own segment holds it at one offset only");
    }

    #[test]
    fn block_is_shared_between_handles() {
        let b = SharedBlock::create(b'd' as u32, 8, 1000).unwrap();
        assert_eq!(b.nbytes(), 8000);
        assert_eq!(b.items_ptr() as usize % 64, 0);
        // SAFETY: in bounds (8000 bytes).
        unsafe { std::ptr::write_bytes(b.items_ptr(), 7, 8000) };
        let c = SharedBlock::open(b.segment().name()).unwrap();
        assert_eq!((c.typecode(), c.itemsize(), c.length()), (b'd' as u32, 8, 1000));
        // SAFETY: in bounds.
        assert_eq!(unsafe { *c.items_ptr().add(7999) }, 7);
    }

    #[test]
    fn corrupt_length_is_rejected() {
        let b = SharedBlock::create(0, 4, 10).unwrap();
        b.header().length.store(1 << 40, Ordering::Relaxed);
        assert!(matches!(SharedBlock::from_segment(b.segment().clone()), Err(Error::Corrupt(_))));
    }
}
