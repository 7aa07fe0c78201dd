//! `crunch.json`: the recipe of a crunch-format directory (layout in [`super`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use crunch_formats::{FormatError, Result};

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
    /// A lookup-table layer (decision 143): `bits`-bit codes indexing codebooks of 2^bits f16
    /// levels, one per row (or per `group_size` columns of a row). Absent = false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub codebook: bool,
    /// Quantized layers with two-level scales (decision 145): the width of the group scale
    /// codes (`P.qscodes`, against one row scale per row, `P.qrscales`). Absent = free f16
    /// scales (`P.qscales`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_bits: Option<u8>,
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
    /// crunch's format, this version of crunch, no calibration: for a model made from `source`
    /// (a file name) by `stages` (one line each), with `layers` as stored.
    pub fn new(
        source: impl Into<String>,
        stages: Vec<String>,
        layers: BTreeMap<String, LayerRecipe>,
    ) -> Self {
        Self {
            format: "crunch".into(),
            format_version: FORMAT_VERSION,
            crunch_version: env!("CARGO_PKG_VERSION").into(),
            source: source.into(),
            stages,
            calibration: None,
            layers,
        }
    }

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
