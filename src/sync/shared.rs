//! Primitives placed in segments: a cell of an arena (`segment::arena`: `Lock`, `RLock`, `Semaphore`, `Event`,
//! whose state fits a 64-byte cell), their own `Kind::Sync` segment (`Condition`'s wait table, `Barrier`,
//! `RWLock`, whose state is larger or grows; and handles made before arenas), or embedded at an offset of another
//! segment (a `Value`/`Array` block's lock).
//!
//! An arena cell's meta word records which primitive it holds; a handle's offset carries the cell's generation
//! (`arena::handle_offset`), so a handle whose object was freed is `NotFound` even after the cell was reused.
//!
//! A primitive's own segment holds a 64-byte [`SyncHeader`] at the payload offset (which primitive, and its
//! parameter), then the state at payload + [`STATE_AT`]. A handle is (segment name, offset of the state); opening
//! one checks the segment kind and version, the bounds and alignment of the state, and, for own segments, that
//! the header names the same primitive.

use super::barrier::{slots_for, BarrierRef, BarrierSlot, BarrierState};
use super::condvar::{CondSlot, CondState, TooManyWaiters, COND_SLOTS};
use crate::base::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::segment::arena::{CellRef, CELL_SIZE, TYPE_SYNC};
use crate::segment::header::HEADER_PAGE;
use crate::segment::owners::Owner;
use crate::segment::shm::Reserve;
use crate::segment::{Kind, Mapped, MappedSlice, Offset, Segment, ShmSafe};
use crate::shm_struct;
use crate::{Error, Result};

/// Payload layout version of `Kind::Sync` segments (`shm-layouts/sync.md`).
pub const SYNC_VERSION: u32 = 4;
/// Offset of the state from the payload start of a primitive's own segment.
pub const STATE_AT: u64 = 64;
/// Bytes reserved for an embedded lock (`objects::block::ArrayHeader::lock`).
pub const EMBEDDED_LOCK_BYTES: usize = 64;
/// Largest party count of a Barrier.
pub const MAX_PARTIES: u32 = 1 << 16;

/// Which primitive lives at an offset: stored in its own segment's [`SyncHeader`] and named by its handle. The
/// segment's layout is the separate [`Kind`] tag (`Kind::Sync`, or `Kind::Block` for an embedded lock); the two
/// share no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SyncType {
    /// `Lock`.
    Lock = 1,
    /// `RLock`.
    RLock = 2,
    /// `Semaphore` / `BoundedSemaphore`.
    Semaphore = 3,
    /// `Event`.
    Event = 4,
    /// The wait queue of a `Condition`.
    Condition = 5,
    /// `Barrier`.
    Barrier = 6,
    /// `RWLock`.
    RwLock = 7,
}

impl SyncType {
    /// The primitive's name.
    pub fn name(self) -> &'static str {
        match self {
            SyncType::Lock => "Lock",
            SyncType::RLock => "RLock",
            SyncType::Semaphore => "Semaphore",
            SyncType::Event => "Event",
            SyncType::Condition => "Condition",
            SyncType::Barrier => "Barrier",
            SyncType::RwLock => "RWLock",
        }
    }

    fn embeddable(self) -> bool {
        matches!(self, SyncType::Lock | SyncType::RLock)
    }

    /// Whether this primitive lives in an arena cell (when its state fits one).
    fn in_arena(self) -> bool {
        matches!(self, SyncType::Lock | SyncType::RLock | SyncType::Semaphore | SyncType::Event)
    }

    /// The object type an arena cell records for it.
    fn cell_type(self) -> u8 {
        TYPE_SYNC + self as u8
    }
}

shm_struct! {
    /// The header of a primitive's own segment.
    pub struct SyncHeader {
        /// A [`SyncType`].
        pub type_code: AtomicU32,
        /// Its parameter (Barrier: parties; others 0).
        pub param: AtomicU32,
        /// Unused; zero.
        pub reserved: [AtomicU64; 7],
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<SyncHeader>() == STATE_AT as usize);
    assert!(std::mem::size_of::<super::lock::LockState>() <= EMBEDDED_LOCK_BYTES);
};

/// A process-local handle to a `T` in a segment. Clones share the mapping (and, in an arena, the hold).
pub struct SyncHandle<T: ShmSafe> {
    state: Mapped<T>,
    /// This handle's share of the process's hold on its arena cell (`None`: not in an arena).
    hold: Option<CellRef>,
}

