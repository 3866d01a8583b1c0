//! Canonical key encoding and the stable hash.
//!
//! The shared dict finds keys by comparing encoded bytes and hashing them with [`stable_hash`], so keys that
//! are equal in Python must encode to identical bytes. Python says `True == 1 == 1.0` (and their hashes agree),
//! so a canonical key encoding normalises:
//!
//! * `bool` to the int 0 or 1;
//! * a `float` with an integral value (including `-0.0` and values beyond the i64 range) to that int;
//! * every NaN to the one quiet NaN `0x7ff8000000000000` (Python compares NaN keys by identity, which cannot
//!   cross processes, so all NaN keys are one key in a shared dict);
//! * tuples item by item.
//!
//! Keys are `None`, `bool`, `int`, `float`, `str`, `bytes` and tuples of those, of these exact types (a
//! subclass may redefine equality, so it is refused). Anything else is an [`Error::Type`]. The canonical
//! bytes are also a valid encoding: decoding them gives the normalised key (`1` for `True`).

use super::write;
use crate::error::Error;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of [`stable_hash`]; part of the format (changing it changes every shared dict's layout).
pub const STABLE_HASH_SEED: u64 = 0x7079_636f_6e63_0001; // "pyconc", 1

/// The 64-bit hash of canonical key bytes: xxh3 with [`STABLE_HASH_SEED`]. The same in every process and
/// every Python version, unlike Python's `hash()`, which is randomised per process for str and bytes.
#[inline]
pub fn stable_hash(key_bytes: &[u8]) -> u64 {
    xxh3_64_with_seed(key_bytes, STABLE_HASH_SEED)
}

/// The bits every NaN key is normalised to.
pub const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;

/// Appends the canonical key encoding of a float: an int when the value is integral, the canonical NaN for
/// any NaN, the float's bits otherwise. Returns whether the value was normalised to something else.
pub fn float(out: &mut Vec<u8>, f: f64) -> bool {
    if f.is_nan() {
        write::float(out, f64::from_bits(CANONICAL_NAN));
        return true;
    }
    if !f.is_finite() || f.trunc() != f {
        write::float(out, f);
        return false;
    }
    // Integral. 2**63 is exactly representable; the i64 range is [-2**63, 2**63).
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if (-TWO_63..TWO_63).contains(&f) {
        write::int(out, f as i64);
        return true;
    }
    // |f| >= 2**63: f = mantissa * 2**shift with a 53-bit mantissa and shift >= 11.
    let bits = f.to_bits();
    let exp = ((bits >> 52) & 0x7FF) as usize;
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let shift = exp - 1075;
    let mut le = vec![0u8; (53 + shift) / 8 + 2];
    let wide = u128::from(mantissa) << (shift % 8);
    for (i, b) in wide.to_le_bytes().iter().enumerate().take(9) {
        if let Some(slot) = le.get_mut(shift / 8 + i) {
            *slot = *b;
        }
    }
    if f < 0.0 {
        // Two's complement negation of the magnitude.
        let mut carry = true;
        for b in le.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    write::big_int(out, &le);
    true
}

/// The error for a value that cannot be a dict key.
pub fn not_a_key(type_name: &str) -> Error {
    Error::Type(format!(
        "unhashable key type for a shared dict: '{type_name}' (keys must be None, bool, int, float, str, bytes \
         or tuples of those, of exactly these types)"
    ))
}

/// The error for a key tuple nested deeper than [`super::MAX_DEPTH`].
pub fn too_deep() -> Error {
    Error::Type(format!("shared dict key nested deeper than {} tuples", super::MAX_DEPTH))
}
