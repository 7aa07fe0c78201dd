//! Architecture hyper-parameters, read from a Hugging Face `config.json` (`hf_config.rs`) or
//! GGUF metadata (`gguf_config.rs`), and the checks every config passes before anything is
//! sized by it.

use crate::{ConfigProblem, Error, Result};
use serde_json::Value;
use std::path::Path;

/// The architectures crunch runs. All are decoder-only with RMSNorm, rotary embeddings,
/// grouped-query attention and a gated MLP; they differ in the details recorded in
/// [`ModelConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// Gemma 3's text model (`gemma3_text`): GeGLU, sandwich norms, (1 + w) norms, scaled
    /// embeddings, interleaved sliding-window and global layers with their own rotary bases.
    Gemma3,
    /// Phi-3: fused `qkv_proj` and `gate_up_proj`, LongRoPE.
    Phi3,
    /// Mixtral: Mistral's attention, a sparse MoE MLP (softmax router, normalised top-k).
    Mixtral,
    /// Qwen3-MoE: Qwen3's attention, a sparse MoE MLP (top-k optionally normalised).
    Qwen3Moe,
}

impl Arch {
    /// The `model_type` of config.json.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3_text",
            Arch::Phi3 => "phi3",
            Arch::Mixtral => "mixtral",
            Arch::Qwen3Moe => "qwen3_moe",
        }
    }

    pub(crate) fn from_model_type(s: &str) -> Option<Self> {
        Some(match s {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3_text" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            "mixtral" => Arch::Mixtral,
            "qwen3_moe" => Arch::Qwen3Moe,
            _ => return None,
        })
    }

    /// The transformers class that loads it.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Gemma3 => "Gemma3ForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
            Arch::Mixtral => "MixtralForCausalLM",
            Arch::Qwen3Moe => "Qwen3MoeForCausalLM",
        }
    }
}

pub const SUPPORTED: &str = "llama, mistral, qwen2, qwen3, gemma3_text, phi3, mixtral, qwen3_moe";

/// How rotary frequencies are rescaled for long context.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise rescaling of low and medium frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position: f64,
    },
    /// Phi-3's LongRoPE: every frequency divided by its own factor, the `long` set when the
    /// sequence is longer than `original_max_position`, else the `short` one, and cos/sin
    /// multiplied by `attention_factor`.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position: usize,
        attention_factor: f64,
    },
}

/// The gated MLP's activation: `act(gate) · up`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU (`silu`).
    Silu,
    /// GeGLU with PyTorch's tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// Which tensor names a sparse MLP's router and experts have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoeNaming {
    /// `block_sparse_moe.gate`, `block_sparse_moe.experts.E.{w1,w3,w2}` (gate, up, down).
    Mixtral,
    /// `mlp.gate`, `mlp.experts.E.{gate_proj,up_proj,down_proj}`.
    Qwen,
}

/// A mixture-of-experts MLP: a linear router over `experts` experts, each a gated MLP of
/// width `intermediate`; every token runs through its `top_k` highest-scoring experts.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub experts: usize,
    pub top_k: usize,
    /// Each expert's intermediate size (`moe_intermediate_size`; Mixtral's
    /// `intermediate_size`).
    pub intermediate: usize,
    /// Renormalise the top-k softmax probabilities to sum to 1 (Mixtral always; Qwen3-MoE's
    /// `norm_topk_prob`).
    pub normalize_top_k: bool,
    /// Per layer: whether its MLP is the sparse one (Qwen3-MoE's `mlp_only_layers` and
    /// `decoder_sparse_step` make some dense, of width `ModelConfig::intermediate`).
    pub sparse_layers: Vec<bool>,
    pub naming: MoeNaming,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden: usize,
    /// The dense MLP's intermediate size (of every layer without experts).
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_embeddings: bool,
    /// Biases on q, k and v projections (Qwen2; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys before the rotation (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Sliding attention window of each layer; `None` is full causal attention.
    pub layer_window: Vec<Option<usize>>,
    pub max_position: usize,
    pub activation: Activation,
    /// Gemma: every RMSNorm multiplies by `1 + w`; the stored weights are the offsets `w`.
    pub norm_offset: bool,
    /// Gemma: token embeddings are multiplied by this (√hidden, rounded to f32).
    pub embed_scale: Option<f32>,
    /// Gemma: RMSNorms on the attention output and on the MLP output, before each residual
    /// (`post_attention_layernorm`, `post_feedforward_layernorm`; the MLP's input norm is then
    /// `pre_feedforward_layernorm`).
    pub sandwich_norms: bool,
    /// Attention logits are scaled by `query_pre_attn_scalar^-½` (Gemma); `None`:
    /// `head_dim^-½`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma: the rotary base of sliding-window layers, which also skip `rope_scaling`.
    pub rope_local_theta: Option<f64>,
    /// Phi-3: q, k and v come from one projection `self_attn.qkv_proj` (rows q, then k, then
    /// v) and gate and up from `mlp.gate_up_proj` (gate rows, then up rows).
    pub fused_qkv: bool,
    pub fused_gate_up: bool,
    pub moe: Option<MoeConfig>,
}

