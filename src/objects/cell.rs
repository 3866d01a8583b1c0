//! An atomic 64-bit integer in its own segment (`AtomicInt64`, `AtomicFlag`). Layout: `shm-layouts/atomic.md`.

use crate::base::atomic::{AtomicI64, AtomicU64, Ordering};
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

/// A process-local handle to an [`AtomicCell`]. Clones share the mapping.
#[derive(Clone)]
pub struct SharedAtomic {
    cell: Mapped<AtomicCell>,
}

impl SharedAtomic {
    /// Creates a new cell holding `value` in a new segment.
    pub fn create(value: i64) -> Result<SharedAtomic> {
        let seg = Segment::create(Kind::Atomic, ATOMIC_VERSION, std::mem::size_of::<AtomicCell>() as u64)?;
        let a = Self::from_segment(seg, None)?;
        a.cell().value.store(value, Ordering::Release);
        Ok(a)
    }

    /// Attaches to the cell of `seg`, checking kind and version. A handle's `offset` must be the payload offset,
    /// the one place an atomic segment holds its cell: any other (the segment header, the user table) would let
    /// a forged handle read or overwrite what is not the cell.
    pub fn from_segment(seg: Segment, offset: Option<u64>) -> Result<SharedAtomic> {
        seg.info().expect(seg.name_local(), Kind::Atomic, ATOMIC_VERSION)?;
        let off: Offset<AtomicCell> = seg.data_offset();
        if let Some(o) = offset.filter(|&o| o != off.get()) {
            return Err(Error::Invalid(format!(
                "offset {o:#x} of {} is not where its atomic cell lives ({:#x})",
                seg.name_local(),
                off.get()
            )));
        }
        Ok(SharedAtomic { cell: Mapped::new(&seg, off)? })
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

    /// The cell's offset in its segment.
    pub fn offset(&self) -> u64 {
        self.cell.offset()
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
        assert!(SharedAtomic::open(a.segment().name(), Some(a.segment().len())).is_err());
        assert!(SharedAtomic::open(a.segment().name(), Some(4096 + 4)).is_err(), "misaligned");
        // Issue 11, item 9: a forged handle into the segment header (whose magic get() returned and set(0)
        // destroyed) or anywhere but the cell.
        for off in [0, 8, 40, 256, a.offset() + 64, a.offset() - 64] {
            assert!(matches!(SharedAtomic::open(a.segment().name(), Some(off)), Err(Error::Invalid(_))), "{off}");
        }
        assert!(SharedAtomic::open(a.segment().name(), Some(a.offset())).is_ok());
        let blk = crate::objects::block::SharedBlock::create(0, 8, 1).unwrap();
        assert!(SharedAtomic::open(blk.segment().name(), None).is_err());
    }
}