impl<T: ShmSafe> Clone for SyncHandle<T> {
    fn clone(&self) -> Self {
        SyncHandle { state: self.state.clone(), hold: self.hold.clone() }
    }
}

impl<T: ShmSafe> SyncHandle<T> {
    /// Creates one `ty` whose state is a `T` followed by `extra` bytes, all zero: in an arena cell when it fits
    /// one (and `ty` is an arena primitive), else in a segment of its own.
    pub fn create(ty: SyncType, param: u32, extra: u64) -> Result<Self> {
        Self::create_reserving(ty, param, extra, Reserve::All)
    }

    /// [`create`](Self::create), reserving in /dev/shm only what `reserve` says (the primitive reserves the rest
    /// before it touches it).
    pub fn create_reserving(ty: SyncType, param: u32, extra: u64, reserve: Reserve) -> Result<Self> {
        if ty.in_arena() && param == 0 && std::mem::size_of::<T>() as u64 + extra <= CELL_SIZE as u64 {
            let hold = CellRef::alloc(ty.cell_type(), CELL_SIZE)?;
            let state = Mapped::new(hold.segment(), Offset::new(hold.byte_offset()))?;
            return Ok(SyncHandle { state, hold: Some(hold) });
        }
        let size = STATE_AT + std::mem::size_of::<T>() as u64 + extra;
        let seg = Segment::create_reserving(Kind::Sync, SYNC_VERSION, size, &[], reserve)?;
        let hdr: &SyncHeader = seg.resolve(seg.data_offset())?;
        hdr.param.store(param, Ordering::Relaxed);
        hdr.type_code.store(ty as u32, Ordering::Release);
        let off = seg.info().data_offset + STATE_AT;
        Self::attach(seg, off, ty)
    }

    /// Attaches to the `T` in `seg`, a primitive's own segment, at `offset`, checking kind, version, bounds,
    /// alignment and the primitive type its header names.
    pub fn attach(seg: Segment, offset: u64, ty: SyncType) -> Result<Self> {
        let info = *seg.info();
        if info.kind == Kind::Arena && ty.in_arena() {
            if std::mem::size_of::<T>() > CELL_SIZE as usize {
                return Err(Error::Invalid(format!("a {} does not fit an arena cell", ty.name())));
            }
            let hold = CellRef::attach(seg, offset, ty.cell_type())?;
            let state = Mapped::new(hold.segment(), Offset::new(hold.byte_offset()))?;
            return Ok(SyncHandle { state, hold: Some(hold) });
        }
        if info.kind != Kind::Sync {
            return Err(Error::Invalid(format!(
                "{} holds a {} structure, not a sync primitive ({})",
                seg.name_local(),
                info.kind.name(),
                ty.name()
            )));
        }
        info.expect(seg.name_local(), Kind::Sync, SYNC_VERSION)?;
        if offset != info.data_offset + STATE_AT {
            return Err(Error::Invalid(format!(
                "offset {offset:#x} of {} is not where its {} lives",
                seg.name_local(),
                ty.name()
            )));
        }
        let hdr: &SyncHeader = seg.resolve(seg.data_offset())?;
        let code = hdr.type_code.load(Ordering::Acquire);
        if code != ty as u32 {
            return Err(Error::Invalid(format!(
                "{} holds sync primitive type {code}, not a {}",
                seg.name_local(),
                ty.name()
            )));
        }
        Self::attach_at(seg, offset)
    }

    /// Attaches to a lock embedded at `offset` of another structure's segment. The host structure's own layer
    /// has validated its segment and that a `ty` lives at `offset` (e.g. `SharedBlock::lock`); this checks
    /// that `ty` can be embedded, and the bounds and alignment.
    pub fn attach_embedded(seg: Segment, offset: u64, ty: SyncType) -> Result<Self> {
        if !ty.embeddable() {
            return Err(Error::Invalid(format!("a {} cannot be embedded in another structure", ty.name())));
        }
        Self::attach_at(seg, offset)
    }

    /// Attaches to a lock embedded at the start of the arena cell `cell` holds (a small `Value`/`Array` block,
    /// validated by the block), sharing that hold.
    pub fn attach_embedded_in_cell(cell: CellRef, ty: SyncType) -> Result<Self> {
        if !ty.embeddable() {
            return Err(Error::Invalid(format!("a {} cannot be embedded in another structure", ty.name())));
        }
        let state = Mapped::new(cell.segment(), Offset::new(cell.byte_offset()))?;
        Ok(SyncHandle { state, hold: Some(cell) })
    }