impl ModelConfig {
    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path, json: &Value) -> Result<Self> {
        crate::hf_config::from_hf_json(path, json)
    }

    /// A Hugging Face `config.json` describing this model (what crunch writes beside weights
    /// it saves, so transformers and crunch both load them).
    pub fn to_hf_json(&self) -> Value {
        crate::hf_config::to_hf_json(self)
    }

    /// Checks the relations between sizes that the forward pass relies on, the caps on
    /// every size, and that every real-valued setting is a finite, positive number (a NaN
    /// `rms_norm_eps` would otherwise be written to an output's config.json as `null`, which
    /// loads as a default: a different model). Field names are Hugging Face's.
    pub fn validate(&self) -> std::result::Result<(), String> {
        check_caps(&[
            ("num_hidden_layers", self.layers),
            ("hidden_size", self.hidden),
            ("intermediate_size", self.intermediate),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab),
        ])?;
        if self.layer_window.len() != self.layers {
            return Err(format!(
                "{} sliding-window entries for {} layers",
                self.layer_window.len(),
                self.layers
            ));
        }
        if self.layer_window.contains(&Some(0)) {
            return Err("`sliding_window` must be positive".into());
        }
        if self.kv_heads > self.heads {
            return Err(format!(
                "num_key_value_heads {} is more than num_attention_heads {}",
                self.kv_heads, self.heads
            ));
        }
        positive_finite("rms_norm_eps", self.rms_eps as f64)?;
        if self.rms_eps >= 1.0 {
            return Err(format!(
                "rms_norm_eps {} is not a small epsilon (it must be below 1)",
                self.rms_eps
            ));
        }
        positive_finite("rope_theta", self.rope_theta)?;
        if let Some(t) = self.rope_local_theta {
            positive_finite("rope_local_base_freq", t)?;
        }
        if let Some(s) = self.query_pre_attn_scalar {
            positive_finite("query_pre_attn_scalar", s)?;
        }
        if let Some(s) = self.embed_scale {
            positive_finite("embedding scale", s as f64)?;
        }
        self.validate_rope_scaling()?;
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.heads, self.kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if let Some(m) = &self.moe {
            check_caps(&[
                ("num_experts", m.experts),
                ("num_experts_per_tok", m.top_k),
                ("moe_intermediate_size", m.intermediate),
            ])?;
            if m.top_k > m.experts {
                return Err(format!(
                    "num_experts_per_tok {} is more than the {} experts",
                    m.top_k, m.experts
                ));
            }
            if m.sparse_layers.len() != self.layers {
                return Err(format!(
                    "{} sparse-layer entries for {} layers",
                    m.sparse_layers.len(),
                    self.layers
                ));
            }
        }
        Ok(())
    }

    fn validate_rope_scaling(&self) -> std::result::Result<(), String> {
        match &self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => {
                positive_finite("rope_scaling.factor", *factor)?
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            }) => {
                positive_finite("rope_scaling.factor", *factor)?;
                positive_finite("rope_scaling.low_freq_factor", *low_freq_factor)?;
                positive_finite("rope_scaling.high_freq_factor", *high_freq_factor)?;
                positive_finite(
                    "rope_scaling.original_max_position_embeddings",
                    *original_max_position,
                )?;
                if high_freq_factor <= low_freq_factor {
                    return Err(format!(
                        "rope_scaling.high_freq_factor {high_freq_factor} must be above \
                         low_freq_factor {low_freq_factor}"
                    ));
                }
            }
            Some(RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position,
                attention_factor,
            }) => {
                for (name, f) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                    if f.len() != self.head_dim / 2 {
                        return Err(format!(
                            "rope_scaling.{name} has {} entries; head_dim {} needs {}",
                            f.len(),
                            self.head_dim,
                            self.head_dim / 2
                        ));
                    }
                    for &v in f {
                        positive_finite(&format!("rope_scaling.{name} entry"), v)?;
                    }
                }
                positive_finite("rope_scaling.attention_factor", *attention_factor)?;
                if *original_max_position == 0 {
                    return Err("`original_max_position_embeddings` must be positive".into());
                }
            }
        }
        Ok(())
    }

    /// Output width of the query projection.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Output width of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The experts of layer `layer`'s MLP, if it is a sparse one.
    pub fn layer_moe(&self, layer: usize) -> Option<&MoeConfig> {
        self.moe
            .as_ref()
            .filter(|m| m.sparse_layers.get(layer).copied().unwrap_or(false))
    }

    /// The softmax scale of attention logits.
    pub fn attention_scale(&self) -> f32 {
        match self.query_pre_attn_scalar {
            Some(s) => (1.0 / s.sqrt()) as f32,
            None => 1.0 / (self.head_dim as f32).sqrt(),
        }
    }

    /// The largest intermediate width of any linear input (dense MLP or expert).
    pub fn max_intermediate(&self) -> usize {
        let expert = self.moe.as_ref().map_or(0, |m| m.intermediate);
        self.intermediate.max(expert)
    }
}

