//! The validating decoder.
//!
//! [`decode`] reads one value from a [`Reader`] and hands its parts to a [`Builder`], which makes whatever the
//! caller wants of them: a Rust [`super::Value`], Python objects, or nothing at all ([`validate`]). Every length
//! and count is checked against the bytes that remain before anything is allocated, nesting is limited to
//! [`MAX_DEPTH`], and non-canonical encodings (over-long varints, big ints that fit an i64, ...) are rejected, so
//! corrupt input is an [`Error::Corrupt`] naming the byte offset, never a panic.
//!
//! A [`Reader`] reads either a slice or a raw range of shared memory. For the latter it never forms a `&[u8]`:
//! headers are read byte by byte and payloads are handed out as [`Raw`] ranges that the builder copies straight
//! into the object it creates.

use super::{tag, MAX_DEPTH, MAX_DTYPE_LEN, MAX_NDIM};
use crate::error::{corrupt, Error, Result};
use std::marker::PhantomData;
use std::ptr;

/// A cursor over encoded bytes: a slice, or a range of shared memory that other processes may write.
pub struct Reader<'a> {
    ptr: *const u8,
    len: usize,
    pos: usize,
    _bytes: PhantomData<&'a [u8]>,
}

impl<'a> Reader<'a> {
    /// Reads from a slice.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { ptr: bytes.as_ptr(), len: bytes.len(), pos: 0, _bytes: PhantomData }
    }

    /// Reads from `len` bytes at `ptr`, typically a message in a shared segment.
    ///
    /// # Safety
    /// `ptr..ptr + len` must stay mapped and readable for `'a` (the caller checked the range against its
    /// mapping). Other processes may write the bytes concurrently: the decoder then reports garbage or
    /// corruption, but only reads inside the range, and copies each payload rather than borrowing it.
    pub unsafe fn from_raw(ptr: *const u8, len: usize) -> Reader<'a> {
        Reader { ptr, len, pos: 0, _bytes: PhantomData }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.len - self.pos
    }

    #[inline]
    fn u8(&mut self) -> Result<u8> {
        if self.pos >= self.len {
            return Err(corrupt!("corrupt encoded value: truncated at byte {} (expected more data)", self.pos));
        }
        // SAFETY: `pos < len`, and `ptr..ptr + len` is readable for 'a (`new` or the contract of `from_raw`).
        let b = unsafe { ptr::read(self.ptr.add(self.pos)) };
        self.pos += 1;
        Ok(b)
    }

    /// Reads a minimal LEB128 varint of at most 10 bytes.
    #[inline]
    fn varint(&mut self) -> Result<u64> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7F);
            if i == 9 && b > 1 {
                return Err(corrupt!("corrupt encoded value: varint at byte {start} overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(corrupt!("corrupt encoded value: over-long varint at byte {start}"));
                }
                return Ok(v);
            }
        }
        Err(corrupt!("corrupt encoded value: varint at byte {start} is longer than 10 bytes"))
    }

    /// Reads a varint length that must not exceed the remaining bytes divided by `unit` (each counted item
    /// takes at least `unit` bytes), so a hostile length can never cause a large allocation.
    #[inline]
    fn count(&mut self, what: &str, unit: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.varint()?;
        let max = self.remaining() / unit;
        if n > max as u64 {
            return Err(corrupt!(
                "corrupt encoded value: {what} at byte {at} claims {n}, more than the {} bytes that \
                 follow can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    /// Consumes `n` bytes (already checked against [`Reader::remaining`]) and returns their range.
    #[inline]
    fn take(&mut self, n: usize) -> Raw<'a> {
        debug_assert!(n <= self.remaining());
        // SAFETY: `pos + n <= len`, so the result is inside (or one past the end of) the readable range.
        let p = unsafe { self.ptr.add(self.pos) };
        self.pos += n;
        Raw { ptr: p, len: n, _bytes: PhantomData }
    }

    #[inline]
    fn payload(&mut self, what: &str) -> Result<Raw<'a>> {
        let n = self.count(what, 1)?;
        Ok(self.take(n))
    }
}

/// A payload range inside a [`Reader`]'s input. It is deliberately not a slice: over shared memory the bytes
/// may change under us, so they are only ever copied out ([`Raw::to_vec`], [`Raw::copy_to`]) or handed to a
/// C function that copies them ([`Raw::as_ptr`]).
#[derive(Clone, Copy)]
pub struct Raw<'a> {
    ptr: *const u8,
    len: usize,
    _bytes: PhantomData<&'a [u8]>,
}

