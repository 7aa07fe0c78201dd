//! Regression tests for corrupt models (issue 11): every file is made here from a tiny model,
//! corrupted one way, and must give a clear error naming the file and the field or tensor —
//! no panic, no huge allocation, no silently truncated or NaN model.

use crunch_formats::gguf::GgufValue;
use crunch_formats::safetensors::serialize_f32;
use crunch_model::testing::{
    tensor_shapes, tensor_values, tiny_gguf, tiny_specs, GgufParts, TinySpec,
};
use crunch_model::{Checkpoint, ModelConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn llama() -> TinySpec {
    tiny_specs().into_iter().next().unwrap()
}

/// A tiny HF directory from `config` and `tensors` (name, shape, values).
fn write_hf(config: &Value, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let refs: Vec<(&str, &[usize], &[f32])> = tensors
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    std::fs::write(d.path().join("model.safetensors"), serialize_f32(&refs)).unwrap();
    std::fs::write(d.path().join("config.json"), config.to_string()).unwrap();
    d
}

/// The tiny Llama's tensors, with `edit` applied.
fn tensors(
    edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>),
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let cfg = ModelConfig::from_hf_json(Path::new("c"), &llama().config).unwrap();
    tensor_shapes(&cfg)
        .into_iter()
        .map(|(name, mut shape)| {
            let mut v = tensor_values(&name, &shape, 0);
            edit(&name, &mut shape, &mut v);
            (name, shape, v)
        })
        .collect()
}

fn open_err(path: &Path) -> String {
    let start = Instant::now();
    let e = match Checkpoint::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e.to_string(),
    };
    assert!(start.elapsed().as_secs_f64() < 2.0, "slow refusal: {e}");
    e
}

