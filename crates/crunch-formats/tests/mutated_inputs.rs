//! Property test: byte-level mutations of valid GGUF and safetensors files (bit flips,
//! overwritten bytes, planted extreme integers, truncations, insertions, deletions) must
//! give errors, never panics, from opening the file, reading every tensor and (for GGUF)
//! building the tokenizer. The cargo-fuzz targets in /fuzz do the same, open-ended.

use crunch_formats::dtype::f32_le_bytes;
use crunch_formats::gguf::{build_tokenizer, serialize, GgufFile, GgufValue as V};
use crunch_formats::safetensors::{serialize_f32, SafetensorsFile};
use crunch_formats::{DType, TensorSource};
use proptest::prelude::*;
use proptest::sample::Index;
use std::io::Write;

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    /// Overwrite 8 bytes with an extreme little-endian u64: lengths and counts are u64s.
    PlantU64(Index, u64),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let extreme = prop_oneof![
        Just(0u64),
        Just(1),
        Just(255),
        Just(1 << 31),
        Just(1 << 32),
        Just(1 << 60),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        any::<u64>(),
    ];
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        (any::<Index>(), extreme).prop_map(|(i, v)| Mutation::PlantU64(i, v)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        let len = b.len();
        match m {
            Mutation::FlipBit(i, bit) => b[i.index(len)] ^= 1 << bit,
            Mutation::SetByte(i, v) => b[i.index(len)] = *v,
            Mutation::PlantU64(i, v) => {
                let at = i.index(len);
                let n = (len - at).min(8);
                b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
            Mutation::Truncate(i) => b.truncate(i.index(len)),
            Mutation::Insert(i, v) => {
                let at = i.index(len);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len);
                b.drain(at..(at + n).min(len));
            }
        }
    }
    b
}

/// A small GGUF with several block types, nested metadata and a tiny tokenizer.
fn base_gguf() -> Vec<u8> {
    let strings = |v: &[&str]| V::Array(v.iter().map(|s| V::String(s.to_string())).collect());
    let q4_0: Vec<u8> = (0..2 * 18).map(|i| (i * 37) as u8).collect();
    let q4_k: Vec<u8> = (0..144).map(|i| (i * 11) as u8).collect();
    let q6_k: Vec<u8> = (0..210).map(|i| (i * 13) as u8).collect();
    let f16: Vec<u8> = (0..8).map(|i| i as u8).collect();
    let f32s = f32_le_bytes(&[0.5, -1.0]);
    serialize(
        &[
            ("general.architecture", V::String("llama".into())),
            ("llama.block_count", V::U32(1)),
            (
                "nested",
                V::Array(vec![V::Array(vec![V::I16(-1), V::I16(2)])]),
            ),
            ("tokenizer.ggml.model", V::String("gpt2".into())),
            ("tokenizer.ggml.pre", V::String("smollm".into())),
            ("tokenizer.ggml.tokens", strings(&["a", "b", "ab", "<s>"])),
            (
                "tokenizer.ggml.token_type",
                V::Array(vec![V::I32(1), V::I32(1), V::I32(1), V::I32(3)]),
            ),
            ("tokenizer.ggml.merges", strings(&["a b"])),
            ("tokenizer.ggml.bos_token_id", V::U32(3)),
            ("tokenizer.ggml.add_bos_token", V::Bool(true)),
        ],
        &[
            ("q4_0", &[2, 32], DType::Q4_0, &q4_0),
            ("q4_k", &[256], DType::Q4K, &q4_k),
            ("q6_k", &[1, 256], DType::Q6K, &q6_k),
            ("f16", &[2, 2], DType::F16, &f16),
            ("f32", &[2], DType::F32, &f32s),
        ],
    )
    .unwrap()
}

fn base_safetensors() -> Vec<u8> {
    serialize_f32(&[
        ("a", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
        ("b", &[1], &[7.]),
        ("c", &[0], &[]),
    ])
}

/// Reads every tensor a file lists, as stored (`raw`) and as f32: each read gives an error or
/// the values the listing promises.
fn read_every_tensor<'f, S: TensorSource>(
    f: &'f S,
    raw: impl Fn(&'f S, &str) -> crunch_formats::Result<&'f [u8]>,
) {
    for t in f.tensors() {
        let _ = raw(f, &t.name);
        if let Ok(v) = f.read_f32(&t.name) {
            assert_eq!(v.len(), t.numel());
        }
    }
}

fn exercise_gguf(bytes: Vec<u8>) {
    let Ok(f) = GgufFile::from_bytes("mutated.gguf", bytes) else {
        return;
    };
    read_every_tensor(&f, GgufFile::raw);
    if let Ok(tok) = build_tokenizer(&f) {
        let _ = tok.encode("ab <s>ba", true);
    }
}

fn exercise_safetensors(bytes: &[u8]) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let Ok(f) = SafetensorsFile::open(file.path()) else {
        return;
    };
    read_every_tensor(&f, SafetensorsFile::raw);
}

#[test]
fn unmutated_bases_are_valid() {
    let f = GgufFile::from_bytes("base.gguf", base_gguf()).unwrap();
    assert_eq!(f.tensors().len(), 5);
    for t in f.tensors() {
        f.read_f32(&t.name).unwrap();
    }
    let tok = build_tokenizer(&f).unwrap();
    assert_eq!(tok.encode("ab", true).unwrap().get_ids(), &[3, 2]);
    exercise_safetensors(&base_safetensors());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_gguf_never_panics(muts in prop::collection::vec(mutation(), 1..6)) {
        exercise_gguf(apply(base_gguf(), &muts));
    }

    #[test]
    fn mutated_safetensors_never_panics(muts in prop::collection::vec(mutation(), 1..6)) {
        exercise_safetensors(&apply(base_safetensors(), &muts));
    }
}
