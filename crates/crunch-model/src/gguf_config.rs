//! Architecture hyper-parameters from GGUF metadata (`{arch}.block_count` and friends), with
//! llama.cpp's conventions for what its files leave out: Mixtral is `llama` with
//! `expert_count`; Gemma 3's global layers are every sixth, its sliding layers rotate with
//! base 10000, and its attention scale is `head_dim^-½` (hidden/heads for the 62-layer 27B);
//! Qwen3-MoE's top-k weights are renormalised; Phi-3's LongRoPE factors are tensors.

use crate::config::{cap, Activation, Arch, ModelConfig, MoeConfig, MoeNaming, RopeScaling};
use crate::{ConfigProblem, Error, Result};
use crunch_formats::gguf::{GgufFile, GgufValue};
use crunch_formats::TensorSource;

pub fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let bad = Error::config(file.path());
    let arch_name = file
        .architecture()
        .ok_or_else(|| bad(ConfigProblem::Missing("general.architecture".into())))?
        .to_string();
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
    let experts = opt_uint("expert_count")?.filter(|&n| n > 0);
    let arch = match (arch_name.as_str(), experts) {
        // llama.cpp writes Mistral and Mixtral checkpoints under the llama architecture.
        ("llama", None) => Arch::Llama,
        ("llama", Some(_)) => Arch::Mixtral,
        ("qwen2", _) => Arch::Qwen2,
        ("qwen3", _) => Arch::Qwen3,
        ("qwen3moe", _) => Arch::Qwen3Moe,
        ("gemma3", _) => Arch::Gemma3,
        ("phi3", _) => Arch::Phi3,
        (other, _) => {
            return Err(bad(ConfigProblem::UnsupportedArchitecture {
                name: other.into(),
            }))
        }
    };
    let moe_arch = matches!(arch, Arch::Mixtral | Arch::Qwen3Moe);

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
    let expert_width = opt_uint("expert_feed_forward_length")?;
    let intermediate = match (opt_uint("feed_forward_length")?, expert_width) {
        (Some(i), _) => i,
        (None, Some(e)) => e,
        (None, None) => uint("feed_forward_length")?,
    };
    let kv_heads = opt_uint("attention.head_count_kv")?.unwrap_or(heads);
    let top_k = opt_uint("expert_used_count")?;
    // Before anything is sized by them (the per-layer lists below); messages name the GGUF
    // keys.
    let mut sizes = vec![
        ("block_count", "num_hidden_layers", Some(layers)),
        ("embedding_length", "hidden_size", Some(hidden)),
        (
            "feed_forward_length",
            "intermediate_size",
            Some(intermediate),
        ),
        ("attention.head_count", "num_attention_heads", Some(heads)),
        (
            "attention.head_count_kv",
            "num_key_value_heads",
            Some(kv_heads),
        ),
        ("attention.key_length", "head_dim", Some(head_dim)),
        ("vocab_size", "vocab_size", Some(vocab)),
    ];
    if moe_arch {
        sizes.push(("expert_count", "num_experts", experts));
        sizes.push(("expert_used_count", "num_experts_per_tok", top_k));
        if arch == Arch::Qwen3Moe {
            sizes.push((
                "expert_feed_forward_length",
                "moe_intermediate_size",
                expert_width,
            ));
        }
    }
    for (k, hf, v) in sizes {
        let v = v.ok_or_else(|| bad(ConfigProblem::Missing(key(k))))?;
        let cap = cap(hf);
        if v == 0 || v > cap {
            return Err(bad(ConfigProblem::OutOfRange {
                key: key(k),
                value: v,
                cap,
            }));
        }
    }
    let has = |name: &str| file.info(name).is_some();
    let gemma = arch == Arch::Gemma3;
    let window = opt_uint("attention.sliding_window")?;
    let layer_window = if gemma {
        gemma_windows(
            file,
            &key("attention.sliding_window_pattern"),
            layers,
            window,
        )
        .map_err(|e| bad(ConfigProblem::Invalid(e)))?
    } else {
        vec![window; layers]
    };
    let rope_scaling = match file
        .get(&key("rope.scaling.type"))
        .and_then(GgufValue::as_str)
    {
        Some("linear") => Some(RopeScaling::Linear {
            factor: float("rope.scaling.factor")?
                .filter(|f| *f > 0.0 && f.is_finite())
                .ok_or_else(|| {
                    bad(ConfigProblem::Invalid(format!(
                        "linear rope scaling without a positive `{}`",
                        key("rope.scaling.factor")
                    )))
                })?,
        }),
        _ if arch == Arch::Phi3 => phi3_longrope(file, head_dim, &float, &opt_uint)?,
        _ => None,
    };
    let max_position = opt_uint("context_length")?.unwrap_or(4096);
    let moe = if moe_arch {
        Some(MoeConfig {
            experts: experts.unwrap_or(0),
            top_k: top_k.unwrap_or(0),
            intermediate: expert_width.unwrap_or(intermediate),
            normalize_top_k: match file.get(&key("expert_weights_norm")) {
                Some(v) => v.as_bool().ok_or_else(|| {
                    bad(ConfigProblem::Invalid(format!(
                        "`{}` is {v:?}, not true or false",
                        key("expert_weights_norm")
                    )))
                })?,
                // Mixtral always renormalises; llama.cpp's qwen3moe graph does too.
                None => true,
            },
            // A block without a router has a dense MLP.
            sparse_layers: (0..layers)
                .map(|l| has(&format!("blk.{l}.ffn_gate_inp.weight")))
                .collect(),
            naming: if arch == Arch::Mixtral {
                MoeNaming::Mixtral
            } else {
                MoeNaming::Qwen
            },
        })
    } else {
        None
    };
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
        rope_theta: float("rope.freq_base")?.unwrap_or(if gemma { 1e6 } else { 10000.0 }),
        // Llama 3 scaling, if any, arrives as the `rope_freqs.weight` tensor.
        rope_scaling,
        tie_embeddings: !has("output.weight"),
        qkv_bias: has("blk.0.attn_q.bias") || has("blk.0.attn_qkv.bias"),
        o_bias: has("blk.0.attn_output.bias"),
        mlp_bias: has("blk.0.ffn_up.bias"),
        qk_norm: has("blk.0.attn_q_norm.weight"),
        layer_window,
        max_position,
        activation: if gemma {
            Activation::GeluTanh
        } else {
            Activation::Silu
        },
        norm_offset: gemma,
        embed_scale: gemma.then(|| (hidden as f64).sqrt() as f32),
        sandwich_norms: gemma,
        query_pre_attn_scalar: gemma.then(|| {
            if layers == 62 {
                (hidden / heads) as f64
            } else {
                head_dim as f64
            }
        }),
        rope_local_theta: if gemma {
            Some(float("rope.freq_base_swa")?.unwrap_or(10000.0))
        } else {
            None
        },
        fused_qkv: arch == Arch::Phi3,
        fused_gate_up: arch == Arch::Phi3,
        moe,
    };
    cfg.validate()
        .map_err(|e| bad(ConfigProblem::Invalid(gguf_names(&arch_name, &e))))?;
    Ok(cfg)
}

