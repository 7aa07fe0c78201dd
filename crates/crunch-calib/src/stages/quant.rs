//! Quantization stages: `rtn`, `gptq` and `lut`.

use super::{
    check_bits_and_damp, default_damp, default_group_size, group, LayerInput, OnGpu, StageMethod,
};
use crunch_compress::{gptq, gptq_lut, rtn, CompressError, GptqOptions, Hessian, LutOptions};
use crunch_repr::format::LayerRecipe;
use crunch_repr::{Compressed, GroupFit, LutSpec, Produces, QuantSpec};
use serde::{Deserialize, Serialize};

/// `rtn`: round to nearest on a min–max (or MSE-clipped) grid; needs no data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rtn {
    /// Bits per code: 2 to 8.
    pub bits: u8,
    /// Input columns sharing one scale and zero point; 0 = one per output row.
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// Zero point fixed at the middle of the grid.
    #[serde(default)]
    pub symmetric: bool,
    /// Search each grid's clipping range for the smallest error.
    #[serde(default)]
    pub mse_clip: bool,
}

impl Rtn {
    pub fn spec(&self) -> QuantSpec {
        QuantSpec::new(self.bits, group(self.group_size), self.symmetric)
    }
}

impl StageMethod for Rtn {
    fn produces(&self) -> Produces {
        Produces::Quantized(self.spec())
    }
    fn validate(&self) -> Result<(), String> {
        check_bits_and_damp(Some(self.bits), None)
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let q = rtn(l.weight, l.rows, l.cols, self.spec(), self.mse_clip)?;
        Ok(Some(Compressed::Quantized(q)))
    }
    fn annotate(&self, entry: &mut LayerRecipe) {
        entry.mse_clip = self.mse_clip;
    }
}

/// `gptq`: GPTQ, which spreads each column's rounding error over the columns not yet
/// quantized through the inverse calibration Hessian.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gptq {
    /// Bits per code: 2 to 8.
    pub bits: u8,
    /// Input columns sharing one scale and zero point; 0 = one per output row.
    #[serde(default = "default_group_size")]
    pub group_size: usize,
    /// Zero point fixed at the middle of the grid.
    #[serde(default)]
    pub symmetric: bool,
    /// Quantize columns in order of decreasing Hessian diagonal (groups stay static). On by
    /// default: it wins on both evaluation texts (decision 092).
    #[serde(default = "default_act_order")]
    pub act_order: bool,
    /// Search each grid's clipping range for the smallest error. On by default (decision 092).
    #[serde(default = "default_mse_clip")]
    pub mse_clip: bool,
    /// Dampening, a fraction of the mean Hessian diagonal.
    #[serde(default = "default_damp")]
    pub damp: f64,
    /// Two-level group scales (decision 145): each group's scale a `scale_bits`-bit code of
    /// one f16 scale per row. Absent = free f16 scales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_bits: Option<u8>,
}

// A recipe's GPTQ defaults are `GptqOptions::default()`'s, so the library and recipes cannot
// disagree: act-order and MSE grids on, since without them GPTQ over-fits its calibration text
// (decision 092, BENCHMARKS.md "Calibration options on both texts").
fn default_act_order() -> bool {
    GptqOptions::default().act_order
}

fn default_mse_clip() -> bool {
    GptqOptions::default().mse_clip
}

impl Gptq {
    pub fn spec(&self) -> QuantSpec {
        QuantSpec::new(self.bits, group(self.group_size), self.symmetric)
            .with_scale_bits(self.scale_bits)
    }

    pub fn options(&self) -> GptqOptions {
        GptqOptions {
            damp: self.damp as f32,
            act_order: self.act_order,
            mse_clip: self.mse_clip,
            ..GptqOptions::default()
        }
    }
}

impl StageMethod for Gptq {
    fn produces(&self) -> Produces {
        Produces::Quantized(self.spec())
    }
    fn validate(&self) -> Result<(), String> {
        check_bits_and_damp(Some(self.bits), Some(self.damp))?;
        if let Some(k) = self.scale_bits {
            if !crunch_repr::SCALE_BITS.contains(&k) {
                return Err(format!(
                    "scale_bits {k} is not in {:?}",
                    crunch_repr::SCALE_BITS
                ));
            }
            if self.group_size == 0 {
                return Err(
                    "scale_bits needs a group size (per-row grids have one scale \
                            per row already)"
                        .into(),
                );
            }
        }
        Ok(())
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let q = on_hessian(l, self.spec(), &self.options(), gptq)?;
        Ok(Some(Compressed::Quantized(q)))
    }
    fn annotate(&self, entry: &mut LayerRecipe) {
        annotate_column_loop(entry, self.act_order, self.damp);
        entry.mse_clip = self.mse_clip;
    }
    fn on_gpu(&self) -> Option<OnGpu> {
        Some(OnGpu::Gptq(self.spec(), self.options()))
    }
}

