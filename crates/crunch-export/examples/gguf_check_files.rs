//! Writes the files `scripts/check-gguf-py` hands to gguf-py (the `gguf` package on PyPI, an
//! independent decoder) to check crunch's GGUF output and decoders bit for bit:
//!
//! - `model.gguf`: a tiny Llama exported by crunch's GGUF writer with one tensor of every type
//!   crunch encodes (Q2_K … Q6_K, Q4_0 … Q8_0, IQ4_NL, IQ4_XS, F16, BF16, F32), importance
//!   weighted;
//! - `blocks.gguf`: random blocks of every type crunch only decodes (IQ1_S … IQ3_S);
//! - `expected.gguf`: crunch's own dequantization of every tensor of both, as F32, named
//!   `model/NAME` and `blocks/NAME`.
//!
//! Usage: `cargo run -p crunch-export --example gguf_check_files -- OUT_DIR`

use crunch_export::gguf::{self, Importance, Inputs};
use crunch_formats::gguf::{serialize, GgufFile, GgufValue};
use crunch_formats::{DType, TensorSource};
use crunch_model::testing::{tiny_tokenizer_json, write_tiny_model, SplitMix64};
use crunch_model::Checkpoint;
use std::path::Path;

#[path = "../tests/common/every_type.rs"]
mod every_type;
use every_type::{every_type_mix, wide_llama};

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: gguf_check_files OUT_DIR");
    let out = Path::new(&out);
    std::fs::create_dir_all(out).unwrap();

    // The model: a tiny Llama with 256-wide rows so every type fits.
    let spec = wide_llama();
    let hf = out.join("hf");
    write_tiny_model(&spec, &hf, 1).unwrap();
    std::fs::write(
        hf.join("tokenizer.json"),
        tiny_tokenizer_json(256).to_string(),
    )
    .unwrap();
    let mix = every_type_mix();
    let ckpt = Checkpoint::open(&hf).unwrap();
    let plan = gguf::plan(&ckpt, &mix, &[]).unwrap();
    let importance: Importance = plan
        .tensors
        .iter()
        .filter(|t| t.shape.len() == 2)
        .map(|t| {
            let w = (0..t.shape[1])
                .map(|c| 0.05 + ((c * 13) % 17) as f32)
                .collect();
            (t.name.clone(), w)
        })
        .collect();
    let model = out.join("model.gguf");
    let inputs = Inputs {
        importance: Some(&importance),
        encoded: None,
    };
    gguf::write(&ckpt, &plan, &inputs, &model, true, &mut |_, _, _| {}).unwrap();

    // Random blocks of the decode-only types, with sane f16 super-block scales.
    let mut rng = SplitMix64(20240607);
    let mut blocks: Vec<(String, DType, Vec<u8>)> = Vec::new();
    for dtype in [
        DType::IQ1S,
        DType::IQ1M,
        DType::IQ2XXS,
        DType::IQ2XS,
        DType::IQ2S,
        DType::IQ3XXS,
        DType::IQ3S,
    ] {
        let (per, size) = dtype.block();
        let n = 8;
        let mut raw: Vec<u8> = (0..n * size).map(|_| rng.next_u64() as u8).collect();
        for b in 0..n {
            let d = half::f16::from_f32(0.05 * rng.uniform()).to_bits();
            let blk = &mut raw[b * size..(b + 1) * size];
            if dtype == DType::IQ1M {
                // The scale is spread over the top nibbles of the four u16s at bytes 48..56.
                for i in 0..4 {
                    let at = 48 + 2 * i;
                    let w = u16::from_le_bytes([blk[at], blk[at + 1]]);
                    let w = (w & 0x0FFF) | (((d >> (4 * i)) & 0xF) << 12);
                    blk[at..at + 2].copy_from_slice(&w.to_le_bytes());
                }
            } else {
                blk[..2].copy_from_slice(&d.to_le_bytes());
            }
        }
        blocks.push((dtype.ggml_name().to_string(), dtype, raw));
        let _ = per;
    }
    let shapes: Vec<[usize; 2]> = blocks
        .iter()
        .map(|(_, d, r)| [r.len() / d.block().1, d.block().0])
        .collect();
    let specs: Vec<(&str, &[usize], DType, &[u8])> = blocks
        .iter()
        .zip(&shapes)
        .map(|((n, d, r), s)| (n.as_str(), &s[..], *d, r.as_slice()))
        .collect();
    let meta = [("general.architecture", GgufValue::String("blocks".into()))];
    std::fs::write(out.join("blocks.gguf"), serialize(&meta, &specs).unwrap()).unwrap();

    // crunch's dequantization of everything, as F32.
    let mut expected: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (prefix, file) in [("model", "model.gguf"), ("blocks", "blocks.gguf")] {
        let f = GgufFile::open(out.join(file)).unwrap();
        for t in f.tensors() {
            let v = f.read_f32(&t.name).unwrap();
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            expected.push((format!("{prefix}/{}", t.name), t.shape, bytes));
        }
    }
    let specs: Vec<(&str, &[usize], DType, &[u8])> = expected
        .iter()
        .map(|(n, s, b)| (n.as_str(), s.as_slice(), DType::F32, b.as_slice()))
        .collect();
    std::fs::write(out.join("expected.gguf"), serialize(&[], &specs).unwrap()).unwrap();
    println!("{}", out.display());
}
