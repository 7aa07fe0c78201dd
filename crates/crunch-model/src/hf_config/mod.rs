//! `config.json` ↔ [`ModelConfig`], for every supported architecture, in both spellings of
//! the rotary settings: the classic `rope_theta` / `rope_scaling` (/ Gemma's
//! `rope_local_base_freq`) that checkpoints on the Hub carry, and transformers 5's
//! `rope_parameters` (nested per layer type for Gemma 3).

use crate::config::{
    check_caps, config_error, Activation, Arch, ModelConfig, MoeConfig, MoeNaming, RopeScaling,
    SUPPORTED,
};
use crate::{ConfigProblem, Error, Result};
use serde_json::{json, Value};
use std::path::Path;

/// Typed access to config.json keys: a key that is present must have the right type (a
/// silently ignored `"rms_norm_eps": "1e-5"` would load a different model); `null` counts as
/// absent (transformers writes `"sliding_window": null`, `"head_dim": null`).
struct Keys<'a> {
    json: &'a Value,
    path: &'a Path,
}

impl Keys<'_> {
    fn present(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.present(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::config(self.path)(ConfigProblem::NotAnInteger {
                            key: key.into(),
                            value: v.to_string(),
                        })
                    })
            })
            .transpose()
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| Error::config(self.path)(ConfigProblem::Missing(key.into())))
    }
    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.present(key)
            .map(|v| {
                v.as_f64().ok_or_else(|| {
                    Error::config(self.path)(ConfigProblem::NotANumber {
                        key: key.into(),
                        value: v.to_string(),
                    })
                })
            })
            .transpose()
    }
    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.present(key)
            .map(|v| {
                v.as_bool().ok_or_else(|| {
                    config_error(self.path, format!("`{key}` is {v}, not true or false"))
                })
            })
            .transpose()
    }
    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.present(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| config_error(self.path, format!("`{key}` is {v}, not a string")))
            })
            .transpose()
    }
}

/// The rotary settings of one layer type: base, and scaling if any.
struct Rope {
    theta: Option<f64>,
    scaling: Option<RopeScaling>,
}

