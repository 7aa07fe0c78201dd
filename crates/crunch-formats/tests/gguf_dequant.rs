//! Dequantization checked bit for bit against gguf-py (an independent numpy implementation):
//! `tests/fixtures/dequant_vectors.json` holds random blocks and gguf-py's output for them,
//! written by `tests/fixtures/make_dequant_vectors.py`.
//!
//! The comparison is exact: crunch evaluates each value with the same f32 operations in the
//! same order as ggml (`d * q + m`, `(d * sc) * q - (dmin * m)`), and Rust never fuses them.

use crunch_formats::gguf::{dequantize, dtype_from_ggml, serialize, GgufFile, GgufValue};
use crunch_formats::{DType, TensorSource};

struct Vector {
    name: String,
    dtype: DType,
    raw: Vec<u8>,
    expected: Vec<f32>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> Vec<Vector> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dequant_vectors.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let expected: Vec<f32> = hex(v["expected_f32_hex"].as_str().unwrap())
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(expected.len() as u64, v["numel"].as_u64().unwrap());
            Vector {
                name: v["type"].as_str().unwrap().to_string(),
                dtype: dtype_from_ggml(v["ggml_type"].as_u64().unwrap() as u32).unwrap(),
                raw: hex(v["raw_hex"].as_str().unwrap()),
                expected,
            }
        })
        .collect()
}

fn assert_bits_equal(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{name}[{i}]: crunch {g:e} ({:#010x}) vs gguf-py {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn every_type_matches_gguf_py_exactly() {
    let vectors = vectors();
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    for want in [
        "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
        "Q5_K", "Q6_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S",
        "IQ4_NL", "IQ4_XS",
    ] {
        assert!(names.contains(&want), "fixture lacks {want}");
    }
    for v in &vectors {
        let mut out = vec![f32::NAN; v.expected.len()];
        dequantize(v.dtype, &v.raw, &mut out).unwrap();
        assert_bits_equal(&v.name, &out, &v.expected);
    }
}

#[test]
fn the_same_vectors_read_through_a_gguf_file() {
    // One 2-D tensor per type (rows of one block), read back with `read_f32`.
    let vectors = vectors();
    let shapes: Vec<[usize; 2]> = vectors
        .iter()
        .map(|v| {
            let per_row = v.dtype.block().0.max(16);
            [v.expected.len() / per_row, per_row]
        })
        .collect();
    let tensors: Vec<_> = vectors
        .iter()
        .zip(&shapes)
        .map(|(v, s)| (v.name.as_str(), &s[..], v.dtype, &v.raw[..]))
        .collect();
    let bytes = serialize(
        &[("general.architecture", GgufValue::String("t".into()))],
        &tensors,
    )
    .unwrap();
    let file = GgufFile::from_bytes("vectors.gguf", bytes).unwrap();
    for (v, s) in vectors.iter().zip(&shapes) {
        assert_eq!(file.info(&v.name).unwrap().shape, s.to_vec());
        assert_eq!(file.raw(&v.name).unwrap(), &v.raw[..]);
        assert_bits_equal(&v.name, &file.read_f32(&v.name).unwrap(), &v.expected);
    }
}

#[test]
fn large_tensors_take_the_parallel_path_with_the_same_result() {
    // Tile each quantized vector to ~1M elements so rayon splits it; every tile must equal
    // the reference.
    for v in vectors().iter().filter(|v| v.dtype.block().0 > 1) {
        let reps = (1 << 20) / v.expected.len();
        let raw = v.raw.repeat(reps);
        let mut out = vec![0f32; v.expected.len() * reps];
        dequantize(v.dtype, &raw, &mut out).unwrap();
        for tile in out.chunks(v.expected.len()) {
            assert_bits_equal(&v.name, tile, &v.expected);
        }
    }
}
