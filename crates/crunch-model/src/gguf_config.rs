//! Architecture hyper-parameters from GGUF metadata (`{arch}.block_count` and friends).

use crate::config::{Arch, ModelConfig, SUPPORTED};
use crate::{Error, Result};
use crunch_formats::gguf::GgufFile;
use crunch_formats::TensorSource;

pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let path = file.path().display().to_string();
    let bad = |msg: String| Error::Config(format!("{path}: {msg}"));
    let arch_name = file
        .architecture()
        .ok_or_else(|| bad("missing `general.architecture`".into()))?
        .to_string();
    let arch = match arch_name.as_str() {
        // llama.cpp writes Mistral checkpoints under the llama architecture.
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        other => {
            return Err(bad(format!(
                "unsupported architecture `{other}` (supported: {SUPPORTED})"
            )))
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let uint = |k: &str| -> Result<usize> {
        file.get(&key(k))
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("missing or non-integer `{}`", key(k))))
    };
    let opt_uint = |k: &str| {
        file.get(&key(k))
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    };
    let float = |k: &str| file.get(&key(k)).and_then(|v| v.as_f64());

    let hidden = uint("embedding_length")?;
    let heads = uint("attention.head_count")?;
    let layers = uint("block_count")?;
    let head_dim =
        opt_uint("attention.key_length").unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    let vocab = match opt_uint("vocab_size") {
        Some(v) => v,
        None => file
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(|a| a.len())
            .ok_or_else(|| bad("no vocabulary size (`vocab_size` or tokenizer tokens)".into()))?,
    };
    let has = |name: &str| file.info(name).is_some();
    let window = opt_uint("attention.sliding_window");
    let cfg = ModelConfig {
        arch,
        hidden,
        intermediate: uint("feed_forward_length")?,
        layers,
        heads,
        kv_heads: opt_uint("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        vocab,
        rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
        rope_theta: float("rope.freq_base").unwrap_or(10000.0),
        // Llama 3 scaling, if any, arrives as the `rope_freqs.weight` tensor.
        rope_scaling: match file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            Some("linear") => Some(crate::config::RopeScaling::Linear {
                factor: float("rope.scaling.factor")
                    .filter(|f| *f > 0.0)
                    .ok_or_else(|| {
                        bad(format!(
                            "linear rope scaling without a positive `{}`",
                            key("rope.scaling.factor")
                        ))
                    })?,
            }),
            _ => None,
        },
        tie_embeddings: !has("output.weight"),
        qkv_bias: has("blk.0.attn_q.bias"),
        o_bias: has("blk.0.attn_output.bias"),
        mlp_bias: has("blk.0.ffn_up.bias"),
        qk_norm: has("blk.0.attn_q_norm.weight"),
        layer_window: vec![window; layers],
        max_position: opt_uint("context_length").unwrap_or(4096),
    };
    cfg.validate().map_err(bad)?;
    Ok(cfg)
}
