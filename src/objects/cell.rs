//! An atomic 64-bit integer (`AtomicInt64`, `AtomicFlag`): a cell of an arena (`segment::arena`), or, for
//! handles made before arenas, its own segment. Layout: `shm-layouts/atomic.md`.

use crate::base::atomic::{AtomicI64, AtomicU64, Ordering};
use crate::segment::arena::{CellRef, TYPE_ATOMIC};
use crate::segment::{Kind, Mapped, Offset, Segment};
use crate::shm_struct;
use crate::{Error, Result};

/// Payload layout version of [`Kind::Atomic`] segments.
pub const ATOMIC_VERSION: u32 = 1;

shm_struct! {
    /// The shared cell: one value on its own cache line.
    pub struct AtomicCell {
        /// The value.
        pub value: AtomicI64,
        /// Unused; zero. Pads the cell to a cache line so neighbours never share it.
        pub reserved: [AtomicU64; 7],
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<AtomicCell>() == 64);
    assert!(std::mem::offset_of!(AtomicCell, value) == 0);
};

/// A process-local handle to an [`AtomicCell`]. Clones share the mapping (and, in an arena, the hold).
#[derive(Clone)]
pub struct SharedAtomic {
    cell: Mapped<AtomicCell>,
    /// This handle's share of the process's hold on its arena cell (`None`: the cell has a segment of its own).
    hold: Option<CellRef>,
}

impl SharedAtomic {
    /// Creates a new cell holding `value` in an arena.
    pub fn create(value: i64) -> Result<SharedAtomic> {
        let hold = CellRef::alloc(TYPE_ATOMIC, crate::segment::arena::CELL_SIZE)?;
        let cell = Mapped::new(hold.segment(), Offset::new(hold.byte_offset()))?;
        let a = SharedAtomic { cell, hold: Some(hold) };
        a.cell().value.store(value, Ordering::Release);
        Ok(a)
    }

    /// Attaches to the cell a handle names in `seg`: an arena cell (`offset` a handle offset, with the cell's
    /// generation), or the cell of an atomic's own segment, checking kind and version. In an own segment the
    /// `offset` must be the payload offset, the one place it holds its cell: any other (the segment header, the
    /// user table) would let a forged handle read or overwrite what is not the cell.
    pub fn from_segment(seg: Segment, offset: Option<u64>) -> Result<SharedAtomic> {
        if seg.info().kind == Kind::Arena {
            let offset = offset.ok_or_else(|| Error::Invalid("an arena handle needs an offset".into()))?;
            let hold = CellRef::attach(seg, offset, TYPE_ATOMIC)?;
            let cell = Mapped::new(hold.segment(), Offset::new(hold.byte_offset()))?;
            return Ok(SharedAtomic { cell, hold: Some(hold) });
        }
        seg.info().expect(seg.name_local(), Kind::Atomic, ATOMIC_VERSION)?;
        let off: Offset<AtomicCell> = seg.data_offset();
        if let Some(o) = offset.filter(|&o| o != off.get()) {
            return Err(Error::Invalid(format!(
                "offset {o:#x} of {} is not where its atomic cell lives ({:#x})",
                seg.name_local(),
                off.get()
            )));
        }
        Ok(SharedAtomic { cell: Mapped::new(&seg, off)?, hold: None })
    }

    /// Opens the cell of the segment called `name`.
    pub fn open(name: &str, offset: Option<u64>) -> Result<SharedAtomic> {
        Self::from_segment(Segment::open(name)?, offset)
    }

    /// The cell.
    #[inline]
    pub fn cell(&self) -> &AtomicCell {
        &self.cell
    }

    /// The atomic value itself (all orderings below are SeqCst, the contract of the Python API).
    #[inline]
    pub fn value(&self) -> &AtomicI64 {
        &self.cell().value
    }

    /// The segment holding the cell.
    pub fn segment(&self) -> &Segment {
        self.cell.segment()
    }

    /// The offset a handle carries: the cell's offset in its segment (in an arena, with its generation in the
    /// high 32 bits).
    pub fn offset(&self) -> u64 {
        match &self.hold {
            Some(h) => h.handle_offset(),
            None => self.cell.offset(),
        }
    }

    /// Lets go of this handle's share of the object (in an arena, the process's hold goes with the last
    /// share); the handle must not be used afterwards.
    pub fn close(&self) {
        if let Some(h) = &self.hold {
            h.close();
        }
    }

