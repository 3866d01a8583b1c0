//! Round trips, every decoder error path, canonical keys, and proptest fuzzing of the decoder.

use super::*;
use crate::Error;
use proptest::prelude::*;

fn rt(v: &Value) {
    let bytes = v.to_bytes();
    let back = Value::from_bytes(&bytes).unwrap_or_else(|e| panic!("{v:?}: {e}"));
    assert_eq!(&back, v);
    validate(&bytes).unwrap();
}

fn corrupt_msg(bytes: &[u8]) -> String {
    match Value::from_bytes(bytes) {
        Err(Error::Corrupt(m)) => m,
        other => panic!("{bytes:02x?}: expected Corrupt, got {other:?}"),
    }
}

fn key(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode_key(&mut out).unwrap();
    out
}

#[test]
fn scalars_round_trip() {
    for v in [
        Value::None,
        Value::Bool(false),
        Value::Bool(true),
        Value::Int(0),
        Value::Int(-1),
        Value::Int(63),
        Value::Int(-64),
        Value::Int(64),
        Value::Int(i64::MAX),
        Value::Int(i64::MIN),
        Value::Float(0.0),
        Value::Float(-0.0),
        Value::Float(f64::NAN),
        Value::Float(f64::INFINITY),
        Value::Float(-1.5e300),
        Value::Str(String::new()),
        Value::Str("héllo, 世界 🎉".into()),
        Value::StrSurrogates(vec![0xED, 0xB2, 0x80]),
        Value::Bytes(vec![]),
        Value::Bytes(vec![0, 1, 2, 255]),
        Value::ByteArray(vec![9; 300]),
        Value::Pickle(vec![0x80, 5, b'N', b'.']),
    ] {
        rt(&v);
    }
}

#[test]
fn int_encoding_is_compact() {
    assert_eq!(Value::Int(0).to_bytes(), [tag::INT, 0]);
    assert_eq!(Value::Int(-1).to_bytes(), [tag::INT, 1]);
    assert_eq!(Value::Int(1).to_bytes(), [tag::INT, 2]);
    assert_eq!(Value::Int(64).to_bytes(), [tag::INT, 0x80, 0x01]);
    assert_eq!(Value::Int(i64::MIN).to_bytes().len(), 11);
}

#[test]
fn big_ints_are_canonical() {
    // 2**64 = 00 .. 00 01 00 (9 bytes, the last one the sign byte).
    let mut two_64 = vec![0u8; 8];
    two_64.extend([1, 0]);
    let v = Value::big_int(&two_64);
    assert_eq!(v, Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]));
    rt(&v);
    // -(2**64)
    let neg = Value::big_int(&[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
    assert_eq!(neg, Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xFF]));
    rt(&neg);
    // Wide encodings of small values collapse to Int.
    assert_eq!(Value::big_int(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Value::Int(5));
    assert_eq!(Value::big_int(&[0xFF; 12]), Value::Int(-1));
    assert_eq!(Value::big_int(&[]), Value::Int(0));
    assert_eq!(Value::big_int(&[0x80]), Value::Int(-128));
    assert_eq!(Value::big_int(&[0x80, 0]), Value::Int(128));
    // i64::MAX + 1 needs 9 bytes.
    let mut b = (i64::MAX as u64 + 1).to_le_bytes().to_vec();
    b.push(0);
    assert!(matches!(Value::big_int(&b), Value::BigInt(ref x) if x.len() == 9));
}

#[test]
fn containers_round_trip() {
    let inner = Value::Tuple(vec![Value::Int(1), Value::Str("a".into()), Value::None]);
    let v = Value::Dict(vec![
        (Value::Str("k".into()), inner.clone()),
        (Value::Int(2), Value::List(vec![inner.clone(), Value::List(vec![]), Value::Tuple(vec![])])),
        (Value::Tuple(vec![]), Value::Dict(vec![])),
    ]);
    rt(&v);
    let mut deep = Value::None;
    for _ in 0..MAX_DEPTH {
        deep = Value::List(vec![deep]);
    }
    rt(&deep);
    let too_deep = Value::Tuple(vec![deep]);
    assert!(corrupt_msg(&too_deep.to_bytes()).contains("nested deeper than 200"));
}

