//! Pruning stages: `magnitude`, `wanda` and `sparsegpt`.

use super::{
    check_bits_and_damp, default_damp, group, sparsity_str, LayerInput, OnGpu, StageMethod,
};
use crunch_compress::{magnitude, sparsegpt, wanda, CompressError, SparseGptOptions};
use crunch_repr::format::LayerRecipe;
use crunch_repr::{Compressed, Produces, QuantSpec, Sparsity};
use serde::{Deserialize, Serialize};

/// `magnitude` (`ScorePruning<false>`): drop the weights of smallest |W|, one threshold per
/// layer, no data. `wanda` (`ScorePruning<true>`): drop the smallest |W|·‖X‖ of each output row,
/// ‖X‖ from the calibration inputs. Neither updates the weights it keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorePruning<const WANDA: bool> {
    /// "0.5" (fraction pruned), "50%", or N:M ("2:4").
    #[serde(with = "sparsity_str")]
    pub sparsity: Sparsity,
}

impl<const WANDA: bool> StageMethod for ScorePruning<WANDA> {
    fn produces(&self) -> Produces {
        Produces::Pruned {
            sparsity: self.sparsity,
            quant: None,
        }
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let p = match WANDA {
            true => wanda(l.weight, l.rows, l.cols, l.hessian()?, self.sparsity)?,
            false => magnitude(l.weight, l.rows, l.cols, self.sparsity)?,
        };
        Ok(Some(Compressed::Pruned(p)))
    }
}

/// `sparsegpt`: OBS-style pruning that updates the kept weights through the inverse Hessian,
/// optionally quantizing them in the same pass (`bits`, and then `group_size`, `symmetric`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseGpt {
    /// "0.5" (fraction pruned), "50%", or N:M ("2:4").
    #[serde(with = "sparsity_str")]
    pub sparsity: Sparsity,
    /// Quantize the kept weights to this many bits (2 to 8). (Absent options are left out
    /// of the TOML a stage is written as.)
    pub bits: Option<u8>,
    /// With `bits`: input columns per scale and zero point, 0 = one per output row (default 128).
    pub group_size: Option<usize>,
    /// With `bits`: zero point fixed at the middle of the grid.
    pub symmetric: Option<bool>,
    /// Dampening, a fraction of the mean Hessian diagonal.
    #[serde(default = "default_damp")]
    pub damp: f64,
}

impl SparseGpt {
    /// The grid of the joint quantization, if any.
    pub fn quant(&self) -> Option<QuantSpec> {
        let g = self.group_size.unwrap_or_else(super::default_group_size);
        let symmetric = self.symmetric.unwrap_or(false);
        self.bits.map(|b| QuantSpec::new(b, group(g), symmetric))
    }

    pub fn options(&self) -> SparseGptOptions {
        SparseGptOptions {
            damp: self.damp as f32,
            ..SparseGptOptions::default()
        }
    }
}

impl StageMethod for SparseGpt {
    fn produces(&self) -> Produces {
        Produces::Pruned {
            sparsity: self.sparsity,
            quant: self.quant(),
        }
    }
    fn validate(&self) -> Result<(), String> {
        if self.bits.is_none() && (self.group_size.is_some() || self.symmetric.is_some()) {
            return Err("`group_size` and `symmetric` need `bits` (joint quantization)".into());
        }
        check_bits_and_damp(self.bits, Some(self.damp))
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let h = l.hessian()?;
        let p = sparsegpt(
            l.weight,
            l.rows,
            l.cols,
            h,
            self.sparsity,
            self.quant(),
            &self.options(),
        )?;
        Ok(Some(Compressed::Pruned(p)))
    }
    fn annotate(&self, entry: &mut LayerRecipe) {
        entry.damp = Some(self.damp as f32);
    }
    fn on_gpu(&self) -> Option<OnGpu> {
        Some(OnGpu::SparseGpt(
            self.sparsity,
            self.quant(),
            self.options(),
        ))
    }
}
