//! The value codec: the byte format in which Python values are stored in segments, and the stable key hash.
//!
//! `shm-layouts/codec.md` is the specification; this module is its implementation. In short, a value is a tag
//! byte followed by a payload; integers are little-endian, lengths and counts are LEB128 varints, containers
//! are a count followed by their items. Everything the format cannot express natively is a pickle (protocol 5).
//!
//! * [`write`]: appending encoded values to a `Vec<u8>` (used by the Rust [`Value`] and by the PyO3 encoder).
//! * [`read`]: a validating decoder that drives a [`Builder`] over a [`Reader`], which reads either from a
//!   slice or from a raw range of shared memory without ever forming a `&[u8]` over it.
//! * [`value`]: [`Value`], a Rust-side mirror of the encodable values, for tests, fuzzing and tools.
//! * [`key`]: canonical key encoding (values equal in Python encode to identical bytes) and [`stable_hash`].
//!
//! No per-value version byte is written: a structure that stores encoded values (queue, dict) records
//! [`FORMAT_VERSION`] in its own header and refuses to read a version it does not know.

pub mod key;
pub mod read;
pub mod value;
pub mod write;

#[cfg(test)]
mod tests;

pub use key::{stable_hash, STABLE_HASH_SEED};
pub use read::{decode, decode_exact, validate, Builder, NdArray, Raw, Reader, SeqKind};
pub use value::Value;

/// Version of the byte format described in `shm-layouts/codec.md`. Bumped on any change a reader of the
/// previous version could not decode.
pub const FORMAT_VERSION: u32 = 1;

/// Containers nested deeper than this are not encoded natively (the encoder pickles the whole value instead)
/// and are rejected as corrupt by the decoder. The outermost container is at depth 1.
pub const MAX_DEPTH: usize = 200;

/// Most dimensions an encoded ndarray may have (numpy 2 allows 64; numpy 1 allowed 32).
pub const MAX_NDIM: usize = 64;

/// Longest dtype string an encoded ndarray may carry (e.g. `<M8[ns]` is 7 bytes).
pub const MAX_DTYPE_LEN: usize = 32;

/// The tag bytes. Tag 0 is reserved and never valid, so zero-filled memory is reported as corrupt instead of
/// decoding as a value.
pub mod tag {
    /// `None`. No payload.
    pub const NONE: u8 = 0x01;
    /// `False`. No payload.
    pub const FALSE: u8 = 0x02;
    /// `True`. No payload.
    pub const TRUE: u8 = 0x03;
    /// `int` in the i64 range: zigzag LEB128 varint.
    pub const INT: u8 = 0x04;
    /// `int` outside the i64 range: varint byte count `n >= 9`, then `n` bytes of minimal two's complement,
    /// little-endian.
    pub const BIG_INT: u8 = 0x05;
    /// `float`: the 8 bytes of its IEEE 754 binary64 bits, little-endian.
    pub const FLOAT: u8 = 0x06;
    /// `str` that is valid Unicode: varint byte count, then UTF-8.
    pub const STR: u8 = 0x07;
    /// `str` containing lone surrogates (e.g. from `os.fsdecode`): varint byte count, then UTF-8 in which
    /// surrogates are encoded as three-byte sequences (Python's `surrogatepass`).
    pub const STR_SURROGATES: u8 = 0x08;
    /// `bytes`: varint byte count, then the bytes.
    pub const BYTES: u8 = 0x09;
    /// `bytearray`: varint byte count, then the bytes.
    pub const BYTEARRAY: u8 = 0x0A;
    /// `tuple`: varint item count, then the items.
    pub const TUPLE: u8 = 0x0B;
    /// `list`: varint item count, then the items.
    pub const LIST: u8 = 0x0C;
    /// `dict`: varint entry count, then key, value, key, value... in insertion order.
    pub const DICT: u8 = 0x0D;
    /// `numpy.ndarray`: varint dtype length, dtype string (ASCII), varint itemsize, varint ndim, ndim varint
    /// dimensions, then exactly `itemsize * prod(shape)` bytes of C-order data.
    pub const NDARRAY: u8 = 0x0E;
    /// Anything else: varint byte count, then `pickle.dumps(obj, protocol=5)`.
    pub const PICKLE: u8 = 0x0F;
}
