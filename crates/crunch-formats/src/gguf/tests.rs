//! Reader tests: a round trip through [`serialize`], and one test per kind of bad input,
//! built field by field so that each lie is explicit.

use super::*;

/// Raw GGUF pieces, written exactly as given (no validation), for crafting bad files.
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend(v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend(s.as_bytes());
        self
    }
    fn tensor(&mut self, name: &str, ne: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(ne.len() as u32);
        for &d in ne {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to the default alignment and appends `n` data bytes.
    fn data(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.0.clone();
        v.resize(v.len().next_multiple_of(32), 0);
        v.extend((0..n).map(|i| i as u8));
        v
    }
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
    GgufFile::from_bytes("test.gguf", bytes)
}

/// The error parsing a v3 file with one tensor, `name` (dims `ne`, ggml type `ty`, at offset
/// 0), and `data` bytes of tensor data gives.
fn one_tensor_err(name: &str, ne: &[u64], ty: u32, data: usize) -> String {
    let mut r = Raw::header(3, 1, 0);
    r.tensor(name, ne, ty, 0);
    err(r.data(data))
}

fn err(bytes: Vec<u8>) -> String {
    match parse(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn sample() -> Vec<u8> {
    use crate::dtype::f32_le_bytes;
    use GgufValue as V;
    let q8: Vec<u8> = (0..2 * 34)
        .map(|i| if i % 34 == 1 { 0x3c } else { i as u8 })
        .collect();
    let f32s = f32_le_bytes(&[1.5, -2.0, 0.25]);
    serialize(
        &[
            ("general.architecture", V::String("llama".into())),
            ("u8", V::U8(1)),
            ("i8", V::I8(-1)),
            ("u16", V::U16(2)),
            ("i16", V::I16(-2)),
            ("u32", V::U32(3)),
            ("i32", V::I32(-3)),
            ("u64", V::U64(4)),
            ("i64", V::I64(-4)),
            ("f32", V::F32(0.5)),
            ("f64", V::F64(-0.25)),
            ("bool", V::Bool(true)),
            (
                "nested",
                V::Array(vec![
                    V::Array(vec![V::String("a".into()), V::String("".into())]),
                    V::Array(vec![]),
                ]),
            ),
        ],
        &[
            ("emb", &[2, 32], DType::Q8_0, &q8),
            ("norm", &[3], DType::F32, &f32s),
        ],
    )
    .unwrap()
}

#[test]
fn round_trip_of_every_value_type_and_tensor_layout() {
    let f = parse(sample()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get("i8"), Some(&GgufValue::I8(-1)));
    assert_eq!(f.get("i64").and_then(GgufValue::as_i64), Some(-4));
    assert_eq!(f.get("f64").and_then(GgufValue::as_f64), Some(-0.25));
    assert_eq!(f.get("bool").and_then(GgufValue::as_bool), Some(true));
    let nested = f.get("nested").and_then(GgufValue::as_array).unwrap();
    assert_eq!(nested[0].as_array().unwrap()[0].as_str(), Some("a"));
    assert_eq!(nested[1].as_array().unwrap().len(), 0);
    assert_eq!(f.metadata().len(), 13);

    let infos = f.tensors();
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0].shape, vec![2, 32]);
    assert_eq!(infos[0].dtype, DType::Q8_0);
    assert_eq!(f.raw("emb").unwrap().len(), 68);
    assert_eq!(f.read_f32("norm").unwrap(), vec![1.5, -2.0, 0.25]);
    // Block 0: d = f16 0x3c00 = 1.0, so values are the quant bytes as i8.
    let emb = f.read_f32("emb").unwrap();
    assert_eq!(emb[0], 2.0);
    assert_eq!(emb[31], 33.0);
    assert!(f.data_start().is_multiple_of(32));
    let err = f.read_f32("missing").unwrap_err().to_string();
    assert!(err.contains("no tensor named `missing`"), "{err}");
}

#[test]
fn open_maps_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    std::fs::write(&good, sample()).unwrap();
    let f = GgufFile::open(&good).unwrap();
    assert_eq!(f.read_f32("norm").unwrap(), vec![1.5, -2.0, 0.25]);
    assert_eq!(f.bytes_on_disk(), std::fs::metadata(&good).unwrap().len());

    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let e = GgufFile::open(&empty).err().unwrap().to_string();
    assert!(e.contains("empty.gguf") && e.contains("too short"), "{e}");
}

