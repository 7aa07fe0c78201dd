//! Pruning stages: `magnitude`, `wanda` and `sparsegpt`.

use super::{
    check_bits_and_damp, default_damp, group, sparsity_str, LayerInput, OnGpu, StageMethod,
};
use crunch_compress::{magnitude, sparsegpt, wanda, CompressError, SparseGptOptions};
use crunch_repr::format::LayerRecipe;
use crunch_repr::{Compressed, Produces, QuantSpec, Sparsity};
use serde::{Deserialize, Serialize};

/// `magnitude`: drop the weights of smallest |W| (one threshold per layer); needs no data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Magnitude {
    /// "0.5" (fraction pruned), "50%", or N:M ("2:4").
    #[serde(with = "sparsity_str")]
    pub sparsity: Sparsity,
}

impl StageMethod for Magnitude {
    fn needs_calibration(&self) -> bool {
        false
    }
    fn produces(&self) -> Produces {
        Produces::Pruned {
            sparsity: self.sparsity,
            quant: None,
        }
    }
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn check_shape(&self, _rows: usize, cols: usize) -> Result<(), CompressError> {
        Ok(self.sparsity.validate(cols)?)
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let p = magnitude(l.weight, l.rows, l.cols, self.sparsity)?;
        Ok(Some(Compressed::Pruned(p)))
    }
}

/// `wanda`: drop the smallest |W|·‖X‖ of each output row, with no weight update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wanda {
    /// "0.5" (fraction pruned), "50%", or N:M ("2:4").
    #[serde(with = "sparsity_str")]
    pub sparsity: Sparsity,
}

impl StageMethod for Wanda {
    fn needs_calibration(&self) -> bool {
        true
    }
    fn produces(&self) -> Produces {
        Produces::Pruned {
            sparsity: self.sparsity,
            quant: None,
        }
    }
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn check_shape(&self, _rows: usize, cols: usize) -> Result<(), CompressError> {
        Ok(self.sparsity.validate(cols)?)
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let p = wanda(l.weight, l.rows, l.cols, l.hessian()?, self.sparsity)?;
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
    /// Quantize the kept weights to this many bits (2, 3, 4 or 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    /// With `bits`: input columns per scale and zero point, 0 = one per output row (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    /// With `bits`: zero point fixed at the middle of the grid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    fn needs_calibration(&self) -> bool {
        true
    }
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
    fn check_shape(&self, _rows: usize, cols: usize) -> Result<(), CompressError> {
        self.sparsity.validate(cols)?;
        match self.quant() {
            Some(spec) => Ok(spec.validate(cols)?),
            None => Ok(()),
        }
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