/// Parses a Hugging Face `config.json`.
pub(crate) fn from_hf_json(path: &Path, json: &Value) -> Result<ModelConfig> {
    let bad = |msg: String| config_error(path, msg);
    let k = Keys { json, path };
    let model_type = json
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::config(path)(ConfigProblem::Missing("model_type".into())))?;
    let arch = Arch::from_model_type(model_type).ok_or_else(|| {
        let hint = if model_type == "gemma3" {
            " (the multimodal Gemma 3; crunch runs the text model, `gemma3_text`, as in \
             Gemma 3 270M and 1B)"
        } else {
            ""
        };
        bad(format!(
            "unsupported architecture `{model_type}`{hint} (supported: {SUPPORTED})"
        ))
    })?;
    let gemma = arch == Arch::Gemma3;
    let hidden = k.usize("hidden_size")?;
    let heads = k.usize("num_attention_heads")?;
    let layers = k.usize("num_hidden_layers")?;
    let kv_heads = k.opt_usize("num_key_value_heads")?.unwrap_or(heads);
    let head_dim = k
        .opt_usize("head_dim")?
        .unwrap_or(hidden.checked_div(heads).unwrap_or(0));
    let intermediate = k.usize("intermediate_size")?;
    let vocab = k.usize("vocab_size")?;
    // Before anything is sized by them (the per-layer lists below).
    check_caps(&[
        ("num_hidden_layers", layers),
        ("hidden_size", hidden),
        ("intermediate_size", intermediate),
        ("num_attention_heads", heads),
        ("num_key_value_heads", kv_heads),
        ("head_dim", head_dim),
        ("vocab_size", vocab),
    ])
    .map_err(bad)?;

    let act_key = if gemma && k.present("hidden_activation").is_some() {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let activation = match k.opt_str(act_key)? {
        None if gemma => Activation::GeluTanh,
        None | Some("silu") => Activation::Silu,
        Some("gelu_pytorch_tanh") => Activation::GeluTanh,
        Some(other) => {
            return Err(bad(format!(
                "{act_key} `{other}` is not supported (silu or gelu_pytorch_tanh)"
            )))
        }
    };
    if let Some(f) = k.opt_f64("partial_rotary_factor")?.filter(|&f| f != 1.0) {
        return Err(bad(format!(
            "partial_rotary_factor {f} is not supported (rotary embeddings over the whole head)"
        )));
    }
    for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if let Some(v) = k.opt_f64(key)? {
            return Err(bad(format!(
                "`{key}` {v} is not supported (Gemma 3 has none)"
            )));
        }
    }
    if k.opt_bool("use_bidirectional_attention")? == Some(true) {
        return Err(bad(
            "use_bidirectional_attention is not supported (causal decoders only)".into(),
        ));
    }

    let attention_bias = k.opt_bool("attention_bias")?.unwrap_or(false);
    let (qkv_bias, o_bias) = match arch {
        Arch::Qwen2 => (true, false),
        Arch::Mistral | Arch::Mixtral | Arch::Phi3 => (false, false),
        Arch::Llama | Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3 => {
            (attention_bias, attention_bias)
        }
    };
    let layer_window = layer_windows(&k, arch, layers)?;
    let (global, local) = parse_rope(&k, arch)?;
    let moe = parse_moe(&k, arch, layers, intermediate)?;
    let cfg = ModelConfig {
        arch,
        hidden,
        intermediate,
        layers,
        heads,
        kv_heads,
        head_dim,
        vocab,
        rms_eps: k.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
        rope_theta: global.theta.unwrap_or(if gemma { 1e6 } else { 10000.0 }),
        rope_scaling: global.scaling,
        // transformers defaults this to true for Gemma 3, false for the others.
        tie_embeddings: k.opt_bool("tie_word_embeddings")?.unwrap_or(gemma),
        qkv_bias,
        o_bias,
        mlp_bias: arch == Arch::Llama && k.opt_bool("mlp_bias")?.unwrap_or(false),
        qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3),
        layer_window,
        max_position: k.opt_usize("max_position_embeddings")?.unwrap_or(4096),
        activation,
        norm_offset: gemma,
        embed_scale: gemma.then(|| (hidden as f64).sqrt() as f32),
        sandwich_norms: gemma,
        query_pre_attn_scalar: if gemma {
            Some(k.opt_f64("query_pre_attn_scalar")?.unwrap_or(256.0))
        } else {
            None
        },
        rope_local_theta: local.map(|l| l.theta.unwrap_or(10000.0)),
        fused_qkv: arch == Arch::Phi3,
        fused_gate_up: arch == Arch::Phi3,
        moe,
    };
    cfg.validate().map_err(bad)?;
    Ok(cfg)
}