#[test]
fn bad_magic() {
    let mut b = sample();
    b[..4].copy_from_slice(b"GGML");
    assert!(err(b).contains("not a GGUF file"));
    assert!(err(b"GG".to_vec()).contains("not a GGUF file"));
}

#[test]
fn unsupported_versions() {
    for (v, hint) in [
        (1, "v1"),
        (4, "only versions 2 and 3"),
        (3u32.swap_bytes(), "big-endian"),
    ] {
        let e = err(Raw::header(v, 0, 0).0);
        assert!(e.contains(&format!("unsupported GGUF version {v}")), "{e}");
        assert!(e.contains(hint), "{e}");
    }
    assert_eq!(parse(Raw::header(2, 0, 0).0).unwrap().version(), 2);
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let b = sample();
    for len in 0..b.len() {
        let e = err(b[..len].to_vec());
        assert!(e.starts_with("test.gguf: "), "{e}");
    }
}

#[test]
fn lying_counts_fail_fast() {
    // 2^60 metadata entries or tensors in a 24-byte file: refused before any allocation.
    let e = err(Raw::header(3, 0, 1 << 60).0);
    assert!(
        e.contains("claims 1152921504606846976 metadata entries"),
        "{e}"
    );
    let e = err(Raw::header(3, u64::MAX, 0).0);
    assert!(e.contains("tensors"), "{e}");

    // A string longer than the file.
    let mut r = Raw::header(3, 0, 1);
    r.u64(1 << 62).u64(0).u64(0);
    let e = err(r.0);
    assert!(e.contains("string length 4611686018427387904"), "{e}");

    // An array claiming 2^60 u64 elements.
    let mut r = Raw::header(3, 0, 1);
    r.str("a").u32(9).u32(10).u64(1 << 60);
    let e = err(r.0);
    assert!(
        e.contains("metadata key `a`") && e.contains("array elements"),
        "{e}"
    );
}

#[test]
fn metadata_value_budget_is_enforced() {
    // 2^24 + 1 one-byte values: each fits the file, but together they exceed the budget.
    let n = (1u64 << 24) + 1;
    let mut r = Raw::header(3, 0, 1);
    r.str("big").u32(9).u32(0).u64(n);
    r.0.resize(r.0.len() + n as usize, 0);
    let e = err(r.0);
    assert!(e.contains("more than 16777216 values"), "{e}");
}

#[test]
fn deeply_nested_arrays_are_refused() {
    let mut r = Raw::header(3, 0, 1);
    r.str("deep");
    r.u32(9);
    for _ in 0..100 {
        r.u32(9).u64(1);
    }
    r.u32(0).u64(0);
    assert!(err(r.0).contains("nested more than"));
}

#[test]
fn bad_values() {
    let mut r = Raw::header(3, 0, 1);
    r.str("b").u32(7);
    r.0.push(2);
    assert!(err(r.0).contains("bool value is 2"));

    let mut r = Raw::header(3, 0, 1);
    r.str("t").u32(13);
    r.0.push(0);
    assert!(err(r.0).contains("unknown value type 13"));

    let mut r = Raw::header(3, 0, 1);
    r.str("s").u32(8).u64(2);
    r.0.extend([0xff, 0xfe]);
    assert!(err(r.0).contains("not valid UTF-8"));

    let mut r = Raw::header(3, 0, 2);
    r.str("k").u32(4).u32(1).str("k").u32(4).u32(2);
    assert!(err(r.0).contains("`k` appears twice"));
}