/// Gemma 3's sliding layers: `sliding_window_pattern` as a period (every n-th layer is
/// global) or as one flag per layer (true = sliding); llama.cpp's default period is 6.
/// The inverse of [`config_from_gguf`] for the keys every architecture has: the model's shape,
/// rotary base and norm epsilon as `{arch}.…` metadata, in the order llama.cpp's converter
/// writes them (`general.architecture` and the optional keys are the writer's).
pub fn gguf_shape_metadata(cfg: &ModelConfig, arch: &str) -> Vec<(String, GgufValue)> {
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    vec![
        (k("block_count"), u(cfg.layers)),
        (k("context_length"), u(cfg.max_position)),
        (k("embedding_length"), u(cfg.hidden)),
        (k("feed_forward_length"), u(cfg.intermediate)),
        (k("attention.head_count"), u(cfg.heads)),
        (k("attention.head_count_kv"), u(cfg.kv_heads)),
        (k("rope.freq_base"), GgufValue::F32(cfg.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(cfg.rms_eps),
        ),
    ]
}

fn gemma_windows(
    file: &GgufFile,
    key: &str,
    layers: usize,
    window: Option<usize>,
) -> std::result::Result<Vec<Option<usize>>, String> {
    let window = window.or(Some(4096));
    match file.get(key) {
        None => Ok((0..layers)
            .map(|i| window.filter(|_| (i + 1) % 6 != 0))
            .collect()),
        Some(v) => {
            if let Some(p) = v.as_u64().filter(|&p| p > 0) {
                let p = p as usize;
                return Ok((0..layers)
                    .map(|i| window.filter(|_| (i + 1) % p != 0))
                    .collect());
            }
            let flags = v
                .as_array()
                .filter(|a| a.len() == layers)
                .and_then(|a| a.iter().map(GgufValue::as_bool).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    format!("`{key}` is {v:?}, not a positive period or one flag per layer")
                })?;
            Ok(flags.into_iter().map(|s| window.filter(|_| s)).collect())
        }
    }
}

