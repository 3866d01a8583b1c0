//! [`Value`]: the encodable values as a Rust enum, for tests, fuzzing and tools.

use super::read::{decode_exact, Builder, NdArray, Raw, Reader, SeqKind};
use super::{key, write};
use crate::error::{corrupt, Error, Result};

/// A decoded value. Floats compare by their bits, so `NaN == NaN` and `0.0 != -0.0` here: equality is
/// "encodes to the same bytes", which is what the codec preserves.
#[derive(Clone, Debug)]
pub enum Value {
    /// `None`
    None,
    /// `bool`
    Bool(bool),
    /// `int` in the i64 range.
    Int(i64),
    /// `int` outside the i64 range: minimal two's complement, little-endian (build it with
    /// [`Value::big_int`]).
    BigInt(Vec<u8>),
    /// `float`
    Float(f64),
    /// `str`
    Str(String),
    /// `str` with lone surrogates, as UTF-8 with `surrogatepass` (not validated in Rust).
    StrSurrogates(Vec<u8>),
    /// `bytes`
    Bytes(Vec<u8>),
    /// `bytearray`
    ByteArray(Vec<u8>),
    /// `tuple`
    Tuple(Vec<Value>),
    /// `list`
    List(Vec<Value>),
    /// `dict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// `numpy.ndarray`
    NdArray {
        /// numpy's `dtype.str`.
        dtype: String,
        /// Bytes per element.
        itemsize: u64,
        /// Dimensions.
        shape: Vec<u64>,
        /// C-order element bytes, `itemsize * prod(shape)` of them.
        data: Vec<u8>,
    },
    /// A pickle (protocol 5) of anything else.
    Pickle(Vec<u8>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (None, None) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (BigInt(a), BigInt(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Str(a), Str(b)) => a == b,
            (StrSurrogates(a), StrSurrogates(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (ByteArray(a), ByteArray(b)) => a == b,
            (Tuple(a), Tuple(b)) | (List(a), List(b)) => a == b,
            (Dict(a), Dict(b)) => a == b,
            (
                NdArray { dtype: d1, itemsize: i1, shape: s1, data: x1 },
                NdArray { dtype: d2, itemsize: i2, shape: s2, data: x2 },
            ) => d1 == d2 && i1 == i2 && s1 == s2 && x1 == x2,
            (Pickle(a), Pickle(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// An int from two's complement little-endian bytes of any width: [`Value::Int`] when it fits an i64,
    /// otherwise a minimal [`Value::BigInt`].
    pub fn big_int(le: &[u8]) -> Value {
        let n = write::minimal_len(le);
        if n <= 8 {
            let negative = n > 0 && le[n - 1] & 0x80 != 0;
            let mut buf = [if negative { 0xFF } else { 0 }; 8];
            buf[..n].copy_from_slice(&le[..n]);
            Value::Int(i64::from_le_bytes(buf))
        } else {
            Value::BigInt(le[..n].to_vec())
        }
    }

    /// Appends the encoding of `self` to `out`. Nesting deeper than [`super::MAX_DEPTH`] produces bytes the
    /// decoder rejects (the Python encoder pickles such values instead).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::None => write::none(out),
            Value::Bool(b) => write::boolean(out, *b),
            Value::Int(i) => write::int(out, *i),
            Value::BigInt(le) => write::big_int(out, le),
            Value::Float(f) => write::float(out, *f),
            Value::Str(s) => write::str(out, s),
            Value::StrSurrogates(b) => write::str_surrogates(out, b),
            Value::Bytes(b) => write::bytes(out, b),
            Value::ByteArray(b) => write::bytearray(out, b),
            Value::Tuple(items) => {
                write::tuple_header(out, items.len());
                items.iter().for_each(|v| v.encode(out));
            }
            Value::List(items) => {
                write::list_header(out, items.len());
                items.iter().for_each(|v| v.encode(out));
            }
            Value::Dict(entries) => {
                write::dict_header(out, entries.len());
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
            }
            Value::NdArray { dtype, itemsize, shape, data } => {
                write::ndarray_header(out, dtype, *itemsize, shape);
                out.extend_from_slice(data);
            }
            Value::Pickle(p) => write::pickle(out, p),
        }
    }

    /// The encoding of `self`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one value spanning `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Value> {
        decode_exact(&mut Reader::new(bytes), &mut ValueBuilder)
    }

    /// Appends the canonical key encoding of `self` (see [`super::key`]). Fails with [`Error::Type`] for values
    /// that cannot be dict keys.
    pub fn encode_key(&self, out: &mut Vec<u8>) -> Result<()> {
        self.encode_key_at(out, 0)
    }

    fn encode_key_at(&self, out: &mut Vec<u8>, depth: usize) -> Result<()> {
        match self {
            Value::None => write::none(out),
            Value::Bool(b) => write::int(out, i64::from(*b)),
            Value::Int(i) => write::int(out, *i),
            Value::BigInt(le) => write::big_int(out, le),
            Value::Float(f) => {
                key::float(out, *f);
            }
            Value::Str(s) => write::str(out, s),
            Value::StrSurrogates(b) => write::str_surrogates(out, b),
            Value::Bytes(b) => write::bytes(out, b),
            Value::Tuple(items) => {
                if depth >= super::MAX_DEPTH {
                    return Err(key::too_deep());
                }
                write::tuple_header(out, items.len());
                for v in items {
                    v.encode_key_at(out, depth + 1)?;
                }
            }
            other => return Err(key::not_a_key(other.type_name())),
        }
        Ok(())
    }

    /// The Python type name of the value (`"pickle"` for a pickle).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) | Value::StrSurrogates(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::NdArray { .. } => "numpy.ndarray",
            Value::Pickle(_) => "pickle",
        }
    }
}

/// Builds [`Value`]s; checks the UTF-8 of `str` payloads.
pub struct ValueBuilder;

impl<'a> Builder<'a> for ValueBuilder {
    type Value = Value;
    type Seq = (SeqKind, Vec<Value>);
    type Map = Vec<(Value, Value)>;
    type Error = Error;

