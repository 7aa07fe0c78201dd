//! Recipes as TOML: what `crunch compress --recipe FILE` reads and what every crunch output
//! carries as `recipe.toml`, so a result can be reproduced by handing its recipe back.
//!
//! ```toml
//! skip = ["model.layers.0.*"]           # optional
//!
//! [calibration]                        # needed when a stage looks at data
//! data = "wiki.train.txt"              # or "self:128x512"
//! samples = 128
//! len = 512
//! seed = 0
//!
//! [[stage]]
//! method = "whitened-svd"
//! layers = ["*mlp*"]                   # optional; default every block linear layer
//! keep = 0.8
//!
//! [[stage]]
//! method = "gptq"                      # layers not factored above
//! layers = ["*self_attn*"]
//! bits = 4
//! group_size = 128                     # 0 = one group per output channel
//!
//! [[stage]]
//! method = "eora"
//! rank = 16
//!
//! [moe]                                # optional, mixture-of-experts models
//! expert_min_tokens = 64               # fewer routed calibration tokens: every token instead
//! routers = false                      # compress the routers too (default: left as they are)
//! ```
//!
//! Methods and their keys: `rtn`/`gptq` (bits, group_size, symmetric, act_order, mse_clip,
//! damp), `magnitude`/`wanda` (sparsity: "0.5" or "2:4"), `sparsegpt` (sparsity, optional bits,
//! group_size, symmetric for joint quantization, damp), `svd`/`whitened-svd` (keep), `eora`
//! (rank).

use crate::compress::{CompressPlan, Stage, StageMethod};
use crunch_compress::{GptqOptions, QuantSpec, SparseGptOptions, Sparsity, SUPPORTED_BITS};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSpec>,
    #[serde(rename = "stage", default)]
    pub stages: Vec<StageSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeSpec>,
}

/// How mixture-of-experts models are calibrated and which of their layers are compressed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeSpec {
    /// An expert the router sends fewer calibration tokens than this is calibrated on every
    /// calibration token run through it (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_min_tokens: Option<usize>,
    /// Compress the routers too (default false: they stay as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routers: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSpec {
    /// A text file, or `self:NxL`.
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub method: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_order: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mse_clip: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damp: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
}

impl RecipeFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe serializes")
    }

    /// The plan the stages describe, with every key checked.
    pub fn plan(&self) -> Result<CompressPlan, String> {
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.to_stage()
                    .map_err(|e| format!("stage {} ({}): {e}", i + 1, s.method))
            })
            .collect::<Result<_, _>>()?;
        let moe = self.moe.clone().unwrap_or_default();
        Ok(CompressPlan {
            stages,
            skip: self.skip.clone(),
            expert_min_tokens: moe
                .expert_min_tokens
                .unwrap_or(crate::sequential::DEFAULT_EXPERT_MIN_TOKENS),
            routers: moe.routers.unwrap_or(false),
        })
    }
}

impl StageSpec {
    fn quant_spec(&self, required: bool) -> Result<Option<QuantSpec>, String> {
        let Some(bits) = self.bits else {
            if required {
                return Err("needs `bits`".into());
            }
            return Ok(None);
        };
        if !SUPPORTED_BITS.contains(&bits) {
            return Err(format!("bits {bits} is not one of {SUPPORTED_BITS:?}"));
        }
        let group = match self.group_size.unwrap_or(128) {
            0 => None,
            g => Some(g),
        };
        Ok(Some(QuantSpec::new(
            bits,
            group,
            self.symmetric.unwrap_or(false),
        )))
    }

    fn sparsity(&self) -> Result<Sparsity, String> {
        let s = self.sparsity.as_deref().ok_or("needs `sparsity`")?;
        s.parse::<Sparsity>().map_err(|e| e.to_string())
    }