/// Opens `path` (which must succeed) and loads it on the CPU, which must fail: the error.
fn load_err(path: &Path) -> String {
    match Checkpoint::open(path)
        .unwrap()
        .load(crunch_runtime::Cpu, |_| {})
    {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// `parts` written as `nan.gguf`, opened and loaded on the CPU, which must fail: the error.
fn gguf_load_err(parts: &GgufParts) -> String {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("nan.gguf");
    std::fs::write(&p, parts.to_bytes()).unwrap();
    load_err(&p)
}

fn has(e: &str, needles: &[&str]) {
    for n in needles {
        assert!(e.contains(n), "error lacks `{n}`: {e}");
    }
}

fn hf_config_edit(key: &str, value: Value) -> String {
    let mut cfg = llama().config;
    cfg[key] = value;
    let d = write_hf(&cfg, &tensors(|_, _, _| {}));
    open_err(d.path())
}

#[test]
fn huge_layer_counts_and_widths_in_config_json_are_refused() {
    has(
        &hf_config_edit("num_hidden_layers", u64::MAX.into()),
        &["config.json", "num_hidden_layers"],
    );
    has(
        &hf_config_edit("hidden_size", 4294967295u64.into()),
        &["config.json", "hidden_size"],
    );
    has(
        &hf_config_edit("vocab_size", 100_000.into()),
        &["model.embed_tokens.weight", "[128, 64]", "[100000, 64]"],
    );
}

#[test]
fn a_layer_count_that_disagrees_with_the_tensors_is_refused() {
    has(
        &hf_config_edit("num_hidden_layers", 1.into()),
        &[
            "`num_hidden_layers`",
            "says 1 blocks",
            "tensors of 2 blocks",
        ],
    );
    has(
        &hf_config_edit("num_hidden_layers", 3.into()),
        &["says 3 blocks", "tensors of 2 blocks"],
    );
}

#[test]
fn a_scalar_linear_weight_is_refused_on_open() {
    let t = tensors(|name, shape, v| {
        if name == "model.layers.1.mlp.down_proj.weight" {
            *shape = vec![];
            *v = vec![0.5];
        }
    });
    let d = write_hf(&llama().config, &t);
    has(
        &open_err(d.path()),
        &[
            "model.layers.1.mlp.down_proj.weight",
            "shape []",
            "[64, 160]",
        ],
    );
}

#[test]
fn nan_weights_and_norms_are_refused_naming_the_tensor() {
    for (bad, value) in [
        ("model.layers.0.self_attn.q_proj.weight", f32::NAN),
        ("model.layers.1.post_attention_layernorm.weight", f32::NAN),
        ("model.norm.weight", f32::INFINITY),
    ] {
        let t = tensors(|name, _, v| {
            if name == bad {
                v[5] = value;
            }
        });
        let d = write_hf(&llama().config, &t);
        let e = load_err(d.path());
        has(&e, &[bad, "non-finite", d.path().to_str().unwrap()]);
    }
}

#[test]
fn trailing_bytes_after_the_tensors_are_refused() {
    let d = write_hf(&llama().config, &tensors(|_, _, _| {}));
    let f = d.path().join("model.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes.extend_from_slice(b"appended");
    std::fs::write(&f, bytes).unwrap();
    has(
        &open_err(d.path()),
        &["model.safetensors", "8 bytes after the last tensor"],
    );
}

#[test]
fn a_corrupt_tokenizer_is_an_error_not_silently_dropped() {
    let d = write_hf(&llama().config, &tensors(|_, _, _| {}));
    let ckpt = Checkpoint::open(d.path()).unwrap();
    assert!(ckpt.tokenizer_if_present().unwrap().is_none());
    std::fs::write(d.path().join("tokenizer.json"), "{\"model\": 3").unwrap();
    let ckpt = Checkpoint::open(d.path()).unwrap();
    let e = ckpt.tokenizer_if_present().err().unwrap().to_string();
    has(&e, &["tokenizer.json"]);
}

/// The error of opening the tiny Llama GGUF after `edit`.
fn gguf_err(edit: impl FnOnce(&mut crunch_model::testing::GgufParts)) -> String {
    gguf_err_of(llama().name, edit)
}

#[test]
fn gguf_metadata_that_lies_is_refused() {
    has(
        &gguf_err(|p| p.set("llama.block_count", GgufValue::U32(u32::MAX))),
        &["llama.block_count", "4294967295"],
    );
    has(
        &gguf_err(|p| p.set("llama.block_count", GgufValue::U64(u64::MAX))),
        &["llama.block_count"],
    );
    has(
        &gguf_err(|p| p.set("llama.embedding_length", GgufValue::U32(u32::MAX))),
        &["llama.embedding_length"],
    );
    // One block fewer than the file holds (SmolLM2's 29-vs-30 case): llama.cpp refuses it.
    has(
        &gguf_err(|p| p.set("llama.block_count", GgufValue::U32(1))),
        &[
            "`llama.block_count`",
            "says 1 blocks",
            "tensors of 2 blocks",
        ],
    );
    has(
        &gguf_err(|p| p.set("llama.block_count", GgufValue::U32(3))),
        &["says 3 blocks"],
    );
    has(
        &gguf_err(|p| {
            p.set(
                "llama.attention.layer_norm_rms_epsilon",
                GgufValue::F32(f32::NAN),
            )
        }),
        &["llama.attention.layer_norm_rms_epsilon", "NaN"],
    );
    has(
        &gguf_err(|p| p.set("llama.rope.freq_base", GgufValue::F32(f32::NAN))),
        &["llama.rope.freq_base", "NaN"],
    );
    has(
        &gguf_err(|p| p.set("llama.rope.freq_base", GgufValue::String("x".into()))),
        &["llama.rope.freq_base", "not a number"],
    );
    // A tensor missing from the middle of the file.
    has(
        &gguf_err(|p| p.tensors.retain(|t| t.0 != "blk.1.ffn_up.weight")),
        &["missing tensor `blk.1.ffn_up.weight`"],
    );
}

#[test]
fn a_nan_in_a_quantized_gguf_block_is_refused_on_read() {
    let mut parts = tiny_gguf(&llama(), "llama");
    let t = parts.tensor_mut("blk.0.attn_norm.weight");
    t.3[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = gguf_load_err(&parts);
    has(
        &e,
        &["nan.gguf", "blk.0.attn_norm.weight", "NaN", "index 2"],
    );
}

fn spec(name: &str) -> TinySpec {
    tiny_specs().into_iter().find(|s| s.name == name).unwrap()
}

fn gguf_err_of(name: &str, edit: impl FnOnce(&mut crunch_model::testing::GgufParts)) -> String {
    let mut parts = tiny_gguf(&spec(name), crunch_model::testing::gguf_arch(name));
    edit(&mut parts);
    let d = tempfile::tempdir().unwrap();
    let p: PathBuf = d.path().join("bad.gguf");
    std::fs::write(&p, parts.to_bytes()).unwrap();
    let e = open_err(&p);
    has(&e, &["bad.gguf"]);
    e
}

/// Sets `{arch}.expert_count` to `n` and cuts or pads (with zero rows) the routers of the tiny
/// MoE models (hidden 64) to `n` experts too, so that only the stacked experts disagree.
fn set_experts(p: &mut GgufParts, arch: &str, n: usize) {
    p.set(&format!("{arch}.expert_count"), GgufValue::U32(n as u32));
    for t in p
        .tensors
        .iter_mut()
        .filter(|t| t.0.contains("ffn_gate_inp"))
    {
        t.1[0] = n;
        t.3.resize(n * 64 * 4, 0);
    }
}

/// The new architectures' files get the same structural checks: stacked experts must hold
/// exactly the configured experts, expert counts and widths are capped, fused and LongRoPE
/// tensors are checked for shape, and NaNs inside an expert are found on read.
#[test]
fn moe_fused_and_longrope_files_that_lie_are_refused() {
    // More experts stacked than the metadata says: the extra ones would be ignored.
    has(
        &gguf_err_of("qwen3_moe", |p| set_experts(p, "qwen3moe", 4)),
        &[
            "blk.0.ffn_gate_exps.weight",
            "stacks Some(8) experts",
            "says 4",
        ],
    );
    // Fewer: the missing expert is named as a missing slice.
    has(
        &gguf_err_of("mixtral", |p| set_experts(p, "llama", 5)),
        &["ffn_gate_exps.weight[4]"],
    );
    has(
        &gguf_err_of("qwen3_moe", |p| {
            p.set("qwen3moe.expert_count", GgufValue::U32(u32::MAX))
        }),
        &["qwen3moe.expert_count", "4294967295"],
    );
    has(
        &gguf_err_of("qwen3_moe", |p| {
            p.set("qwen3moe.expert_used_count", GgufValue::U32(9))
        }),
        &["qwen3moe.expert_used_count", "more than the 8 experts"],
    );
    has(
        &gguf_err_of("qwen3_moe", |p| {
            p.set("qwen3moe.expert_feed_forward_length", GgufValue::U32(0))
        }),
        &["qwen3moe.expert_feed_forward_length"],
    );
    has(
        &gguf_err_of("phi3", |p| {
            let t = p.tensor_mut("rope_factors_long.weight");
            t.1 = vec![4];
            t.3.truncate(16);
        }),
        &["rope_factors_long.weight", "[8]"],
    );
    has(
        &gguf_err_of("phi3", |p| {
            let t = p.tensor_mut("blk.0.attn_qkv.weight");
            t.1[0] -= 1;
            t.3.truncate(t.3.len() - 64 * 4);
        }),
        &["blk.0.attn_qkv.weight", "[127, 64]", "[128, 64]"],
    );
    // A NaN inside one expert of a stacked tensor: found when that expert is read.
    let mut parts = tiny_gguf(&spec("qwen3_moe"), "qwen3moe");
    let t = parts.tensor_mut("blk.2.ffn_down_exps.weight");
    let per_expert = 64 * 48 * 4;
    t.3[5 * per_expert + 8..5 * per_expert + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = gguf_load_err(&parts);
    has(
        &e,
        &[
            "nan.gguf",
            "blk.2.ffn_down_exps.weight[5]",
            "NaN",
            "row 0, column 2",
        ],
    );
    // Gemma 3's layer types must cover every layer; MoE widths are capped in config.json.
    let mut j = spec("gemma3").config;
    j["layer_types"] = serde_json::json!(vec!["full_attention"; 5]);
    let d = write_hf(&j, &[]);
    has(
        &open_err(d.path()),
        &["config.json", "`layer_types` has 5 entries for 6 layers"],
    );
    let mut j = spec("qwen3_moe").config;
    j["moe_intermediate_size"] = serde_json::json!(u64::MAX);
    let d = write_hf(&j, &[]);
    has(
        &open_err(d.path()),
        &["config.json", "moe_intermediate_size"],
    );
}
