//! crunch's own format: a Hugging Face–style directory (`config.json`, `tokenizer.json`,
//! `model.safetensors`) plus `crunch.json`, the recipe that says what was done to which layer.
//!
//! A compressed linear layer `P` (e.g. `model.layers.0.mlp.up_proj`) has no `P.weight`; its
//! recipe entry (`layers[P]`, with `rows`, `cols`) and the tensors below say what it holds.
//! Every unquantized value (pruned values, factors) is F16; masks and codes are U8.
//!
//! Quantized (`bits` 1–8, no `rank`):
//! - `P.qcodes`  U8, the integer codes packed densely (`bits` bits each, little-endian bit order,
//!   row-major over `[rows, cols]`, last byte zero-padded);
//! - `P.qscales` F16 `[rows, groups]`;
//! - `P.qzeros`  U8 `[rows, groups]`, integer zero points;
//! - `P.g_idx`   I32 `[cols]`, only with act-order: the group of each input column;
//!
//! dequantized as `(code − zero) · scale`.
//!
//! Pruned (`sparsity` "0.5" for a pruned fraction, "2:4" for N:M):
//! - unstructured, not quantized: `P.mask` U8 `[ceil(rows·cols/8)]`, the keep-mask (bit
//!   k = r·cols + c is bit k % 8 of byte k / 8, least significant first, 1 = kept, padding
//!   bits 0) and `P.values` F16 `[kept]`, the kept values in row-major order;
//! - N:M, not quantized: `P.nm_values` F16 `[rows, cols/m·n]`, each group of m input columns'
//!   n kept values in column order (a group keeping fewer is padded with zeros at its lowest
//!   free positions), and `P.nm_indices` U8, their in-group positions at ⌈log2 m⌉ bits each,
//!   packed like `P.qcodes`; n and m come from `sparsity`;
//! - pruned and quantized (SparseGPT's joint mode; `P.qcodes` present): the quantized tensors
//!   above for the whole matrix, pruned entries holding the code that dequantizes to exactly 0,
//!   plus `P.mask`; the weight is the dequantized codes with every unkept entry 0.
//!
//! Factored (`rank` r): `P.lr_a` F16 `[rows, r]` and `P.lr_b` F16 `[r, cols]`, W = A·B, run as
//! two products (x·Bᵀ)·Aᵀ.
//!
//! Any of these with an EoRA correction (`correction_rank` r) also stores `P.eora_a` F16
//! `[rows, r]` and `P.eora_b` F16 `[r, cols]`: the layer computes x·(Ŵ + A·B)ᵀ.
//!
//! Every other tensor is stored as it is. Readers check every stored tensor's dtype and shape
//! against `rows`, `cols`, `bits`, `group_size`, `sparsity` and the ranks.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crate::{FormatError, Result};

pub const RECIPE_FILE: &str = "crunch.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub format: String,
    pub format_version: u32,
    pub crunch_version: String,
    /// File name of the model this was made from.
    pub source: String,
    /// The stages, in order, as given (e.g. `gptq bits=4 group_size=128 asym`).
    pub stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Per linear layer (Hugging Face name without `.weight`): what it holds now.
    pub layers: BTreeMap<String, LayerRecipe>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// File name of the calibration text.
    pub data: String,
    pub samples: usize,
    pub tokens_per_sample: usize,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRecipe {
    pub method: String,
    pub bits: u8,
    /// `None`: one group per output channel.
    pub group_size: Option<usize>,
    pub symmetric: bool,
    #[serde(default)]
    pub act_order: bool,
    #[serde(default)]
    pub mse_clip: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damp: Option<f32>,
    pub rows: usize,
    pub cols: usize,
    /// Pruned layers: the pattern, "0.5" (unstructured fraction pruned) or "2:4".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<String>,
    /// Factored layers: the rank of W ≈ A·B.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
    /// EoRA correction rank, when one was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction_rank: Option<usize>,
    /// An expert of a sparse MLP: where its calibration statistics came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert_calibration: Option<ExpertRecipe>,
}

/// How an expert layer was calibrated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertRecipe {
    /// `"routed"`: from the tokens the router sent the expert; `"all-tokens"`: from every
    /// calibration token run through it, because the router sent it too few.
    pub statistics: String,
    /// Calibration tokens the router sent to the expert.
    pub routed_tokens: usize,
    /// Tokens behind the statistics.
    pub tokens: usize,
}

impl Recipe {
    pub fn read(dir: &Path) -> Result<Option<Recipe>> {
        let path = dir.join(RECIPE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| FormatError::io(&path, e))?;
        let recipe: Recipe = serde_json::from_str(&text)
            .map_err(|e| FormatError::invalid(&path, format!("not a crunch recipe: {e}")))?;
        if recipe.format != "crunch" || recipe.format_version != FORMAT_VERSION {
            return Err(FormatError::invalid(
                &path,
                format!(
                    "format `{}` version {} is not crunch format version {FORMAT_VERSION}",
                    recipe.format, recipe.format_version
                ),
            ));
        }
        Ok(Some(recipe))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("recipe serializes") + "\n"
    }
}
