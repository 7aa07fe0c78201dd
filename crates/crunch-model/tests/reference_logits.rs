//! Every architecture against Hugging Face transformers: a tiny random model made here, the
//! same files run through transformers once (scripts/reference_logits.py, fixtures in
//! tests/fixtures/reference/), and crunch's float32 logits compared.
//!
//! Tolerance: max |crunch - transformers| / max |transformers| < 1e-4 over all logits.

use crunch_model::testing::{
    gguf_arch, reference_fixture, relative_error, tiny_gguf, tiny_specs, write_fixture_model,
};
use crunch_model::Checkpoint;
use crunch_runtime::{Backend, Cpu};
use serde_json::Value;
use std::path::Path;

const TOLERANCE: f32 = 1e-4;

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
        let reference = reference_fixture(spec.name);
        write_fixture_model(&spec, dir.path(), &reference);
        check(spec.name, dir.path(), &reference);
    }
}

#[test]
fn gguf_models_match_transformers() {
    // Llama, Mistral and Mixtral (llama.cpp writes all three as `llama`) exercise the q/k
    // un-permutation, rope_freqs and the sliding window; Qwen2 and Qwen3 biases and q/k norms;
    // Gemma 3 its norm names and 1 + w norms, Phi-3 its fused tensors and LongRoPE factors,
    // Mixtral and Qwen3-MoE stacked experts (`ffn_*_exps`).
    for spec in tiny_specs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        std::fs::write(&path, tiny_gguf(&spec, gguf_arch(spec.name)).to_bytes()).unwrap();
        check(spec.name, &path, &reference_fixture(spec.name));
    }
}
