//! The generation backend (`crunch_runtime::Host`) running the one model code:
//!
//! - f32 tiny models of every architecture against transformers' logits (the fixtures of
//!   `reference_logits.rs`), tolerance 1e-4 as there;
//! - cached decoding (token by token and in chunks, a pre-allocated cache) against its own full
//!   forward pass, 1e-5;
//! - GGUF files whose linear layers and embeddings are stored in every block encoding the
//!   kernels multiply (and F16/BF16): logits with the weights kept packed against the
//!   candle path that dequantizes them to f32 on load, within 1e-3 (max |diff| / max |logit|).

use crunch_formats::gguf::quants::ENCODABLE;
use crunch_formats::gguf::{serialize, GgufValue};
use crunch_formats::DType;
use crunch_model::testing::{
    fixture_ids, reference_fixture, reference_ids, relative_error, tensor_shapes, tensor_values,
    tiny_dir, tiny_specs, SplitMix64,
};
use crunch_model::{Checkpoint, Model, ModelConfig};
use crunch_runtime::{Backend, Cpu, Host};
use serde_json::{json, Value};
use std::path::Path;

#[test]
fn host_matches_transformers_and_its_own_cache() {
    for spec in tiny_specs() {
        let dir = tiny_dir(&spec);
        let model = Checkpoint::open(dir.path())
            .unwrap()
            .load(Host, |_| {})
            .unwrap();
        let r = reference_fixture(spec.name);
        let want: Vec<f32> = r["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let ids = fixture_ids(&r["input_ids"]);
        let full = Host.to_f32(&model.forward(&ids).unwrap()).unwrap();
        let err = relative_error(&full, &want);
        println!("{}: host vs transformers {err:.2e}", spec.name);
        assert!(err < 1e-4, "{}: {err}", spec.name);

        let ids = reference_ids(model.config.vocab, 24);
        let want = Host.to_f32(&model.forward(&ids).unwrap()).unwrap();
        for chunks in [vec![1; 24], vec![5, 1, 9, 1, 8]] {
            let rope = model.rope_tables(ids.len()).unwrap();
            let mut cache = [model.kv_cache_for(24)];
            let mut got = Vec::new();
            let mut at = 0;
            for n in chunks {
                let l = model
                    .forward_cached(&ids[at..at + n], &mut cache, &rope)
                    .unwrap();
                got.extend(Host.to_f32(&l).unwrap());
                at += n;
            }
            let err = relative_error(&got, &want);
            assert!(err < 1e-5, "{}: cached {err}", spec.name);
            // The cache is full now: one more token is an error, not a reallocation.
            let more = model.forward_cached(&[1], &mut cache, &rope);
            assert!(more.is_err(), "{}: cache overflow accepted", spec.name);
        }
    }
}

/// A Llama-shaped model wide enough for 256-weight blocks.
fn wide_config() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
    })
}

/// Where each block type keeps its f16 scale (and min), and the scale that keeps weights
/// around 1/sqrt(256) and the embeddings around 1.
fn scales(dtype: DType) -> &'static [(usize, f32)] {
    match dtype {
        DType::Q4_0 => &[(0, 0.012)],
        DType::Q5_0 => &[(0, 0.006)],
        DType::Q8_0 => &[(0, 0.0008)],
        DType::Q4_1 => &[(0, 0.012), (2, -0.09)],
        DType::Q5_1 => &[(0, 0.006), (2, -0.09)],
        DType::Q2K => &[(80, 0.004), (82, 0.002)],
        DType::Q3K => &[(108, 0.0015)],
        DType::Q4K => &[(0, 0.0009), (2, 0.0007)],
        DType::Q5K => &[(0, 0.0005), (2, 0.0007)],
        DType::Q6K => &[(208, 0.0007)],
        _ => &[],
    }
}

/// Random blocks of `dtype` for `n` weights with the scales above (random codes and
/// sub-scales), or random F16/BF16 values.
fn random_tensor(dtype: DType, n: usize, rng: &mut SplitMix64, big: bool) -> Vec<u8> {
    let gain = if big { 16.0 } else { 1.0 };
    match dtype {
        DType::F16 => (0..n)
            .flat_map(|_| half::f16::from_f32(gain * 0.06 * rng.uniform()).to_le_bytes())
            .collect(),
        DType::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(gain * 0.06 * rng.uniform()).to_le_bytes())
            .collect(),
        _ => {
            let (per, bytes) = dtype.block();
            let mut out: Vec<u8> = (0..n / per * bytes)
                .map(|_| (rng.next_u64() >> 56) as u8)
                .collect();
            for blk in out.chunks_mut(bytes) {
                for &(at, s) in scales(dtype) {
                    let v = gain * s * (0.5 + 0.5 * rng.uniform().abs());
                    blk[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                }
            }
            out
        }
    }
}

