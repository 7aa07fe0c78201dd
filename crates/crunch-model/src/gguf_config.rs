//! Architecture hyper-parameters from GGUF metadata (`{arch}.block_count` and friends).

use crate::config::{Arch, ModelConfig};
use crate::{ConfigProblem, Error, Result};
use crunch_formats::gguf::GgufFile;
use crunch_formats::TensorSource;

pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let bad = Error::config(file.path());
    let arch_name = file
        .architecture()
        .ok_or_else(|| bad(ConfigProblem::Missing("general.architecture".into())))?
        .to_string();
    let arch = match arch_name.as_str() {
        // llama.cpp writes Mistral checkpoints under the llama architecture.
        "llama" => Arch::Llama,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        other => {
            return Err(bad(ConfigProblem::UnsupportedArchitecture {
                name: other.into(),
            }))
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    // A key that is present must hold the right kind of value (an ignored one would load a
    // different model than llama.cpp does).
    let opt_uint = |k: &str| -> Result<Option<usize>> {
        file.get(&key(k))
            .map(|v| {
                v.as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| {
                        bad(ConfigProblem::NotUnsigned {
                            key: key(k),
                            value: format!("{v:?}"),
                        })
                    })
            })
            .transpose()
    };
    let uint = |k: &str| -> Result<usize> {
        opt_uint(k)?.ok_or_else(|| bad(ConfigProblem::Missing(key(k))))
    };
    let float = |k: &str| -> Result<Option<f64>> {
        file.get(&key(k))
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    bad(ConfigProblem::NotANumber {
                        key: key(k),
                        value: format!("{v:?}"),
                    })
                })
            })
            .transpose()
    };

    let hidden = uint("embedding_length")?;
    let heads = uint("attention.head_count")?;
    let layers = uint("block_count")?;
    let head_dim =
        opt_uint("attention.key_length")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    let vocab = match opt_uint("vocab_size")? {
        Some(v) => v,
        None => file
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(|a| a.len())
            .ok_or_else(|| bad(ConfigProblem::NoVocabulary))?,
    };
    let intermediate = uint("feed_forward_length")?;
    let kv_heads = opt_uint("attention.head_count_kv")?.unwrap_or(heads);
    // Before anything is sized by them (the per-layer window list below); messages name
    // the GGUF keys.
    for (k, v) in [
        ("block_count", layers),
        ("embedding_length", hidden),
        ("feed_forward_length", intermediate),
        ("attention.head_count", heads),
        ("attention.head_count_kv", kv_heads),
        ("attention.key_length", head_dim),
        ("vocab_size", vocab),
    ] {
        let hf = match k {
            "block_count" => "num_hidden_layers",
            "embedding_length" => "hidden_size",
            "feed_forward_length" => "intermediate_size",
            "attention.head_count" => "num_attention_heads",
            "attention.head_count_kv" => "num_key_value_heads",
            "attention.key_length" => "head_dim",
            _ => "vocab_size",
        };
        let cap = crate::config::CAPS
            .iter()
            .find(|(n, _)| *n == hf)
            .map_or(usize::MAX, |c| c.1);
        if v == 0 || v > cap {
            return Err(bad(ConfigProblem::OutOfRange {
                key: key(k),
                value: v,
                cap,
            }));
        }
    }
    let has = |name: &str| file.info(name).is_some();
    let window = opt_uint("attention.sliding_window")?;
    let cfg = ModelConfig {
        arch,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        head_dim,
        vocab,
        rms_eps: float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5) as f32,
        rope_theta: float("rope.freq_base")?.unwrap_or(10000.0),
        // Llama 3 scaling, if any, arrives as the `rope_freqs.weight` tensor.
        rope_scaling: match file.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            Some("linear") => Some(crate::config::RopeScaling::Linear {
                factor: float("rope.scaling.factor")?
                    .filter(|f| *f > 0.0 && f.is_finite())
                    .ok_or_else(|| {
                        bad(ConfigProblem::Invalid(format!(
                            "linear rope scaling without a positive `{}`",
                            key("rope.scaling.factor")
                        )))
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
        max_position: opt_uint("context_length")?.unwrap_or(4096),
    };
    cfg.validate()
        .map_err(|e| bad(ConfigProblem::Invalid(gguf_names(&arch_name, &e))))?;
    Ok(cfg)
}

/// A validation message with Hugging Face field names given in GGUF's, so it names the key
/// the user can find in the file.
fn gguf_names(arch: &str, msg: &str) -> String {
    let mut m = msg.to_string();
    for (hf, gguf) in [
        ("num_hidden_layers", "block_count"),
        ("hidden_size", "embedding_length"),
        ("intermediate_size", "feed_forward_length"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("num_attention_heads", "attention.head_count"),
        ("head_dim", "attention.key_length"),
        ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
        ("rope_theta", "rope.freq_base"),
    ] {
        m = m.replace(hf, &format!("{arch}.{gguf}"));
    }
    m
}
