//! Architecture hyper-parameters, read from a Hugging Face `config.json` or GGUF metadata.

use crate::{ConfigProblem, Error, Result};
use serde_json::Value;
use std::path::Path;

/// The architectures crunch runs. All are decoder-only with RMSNorm, rotary embeddings,
/// grouped-query attention and a SwiGLU MLP; they differ in the details recorded in
/// [`ModelConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }

    fn from_model_type(s: &str) -> Option<Self> {
        Some(match s {
            "llama" => Arch::Llama,
            "mistral" => Arch::Mistral,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            _ => return None,
        })
    }
}

pub const SUPPORTED: &str = "llama, mistral, qwen2, qwen3";

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
}

impl RopeScaling {
    /// Every setting, by its config.json key under `rope_scaling`.
    fn settings(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Self::Linear { factor } => vec![("factor", factor)],
            Self::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position: max,
            } => vec![
                ("factor", factor),
                ("low_freq_factor", low),
                ("high_freq_factor", high),
                ("original_max_position_embeddings", max),
            ],
        }
    }

    /// Every setting a finite, positive number, and Llama 3's band the right way round.
    fn validate(&self) -> std::result::Result<(), String> {
        for (key, v) in self.settings() {
            positive_finite(&format!("rope_scaling.{key}"), v)?;
        }
        if let Self::Llama3 {
            low_freq_factor: low,
            high_freq_factor: high,
            ..
        } = *self
        {
            if high <= low {
                return Err(format!(
                    "rope_scaling.high_freq_factor {high} must be above low_freq_factor {low}"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden: usize,
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
    /// Per-head RMSNorm on queries and keys before the rotation (Qwen3).
    pub qk_norm: bool,
    /// Sliding attention window of each layer; `None` is full causal attention.
    pub layer_window: Vec<Option<usize>>,
    pub max_position: usize,
}

impl ModelConfig {
    /// Parses a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path, json: &Value) -> Result<Self> {
        let bad = Error::config(path);
        let invalid = |msg: String| bad(ConfigProblem::Invalid(msg));
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(ConfigProblem::Missing("model_type".into())))?;
        let arch = Arch::from_model_type(model_type).ok_or_else(|| {
            bad(ConfigProblem::UnsupportedArchitecture {
                name: model_type.into(),
            })
        })?;
        // A key that is present must have the right type: a silently ignored
        // `"rms_norm_eps": "1e-5"` would load a different model. `null` counts as absent
        // (transformers writes `"sliding_window": null`, `"head_dim": null`).
        let present = |key: &str| json.get(key).filter(|v| !v.is_null());
        let opt_usize = |key: &str| -> Result<Option<usize>> {
            present(key)
                .map(|v| {
                    v.as_u64()
                        .and_then(|v| usize::try_from(v).ok())
                        .ok_or_else(|| {
                            bad(ConfigProblem::NotAnInteger {
                                key: key.into(),
                                value: v.to_string(),
                            })
                        })
                })
                .transpose()
        };
        let get_usize = |key: &str| -> Result<usize> {
            opt_usize(key)?.ok_or_else(|| bad(ConfigProblem::Missing(key.into())))
        };
        let opt_f64 = |key: &str| -> Result<Option<f64>> {
            present(key)
                .map(|v| {
                    v.as_f64().ok_or_else(|| {
                        bad(ConfigProblem::NotANumber {
                            key: key.into(),
                            value: v.to_string(),
                        })
                    })
                })
                .transpose()
        };
        let opt_bool = |key: &str| json.get(key).and_then(Value::as_bool);
        let hidden = get_usize("hidden_size")?;
        let heads = get_usize("num_attention_heads")?;
        let layers = get_usize("num_hidden_layers")?;
        let kv_heads = opt_usize("num_key_value_heads")?.unwrap_or(heads);
        let head_dim = opt_usize("head_dim")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let intermediate = get_usize("intermediate_size")?;
        let vocab = get_usize("vocab_size")?;
        // Before anything is sized by them (the per-layer window list below).
        check_caps(&[
            ("num_hidden_layers", layers),
            ("hidden_size", hidden),
            ("intermediate_size", intermediate),
            ("num_attention_heads", heads),
            ("num_key_value_heads", kv_heads),
            ("head_dim", head_dim),
            ("vocab_size", vocab),
        ])
        .map_err(invalid)?;
        let act = json
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(bad(ConfigProblem::UnsupportedActivation(act.into())));
        }
        let attention_bias = opt_bool("attention_bias").unwrap_or(false);
        let (qkv_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            Arch::Mistral => (false, false),
            Arch::Llama | Arch::Qwen3 => (attention_bias, attention_bias),
        };
        let window = match arch {
            Arch::Mistral => opt_usize("sliding_window")?,
            Arch::Qwen2 | Arch::Qwen3 if opt_bool("use_sliding_window").unwrap_or(false) => {
                opt_usize("sliding_window")?
            }
            _ => None,
        };
        let max_window_layers = match arch {
            Arch::Qwen2 | Arch::Qwen3 => opt_usize("max_window_layers")?.unwrap_or(28),
            _ => 0,
        };
        let layer_window = (0..layers)
            .map(|i| window.filter(|_| i >= max_window_layers))
            .collect();
        let cfg = ModelConfig {
            arch,
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads,
            head_dim,
            vocab,
            rms_eps: opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            rope_theta: opt_f64("rope_theta")?.unwrap_or(10000.0),
            rope_scaling: parse_rope_scaling(json.get("rope_scaling")).map_err(invalid)?,
            // transformers defaults this to false for all four architectures.
            tie_embeddings: opt_bool("tie_word_embeddings").unwrap_or(false),
            qkv_bias,
            o_bias,
            mlp_bias: arch == Arch::Llama && opt_bool("mlp_bias").unwrap_or(false),
            qk_norm: arch == Arch::Qwen3,
            layer_window,
            max_position: opt_usize("max_position_embeddings")?.unwrap_or(4096),
        };
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
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
        if let Some(scaling) = &self.rope_scaling {
            scaling.validate()?;
        }
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
        Ok(())
    }

    /// A Hugging Face `config.json` describing this model (what crunch writes beside weights
    /// it saves, so transformers and crunch both load them).
    pub fn to_hf_json(&self) -> Value {
        let arch_class = match self.arch {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
        };
        let mut v = serde_json::json!({
            "architectures": [arch_class],
            "model_type": self.arch.name(),
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "rms_norm_eps": self.rms_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position,
            "tie_word_embeddings": self.tie_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        if let Some(s) = &self.rope_scaling {
            v["rope_scaling"] = match *s {
                RopeScaling::Linear { factor } => {
                    serde_json::json!({"rope_type": "linear", "factor": factor})
                }
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position,
                } => serde_json::json!({
                    "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor,
                    "original_max_position_embeddings": original_max_position,
                }),
            };
        }
        match self.arch {
            Arch::Llama => {
                v["attention_bias"] = self.qkv_bias.into();
                v["mlp_bias"] = self.mlp_bias.into();
            }
            Arch::Qwen3 => v["attention_bias"] = self.qkv_bias.into(),
            _ => {}
        }
        let window = self.layer_window.iter().flatten().next().copied();
        match (self.arch, window) {
            (Arch::Mistral, w) => v["sliding_window"] = w.into(),
            (Arch::Qwen2 | Arch::Qwen3, Some(w)) => {
                let first = self
                    .layer_window
                    .iter()
                    .position(Option::is_some)
                    .unwrap_or(0);
                v["use_sliding_window"] = true.into();
                v["sliding_window"] = w.into();
                v["max_window_layers"] = first.into();
            }
            _ => {}
        }
        v
    }

    /// Output width of the query projection.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Output width of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Upper bounds on the sizes a config may claim, far above any real model (Llama 3.1 405B:
/// 126 layers, hidden 16384, intermediate 53248, 128 heads, head_dim 128; the largest
/// vocabularies are about 260k). They only stop a corrupt or hostile file from sizing an
/// allocation; the real check is against the tensors the file holds
/// (`Checkpoint::open` → `validate_structure`).
pub const CAPS: [(&str, usize); 7] = [
    ("num_hidden_layers", 4096),
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 20),
    ("num_attention_heads", 4096),
    ("num_key_value_heads", 4096),
    ("head_dim", 4096),
    ("vocab_size", 1 << 24),
];

/// Every size positive and within [`CAPS`].
fn check_caps(sizes: &[(&str, usize)]) -> std::result::Result<(), String> {
    for &(name, v) in sizes {
        if v == 0 {
            return Err(format!("`{name}` must be positive"));
        }
        let cap = CAPS
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(usize::MAX, |c| c.1);
        if v > cap {
            return Err(format!(
                "`{name}` is {v}, more than the {cap} crunch accepts (no real model comes near; \
                 the file is corrupt or not a model config)"
            ));
        }
    }
    Ok(())
}

fn positive_finite(name: &str, v: f64) -> std::result::Result<(), String> {
    if !v.is_finite() || v <= 0.0 {
        return Err(format!(
            "`{name}` is {v}; it must be a finite, positive number"
        ));
    }
    Ok(())
}

fn parse_rope_scaling(v: Option<&Value>) -> std::result::Result<Option<RopeScaling>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
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
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: num("factor")?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position: num("original_max_position_embeddings")?,
        })),
        other => Err(format!(
            "rope_scaling type `{other}` is not supported (supported: default, linear, llama3)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/smollm2/config.json")).unwrap()
    }

    #[test]
    fn parses_smollm2() {
        let c = ModelConfig::from_hf_json(Path::new("config.json"), &smollm2()).unwrap();
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!(
            (c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim),
            (576, 30, 9, 3, 64)
        );
        assert!(c.tie_embeddings);
        assert_eq!(c.rope_theta, 100000.0);
    }

    #[test]
    fn hf_json_round_trips() {
        for spec in crate::testing::tiny_specs() {
            let c = ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap();
            let again = ModelConfig::from_hf_json(Path::new("c"), &c.to_hf_json()).unwrap();
            assert_eq!(c, again, "{}", spec.name);
        }
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let mut j = smollm2();
        j["model_type"] = "gpt_neox".into();
        let e = ModelConfig::from_hf_json(Path::new("x/config.json"), &j).unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported architecture `gpt_neox`"),
            "{e}"
        );
        assert!(e.to_string().contains("x/config.json"), "{e}");
    }

    #[test]
    fn huge_or_non_numeric_sizes_are_refused_before_allocating() {
        for (key, value, needle) in [
            (
                "num_hidden_layers",
                serde_json::json!(u64::MAX),
                "num_hidden_layers",
            ),
            (
                "num_hidden_layers",
                serde_json::json!(5000),
                "more than the 4096",
            ),
            (
                "hidden_size",
                serde_json::json!(4294967295u64),
                "hidden_size",
            ),
            (
                "vocab_size",
                serde_json::json!(-3),
                "not a non-negative integer",
            ),
            (
                "num_key_value_heads",
                serde_json::json!(1.5),
                "num_key_value_heads",
            ),
            ("rms_norm_eps", serde_json::json!("1e-5"), "not a number"),
            ("rms_norm_eps", serde_json::json!(0.0), "finite, positive"),
            ("rope_theta", serde_json::json!(-1.0), "finite, positive"),
            ("rms_norm_eps", serde_json::json!(5.0), "below 1"),
            ("rms_norm_eps", serde_json::json!(1e300), "finite, positive"),
        ] {
            let mut j = smollm2();
            j[key] = value;
            let e = ModelConfig::from_hf_json(Path::new("x/config.json"), &j)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(needle) && e.contains("x/config.json"),
                "{key}: {e}"
            );
        }
    }

    #[test]
    fn non_finite_values_are_refused_naming_the_field() {
        let mut c = ModelConfig::from_hf_json(Path::new("c"), &smollm2()).unwrap();
        c.rms_eps = f32::NAN;
        assert!(c.validate().unwrap_err().contains("rms_norm_eps"));
        c.rms_eps = 1e-5;
        c.rope_theta = f64::INFINITY;
        assert!(c.validate().unwrap_err().contains("rope_theta"));
        c.rope_theta = 1e4;
        c.rope_scaling = Some(RopeScaling::Linear { factor: f64::NAN });
        assert!(c.validate().unwrap_err().contains("rope_scaling.factor"));
    }

    #[test]
    fn written_configs_never_hold_null_numbers() {
        for spec in crate::testing::tiny_specs() {
            let c = ModelConfig::from_hf_json(Path::new("c"), &spec.config).unwrap();
            let j = c.to_hf_json();
            for (k, v) in j.as_object().unwrap() {
                // Mistral's `sliding_window: null` means "no window" (transformers' own
                // spelling); every other key is a value.
                assert!(
                    !v.is_null() || k == "sliding_window",
                    "{}: {k} is null",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn inconsistent_heads_are_rejected() {
        let mut j = smollm2();
        j["num_key_value_heads"] = 4.into();
        let e = ModelConfig::from_hf_json(Path::new("config.json"), &j).unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
    }
}