fn gguf_name(hf: &str) -> String {
    [
        ("model.layers.", "blk."),
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ]
    .iter()
    .fold(hf.to_string(), |s, (a, b)| s.replace(a, b))
}

/// A GGUF (architecture `llama`, so q/k rows are in llama.cpp's order) whose 2-D tensors are
/// random `dtype` blocks; norms are f32.
fn write_packed_gguf(path: &Path, dtype: DType) {
    let cfg = ModelConfig::from_hf_json(Path::new("config.json"), &wide_config()).unwrap();
    let mut rng = SplitMix64(dtype as u64 + 11);
    let tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)> = tensor_shapes(&cfg)
        .into_iter()
        .map(|(name, shape)| {
            if shape.len() == 2 {
                let big = name.contains("embed_tokens");
                let n = shape[0] * shape[1];
                let bytes = random_tensor(dtype, n, &mut rng, big);
                (gguf_name(&name), shape, dtype, bytes)
            } else {
                let v = tensor_values(&name, &shape, 1);
                let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (gguf_name(&name), shape, DType::F32, bytes)
            }
        })
        .collect();
    let u = |v: usize| GgufValue::U32(v as u32);
    let meta = vec![
        ("general.architecture", GgufValue::String("llama".into())),
        ("llama.block_count", u(cfg.layers)),
        ("llama.embedding_length", u(cfg.hidden)),
        ("llama.feed_forward_length", u(cfg.intermediate)),
        ("llama.attention.head_count", u(cfg.heads)),
        ("llama.attention.head_count_kv", u(cfg.kv_heads)),
        ("llama.vocab_size", u(cfg.vocab)),
        ("llama.context_length", u(256)),
        ("llama.rope.freq_base", GgufValue::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(1e-6),
        ),
    ];
    let refs: Vec<(&str, &[usize], DType, &[u8])> = tensors
        .iter()
        .map(|(n, s, d, b)| (n.as_str(), s.as_slice(), *d, b.as_slice()))
        .collect();
    std::fs::write(path, serialize(&meta, &refs).unwrap()).unwrap();
}

#[test]
fn packed_weights_match_the_dequantized_path() {
    let ids = reference_ids(256, 20);
    // Every block type the kernels multiply (all that crunch encodes but the IQ4 grids), and
    // the 16-bit floats.
    let blocks = ENCODABLE
        .into_iter()
        .filter(|d| !matches!(d, DType::IQ4NL | DType::IQ4XS));
    for dtype in blocks.chain([DType::F16, DType::BF16]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("packed.gguf");
        write_packed_gguf(&path, dtype);
        let ckpt = Checkpoint::open(&path).unwrap();
        let dense: Model<Cpu> = ckpt.load(Cpu, |_| {}).unwrap();
        let packed: Model<Host> = ckpt.load(Host, |_| {}).unwrap();
        // The packed model really is packed: its weights are the file's blocks.
        let q = packed.blocks[0].q.weight.packed().expect("packed q_proj");
        assert_eq!(q.dtype(), dtype);
        assert!(packed.embed.packed().is_some());
        let want = Cpu.to_f32(&dense.forward(&ids).unwrap()).unwrap();
        let got = Host.to_f32(&packed.forward(&ids).unwrap()).unwrap();
        let err = relative_error(&got, &want);
        println!("{dtype:?}: packed vs dequantized logits {err:.2e}");
        assert!(err < 1e-3, "{dtype:?}: {err}");
        // Up to 4 positions take the decoding product (`gemv.rs`, `quad.rs`), not the panels.
        let few = &ids[..3];
        let want = Cpu.to_f32(&dense.forward(few).unwrap()).unwrap();
        let got = Host.to_f32(&packed.forward(few).unwrap()).unwrap();
        let err = relative_error(&got, &want);
        println!("{dtype:?}: 3 positions, packed vs dequantized logits {err:.2e}");
        assert!(err < 1e-3, "{dtype:?} (3 positions): {err}");
    }
}

#[test]
fn a_non_finite_block_scale_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("packed.gguf");
    write_packed_gguf(&path, DType::Q4_0);
    // Overwrite one block's f16 scale with +inf inside the first q_proj row.
    let mut bytes = std::fs::read(&path).unwrap();
    let f = crunch_formats::gguf::GgufFile::from_bytes(&path, bytes.clone()).unwrap();
    let raw = f.raw("blk.0.attn_q.weight").unwrap().to_vec();
    drop(f);
    // The tensor's offset in the file: where its bytes occur (the tiny model's tensors are
    // random, so they occur once).
    let at = bytes
        .windows(raw.len())
        .position(|w| w == raw.as_slice())
        .unwrap();
    bytes[at..at + 2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = Checkpoint::open(&path)
        .unwrap()
        .load(Host, |_| {})
        .err()
        .expect("an inf scale must be refused");
    assert!(err.to_string().contains("non-finite"), "{err}");
}