    /// Keys a method does not read are refused, so a typo'd recipe does not silently do less.
    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        let given = [
            ("bits", self.bits.is_some()),
            ("group_size", self.group_size.is_some()),
            ("symmetric", self.symmetric.is_some()),
            ("act_order", self.act_order.is_some()),
            ("mse_clip", self.mse_clip.is_some()),
            ("damp", self.damp.is_some()),
            ("sparsity", self.sparsity.is_some()),
            ("keep", self.keep.is_some()),
            ("rank", self.rank.is_some()),
        ];
        match given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
            Some((k, _)) => Err(format!("`{k}` does not apply to this method")),
            None => Ok(()),
        }
    }

    pub fn to_stage(&self) -> Result<Stage, String> {
        let quant_keys = [
            "bits",
            "group_size",
            "symmetric",
            "act_order",
            "mse_clip",
            "damp",
        ];
        let damp = self.damp.unwrap_or(0.01);
        let method = match self.method.as_str() {
            "rtn" => {
                self.only(&quant_keys)?;
                StageMethod::Rtn {
                    spec: self.quant_spec(true)?.expect("required"),
                    mse_clip: self.mse_clip.unwrap_or(false),
                }
            }
            "gptq" => {
                self.only(&quant_keys)?;
                StageMethod::Gptq {
                    spec: self.quant_spec(true)?.expect("required"),
                    opts: GptqOptions {
                        block_size: 128,
                        damp,
                        act_order: self.act_order.unwrap_or(false),
                        mse_clip: self.mse_clip.unwrap_or(false),
                    },
                }
            }
            "magnitude" | "wanda" => {
                self.only(&["sparsity"])?;
                let sparsity = self.sparsity()?;
                if self.method == "wanda" {
                    StageMethod::Wanda { sparsity }
                } else {
                    StageMethod::Magnitude { sparsity }
                }
            }
            "sparsegpt" => {
                self.only(&["sparsity", "bits", "group_size", "symmetric", "damp"])?;
                StageMethod::SparseGpt {
                    sparsity: self.sparsity()?,
                    quant: self.quant_spec(false)?,
                    opts: SparseGptOptions {
                        block_size: 128,
                        damp,
                    },
                }
            }
            "svd" | "whitened-svd" => {
                self.only(&["keep"])?;
                let keep = self
                    .keep
                    .ok_or("needs `keep` (fraction of parameters kept)")?;
                if !(keep > 0.0 && keep <= 1.0) {
                    return Err(format!("keep {keep} must be in (0, 1]"));
                }
                if self.method == "svd" {
                    StageMethod::Svd { keep }
                } else {
                    StageMethod::WhitenedSvd { keep }
                }
            }
            "eora" => {
                self.only(&["rank"])?;
                let rank = self.rank.ok_or("needs `rank`")?;
                if rank == 0 {
                    return Err("rank must be at least 1".into());
                }
                StageMethod::Eora { rank }
            }
            other => {
                return Err(format!(
                    "unknown method `{other}` (rtn, gptq, magnitude, wanda, sparsegpt, svd, \
                     whitened-svd, eora)"
                ))
            }
        };
        Ok(Stage {
            method,
            layers: self.layers.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
skip = ["model.layers.0.*"]
[calibration]
data = "self:8x32"
seed = 3
[[stage]]
method = "whitened-svd"
layers = ["*mlp*"]
keep = 0.8
[[stage]]
method = "gptq"
layers = ["*self_attn*"]
bits = 4
group_size = 64
[[stage]]
method = "eora"
rank = 16
[moe]
expert_min_tokens = 10
"#;

    #[test]
    fn parses_and_round_trips() {
        let r = RecipeFile::parse(EXAMPLE).unwrap();
        assert_eq!(r.stages.len(), 3);
        let plan = r.plan().unwrap();
        assert_eq!(
            plan.stages[0].method,
            StageMethod::WhitenedSvd { keep: 0.8 }
        );
        assert!(plan.stages[1].matches("model.layers.3.self_attn.q_proj"));
        assert!(!plan.stages[1].matches("model.layers.3.mlp.up_proj"));
        assert_eq!((plan.expert_min_tokens, plan.routers), (10, false));
        assert_eq!(RecipeFile::parse(&r.to_toml()).unwrap(), r);
    }

    #[test]
    fn bad_recipes_say_what_is_wrong() {
        let cases = [
            ("[[stage]]\nmethod = \"gptq\"\n", "needs `bits`"),
            ("[[stage]]\nmethod = \"gptq\"\nbits = 5\n", "bits 5"),
            (
                "[[stage]]\nmethod = \"wanda\"\nsparsity = \"3:2\"\n",
                "stage 1 (wanda)",
            ),
            ("[[stage]]\nmethod = \"svd\"\nkeep = 1.5\n", "keep 1.5"),
            (
                "[[stage]]\nmethod = \"eora\"\nrank = 4\nbits = 4\n",
                "`bits` does not apply",
            ),
            ("[[stage]]\nmethod = \"prune\"\n", "unknown method `prune`"),
        ];
        for (text, want) in cases {
            let err = RecipeFile::parse(text).unwrap().plan().unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        assert!(RecipeFile::parse("[[stage]]\nmethod = \"gptq\"\nbitz = 4\n").is_err());
    }
}
