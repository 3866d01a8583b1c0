//! Handles compare by the identity of the shared object: two handles of one object (the original and one
//! unpickled from it, or one returned by `AtomicReference.get()`) are `==` and hash alike; handles of different
//! objects are not equal. A process maps each segment once, so "same object" is "same mapping, same offset".

use crate::segment::Segment;
use pyo3::basic::CompareOp;
use pyo3::prelude::*;

/// The key of a shared object: its segment and the offset of its state.
pub(crate) type Key<'a> = (&'a Segment, u64);

/// Whether two keys name one object.
fn same(a: Key<'_>, b: Key<'_>) -> bool {
    a.0.same_mapping(b.0) && a.1 == b.1
}

/// `__hash__` by identity (the segment's name, never leaving the process, and the offset).
pub(crate) fn hash(key: Key<'_>) -> u64 {
    let mut h = xxhash_rust::xxh3::xxh3_64(key.0.name_local().as_bytes());
    h ^= key.1.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h
}

/// A pyclass that is a handle of a shared object (its state in a `lifetime::Held`).
pub(crate) trait Identity {
    /// `f` of the object's key; `None` if the object is closed.
    fn with_key<R>(&self, f: impl FnOnce(Key<'_>) -> R) -> Option<R>;

    /// `__hash__`: [`hash`] of the key, remembered, so a closed object keeps the hash it had.
    fn identity_hash(&self) -> PyResult<u64>;
}

/// `__richcmp__` of an identity-compared handle class (other Python types, subclasses other than the exact type
/// of `slf`, and closed objects give `NotImplemented`, so Python falls back to `is`).
pub(crate) fn richcmp<T>(slf: &Bound<'_, T>, other: &Bound<'_, PyAny>, op: CompareOp) -> Py<PyAny>
where
    T: Identity + pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::True> + Sync,
{
    let py = slf.py();
    let o = other.cast::<T>().ok().filter(|o| o.as_any().get_type().is(slf.as_any().get_type()));
    let is_same = o.and_then(|o| slf.get().with_key(|a| o.get().with_key(|b| same(a, b))).flatten());
    let answer = match (op, is_same) {
        (CompareOp::Eq, Some(s)) => s,
        (CompareOp::Ne, Some(s)) => !s,
        _ => return py.NotImplemented(),
    };
    answer.into_pyobject(py).map(|b| b.to_owned().into_any().unbind()).unwrap_or_else(|_| py.None())
}

/// `identity_of!(Type, held field, |s| segment expr, offset expr)`: implements [`Identity`] for a handle pyclass
/// (`s` is the field's open value).
macro_rules! identity_of {
    ($ty:ty, $field:ident, |$s:ident| $seg:expr, $off:expr) => {
        impl $crate::python::identity::Identity for $ty {
            fn with_key<R>(&self, f: impl FnOnce($crate::python::identity::Key<'_>) -> R) -> Option<R> {
                let $s = self.$field.try_open()?;
                Some(f(($seg, $off)))
            }

            fn identity_hash(&self) -> pyo3::PyResult<u64> {
                self.$field.memo_hash(|$s| $crate::python::identity::hash(($seg, $off)))
            }
        }
    };
}
pub(crate) use identity_of;
