//! Process-local handles to structures in a mapped segment: the one place where a pointer into shared memory is
//! kept beyond a borrow, and so the one place that says why such a handle may be sent and shared between threads.
//!
//! Each handle owns a clone of its [`Segment`] (an `Arc` of the mapping), so the memory it points to stays mapped
//! for as long as the handle lives, and is made only from a bounds- and alignment-checked range of that segment.

use super::offset::{Offset, ShmSafe};
use super::shm::Segment;
use crate::Result;
use std::ptr::NonNull;

/// A `T` in a segment, with the segment kept mapped. Derefs to `&T`.
pub struct Mapped<T: ShmSafe> {
    seg: Segment,
    ptr: NonNull<T>,
}

/// `len` consecutive `T`s in a segment, with the segment kept mapped. Derefs to `&[T]`.
pub struct MappedSlice<T: ShmSafe> {
    seg: Segment,
    ptr: NonNull<T>,
    len: usize,
}

/// `len` payload bytes in a segment (array items, encoded values), with the segment kept mapped. Handed out only
/// as a raw pointer: bytes that other processes write are copied, never borrowed as `&[u8]`.
#[derive(Clone)]
pub struct MappedBytes {
    seg: Segment,
    ptr: NonNull<u8>,
    len: usize,
}

// Why the six impls below are sound: the pointers point into the mapping that the handle's own `Segment` keeps alive
// (an `Arc` of a mapping that is Send + Sync), so moving a handle to another thread moves a valid pointer with its
// owner. `T: ShmSafe` types are `Sync` and are only accessed through atomics (the trait's contract), so `&T` may
// be used from several threads at once; `MappedBytes` gives out a raw pointer only, whose use is the caller's
// unsafe code to justify.
// SAFETY: see above.
unsafe impl<T: ShmSafe> Send for Mapped<T> {}
// SAFETY: see above.
unsafe impl<T: ShmSafe> Sync for Mapped<T> {}
// SAFETY: see above.
unsafe impl<T: ShmSafe> Send for MappedSlice<T> {}
// SAFETY: see above.
unsafe impl<T: ShmSafe> Sync for MappedSlice<T> {}
// SAFETY: see above.
unsafe impl Send for MappedBytes {}
// SAFETY: see above.
unsafe impl Sync for MappedBytes {}

impl<T: ShmSafe> Clone for Mapped<T> {
    fn clone(&self) -> Self {
        Mapped { seg: self.seg.clone(), ptr: self.ptr }
    }
}

impl<T: ShmSafe> Clone for MappedSlice<T> {
    fn clone(&self) -> Self {
        MappedSlice { seg: self.seg.clone(), ptr: self.ptr, len: self.len }
    }
}

impl<T: ShmSafe> Mapped<T> {
    /// The `T` at `off` of `seg` (bounds and alignment checked).
    pub fn new(seg: &Segment, off: Offset<T>) -> Result<Self> {
        let ptr = NonNull::from(seg.resolve(off)?);
        Ok(Mapped { seg: seg.clone(), ptr })
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    /// Offset of the `T` in its segment.
    pub fn offset(&self) -> u64 {
        self.ptr.as_ptr() as u64 - self.seg.base_ptr() as u64
    }
}

impl<T: ShmSafe> std::ops::Deref for Mapped<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: `ptr` came from `Segment::resolve` (in bounds, aligned, T is ShmSafe so any bytes are a valid T)
        // and the mapping lives while `self.seg` does.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: ShmSafe> MappedSlice<T> {
    /// `len` `T`s starting at byte offset `at` of `seg` (bounds and alignment checked).
    pub fn new(seg: &Segment, at: u64, len: usize) -> Result<Self> {
        let size = std::mem::size_of::<T>() as u64;
        let bytes = (len as u64)
            .checked_mul(size)
            .ok_or_else(|| crate::error::corrupt!("{}: {len} items overflow", seg.name_local()))?;
        // The first element checks alignment; the byte range checks the rest.
        seg.resolve(Offset::<T>::new(at))?;
        let ptr = seg.bytes_ptr(at, bytes)? as *mut T;
        // SAFETY: `bytes_ptr` returned a pointer into the mapping, which is never null.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        Ok(MappedSlice { seg: seg.clone(), ptr, len })
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}

impl<T: ShmSafe> std::ops::Deref for MappedSlice<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: [ptr, ptr + len) was checked to lie in the mapping, aligned for T, when the handle was made; T is
        // ShmSafe; the mapping lives while `self.seg` does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl MappedBytes {
    /// `len` bytes at byte offset `at` of `seg` (bounds checked).
    pub fn new(seg: &Segment, at: u64, len: u64) -> Result<Self> {
        let ptr = seg.bytes_ptr(at, len)?;
        let len = usize::try_from(len).map_err(|_| crate::Error::Invalid("range too large for this machine".into()))?;
        // SAFETY: `bytes_ptr` returned a pointer into the mapping, which is never null.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        Ok(MappedBytes { seg: seg.clone(), ptr, len })
    }

    /// The first byte; valid for [`len`](Self::len) bytes while `self` lives.
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Number of bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segment.
    pub fn segment(&self) -> &Segment {
        &self.seg
    }
}
