//! Typed offsets into a segment and the marker trait for types that may live there.

use crate::base::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8};
use std::fmt;
use std::marker::PhantomData;

/// Types that may be placed in shared memory and referenced through an [`Offset`].
///
/// # Safety
///
/// An implementor must be `#[repr(C)]` (or a primitive atomic), contain no pointers or references (their values
/// mean nothing in another process), have no padding whose contents matter, and be valid for every bit pattern,
/// since another process (or a corrupt segment) may have written any bytes there. In practice: a struct made
/// only of atomics, arrays of atomics and other `ShmSafe` types. Mutation through `&Self` must go through
/// atomics or raw-pointer copies, never through plain fields.
pub unsafe trait ShmSafe: Sync {}

// SAFETY: atomics are valid for every bit pattern, pointer-free and have the layout of their integer.
unsafe impl ShmSafe for AtomicU8 {}
// SAFETY: as above.
unsafe impl ShmSafe for AtomicU32 {}
// SAFETY: as above.
unsafe impl ShmSafe for AtomicU64 {}
// SAFETY: as above.
unsafe impl ShmSafe for AtomicI64 {}
// SAFETY: an array of ShmSafe values is ShmSafe: same reasoning element by element, no padding between them.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

/// Declares a `#[repr(C)]` struct that lives in shared memory and implements [`ShmSafe`] for it, checking the
/// trait's contract at compile time instead of restating it by hand: the `#[repr(C)]` is written by the macro,
/// every field must itself be `ShmSafe` (so: atomics, arrays of them, other such structs), and the size must be
/// the sum of the field sizes (no padding, whose bytes nobody would initialise).
///
/// ```ignore
/// shm_struct! {
///     /// Documentation as usual.
///     pub struct Pair {
///         /// Field docs too.
///         pub a: AtomicU32,
///         pub b: AtomicU32,
///     }
/// }
/// ```
#[macro_export]
macro_rules! shm_struct {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty,)*
        }

        // SAFETY: repr(C) (above); every field is ShmSafe and there is no padding (both checked below), so the
        // struct is pointer-free, valid for every bit pattern and fully described by its fields.
        unsafe impl $crate::segment::ShmSafe for $name {}

        const _: () = {
            const fn field_is_shm_safe<T: $crate::segment::ShmSafe>() {}
            $(field_is_shm_safe::<$ty>();)*
            #[cfg(not(loom))]
            assert!(
                ::core::mem::size_of::<$name>() == 0 $(+ ::core::mem::size_of::<$ty>())*,
                concat!(stringify!($name), " has padding: add explicit reserved fields")
            );
        };
    };
}

/// A byte offset from the start of a segment to a `T`. Stored in shared memory as a plain `u64`; turned into a
/// reference only by [`Segment::resolve`](super::Segment::resolve), which checks bounds and alignment.
#[repr(transparent)]
pub struct Offset<T> {
    raw: u64,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Offset<T> {
    /// Wraps a raw byte offset. Nothing is checked until it is resolved against a segment.
    pub const fn new(raw: u64) -> Self {
        Offset { raw, _marker: PhantomData }
    }

    /// The raw byte offset.
    pub const fn get(self) -> u64 {
        self.raw
    }

    /// Reinterprets the offset as pointing at another type.
    pub const fn cast<U>(self) -> Offset<U> {
        Offset::new(self.raw)
    }

    /// The offset `bytes` further on, or `None` on overflow.
    pub fn add_bytes<U>(self, bytes: u64) -> Option<Offset<U>> {
        self.raw.checked_add(bytes).map(Offset::new)
    }
}

impl<T> Clone for Offset<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Offset<T> {}
impl<T> PartialEq for Offset<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}
impl<T> Eq for Offset<T> {}
impl<T> fmt::Debug for Offset<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset<{}>({:#x})", std::any::type_name::<T>(), self.raw)
    }
}

/// Checks that `[offset, offset + size)` lies inside `[0, len)` and that `offset` is a multiple of `align`.
pub fn check_range(offset: u64, size: u64, align: u64, len: u64, what: &str) -> crate::Result<()> {
    let end = offset.checked_add(size);
    match end {
        Some(end) if end <= len && offset % align == 0 => Ok(()),
        _ => Err(crate::error::corrupt!(
            "corrupt segment: {what} at offset {offset:#x} (size {size}, align {align}) is outside the {len}-byte \
             mapping or misaligned"
        )),
    }
}