/// The sliding window of every layer.
fn layer_windows(k: &Keys, arch: Arch, layers: usize) -> Result<Vec<Option<usize>>> {
    let bad = |msg: String| config_error(k.path, msg);
    let window = match arch {
        Arch::Mistral | Arch::Mixtral | Arch::Phi3 => k.opt_usize("sliding_window")?,
        Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe
            if k.opt_bool("use_sliding_window")?.unwrap_or(false) =>
        {
            k.opt_usize("sliding_window")?
        }
        Arch::Gemma3 => Some(k.opt_usize("sliding_window")?.unwrap_or(4096)),
        _ => None,
    };
    match arch {
        // Qwen2 and Qwen3 slide only from layer `max_window_layers` on.
        Arch::Qwen2 | Arch::Qwen3 => {
            let first = k.opt_usize("max_window_layers")?.unwrap_or(28);
            Ok((0..layers).map(|i| window.filter(|_| i >= first)).collect())
        }
        // Gemma 3 interleaves sliding and global layers: `layer_types`, or else every
        // `sliding_window_pattern`-th layer (default 6) is global.
        Arch::Gemma3 => match k.present("layer_types") {
            Some(v) => {
                let types = v
                    .as_array()
                    .ok_or_else(|| bad(format!("`layer_types` is {v}, not a list")))?;
                if types.len() != layers {
                    return Err(bad(format!(
                        "`layer_types` has {} entries for {layers} layers",
                        types.len()
                    )));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok(window),
                        Some("full_attention") => Ok(None),
                        _ => Err(bad(format!(
                            "`layer_types` entry {t} is not \"sliding_attention\" or \
                             \"full_attention\""
                        ))),
                    })
                    .collect()
            }
            None => {
                let pattern = k.opt_usize("sliding_window_pattern")?.unwrap_or(6);
                if pattern == 0 {
                    return Err(bad("`sliding_window_pattern` must be positive".into()));
                }
                Ok((0..layers)
                    .map(|i| window.filter(|_| (i + 1) % pattern != 0))
                    .collect())
            }
        },
        _ => Ok(vec![window; layers]),
    }
}

/// Global and (Gemma 3) sliding-layer rotary settings.
fn parse_rope(k: &Keys, arch: Arch) -> Result<(Rope, Option<Rope>)> {
    let bad = |msg: String| config_error(k.path, msg);
    let ctx = RopeContext {
        phi3: arch == Arch::Phi3,
        max_position: k.opt_usize("max_position_embeddings")?.unwrap_or(4096),
        original_max: k.opt_usize("original_max_position_embeddings")?,
    };
    let params = k.present("rope_parameters");
    if arch == Arch::Gemma3 {
        let (global, local) = match params {
            Some(p) => {
                let part = |name: &str| -> std::result::Result<Rope, String> {
                    match p.get(name).filter(|v| !v.is_null()) {
                        Some(d) => rope_dict(d, None, &ctx),
                        None => Ok(Rope {
                            theta: None,
                            scaling: None,
                        }),
                    }
                };
                (
                    part("full_attention").map_err(bad)?,
                    part("sliding_attention").map_err(bad)?,
                )
            }
            None => (
                rope_dict(
                    k.present("rope_scaling").unwrap_or(&Value::Null),
                    k.opt_f64("rope_theta")?,
                    &ctx,
                )
                .map_err(bad)?,
                Rope {
                    theta: k.opt_f64("rope_local_base_freq")?,
                    scaling: None,
                },
            ),
        };
        if local.scaling.is_some() {
            return Err(bad(
                "rope scaling on Gemma 3's sliding-window layers is not supported".into(),
            ));
        }
        return Ok((global, Some(local)));
    }
    let global = match params {
        Some(p) => rope_dict(p, None, &ctx),
        None => rope_dict(
            k.present("rope_scaling").unwrap_or(&Value::Null),
            k.opt_f64("rope_theta")?,
            &ctx,
        ),
    }
    .map_err(bad)?;
    Ok((global, None))
}

struct RopeContext {
    phi3: bool,
    max_position: usize,
    /// Phi-3's top-level `original_max_position_embeddings` (it wins over the dict's).
    original_max: Option<usize>,
}