impl Raw<'_> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the range: valid for reading `len()` bytes while the reader's input is.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Copies the bytes into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        // SAFETY: the source is readable for `len` bytes (invariant of `Raw`), the destination has capacity
        // `len` and is a fresh allocation, so they do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), self.len);
            v.set_len(self.len);
        }
        v
    }

    /// Copies the bytes to `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for writing `len()` bytes and must not overlap the range.
    pub unsafe fn copy_to(&self, dst: *mut u8) {
        // SAFETY: the source is readable for `len` bytes (invariant of `Raw`); the caller vouches for `dst`.
        unsafe { ptr::copy_nonoverlapping(self.ptr, dst, self.len) }
    }

    /// The byte at `i < len()`.
    fn at(&self, i: usize) -> u8 {
        assert!(i < self.len);
        // SAFETY: `i < len` and the range is readable.
        unsafe { ptr::read(self.ptr.add(i)) }
    }
}

/// Which sequence type a [`Builder::seq_begin`] call is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqKind {
    /// `tuple`
    Tuple,
    /// `list`
    List,
}

/// The parts of an encoded ndarray, validated: the dtype string matches numpy's `dtype.str` grammar,
/// `data.len() == itemsize * prod(shape)`, and `itemsize * prod(max(dim, 1))` fits an i64.
pub struct NdArray<'a> {
    /// numpy's `dtype.str`, e.g. `<f8`, `|b1`, `<U5`, `<M8[ns]`.
    pub dtype: &'a str,
    /// Bytes per element (numpy's `dtype.itemsize`); the builder must check it against the dtype it makes.
    pub itemsize: u64,
    /// The dimensions.
    pub shape: &'a [u64],
    /// The C-order element bytes.
    pub data: Raw<'a>,
}