/// `lut`: GPTQ onto lookup-table codebooks: `bits`-bit codes indexing 2^bits f16 levels per
/// output row (or per `group_size` columns), fitted by k-means weighted by the Hessian's
/// diagonal (decision 143). Costs 2^bits · 16 bits per codebook on top of the codes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lut {
    /// Bits per code: 2, 3 or 4.
    pub bits: u8,
    /// Input columns sharing one codebook; 0 (the default) = one per output row.
    #[serde(default)]
    pub group_size: usize,
    /// Quantize columns in order of decreasing Hessian diagonal (as GPTQ's default).
    #[serde(default = "default_act_order")]
    pub act_order: bool,
    /// Dampening, a fraction of the mean Hessian diagonal.
    #[serde(default = "default_damp")]
    pub damp: f64,
    /// Lloyd iterations of each codebook's k-means.
    #[serde(default = "default_iterations")]
    pub iterations: usize,
    /// Refit each row's levels to its codes by least squares with the full Hessian after
    /// the column loop.
    #[serde(default = "default_refit")]
    pub refit: bool,
}

fn default_refit() -> bool {
    LutOptions::default().refit
}

fn default_iterations() -> usize {
    crunch_compress::LLOYD_ITERATIONS
}

impl Lut {
    pub fn spec(&self) -> LutSpec {
        LutSpec::new(self.bits, group(self.group_size))
    }

    pub fn options(&self) -> LutOptions {
        LutOptions {
            damp: self.damp as f32,
            act_order: self.act_order,
            iterations: self.iterations,
            refit: self.refit,
            ..LutOptions::default()
        }
    }
}

impl StageMethod for Lut {
    fn produces(&self) -> Produces {
        Produces::Lut(self.spec())
    }
    fn validate(&self) -> Result<(), String> {
        if !crunch_repr::LUT_BITS.contains(&self.bits) {
            return Err(format!(
                "bits {} is not one of {:?} (a codebook of 2^bits f16 levels per row)",
                self.bits,
                crunch_repr::LUT_BITS
            ));
        }
        check_bits_and_damp(None, Some(self.damp))?;
        self.options().validate().map_err(|e| e.to_string())
    }
    fn check_shape(&self, _rows: usize, cols: usize) -> Result<Option<String>, CompressError> {
        self.spec().validate(cols)?;
        // The same limits on a group as a uniform grid's (at least 8 columns, no wider than
        // the layer; a shorter last group is kept): checked on the grid of the same width.
        Ok(QuantSpec::new(self.bits, self.spec().group_size, false)
            .check_layer(cols, GroupFit::ShortLastGroup)?)
    }
    fn compress(&self, l: &LayerInput) -> Result<Option<Compressed>, CompressError> {
        let q = on_hessian(l, self.spec(), &self.options(), gptq_lut)?;
        Ok(Some(Compressed::Lut(q)))
    }
    fn annotate(&self, entry: &mut LayerRecipe) {
        annotate_column_loop(entry, self.act_order, self.damp);
    }
}

// What the `gptq` and `lut` stages share: both run GPTQ's column loop on the layer's Hessian,
// and record the loop's keys. The keys themselves stay fields of each stage, as serde's
// `flatten` cannot be combined with `deny_unknown_fields`.

/// A quantizer on GPTQ's column loop, as `gptq` and `gptq_lut` are: `(weight, rows, cols,
/// hessian, spec, options)`.
type ColumnLoopFn<S, O, T> = fn(&[f32], usize, usize, &Hessian, S, &O) -> Result<T, CompressError>;

/// Runs one of GPTQ's column loops (`gptq`, `gptq_lut`) on layer `l` with a stage's grid and
/// options.
fn on_hessian<S, O, T>(
    l: &LayerInput,
    spec: S,
    opts: &O,
    quantize: ColumnLoopFn<S, O, T>,
) -> Result<T, CompressError> {
    quantize(l.weight, l.rows, l.cols, l.hessian()?, spec, opts)
}

/// Records the column loop's keys in a layer's `crunch.json` entry.
fn annotate_column_loop(entry: &mut LayerRecipe, act_order: bool, damp: f64) {
    entry.act_order = act_order;
    entry.damp = Some(damp as f32);
}
