//! Handles compare by the identity of the shared object: two handles of one object (the original and one
//! unpickled from it, or one returned by `AtomicReference.get()`) are `==` and hash alike; handles of different
//! objects are not equal. A process maps each segment once, so "same object" is "same mapping, same offset".

use crate::segment::Segment;
use pyo3::basic::CompareOp;
use pyo3::prelude::*;

/// The key of a shared object: its segment and the offset of its state.
pub(crate) type Key<'a> = (&'a Segment, u64);

/// `__richcmp__` by identity: `other` is the other handle's key when it is a handle of the same Python type,
/// else `None` (then `NotImplemented`, so Python falls back to `is`).
pub(crate) fn compare(py: Python<'_>, this: Key<'_>, other: Option<Key<'_>>, op: CompareOp) -> Py<PyAny> {
    let Some(other) = other else {
        return py.NotImplemented();
    };
    let same = this.0.same_mapping(other.0) && this.1 == other.1;
    match op {
        CompareOp::Eq => same.into_pyobject(py).map(|b| b.to_owned().into_any().unbind()).unwrap_or_else(|_| py.None()),
        CompareOp::Ne => {
            (!same).into_pyobject(py).map(|b| b.to_owned().into_any().unbind()).unwrap_or_else(|_| py.None())
        }
        _ => py.NotImplemented(),
    }
}

/// `__hash__` by identity (the segment's name, never leaving the process, and the offset).
pub(crate) fn hash(key: Key<'_>) -> u64 {
    let mut h = xxhash_rust::xxh3::xxh3_64(key.0.name_local().as_bytes());
    h ^= key.1.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h
}

/// A pyclass that is a handle of a shared object.
pub(crate) trait Identity {
    /// The object's key.
    fn key(&self) -> Key<'_>;
}

/// `__richcmp__` of an identity-compared handle class (other Python types, and subclasses other than the
/// exact type of `slf`, give `NotImplemented`).
pub(crate) fn richcmp<T>(slf: &Bound<'_, T>, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny>
where
    T: Identity + pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
{
    let o = other.cast::<T>().ok().filter(|o| o.as_any().get_type().is(slf.as_any().get_type()));
    compare(slf.py(), slf.get().key(), o.as_ref().map(|o| o.get().key()), op)
}

/// `identity_of!(Type, |s| segment expr, offset expr)`: implements [`Identity`] for a handle pyclass.
macro_rules! identity_of {
    ($ty:ty, |$s:ident| $seg:expr, $off:expr) => {
        impl $crate::python::identity::Identity for $ty {
            fn key(&self) -> $crate::python::identity::Key<'_> {
                let $s = self;
                ($seg, $off)
            }
        }
    };
}
pub(crate) use identity_of;