    fn attach_at(seg: Segment, offset: u64) -> Result<Self> {
        if offset < seg.info().data_offset {
            return Err(Error::Invalid(format!(
                "offset {offset:#x} of {} is inside the segment header",
                seg.name_local()
            )));
        }
        Ok(SyncHandle { state: Mapped::new(&seg, Offset::new(offset))?, hold: None })
    }

    /// Opens the segment `name` and attaches at `offset`.
    pub fn open(name: &str, offset: u64, ty: SyncType) -> Result<Self> {
        Self::attach(Segment::open(name)?, offset, ty)
    }

    /// The state.
    #[inline]
    pub fn get(&self) -> &T {
        &self.state
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        self.state.segment()
    }

    /// The offset a handle carries: the state's offset in the segment (in an arena, with the cell's generation
    /// in the high 32 bits).
    pub fn offset(&self) -> u64 {
        match &self.hold {
            Some(h) => h.handle_offset(),
            None => self.state.offset(),
        }
    }

    /// Whether the primitive lives in an arena cell.
    pub fn in_arena(&self) -> bool {
        self.hold.is_some()
    }

    /// In an arena: gives this handle's share of the process's hold back (the process lets go of the object
    /// with its last share), after which the handle must not be used. Idempotent; nothing for other segments
    /// (their mapping goes when the handle is dropped).
    pub fn close(&self) {
        if let Some(h) = &self.hold {
            h.close();
        }
    }

    /// Stops new processes from attaching: the arena cell is marked unlinked, or the segment's name removed.
    /// Processes that hold the primitive keep it. (For a lock embedded in a block, that unlinks the block.)
    pub fn unlink(&self) -> Result<()> {
        match &self.hold {
            Some(h) => h.unlink(),
            None => self.segment().unlink(),
        }
    }
}

/// Why [`CondHandle::prepare`] failed.
#[derive(Debug)]
pub enum PrepareError {
    /// Every slot holds a live waiter.
    TooManyWaiters,
    /// The next page of the slot table could not be reserved in /dev/shm (it is full).
    NoSpace(Error),
}

/// A Condition's wait queue in its segment. Only the header page is reserved at creation (it holds the queue's
/// head and its first slots); the slot table's other pages are reserved as waiters need them, and this handle
/// lets the queue read no slot it has not checked to be reserved, so 1,024 slots cost one page until more
/// than a few threads wait at once, and a full /dev/shm is a `MemoryError` at the `wait()` that needs a page,
/// never a SIGBUS.
pub struct CondHandle {
    h: SyncHandle<CondState>,
    /// Slots this handle has checked are backed by /dev/shm (process-local: reserving is idempotent).
    room: crate::base::atomic::local::AtomicU32,
}

impl Clone for CondHandle {
    fn clone(&self) -> Self {
        let room = self.room.load(crate::base::atomic::local::Ordering::Relaxed);
        CondHandle { h: self.h.clone(), room: crate::base::atomic::local::AtomicU32::new(room) }
    }
}

impl CondHandle {
    /// Creates a Condition's wait queue.
    pub fn create() -> Result<Self> {
        Ok(Self::from_handle(SyncHandle::create_reserving(SyncType::Condition, 0, 0, Reserve::HeaderOnly)?))
    }

    /// Wraps an opened handle.
    pub fn from_handle(h: SyncHandle<CondState>) -> Self {
        // The slots on the header page are reserved: creation writes that page.
        let first = Self::slots_at(&h);
        let on_header_page = HEADER_PAGE.saturating_sub(first) / std::mem::size_of::<CondSlot>() as u64;
        let room = (on_header_page as usize).min(COND_SLOTS) as u32;
        CondHandle { h, room: crate::base::atomic::local::AtomicU32::new(room) }
    }

    fn slots_at(h: &SyncHandle<CondState>) -> u64 {
        h.offset() + std::mem::offset_of!(CondState, slots) as u64
    }