    fn none(&mut self) -> Result<Value> {
        Ok(Value::None)
    }
    fn boolean(&mut self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }
    fn int(&mut self, v: i64) -> Result<Value> {
        Ok(Value::Int(v))
    }
    fn big_int(&mut self, le: Raw<'a>) -> Result<Value> {
        Ok(Value::BigInt(le.to_vec()))
    }
    fn float(&mut self, v: f64) -> Result<Value> {
        Ok(Value::Float(v))
    }
    fn str(&mut self, utf8: Raw<'a>) -> Result<Value> {
        String::from_utf8(utf8.to_vec())
            .map(Value::Str)
            .map_err(|e| corrupt!("corrupt encoded value: invalid UTF-8 in str: {}", e.utf8_error()))
    }
    fn str_surrogates(&mut self, data: Raw<'a>) -> Result<Value> {
        Ok(Value::StrSurrogates(data.to_vec()))
    }
    fn bytes(&mut self, data: Raw<'a>) -> Result<Value> {
        Ok(Value::Bytes(data.to_vec()))
    }
    fn bytearray(&mut self, data: Raw<'a>) -> Result<Value> {
        Ok(Value::ByteArray(data.to_vec()))
    }
    fn ndarray(&mut self, arr: NdArray<'_>) -> Result<Value> {
        Ok(Value::NdArray {
            dtype: arr.dtype.to_owned(),
            itemsize: arr.itemsize,
            shape: arr.shape.to_vec(),
            data: arr.data.to_vec(),
        })
    }
    fn pickle(&mut self, data: Raw<'a>) -> Result<Value> {
        Ok(Value::Pickle(data.to_vec()))
    }
    fn seq_begin(&mut self, kind: SeqKind, len: usize) -> Result<Self::Seq> {
        Ok((kind, Vec::with_capacity(len)))
    }
    fn seq_item(&mut self, seq: &mut Self::Seq, _: usize, item: Value) -> Result<()> {
        seq.1.push(item);
        Ok(())
    }
    fn seq_end(&mut self, (kind, items): Self::Seq) -> Result<Value> {
        Ok(match kind {
            SeqKind::Tuple => Value::Tuple(items),
            SeqKind::List => Value::List(items),
        })
    }
    fn map_begin(&mut self, len: usize) -> Result<Vec<(Value, Value)>> {
        Ok(Vec::with_capacity(len))
    }
    fn map_item(&mut self, map: &mut Self::Map, key: Value, value: Value) -> Result<()> {
        map.push((key, value));
        Ok(())
    }
    fn map_end(&mut self, map: Self::Map) -> Result<Value> {
        Ok(Value::Dict(map))
    }
}