/// Receives the parts of a value from [`decode`] and builds something of them.
///
/// Containers are built in three steps: `*_begin` with the item count, one call per item (its children are
/// complete by then), and `*_end`. If decoding fails midway, the unfinished container is dropped.
pub trait Builder<'a> {
    /// What a decoded value becomes.
    type Value;
    /// A tuple or list under construction.
    type Seq;
    /// A dict under construction.
    type Map;
    /// Errors of the builder; corrupt input arrives as `Error::Corrupt` converted into it.
    type Error: From<Error>;

    /// `None`.
    fn none(&mut self) -> Result<Self::Value, Self::Error>;
    /// `True` or `False`.
    fn boolean(&mut self, v: bool) -> Result<Self::Value, Self::Error>;
    /// An `int` in the i64 range.
    fn int(&mut self, v: i64) -> Result<Self::Value, Self::Error>;
    /// An `int` outside the i64 range: minimal two's complement, little-endian, at least 9 bytes.
    fn big_int(&mut self, le: Raw<'a>) -> Result<Self::Value, Self::Error>;
    /// A `float`.
    fn float(&mut self, v: f64) -> Result<Self::Value, Self::Error>;
    /// A `str` as UTF-8. Not yet validated: the builder must check it (or copy it with a function that does).
    fn str(&mut self, utf8: Raw<'a>) -> Result<Self::Value, Self::Error>;
    /// A `str` with lone surrogates, as UTF-8 with `surrogatepass`. Not validated.
    fn str_surrogates(&mut self, data: Raw<'a>) -> Result<Self::Value, Self::Error>;
    /// A `bytes`.
    fn bytes(&mut self, data: Raw<'a>) -> Result<Self::Value, Self::Error>;
    /// A `bytearray`.
    fn bytearray(&mut self, data: Raw<'a>) -> Result<Self::Value, Self::Error>;
    /// An ndarray.
    fn ndarray(&mut self, arr: NdArray<'_>) -> Result<Self::Value, Self::Error>;
    /// A pickle to load.
    fn pickle(&mut self, data: Raw<'a>) -> Result<Self::Value, Self::Error>;

    /// Starts a tuple or list of `len` items (`len` is at most the remaining input length).
    fn seq_begin(&mut self, kind: SeqKind, len: usize) -> Result<Self::Seq, Self::Error>;
    /// Item `index` (`0..len`, in order) of the sequence.
    fn seq_item(&mut self, seq: &mut Self::Seq, index: usize, item: Self::Value) -> Result<(), Self::Error>;
    /// Finishes the sequence.
    fn seq_end(&mut self, seq: Self::Seq) -> Result<Self::Value, Self::Error>;

    /// Starts a dict of `len` entries (`len` is at most half the remaining input length).
    fn map_begin(&mut self, len: usize) -> Result<Self::Map, Self::Error>;
    /// One entry, in insertion order.
    fn map_item(&mut self, map: &mut Self::Map, key: Self::Value, value: Self::Value) -> Result<(), Self::Error>;
    /// Finishes the dict.
    fn map_end(&mut self, map: Self::Map) -> Result<Self::Value, Self::Error>;
}

/// Decodes one value starting at the reader's position, leaving the reader after it.
pub fn decode<'a, B: Builder<'a>>(r: &mut Reader<'a>, b: &mut B) -> Result<B::Value, B::Error> {
    value(r, b, 0)
}

/// Decodes one value that must span the whole input.
pub fn decode_exact<'a, B: Builder<'a>>(r: &mut Reader<'a>, b: &mut B) -> Result<B::Value, B::Error> {
    let v = value(r, b, 0)?;
    if r.remaining() != 0 {
        return Err(corrupt!(
            "corrupt encoded value: {} unexpected bytes after the value, at byte {}",
            r.remaining(),
            r.position()
        )
        .into());
    }
    Ok(v)
}

/// Checks that `bytes` is exactly one well-formed value, without building anything. Payloads that only the
/// Python side can check (UTF-8 with surrogates, pickles, dtype existence) are not examined.
pub fn validate(bytes: &[u8]) -> Result<()> {
    decode_exact(&mut Reader::new(bytes), &mut Validator).map(|_| ())
}

fn value<'a, B: Builder<'a>>(r: &mut Reader<'a>, b: &mut B, depth: usize) -> Result<B::Value, B::Error> {
    let at = r.pos;
    let t = r.u8()?;
    match t {
        tag::NONE => b.none(),
        tag::FALSE => b.boolean(false),
        tag::TRUE => b.boolean(true),
        tag::INT => {
            let z = r.varint()?;
            b.int(((z >> 1) as i64) ^ -((z & 1) as i64))
        }
        tag::BIG_INT => {
            let le = r.payload("big int length")?;
            let n = le.len();
            // Canonical: longer than 8 bytes (else it is an INT) and minimal (no redundant sign byte).
            let non_minimal = n < 9 || {
                let last = le.at(n - 1);
                let below = le.at(n - 2) & 0x80;
                (last == 0 && below == 0) || (last == 0xFF && below != 0)
            };
            if non_minimal {
                return Err(corrupt!("corrupt encoded value: non-canonical big int of {n} bytes at byte {at}").into());
            }
            b.big_int(le)
        }
        tag::FLOAT => {
            if r.remaining() < 8 {
                return Err(corrupt!("corrupt encoded value: truncated float at byte {at}").into());
            }
            let raw = r.take(8);
            let mut buf = [0u8; 8];
            // SAFETY: `raw` is readable for 8 bytes and `buf` is a distinct local of 8 bytes.
            unsafe { raw.copy_to(buf.as_mut_ptr()) };
            b.float(f64::from_bits(u64::from_le_bytes(buf)))
        }
        tag::STR => {
            let p = r.payload("str length")?;
            b.str(p)
        }
        tag::STR_SURROGATES => {
            let p = r.payload("str length")?;
            b.str_surrogates(p)
        }
        tag::BYTES => {
            let p = r.payload("bytes length")?;
            b.bytes(p)
        }
        tag::BYTEARRAY => {
            let p = r.payload("bytearray length")?;
            b.bytearray(p)
        }
        tag::PICKLE => {
            let p = r.payload("pickle length")?;
            b.pickle(p)
        }
        tag::TUPLE | tag::LIST => {
            let kind = if t == tag::TUPLE { SeqKind::Tuple } else { SeqKind::List };
            if depth >= MAX_DEPTH {
                return Err(too_deep(at).into());
            }
            let n = r.count("item count", 1)?;
            let mut seq = b.seq_begin(kind, n)?;
            for i in 0..n {
                let item = value(r, b, depth + 1)?;
                b.seq_item(&mut seq, i, item)?;
            }
            b.seq_end(seq)
        }
        tag::DICT => {
            if depth >= MAX_DEPTH {
                return Err(too_deep(at).into());
            }
            let n = r.count("dict entry count", 2)?;
            let mut map = b.map_begin(n)?;
            for _ in 0..n {
                let k = value(r, b, depth + 1)?;
                let v = value(r, b, depth + 1)?;
                b.map_item(&mut map, k, v)?;
            }
            b.map_end(map)
        }
        tag::NDARRAY => ndarray(r, b, at),
        _ => Err(corrupt!("corrupt encoded value: unknown tag 0x{t:02x} at byte {at}").into()),
    }
}

fn too_deep(at: usize) -> Error {
    corrupt!("corrupt encoded value: containers nested deeper than {MAX_DEPTH} at byte {at}")
}

fn ndarray<'a, B: Builder<'a>>(r: &mut Reader<'a>, b: &mut B, at: usize) -> Result<B::Value, B::Error> {
    let dlen = r.count("dtype length", 1)?;
    if dlen > MAX_DTYPE_LEN {
        return Err(corrupt!("corrupt encoded value: ndarray dtype of {dlen} bytes at byte {at}").into());
    }
    let mut dbuf = [0u8; MAX_DTYPE_LEN];
    // SAFETY: the range is readable for `dlen <= MAX_DTYPE_LEN` bytes, and `dbuf` is a distinct local buffer.
    unsafe { r.take(dlen).copy_to(dbuf.as_mut_ptr()) };
    let dtype = match std::str::from_utf8(&dbuf[..dlen]) {
        Ok(s) if dtype_ok(s) => s,
        _ => {
            return Err(corrupt!(
                "corrupt encoded value: invalid ndarray dtype {:?} at byte {at}",
                String::from_utf8_lossy(&dbuf[..dlen])
            )
            .into())
        }
    };
    let itemsize = r.varint()?;
    let ndim = r.varint()?;
    if ndim > MAX_NDIM as u64 {
        return Err(corrupt!(
            "corrupt encoded value: ndarray with {ndim} dimensions (most is {MAX_NDIM}) at byte {at}"
        )
        .into());
    }
    let mut shape = [0u64; MAX_NDIM];
    // numpy's own limit: the product of the non-zero dimensions times the itemsize fits an isize.
    let mut bound: u64 = itemsize.max(1);
    let mut nbytes: u64 = itemsize;
    for d in shape.iter_mut().take(ndim as usize) {
        *d = r.varint()?;
        bound = match bound.checked_mul((*d).max(1)) {
            Some(v) if v <= i64::MAX as u64 => v,
            _ => return Err(corrupt!("corrupt encoded value: ndarray shape at byte {at} is too large").into()),
        };
        nbytes *= *d; // cannot overflow: nbytes <= bound
    }
    if nbytes > r.remaining() as u64 {
        return Err(corrupt!(
            "corrupt encoded value: ndarray at byte {at} needs {nbytes} data bytes, only {} follow",
            r.remaining()
        )
        .into());
    }
    let data = r.take(nbytes as usize);
    b.ndarray(NdArray { dtype, itemsize, shape: &shape[..ndim as usize], data })
}

/// numpy's `dtype.str` grammar for the dtypes the codec stores natively: a byte-order character, a kind
/// character, decimal digits, and for datetimes an optional `[unit]`.
pub(crate) fn dtype_ok(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 3 || !matches!(b[0], b'<' | b'>' | b'|' | b'=') {
        return false;
    }
    if !matches!(b[1], b'b' | b'i' | b'u' | b'f' | b'c' | b'm' | b'M' | b'S' | b'U' | b'V') {
        return false;
    }
    let rest = &b[2..];
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 10 {
        return false;
    }
    match &rest[digits..] {
        [] => true,
        [b'[', unit @ .., b']'] if matches!(b[1], b'm' | b'M') => {
            !unit.is_empty() && unit.iter().all(|c| c.is_ascii_alphanumeric())
        }
        _ => false,
    }
}

/// A builder that builds nothing: [`validate`].
struct Validator;

impl<'a> Builder<'a> for Validator {
    type Value = ();
    type Seq = ();
    type Map = ();
    type Error = Error;

    fn none(&mut self) -> Result<()> {
        Ok(())
    }
    fn boolean(&mut self, _: bool) -> Result<()> {
        Ok(())
    }
    fn int(&mut self, _: i64) -> Result<()> {
        Ok(())
    }
    fn big_int(&mut self, _: Raw<'a>) -> Result<()> {
        Ok(())
    }
    fn float(&mut self, _: f64) -> Result<()> {
        Ok(())
    }
    fn str(&mut self, utf8: Raw<'a>) -> Result<()> {
        std::str::from_utf8(&utf8.to_vec())
            .map(|_| ())
            .map_err(|e| corrupt!("corrupt encoded value: invalid UTF-8 in str: {e}"))
    }
    fn str_surrogates(&mut self, _: Raw<'a>) -> Result<()> {
        Ok(())
    }
    fn bytes(&mut self, _: Raw<'a>) -> Result<()> {
        Ok(())
    }
    fn bytearray(&mut self, _: Raw<'a>) -> Result<()> {
        Ok(())
    }
    fn ndarray(&mut self, _: NdArray<'_>) -> Result<()> {
        Ok(())
    }
    fn pickle(&mut self, _: Raw<'a>) -> Result<()> {
        Ok(())
    }
    fn seq_begin(&mut self, _: SeqKind, _: usize) -> Result<()> {
        Ok(())
    }
    fn seq_item(&mut self, _: &mut (), _: usize, _: ()) -> Result<()> {
        Ok(())
    }
    fn seq_end(&mut self, _: ()) -> Result<()> {
        Ok(())
    }
    fn map_begin(&mut self, _: usize) -> Result<()> {
        Ok(())
    }
    fn map_item(&mut self, _: &mut (), _: (), _: ()) -> Result<()> {
        Ok(())
    }
    fn map_end(&mut self, _: ()) -> Result<()> {
        Ok(())
    }
}