    /// Makes sure the first `want` slots are reserved (up to the end of their last page); returns how many are
    /// known to be, or the reservation's error.
    fn reserve(&self, want: usize) -> Result<usize> {
        use crate::base::atomic::local::Ordering as L;
        let want = want.min(COND_SLOTS);
        let have = self.room.load(L::Relaxed) as usize;
        if want <= have {
            return Ok(have);
        }
        let size = std::mem::size_of::<CondSlot>() as u64;
        let first = Self::slots_at(&self.h);
        let end = (first + want as u64 * size).next_multiple_of(HEADER_PAGE);
        let n = (((end - first) / size) as usize).min(COND_SLOTS);
        self.h.segment().reserve(first, n as u64 * size)?;
        Ok(self.room.fetch_max(n as u32, L::Relaxed).max(n as u32) as usize)
    }

    /// How many slots from the start may be read, reserving up to `want` if possible.
    fn room(&self, want: usize) -> usize {
        self.reserve(want).unwrap_or_else(|_| self.room.load(crate::base::atomic::local::Ordering::Relaxed) as usize)
    }

    /// Registers the caller as a waiter (call with the condition's lock held), reserving the next page of the
    /// table first if the claim may need it.
    pub fn prepare(&self) -> std::result::Result<usize, PrepareError> {
        let st = self.h.get();
        match self.reserve(st.used() + 1) {
            Ok(room) => st.prepare_as(Owner::me(), room).map_err(|TooManyWaiters| PrepareError::TooManyWaiters),
            // No page for a new slot: a free (or dead waiter's) slot among the reserved ones still does.
            Err(e) => st.prepare_as(Owner::me(), self.room(0)).map_err(|TooManyWaiters| PrepareError::NoSpace(e)),
        }
    }

    /// Wakes up to `n` waiters, longest waiting first (call with the condition's lock held); returns how many.
    pub fn notify(&self, n: usize) -> usize {
        let st = self.h.get();
        st.notify(n, self.room(st.used()))
    }

    /// Registered waiters.
    pub fn waiting(&self) -> usize {
        let st = self.h.get();
        st.waiting(self.room(st.used()))
    }

    /// Slot `i` if this handle may touch it (it is reserved): a slot [`prepare`](Self::prepare) returned.
    pub fn slot(&self, i: usize) -> Option<&CondSlot> {
        (i < self.room(i + 1)).then(|| &self.h.get().slots[i])
    }

    /// The queue (its slots beyond [`slot`](Self::slot)'s are not to be touched).
    pub fn get(&self) -> &CondState {
        self.h.get()
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        self.h.segment()
    }

    /// Offset of the state.
    pub fn offset(&self) -> u64 {
        self.h.offset()
    }
}

/// A Barrier in its segment: the state and the `slots_for(parties)` slots after it.
#[derive(Clone)]
pub struct BarrierHandle {
    h: SyncHandle<BarrierState>,
    slots: MappedSlice<BarrierSlot>,
    parties: u32,
}

impl BarrierHandle {
    /// Creates a barrier for `parties` parties.
    pub fn create(parties: u32) -> Result<Self> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::Invalid(format!("parties must be in 1..={MAX_PARTIES}, not {parties}")));
        }
        let extra = slots_for(parties) as u64 * std::mem::size_of::<BarrierSlot>() as u64;
        let h = SyncHandle::<BarrierState>::create(SyncType::Barrier, parties, extra)?;
        h.get().parties.store(parties, Ordering::Release);
        Self::from_handle(h)
    }

    /// Opens a barrier handle.
    pub fn open(name: &str, offset: u64) -> Result<Self> {
        Self::from_handle(SyncHandle::open(name, offset, SyncType::Barrier)?)
    }

    fn from_handle(h: SyncHandle<BarrierState>) -> Result<Self> {
        let parties = h.get().parties.load(Ordering::Acquire);
        if parties == 0 || parties > MAX_PARTIES {
            return Err(crate::error::corrupt!("{}: barrier with {parties} parties", h.segment().name_local()));
        }
        let at = h.offset() + std::mem::size_of::<BarrierState>() as u64;
        let slots = MappedSlice::new(h.segment(), at, slots_for(parties) as usize)?;
        Ok(BarrierHandle { h, slots, parties })
    }

    /// The barrier.
    pub fn get(&self) -> BarrierRef<'_> {
        BarrierRef::new(self.h.get(), &self.slots, self.parties)
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        self.h.segment()
    }

    /// Offset of the state.
    pub fn offset(&self) -> u64 {
        self.h.offset()
    }
}
