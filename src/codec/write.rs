//! Appending encoded values to a buffer.
//!
//! These functions write exactly one item each and never fail. Containers are written as a header
//! ([`tuple_header`], [`list_header`], [`dict_header`]) followed by their items, written by the caller. The
//! caller is responsible for writing as many items as the header announces.

use super::tag;

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes, minimal).
#[inline]
pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Maps a signed integer to an unsigned one so that small magnitudes give small varints.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends a `None`.
#[inline]
pub fn none(out: &mut Vec<u8>) {
    out.push(tag::NONE);
}

/// Appends a `bool`.
#[inline]
pub fn boolean(out: &mut Vec<u8>, v: bool) {
    out.push(if v { tag::TRUE } else { tag::FALSE });
}

/// Appends an `int` in the i64 range.
#[inline]
pub fn int(out: &mut Vec<u8>, v: i64) {
    out.push(tag::INT);
    varint(out, zigzag(v));
}

/// Appends an arbitrary-precision `int` given as two's complement little-endian bytes (any length, not
/// necessarily minimal; an empty slice is zero). Writes the [`tag::INT`] form when the value fits an i64, so the
/// output is canonical whatever the input width.
pub fn big_int(out: &mut Vec<u8>, le: &[u8]) {
    let n = minimal_len(le);
    if n <= 8 {
        let negative = n > 0 && le[n - 1] & 0x80 != 0;
        let mut buf = [if negative { 0xFF } else { 0 }; 8];
        buf[..n].copy_from_slice(&le[..n]);
        int(out, i64::from_le_bytes(buf));
        return;
    }
    out.push(tag::BIG_INT);
    varint(out, n as u64);
    out.extend_from_slice(&le[..n]);
}

/// Length of the shortest two's complement encoding of `le` (0 for zero).
pub(crate) fn minimal_len(le: &[u8]) -> usize {
    let mut n = le.len();
    while n > 0 {
        let last = le[n - 1];
        let below_sign = if n >= 2 { le[n - 2] & 0x80 } else { 0 };
        let redundant = (last == 0x00 && below_sign == 0) || (last == 0xFF && below_sign != 0 && n >= 2);
        if !redundant {
            break;
        }
        n -= 1;
    }
    n
}

/// Appends a `float` with its exact bits (NaN payloads and the sign of zero are kept).
#[inline]
pub fn float(out: &mut Vec<u8>, v: f64) {
    out.push(tag::FLOAT);
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

#[inline]
fn prefixed(out: &mut Vec<u8>, t: u8, data: &[u8]) {
    out.reserve(data.len() + 11);
    out.push(t);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Appends a `str`.
#[inline]
pub fn str(out: &mut Vec<u8>, s: &str) {
    prefixed(out, tag::STR, s.as_bytes());
}

/// Appends a `str` that contains lone surrogates, given as UTF-8 with surrogates encoded as three-byte
/// sequences (`s.encode("utf-8", "surrogatepass")`). Use [`str`] for anything that is valid UTF-8.
#[inline]
pub fn str_surrogates(out: &mut Vec<u8>, data: &[u8]) {
    prefixed(out, tag::STR_SURROGATES, data);
}

/// Appends a `bytes`.
#[inline]
pub fn bytes(out: &mut Vec<u8>, data: &[u8]) {
    prefixed(out, tag::BYTES, data);
}

/// Appends a `bytearray`.
#[inline]
pub fn bytearray(out: &mut Vec<u8>, data: &[u8]) {
    prefixed(out, tag::BYTEARRAY, data);
}

/// Appends a pickle escape: `data` is the output of `pickle.dumps(obj, protocol=5)`.
#[inline]
pub fn pickle(out: &mut Vec<u8>, data: &[u8]) {
    prefixed(out, tag::PICKLE, data);
}

/// Appends the header of a `tuple` of `len` items; the caller then appends the items.
#[inline]
pub fn tuple_header(out: &mut Vec<u8>, len: usize) {
    out.push(tag::TUPLE);
    varint(out, len as u64);
}

/// Appends the header of a `list` of `len` items; the caller then appends the items.
#[inline]
pub fn list_header(out: &mut Vec<u8>, len: usize) {
    out.push(tag::LIST);
    varint(out, len as u64);
}

/// Appends the header of a `dict` of `len` entries; the caller then appends key, value, key, value, ...
#[inline]
pub fn dict_header(out: &mut Vec<u8>, len: usize) {
    out.push(tag::DICT);
    varint(out, len as u64);
}

/// Appends the header of an ndarray; the caller then appends exactly `itemsize * prod(shape)` bytes of
/// C-order data. `dtype` is numpy's `dtype.str` (e.g. `<f8`), which [`super::read`] validates on decode.
pub fn ndarray_header(out: &mut Vec<u8>, dtype: &str, itemsize: u64, shape: &[u64]) {
    out.push(tag::NDARRAY);
    varint(out, dtype.len() as u64);
    out.extend_from_slice(dtype.as_bytes());
    varint(out, itemsize);
    varint(out, shape.len() as u64);
    for &d in shape {
        varint(out, d);
    }
}