#[test]
fn ndarrays_round_trip() {
    for (dtype, itemsize, shape) in [
        ("<f8", 8u64, vec![2u64, 3]),
        ("|b1", 1, vec![]),
        ("<U5", 20, vec![2]),
        ("<M8[ns]", 8, vec![1, 1, 1]),
        ("<i4", 4, vec![0, 1_000_000_000_000]),
        ("|V0", 0, vec![5]),
    ] {
        let n: u64 = itemsize * shape.iter().product::<u64>();
        rt(&Value::NdArray { dtype: dtype.into(), itemsize, shape, data: (0..n).map(|i| i as u8).collect() });
    }
}

#[test]
fn decoder_errors() {
    let cases: &[(&[u8], &str)] = &[
        (&[], "truncated at byte 0"),
        (&[0], "unknown tag 0x00"),
        (&[0x7F], "unknown tag 0x7f"),
        (&[tag::INT], "truncated"),
        (&[tag::INT, 0x80], "truncated"),
        (&[tag::INT, 0x80, 0x00], "over-long varint"),
        (&[tag::INT, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], "overflows 64 bits"),
        (&[tag::FLOAT, 0, 0, 0], "truncated float"),
        (&[tag::STR, 5, b'a'], "claims 5, more than the 1 bytes"),
        (&[tag::STR, 2, 0xC3, 0x28], "invalid UTF-8"),
        (&[tag::BYTES, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], "claims 4294967295"),
        (&[tag::PICKLE, 1], "claims 1"),
        (&[tag::LIST, 100, tag::NONE], "item count at byte 1 claims 100"),
        (&[tag::TUPLE, 2, tag::NONE], "claims 2"),
        (&[tag::TUPLE, 2, tag::LIST, 0], "truncated at byte 4"),
        (&[tag::DICT, 2, tag::NONE, tag::NONE, tag::NONE], "dict entry count"),
        (&[tag::DICT, 1, tag::LIST, 0], "truncated at byte 4"),
        (&[tag::NONE, tag::NONE], "1 unexpected bytes after the value"),
        (&[tag::BIG_INT, 1, 5], "non-canonical big int"),
        (&[tag::BIG_INT, 9, 0, 0, 0, 0, 0, 0, 0, 0x10, 0], "non-canonical big int"),
        (&[tag::BIG_INT, 9, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF], "non-canonical big int"),
        (&[tag::NDARRAY, 3, b'x', b'f', b'8', 8, 0], "invalid ndarray dtype"),
        (&[tag::NDARRAY, 2, b'<', b'f', 8, 0], "invalid ndarray dtype"),
        (&[tag::NDARRAY, 3, b'<', b'f', b'8', 8, 65], "65 dimensions"),
        (&[tag::NDARRAY, 3, b'<', b'f', b'8', 8, 1, 2, 1, 2, 3], "needs 16 data bytes"),
        (&[tag::NDARRAY, 3, b'<', b'O', b'8', 8, 0, 1, 2, 3, 4, 5, 6, 7, 8], "invalid ndarray dtype"),
        (
            &[tag::NDARRAY, 3, b'<', b'f', b'8', 8, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
            "too large",
        ),
        (&[tag::NDARRAY, 40], "claims 40"),
        (&[tag::NDARRAY, 33, b'<', b'f', b'8', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "claims 33"),
    ];
    for (bytes, want) in cases {
        let m = corrupt_msg(bytes);
        assert!(m.contains(want), "{bytes:02x?}: {m:?} lacks {want:?}");
        assert!(validate(bytes).is_err());
    }
    // A 64-bit varint with the top bit set is fine; zigzag maps it to i64::MIN.
    let ok = [tag::INT, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    assert_eq!(Value::from_bytes(&ok).unwrap(), Value::Int(i64::MIN));
    // Dtype grammar.
    for bad in ["<f", "<f8[ns]", "<M8[]", "<M8[n", "<f8 ", "<f12345678901"] {
        let mut b = vec![tag::NDARRAY];
        write::varint(&mut b, bad.len() as u64);
        b.extend_from_slice(bad.as_bytes());
        b.extend([1, 0, 0]);
        assert!(corrupt_msg(&b).contains("invalid ndarray dtype"), "{bad}");
    }
}

#[test]
fn raw_reader_reads_only_its_range() {
    let v = Value::List(vec![Value::Str("abc".into()), Value::Bytes(vec![1, 2, 3])]);
    let mut bytes = v.to_bytes();
    let n = bytes.len();
    bytes.extend([tag::NONE; 4]); // bytes beyond the range must not be read
                                  // SAFETY: `bytes` outlives the reader and holds at least `n` bytes.
    let mut r = unsafe { Reader::from_raw(bytes.as_ptr(), n) };
    assert_eq!(decode_exact(&mut r, &mut value::ValueBuilder).unwrap(), v);
    // SAFETY: as above, a shorter range.
    let mut r = unsafe { Reader::from_raw(bytes.as_ptr(), n - 1) };
    assert!(decode_exact(&mut r, &mut value::ValueBuilder).is_err());
}

#[test]
fn decode_leaves_reader_after_value() {
    let mut bytes = Value::Int(7).to_bytes();
    bytes.extend(Value::Str("x".into()).to_bytes());
    let mut r = Reader::new(&bytes);
    assert_eq!(decode(&mut r, &mut value::ValueBuilder).unwrap(), Value::Int(7));
    assert_eq!(r.position(), 2);
    assert_eq!(decode(&mut r, &mut value::ValueBuilder).unwrap(), Value::Str("x".into()));
    assert_eq!(r.remaining(), 0);
}

#[test]
fn keys_are_canonical() {
    let one = key(&Value::Int(1));
    assert_eq!(key(&Value::Bool(true)), one);
    assert_eq!(key(&Value::Float(1.0)), one);
    assert_eq!(key(&Value::Float(0.0)), key(&Value::Int(0)));
    assert_eq!(key(&Value::Float(-0.0)), key(&Value::Int(0)));
    assert_eq!(key(&Value::Bool(false)), key(&Value::Int(0)));
    assert_eq!(key(&Value::Float(-3.0)), key(&Value::Int(-3)));
    assert_eq!(key(&Value::Float(f64::NAN)), key(&Value::Float(-f64::NAN)));
    assert_ne!(key(&Value::Float(1.5)), key(&Value::Int(1)));
    assert_eq!(key(&Value::Float(1.5)), Value::Float(1.5).to_bytes());
    assert_eq!(
        key(&Value::Tuple(vec![Value::Bool(true), Value::Float(2.0)])),
        key(&Value::Tuple(vec![Value::Int(1), Value::Int(2)]))
    );
    // Floats at and beyond 2**63 become big ints equal to their value.
    let two_63 = 9_223_372_036_854_775_808.0f64;
    let mut le = (1u64 << 63).to_le_bytes().to_vec();
    le.push(0);
    assert_eq!(key(&Value::Float(two_63)), key(&Value::big_int(&le)));
    assert_eq!(key(&Value::Float(-two_63)), key(&Value::Int(i64::MIN)));
    let mut le = vec![0u8; 12]; // 2**80
    le[10] = 1;
    assert_eq!(key(&Value::Float(2f64.powi(80))), key(&Value::big_int(&le)));
    let mut neg = vec![0u8; 12]; // -(2**80)
    neg[10] = 0xFF;
    neg[11] = 0xFF;
    assert_eq!(key(&Value::Float(-(2f64.powi(80)))), key(&Value::big_int(&neg)));
    // 1e300 decodes to a big int of the right size, and f64::MAX too.
    for f in [1e300, f64::MAX, -f64::MAX] {
        let k = key(&Value::Float(f));
        assert!(matches!(Value::from_bytes(&k).unwrap(), Value::BigInt(_)));
    }
    assert_eq!(key(&Value::Float(f64::INFINITY)), Value::Float(f64::INFINITY).to_bytes());
    // Non-keys.
    for v in [
        Value::List(vec![]),
        Value::Dict(vec![]),
        Value::ByteArray(vec![]),
        Value::Pickle(vec![]),
        Value::Tuple(vec![Value::List(vec![])]),
    ] {
        let mut out = Vec::new();
        match v.encode_key(&mut out) {
            Err(Error::Type(m)) => assert!(m.contains("unhashable key type"), "{m}"),
            other => panic!("{v:?}: {other:?}"),
        }
    }
}

#[test]
fn stable_hash_is_fixed() {
    // Pinned: changing the hash (or its seed) changes every shared dict's layout.
    let h = stable_hash(&key(&Value::Str("pyconc".into())));
    assert_eq!(h, stable_hash(&key(&Value::Str("pyconc".into()))));
    assert_eq!(h, 0xb900_51fb_6e0d_24f7_u64, "stable_hash changed: {h:#018x}");
    assert_eq!(stable_hash(&key(&Value::Bool(true))), stable_hash(&key(&Value::Float(1.0))));
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| Value::big_int(&b)),
        any::<u64>().prop_map(|b| Value::Float(f64::from_bits(b))),
        ".{0,20}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::ByteArray),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::StrSurrogates),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Pickle),
        (0usize..4, proptest::collection::vec(0u64..4, 0..4)).prop_map(|(k, shape)| {
            let (dtype, itemsize) = [("<f8", 8u64), ("|u1", 1), ("<U2", 8), (">i2", 2)][k];
            let n = itemsize * shape.iter().product::<u64>();
            Value::NdArray { dtype: dtype.into(), itemsize, shape, data: (0..n).map(|i| (i * 7) as u8).collect() }
        }),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Dict),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(v in arb_value()) {
        let bytes = v.to_bytes();
        prop_assert_eq!(Value::from_bytes(&bytes).unwrap(), v);
        prop_assert!(validate(&bytes).is_ok());
    }

    /// Random bytes: Ok or Corrupt, never a panic; whatever decodes re-encodes to the same bytes.
    #[test]
    fn prop_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        check_arbitrary(&bytes)?;
    }

    /// Valid encodings with a few bytes overwritten, inserted or cut off.
    #[test]
    fn prop_mutated(
        v in arb_value(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = v.to_bytes();
        for (at, b, op) in edits {
            if bytes.is_empty() { break; }
            let i = at % bytes.len();
            match op {
                0 => bytes[i] = b,
                1 => bytes.insert(i, b),
                _ => bytes.truncate(i),
            }
        }
        check_arbitrary(&bytes)?;
    }

    /// Canonical key bytes decode, and re-keying the decoded value is a fixed point.
    #[test]
    fn prop_key_fixed_point(v in arb_value()) {
        let mut k = Vec::new();
        if v.encode_key(&mut k).is_ok() {
            let back = Value::from_bytes(&k).unwrap();
            let mut k2 = Vec::new();
            back.encode_key(&mut k2).unwrap();
            prop_assert_eq!(k, k2);
        }
    }
}

fn check_arbitrary(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
    match Value::from_bytes(bytes) {
        Ok(v) => {
            prop_assert_eq!(v.to_bytes(), bytes.to_vec());
            prop_assert!(validate(bytes).is_ok());
        }
        Err(Error::Corrupt(_)) => prop_assert!(validate(bytes).is_err()),
        Err(e) => prop_assert!(false, "unexpected error {e:?}"),
    }
    Ok(())
}

/// `shm-layouts/codec.md` is the specification: its tag table, version and examples must match the code.
#[test]
fn layout_document_matches_code() {
    let doc = include_str!("../../shm-layouts/codec.md");
    assert!(doc.contains(&format!("Format version: **{FORMAT_VERSION}**")), "codec.md states another format version");
    let tags = [
        ("NONE", tag::NONE),
        ("FALSE", tag::FALSE),
        ("TRUE", tag::TRUE),
        ("INT", tag::INT),
        ("BIG_INT", tag::BIG_INT),
        ("FLOAT", tag::FLOAT),
        ("STR", tag::STR),
        ("STR_SURROGATES", tag::STR_SURROGATES),
        ("BYTES", tag::BYTES),
        ("BYTEARRAY", tag::BYTEARRAY),
        ("TUPLE", tag::TUPLE),
        ("LIST", tag::LIST),
        ("DICT", tag::DICT),
        ("NDARRAY", tag::NDARRAY),
        ("PICKLE", tag::PICKLE),
    ];
    for (name, t) in tags {
        let row = format!("| 0x{t:02X} | {name:<15}|");
        assert!(doc.contains(&row), "codec.md lacks the row {row:?}");
    }
    assert!(doc.contains(&format!("at most {MAX_DEPTH} deep")));
    assert!(doc.contains(&format!("seed = 0x{:X}", key::STABLE_HASH_SEED)));
    // The examples table.
    let hex = |v: &Value| v.to_bytes().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(" ");
    let mut two_63 = (1u64 << 63).to_le_bytes().to_vec();
    two_63.push(0);
    for v in [
        Value::None,
        Value::Bool(true),
        Value::Int(64),
        Value::big_int(&two_63),
        Value::Float(1.5),
        Value::Str("hé".into()),
        Value::Tuple(vec![Value::None, Value::List(vec![])]),
        Value::Dict(vec![(Value::Str("a".into()), Value::Bool(true))]),
    ] {
        assert!(doc.contains(&format!("`{}`", hex(&v))), "codec.md lacks example {v:?}");
    }
}
