//! Every architecture against Hugging Face transformers: a tiny random model made here, the
//! same files run through transformers once (scripts/reference_logits.py, fixtures in
//! tests/fixtures/reference/), and crunch's float32 logits compared.
//!
//! Tolerance: max |crunch - transformers| / max |transformers| < 1e-4 over all logits.

use crunch_formats::gguf::{serialize, GgufValue};
use crunch_formats::DType;
use crunch_model::config::RopeScaling;
use crunch_model::rope::inverse_frequencies;
use crunch_model::testing::{
    relative_error, tensor_shapes, tensor_values, tiny_specs, write_tiny_model, TinySpec,
};
use crunch_model::{Checkpoint, ModelConfig};
use crunch_runtime::{Backend, Cpu};
use serde_json::Value;
use std::path::Path;

const TOLERANCE: f32 = 1e-4;

fn reference(arch: &str) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/reference/{arch}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check(name: &str, model_path: &Path, reference: &Value) {
    let ckpt = Checkpoint::open(model_path).unwrap();
    let model = ckpt.load(Cpu, |_| {}).unwrap();
    let ids: Vec<u32> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value(reference["logits"].clone()).unwrap();
    let got = Cpu.to_f32(&model.forward(&ids).unwrap()).unwrap();
    let err = relative_error(&got, &want);
    println!(
        "{name} ({}): relative error {err:.2e}",
        model_path.display()
    );
    assert!(
        err < TOLERANCE,
        "{name}: relative error {err} >= {TOLERANCE}"
    );
}

#[test]
fn safetensors_models_match_transformers() {
    for spec in tiny_specs() {
        let dir = tempfile::tempdir().unwrap();
        let hash = write_tiny_model(&spec, dir.path(), 0).unwrap();
        let reference = reference(spec.name);
        assert_eq!(
            reference["weights_fnv1a"].as_str().unwrap(),
            format!("{hash:016x}"),
            "{}: the tiny-model generator changed; regenerate the fixtures",
            spec.name
        );
        check(spec.name, dir.path(), &reference);
    }
}

/// llama.cpp's q/k row order, as its converter writes Llama-architecture files.
fn permute_rows(data: &[f32], heads: usize, head_dim: usize) -> Vec<f32> {
    let cols = data.len() / (heads * head_dim);
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(data.len());
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + j * half + i;
                out.extend_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// llama.cpp tensor names, written out independently of the loader's own table.
fn gguf_name(hf: &str) -> String {
    [
        ("model.layers.", "blk."),
        ("model.embed_tokens", "token_embd"),
        ("model.norm", "output_norm"),
        ("lm_head", "output"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ]
    .iter()
    .fold(hf.to_string(), |s, (a, b)| s.replace(a, b))
}

/// The same tiny model written as GGUF the way llama.cpp's converter does: llama.cpp names,
/// q/k rows permuted on the Llama architecture, Llama 3 rope scaling as `rope_freqs.weight`,
/// the sliding window as metadata; F16 for 2-D weights, F32 for the rest.
fn write_gguf(spec: &TinySpec, path: &Path, arch: &str) {
    let cfg = ModelConfig::from_hf_json(Path::new("config.json"), &spec.config).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
    for (name, shape) in tensor_shapes(&cfg) {
        let mut v = tensor_values(&name, &shape, 0);
        if arch == "llama" && name.contains("q_proj") {
            v = permute_rows(&v, cfg.heads, cfg.head_dim);
        }
        if arch == "llama" && name.contains("k_proj") {
            v = permute_rows(&v, cfg.kv_heads, cfg.head_dim);
        }
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((gguf_name(&name), shape, DType::F32, bytes));
    }
    if let Some(RopeScaling::Llama3 { .. }) = cfg.rope_scaling {
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
        let bytes = factors.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.push((
            "rope_freqs.weight".into(),
            vec![factors.len()],
            DType::F32,
            bytes,
        ));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String(arch.into()),
        ),
        (k("block_count"), u(cfg.layers)),
        (k("embedding_length"), u(cfg.hidden)),
        (k("feed_forward_length"), u(cfg.intermediate)),
        (k("attention.head_count"), u(cfg.heads)),
        (k("attention.head_count_kv"), u(cfg.kv_heads)),
        (k("attention.key_length"), u(cfg.head_dim)),
        (k("vocab_size"), u(cfg.vocab)),
        (k("rope.freq_base"), GgufValue::F32(cfg.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(cfg.rms_eps),
        ),
    ];
    if let Some(w) = cfg.layer_window[0] {
        meta.push((k("attention.sliding_window"), u(w)));
    }
    let meta_refs: Vec<(&str, GgufValue)> =
        meta.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let tensor_refs: Vec<(&str, &[usize], DType, &[u8])> = tensors
        .iter()
        .map(|(n, s, d, b)| (n.as_str(), s.as_slice(), *d, b.as_slice()))
        .collect();
    std::fs::write(path, serialize(&meta_refs, &tensor_refs).unwrap()).unwrap();
}

#[test]
fn gguf_models_match_transformers() {
    // Llama and Mistral (llama.cpp writes both as `llama`) exercise the q/k un-permutation,
    // rope_freqs and the sliding window; Qwen2 and Qwen3 biases and q/k norms.
    for (name, gguf_arch) in [
        ("llama", "llama"),
        ("mistral", "llama"),
        ("qwen2", "qwen2"),
        ("qwen3", "qwen3"),
    ] {
        let spec = tiny_specs().into_iter().find(|s| s.name == name).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_gguf(&spec, &path, gguf_arch);
        check(name, &path, &reference(name));
    }
}