#[test]
fn alignment_is_validated_and_honoured() {
    let mut r = Raw::header(3, 0, 1);
    r.str("general.alignment").u32(4).u32(3);
    assert!(err(r.0).contains("power of two"));

    let data = [7u8; 8];
    let b = serialize(
        &[("general.alignment", GgufValue::U32(64))],
        &[
            ("a", &[2], DType::F32, &data),
            ("b", &[2], DType::F32, &data),
        ],
    )
    .unwrap();
    let f = parse(b).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.raw("b").unwrap(), &data);
}

#[test]
fn lying_offsets_and_sizes() {
    // Offset past the end of the data.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4], 0, 32);
    let e = err(r.data(16));
    assert!(
        e.contains("tensor `w`") && e.contains("beyond the end"),
        "{e}"
    );
    // Offset that overflows u64 when added to the data start.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[4], 0, u64::MAX - 31);
    assert!(err(r.data(16)).contains("beyond the end"));
    // Misaligned offset.
    let mut r = Raw::header(3, 1, 0);
    r.tensor("w", &[1], 0, 4);
    assert!(err(r.data(16)).contains("not a multiple of the alignment 32"));
    // Overlapping tensors.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[16], 0, 0).tensor("b", &[4], 0, 32);
    assert!(err(r.data(64)).contains("overlap"));
    // The same name twice.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[1], 0, 0).tensor("a", &[1], 0, 32);
    assert!(err(r.data(64)).contains("`a` appears twice"));
}

#[test]
fn bad_dimensions() {
    assert!(one_tensor_err("w", &[1, 1, 1, 1, 1], 0, 4).contains("5 dimensions"));

    assert!(one_tensor_err("w", &[1 << 32, 1 << 32], 0, 4).contains("overflow"));

    assert!(one_tensor_err("w", &[u64::MAX, 0], 0, 4).contains("overflow"));

    // 48 Q4_0 elements: one and a half blocks.
    let e = one_tensor_err("w", &[48], 2, 64);
    assert!(
        e.contains("not a multiple of the Q4_0 block size 32"),
        "{e}"
    );

    // Rows of 16 Q8_0 elements: 64 elements in all, but blocks would straddle rows.
    assert!(one_tensor_err("w", &[16, 4], 8, 68).contains("row length 16"));

    // Shape is reversed from ne; a zero-sized tensor is fine.
    let mut r = Raw::header(3, 2, 0);
    r.tensor("w", &[2, 3], 0, 0).tensor("z", &[0, 5], 0, 32);
    let f = parse(r.data(32)).unwrap();
    assert_eq!(f.info("w").unwrap().shape, vec![3, 2]);
    assert_eq!(f.read_f32("z").unwrap(), Vec::<f32>::new());
}

#[test]
fn unknown_and_unsupported_type_ids_name_the_tensor() {
    let e = one_tensor_err("blk.0.w", &[32], 99, 64);
    assert!(
        e.contains("tensor `blk.0.w`: unknown ggml type id 99"),
        "{e}"
    );

    let e = one_tensor_err("blk.0.w", &[256], 34, 64);
    assert!(
        e.contains("tensor `blk.0.w`") && e.contains("34 (TQ1_0)"),
        "{e}"
    );
}

#[test]
fn type_ids_round_trip() {
    for id in 0..64 {
        if let Ok(dt) = dtype_from_ggml(id) {
            assert_eq!(ggml_type_id(dt), id);
        }
    }
}

#[test]
fn integer_tensors_are_stored_but_not_dequantized() {
    let b = serialize(&[], &[("ids", &[2], DType::I32, &[1, 0, 0, 0, 2, 0, 0, 0])]).unwrap();
    let f = parse(b).unwrap();
    assert_eq!(f.raw("ids").unwrap().len(), 8);
    let e = f.read_f32("ids").unwrap_err().to_string();
    assert!(e.contains("tensor `ids`") && e.contains("integer"), "{e}");
}