    /// Stops new processes from attaching: the cell is marked unlinked (in an arena) or the segment's name is
    /// removed. Processes that hold it keep it.
    pub fn unlink(&self) -> Result<()> {
        match &self.hold {
            Some(h) => h.unlink(),
            None => self.segment().unlink(),
        }
    }

    /// Loads the value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.value().load(Ordering::SeqCst)
    }

    /// Stores a value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.value().store(v, Ordering::SeqCst)
    }

    /// Adds `n` (wrapping) and returns the new value.
    #[inline]
    pub fn add(&self, n: i64) -> i64 {
        self.value().fetch_add(n, Ordering::SeqCst).wrapping_add(n)
    }

    /// Adds `n` (wrapping) and returns the previous value.
    #[inline]
    pub fn fetch_add(&self, n: i64) -> i64 {
        self.value().fetch_add(n, Ordering::SeqCst)
    }

    /// Replaces the value, returning the old one.
    #[inline]
    pub fn exchange(&self, v: i64) -> i64 {
        self.value().swap(v, Ordering::SeqCst)
    }

    /// Stores `new` if the value is `expected`; returns whether it did.
    #[inline]
    pub fn compare_exchange(&self, expected: i64, new: i64) -> bool {
        self.value().compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Applies `f` atomically (CAS loop) and returns the new value; `f` returning `None` aborts with `None`.
    pub fn update(&self, mut f: impl FnMut(i64) -> Option<i64>) -> Option<i64> {
        let mut cur = self.get();
        loop {
            let new = f(cur)?;
            match self.value().compare_exchange_weak(cur, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(new),
                Err(c) => cur = c,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_and_reopen_share_the_value() {
        let a = SharedAtomic::create(5).unwrap();
        assert_eq!(a.add(3), 8);
        assert_eq!(a.fetch_add(-10), 8);
        assert_eq!(a.get(), -2);
        assert!(a.compare_exchange(-2, 40));
        assert!(!a.compare_exchange(-2, 41));
        assert_eq!(a.exchange(7), 40);
        let b = SharedAtomic::open(a.segment().name(), Some(a.offset())).unwrap();
        assert!(a.segment().same_mapping(b.segment()), "one mapping per process");
        b.set(99);
        assert_eq!(a.get(), 99);
        assert_eq!(a.update(|v| Some(v * 2)), Some(198));
        assert_eq!(a.add(i64::MAX), 198i64.wrapping_add(i64::MAX));
    }

    #[test]
    fn wrong_kind_and_bad_offset_are_errors() {
        let a = SharedAtomic::create(0).unwrap();
        let name = a.segment().name().to_string();
        assert!(SharedAtomic::open(&name, Some(a.segment().len())).is_err());
        assert!(SharedAtomic::open(&name, Some(a.offset() + 4)).is_err(), "misaligned");
        // Issue 11, item 9: a forged handle into the segment header (whose magic get() returned and set(0)
        // destroyed) or anywhere but a cell.
        for off in [0, 8, 40, 256, 4096, a.offset() + 8] {
            assert!(matches!(SharedAtomic::open(&name, Some(off)), Err(Error::Invalid(_))), "{off}");
        }
        // This cell in another generation: a stale handle.
        let (byte, gen) = crate::segment::arena::split_handle_offset(a.offset());
        let other_gen = crate::segment::arena::handle_offset(byte, gen.wrapping_add(7));
        assert!(matches!(SharedAtomic::open(&name, Some(other_gen)), Err(Error::NotFound(_))));
        assert!(SharedAtomic::open(&name, Some(a.offset())).is_ok());
        let blk = crate::objects::block::SharedBlock::create(0, 8, 1).unwrap();
        assert!(SharedAtomic::open(blk.segment().name(), None).is_err());
    }

    #[test]
    fn an_own_segment_cell_still_opens() {
        // Handles of atomics made before arenas name a segment of their own.
        let seg = Segment::create(Kind::Atomic, ATOMIC_VERSION, 64).unwrap();
        let name = seg.name().to_string();
        let a = SharedAtomic::from_segment(seg, None).unwrap();
        a.set(4);
        for off in [0, 8, 40, 256, a.offset() + 64, a.offset() - 64] {
            assert!(matches!(SharedAtomic::open(&name, Some(off)), Err(Error::Invalid(_))), "{off}");
        }
        assert_eq!(SharedAtomic::open(&name, Some(a.offset())).unwrap().get(), 4);
    }
}