/// One rope dict (`rope_scaling` or a `rope_parameters` entry); `theta` is the top-level
/// `rope_theta` of the classic spelling, used when the dict has none.
fn rope_dict(
    v: &Value,
    theta: Option<f64>,
    ctx: &RopeContext,
) -> std::result::Result<Rope, String> {
    if v.is_null() {
        return Ok(Rope {
            theta,
            scaling: None,
        });
    }
    if !v.is_object() {
        return Err(format!("rope settings {v} are not an object"));
    }
    let theta = match v.get("rope_theta").filter(|t| !t.is_null()) {
        Some(t) => Some(
            t.as_f64()
                .ok_or_else(|| format!("`rope_theta` is {t}, not a number"))?,
        ),
        None => theta,
    };
    if let Some(f) = v.get("partial_rotary_factor").and_then(Value::as_f64) {
        if f != 1.0 {
            return Err(format!(
                "partial_rotary_factor {f} is not supported (rotary embeddings over the whole head)"
            ));
        }
    }
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| {
        v.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope_scaling of type `{kind}` needs `{key}`"))
    };
    let opt_num = |key: &str| -> std::result::Result<Option<f64>, String> {
        match v.get(key).filter(|x| !x.is_null()) {
            None => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("rope_scaling.{key} is {x}, not a number")),
        }
    };
    let scaling = match kind {
        "default" => None,
        "linear" => Some(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position: num("original_max_position_embeddings")?,
        }),
        // transformers reads Phi-3's "su" and "yarn" as LongRoPE.
        "longrope" | "su" => Some(longrope(v, ctx, &opt_num)?),
        "yarn" if ctx.phi3 => Some(longrope(v, ctx, &opt_num)?),
        other => {
            return Err(format!(
                "rope_scaling type `{other}` is not supported (supported: default, linear, \
                 llama3, longrope)"
            ))
        }
    };
    Ok(Rope { theta, scaling })
}

fn longrope(
    v: &Value,
    ctx: &RopeContext,
    opt_num: &dyn Fn(&str) -> std::result::Result<Option<f64>, String>,
) -> std::result::Result<RopeScaling, String> {
    let list = |key: &str| -> std::result::Result<Vec<f64>, String> {
        let a = v
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("LongRoPE scaling needs a list `{key}`"))?;
        a.iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| format!("rope_scaling.{key} entry {x} is not a number"))
            })
            .collect()
    };
    let original = match ctx.original_max {
        Some(o) => o,
        None => match opt_num("original_max_position_embeddings")? {
            Some(o) if o >= 1.0 && o.fract() == 0.0 => o as usize,
            Some(o) => return Err(format!("original_max_position_embeddings {o} is invalid")),
            None => ctx.max_position,
        },
    };
    let factor = opt_num("factor")?.unwrap_or(ctx.max_position as f64 / original.max(1) as f64);
    // As transformers: the paper's attention factor unless the config gives one.
    let attention_factor = match opt_num("attention_factor")? {
        Some(a) => a,
        None if factor <= 1.0 => 1.0,
        None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
    };
    Ok(RopeScaling::LongRope {
        short_factor: list("short_factor")?,
        long_factor: list("long_factor")?,
        original_max_position: original,
        attention_factor,
    })
}

fn parse_moe(
    k: &Keys,
    arch: Arch,
    layers: usize,
    intermediate: usize,
) -> Result<Option<MoeConfig>> {
    let bad = |msg: String| config_error(k.path, msg);
    let moe = match arch {
        Arch::Mixtral => MoeConfig {
            experts: k.opt_usize("num_local_experts")?.unwrap_or(8),
            top_k: k.opt_usize("num_experts_per_tok")?.unwrap_or(2),
            intermediate,
            normalize_top_k: true,
            sparse_layers: vec![true; layers],
            naming: MoeNaming::Mixtral,
        },
        Arch::Qwen3Moe => {
            let step = k.opt_usize("decoder_sparse_step")?.unwrap_or(1);
            if step == 0 {
                return Err(bad("`decoder_sparse_step` must be positive".into()));
            }
            let dense: Vec<usize> = match k.present("mlp_only_layers") {
                None => Vec::new(),
                Some(v) => v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_u64().map(|x| x as usize))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        bad(format!(
                            "`mlp_only_layers` is {v}, not a list of layer indices"
                        ))
                    })?,
            };
            MoeConfig {
                experts: k.opt_usize("num_experts")?.unwrap_or(128),
                top_k: k.opt_usize("num_experts_per_tok")?.unwrap_or(8),
                intermediate: k.opt_usize("moe_intermediate_size")?.unwrap_or(768),
                normalize_top_k: k.opt_bool("norm_topk_prob")?.unwrap_or(false),
                sparse_layers: (0..layers)
                    .map(|i| !dense.contains(&i) && (i + 1) % step == 0)
                    .collect(),
                naming: MoeNaming::Qwen,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(moe))
}