/// Upper bounds on the sizes a config may claim, far above any real model (Llama 3.1 405B:
/// 126 layers, hidden 16384, intermediate 53248, 128 heads, head_dim 128; the largest
/// vocabularies are about 260k; the most experts about 384, 8 of them active). They only stop
/// a corrupt or hostile file from sizing an allocation; the real check is against the tensors
/// the file holds (`Checkpoint::open` → `validate_structure`).
pub const CAPS: [(&str, usize); 10] = [
    ("num_hidden_layers", 4096),
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 20),
    ("num_attention_heads", 4096),
    ("num_key_value_heads", 4096),
    ("head_dim", 4096),
    ("vocab_size", 1 << 24),
    ("num_experts", 4096),
    ("num_experts_per_tok", 256),
    ("moe_intermediate_size", 1 << 20),
];

/// The cap on `name`.
pub(crate) fn cap(name: &str) -> usize {
    CAPS.iter()
        .find(|(n, _)| *n == name)
        .map_or(usize::MAX, |c| c.1)
}

/// Every size positive and within [`CAPS`].
pub(crate) fn check_caps(sizes: &[(&str, usize)]) -> std::result::Result<(), String> {
    for &(name, v) in sizes {
        if v == 0 {
            return Err(format!("`{name}` must be positive"));
        }
        let cap = cap(name);
        if v > cap {
            return Err(format!(
                "`{name}` is {v}, more than the {cap} crunch accepts (no real model comes near; \
                 the file is corrupt or not a model config)"
            ));
        }
    }
    Ok(())
}

pub(crate) fn positive_finite(name: &str, v: f64) -> std::result::Result<(), String> {
    if !v.is_finite() || v <= 0.0 {
        return Err(format!(
            "`{name}` is {v}; it must be a finite, positive number"
        ));
    }
    Ok(())
}

/// A config error naming the file.
pub(crate) fn config_error(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::config(path)(ConfigProblem::Invalid(msg.to_string()))
}