/// Phi-3's LongRoPE, which llama.cpp stores as the tensors `rope_factors_short.weight` and
/// `rope_factors_long.weight` plus the original context length and attention factor.
fn phi3_longrope(
    file: &GgufFile,
    head_dim: usize,
    float: &dyn Fn(&str) -> Result<Option<f64>>,
    opt_uint: &dyn Fn(&str) -> Result<Option<usize>>,
) -> Result<Option<RopeScaling>> {
    let bad = |msg: String| Error::config(file.path())(ConfigProblem::Invalid(msg));
    let (short, long) = ("rope_factors_short.weight", "rope_factors_long.weight");
    if file.info(short).is_none() && file.info(long).is_none() {
        return Ok(None);
    }
    let read = |name: &str| -> Result<Vec<f64>> {
        let info = file
            .info(name)
            .ok_or_else(|| bad(format!("LongRoPE needs tensor `{name}` too")))?;
        if info.shape != [head_dim / 2] {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}; head_dim {head_dim} needs [{}]",
                info.shape,
                head_dim / 2
            )));
        }
        Ok(file.read_f32(name)?.into_iter().map(f64::from).collect())
    };
    let context = opt_uint("context_length")?.unwrap_or(4096);
    let original = opt_uint("rope.scaling.original_context_length")?.unwrap_or(context);
    let factor = context as f64 / original.max(1) as f64;
    let attention_factor = match float("rope.scaling.attn_factor")? {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
    };
    Ok(Some(RopeScaling::LongRope {
        short_factor: read(short)?,
        long_factor: read(long)?,
        original_max_position: original,
        attention_factor,
    }))
}

/// A validation message with Hugging Face field names given in GGUF's, so it names the key
/// the user can find in the file.
fn gguf_names(arch: &str, msg: &str) -> String {
    let mut m = msg.to_string();
    for (hf, gguf) in [
        ("num_hidden_layers", "block_count"),
        ("hidden_size", "embedding_length"),
        ("moe_intermediate_size", "expert_feed_forward_length"),
        ("intermediate_size", "feed_forward_length"),
        ("num_key_value_heads", "attention.head_count_kv"),
        ("num_attention_heads", "attention.head_count"),
        ("num_experts_per_tok", "expert_used_count"),
        ("num_experts", "expert_count"),
        ("head_dim", "attention.key_length"),
        ("rms_norm_eps", "attention.layer_norm_rms_epsilon"),
        ("rope_theta", "rope.freq_base"),
        ("rope_local_base_freq", "rope.freq_base_swa"),
    ] {
        m = m.replace(hf, &format!("{arch}.{gguf}"));
    }
    m
}