/// A Hugging Face `config.json` describing `c`.
pub(crate) fn to_hf_json(c: &ModelConfig) -> Value {
    let mut v = json!({
        "architectures": [c.arch.hf_class()],
        "model_type": c.arch.name(),
        "hidden_size": c.hidden,
        "intermediate_size": c.intermediate,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim,
        "vocab_size": c.vocab,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position,
        "tie_word_embeddings": c.tie_embeddings,
        "torch_dtype": "float32",
    });
    let act = match c.activation {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    };
    let act_key = if c.arch == Arch::Gemma3 {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    v[act_key] = act.into();
    if let Some(s) = &c.rope_scaling {
        v["rope_scaling"] = match s {
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position,
            }),
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position,
                attention_factor,
            } => {
                v["original_max_position_embeddings"] = (*original_max_position).into();
                json!({
                    "type": "longrope", "short_factor": short_factor,
                    "long_factor": long_factor, "attention_factor": attention_factor,
                })
            }
        };
    }
    match c.arch {
        Arch::Llama => {
            v["attention_bias"] = c.qkv_bias.into();
            v["mlp_bias"] = c.mlp_bias.into();
        }
        Arch::Qwen3 | Arch::Qwen3Moe | Arch::Gemma3 => v["attention_bias"] = c.qkv_bias.into(),
        _ => {}
    }
    let window = c.layer_window.iter().flatten().next().copied();
    match (c.arch, window) {
        (Arch::Mistral | Arch::Mixtral | Arch::Phi3, w) => v["sliding_window"] = w.into(),
        (Arch::Qwen2 | Arch::Qwen3, Some(w)) => {
            let first = c.layer_window.iter().position(Option::is_some).unwrap_or(0);
            v["use_sliding_window"] = true.into();
            v["sliding_window"] = w.into();
            v["max_window_layers"] = first.into();
        }
        (Arch::Qwen3Moe, Some(w)) => {
            v["use_sliding_window"] = true.into();
            v["sliding_window"] = w.into();
        }
        (Arch::Gemma3, w) => {
            // A model with no sliding layer keeps transformers' default window, unused.
            v["sliding_window"] = w.unwrap_or(4096).into();
            let types: Vec<&str> = c
                .layer_window
                .iter()
                .map(|w| match w {
                    Some(_) => "sliding_attention",
                    None => "full_attention",
                })
                .collect();
            v["layer_types"] = json!(types);
        }
        _ => {}
    }
    if c.arch == Arch::Gemma3 {
        v["query_pre_attn_scalar"] = c.query_pre_attn_scalar.unwrap_or(256.0).into();
        v["rope_local_base_freq"] = c.rope_local_theta.unwrap_or(10000.0).into();
    }
    if let Some(m) = &c.moe {
        match m.naming {
            MoeNaming::Mixtral => {
                v["num_local_experts"] = m.experts.into();
                v["num_experts_per_tok"] = m.top_k.into();
            }
            MoeNaming::Qwen => {
                v["num_experts"] = m.experts.into();
                v["num_experts_per_tok"] = m.top_k.into();
                v["moe_intermediate_size"] = m.intermediate.into();
                v["norm_topk_prob"] = m.normalize_top_k.into();
                v["decoder_sparse_step"] = 1.into();
                let dense: Vec<usize> = (0..c.layers).filter(|&i| !m.sparse_layers[i]).collect();
                v["mlp_only_layers"] = json!(dense);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests;
